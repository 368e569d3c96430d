package firewall

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// The table of one sidecar, family ip:
//
//	map forwards        host port → container address . port, commented with the instance
//	map groups          host port → its source group (the forwards with the same sources share one)
//	set sources         source group . source range: who each group's ports are forwarded for
//	set guarded_ports   host ports forwarded only for their sources (drop the rest)
//	set targets         container address . port of every forward (masquerade from loopback)
//	set guarded_targets the same, of the guarded forwards (drop what was not forwarded)
//
// and base chains that read them: DNAT in prerouting and output before
// Docker's (priority dstnat-1: the first NAT binding of a connection wins),
// masquerade in postrouting, and drops in forward and input. A forward is
// one element in each map and set keyed by port or target, all hash tables:
// adding or removing it is one transaction of a few elements, whatever the
// number of others. Only sources is an interval set (ranges need one), whose
// updates cost in proportion to its size; it holds the groups' ranges, not
// the forwards', and changes only when a group comes or goes (the sidecar
// gives every forward the same sources: one group).
const (
	setForwards       = "forwards"
	setGroups         = "groups"
	setSources        = "sources"
	setGuardedPorts   = "guarded_ports"
	setTargets        = "targets"
	setGuardedTargets = "guarded_targets"
)

// layout is the objects of a sidecar's table.
type layout struct {
	table                                                            *nftables.Table
	forwards, groups, sources, guardedPorts, targets, guardedTargets *nftables.Set
}

var (
	addrPort    = nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetService)
	groupSource = nftables.MustConcatSetType(nftables.TypeMark, nftables.TypeIPAddr)
)

func layoutFor(name string) layout {
	t := &nftables.Table{Name: name, Family: nftables.TableFamilyIPv4}
	return layout{
		table:          t,
		forwards:       &nftables.Set{Table: t, Name: setForwards, IsMap: true, KeyType: nftables.TypeInetService, DataType: addrPort},
		groups:         &nftables.Set{Table: t, Name: setGroups, IsMap: true, KeyType: nftables.TypeInetService, DataType: nftables.TypeMark},
		sources:        &nftables.Set{Table: t, Name: setSources, Interval: true, Concatenation: true, KeyType: groupSource},
		guardedPorts:   &nftables.Set{Table: t, Name: setGuardedPorts, KeyType: nftables.TypeInetService},
		targets:        &nftables.Set{Table: t, Name: setTargets, Concatenation: true, KeyType: addrPort},
		guardedTargets: &nftables.Set{Table: t, Name: setGuardedTargets, Concatenation: true, KeyType: addrPort},
	}
}

func (l layout) sets() []*nftables.Set {
	return []*nftables.Set{l.forwards, l.groups, l.sources, l.guardedPorts, l.targets, l.guardedTargets}
}

// Registers: reg 1 holds a key or a map's value (an address or a group
// and, in its second 32-bit word, reg 9, a port or an address); reg 2 the
// conntrack mark.
const (
	reg1, reg2, reg9 = 1, 2, 9
	tcpDport         = 2      // offset in the TCP header
	ipSaddr, ipDaddr = 12, 16 // offsets in the IPv4 header
)

func isTCP() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{unix.IPPROTO_TCP}},
	}
}

// load reads the address at an IPv4 header offset into reg 1 and the TCP
// destination port into reg 9.
func addrAndDport(offset uint32) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: 4},
		&expr.Payload{DestRegister: reg9, Base: expr.PayloadBaseTransportHeader, Offset: tcpDport, Len: 2},
	}
}

func dport() expr.Any {
	return &expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseTransportHeader, Offset: tcpDport, Len: 2}
}

func in(s *nftables.Set) expr.Any {
	return &expr.Lookup{SourceRegister: reg1, SetName: s.Name, SetID: s.ID}
}

func native32(v uint32) []byte { return binaryutil.NativeEndian.PutUint32(v) }

// dnatRule forwards a host port, to a local address, from a source of the
// port's group, and marks the connection.
func (l layout) dnatRule() []expr.Any {
	e := isTCP()
	e = append(e,
		&expr.Fib{Register: reg1, FlagDADDR: true, ResultADDRTYPE: true},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: native32(unix.RTN_LOCAL)},
	)
	e = append(e, dport(),
		&expr.Lookup{SourceRegister: reg1, DestRegister: reg1, IsDestRegSet: true, SetName: l.groups.Name, SetID: l.groups.ID},
		&expr.Payload{DestRegister: reg9, Base: expr.PayloadBaseNetworkHeader, Offset: ipSaddr, Len: 4},
		in(l.sources), dport(),
		&expr.Lookup{SourceRegister: reg1, DestRegister: reg1, IsDestRegSet: true, SetName: l.forwards.Name, SetID: l.forwards.ID},
		&expr.Ct{Register: reg2, Key: expr.CtKeyMARK},
		&expr.Bitwise{SourceRegister: reg2, DestRegister: reg2, Len: 4, Mask: native32(^uint32(forwardMark)), Xor: native32(forwardMark)},
		&expr.Ct{Register: reg2, Key: expr.CtKeyMARK, SourceRegister: true},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: reg1, RegProtoMin: reg9},
	)
	return e
}

// masqRule rewrites the source of loopback-sourced forwarded traffic: the
// reply must come back through the host.
func (l layout) masqRule() []expr.Any {
	e := isTCP()
	e = append(e,
		&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: ipSaddr, Len: 4},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4, Mask: []byte{255, 0, 0, 0}, Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{127, 0, 0, 0}},
	)
	e = append(e, addrAndDport(ipDaddr)...)
	return append(e, in(l.targets), &expr.Masq{})
}

// dropUnforwardedRule drops what reaches Jupyter's port in a container
// without the table's DNAT (another container on the bridge, say).
func (l layout) dropUnforwardedRule() []expr.Any {
	e := isTCP()
	e = append(e, addrAndDport(ipDaddr)...)
	return append(e, in(l.guardedTargets),
		&expr.Ct{Register: reg2, Key: expr.CtKeyMARK},
		&expr.Bitwise{SourceRegister: reg2, DestRegister: reg2, Len: 4, Mask: native32(forwardMark), Xor: native32(0)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg2, Data: native32(0)},
		&expr.Verdict{Kind: expr.VerdictDrop},
	)
}

// dropInputRule drops what reaches a guarded host port unforwarded (from a
// source it is not forwarded for).
func (l layout) dropInputRule() []expr.Any {
	e := isTCP()
	return append(e, dport(), in(l.guardedPorts), &expr.Verdict{Kind: expr.VerdictDrop})
}

// chains are the table's base chains with their one rule each.
func (l layout) chains() []struct {
	chain *nftables.Chain
	rule  []expr.Any
} {
	chain := func(name string, typ nftables.ChainType, hook *nftables.ChainHook, prio nftables.ChainPriority) *nftables.Chain {
		return &nftables.Chain{Name: name, Table: l.table, Type: typ, Hooknum: hook, Priority: nftables.ChainPriorityRef(prio)}
	}
	return []struct {
		chain *nftables.Chain
		rule  []expr.Any
	}{
		{chain("prerouting", nftables.ChainTypeNAT, nftables.ChainHookPrerouting, -101), l.dnatRule()},
		{chain("output", nftables.ChainTypeNAT, nftables.ChainHookOutput, -101), l.dnatRule()},
		{chain("postrouting", nftables.ChainTypeNAT, nftables.ChainHookPostrouting, 99), l.masqRule()},
		{chain("forward", nftables.ChainTypeFilter, nftables.ChainHookForward, -1), l.dropUnforwardedRule()},
		{chain("input", nftables.ChainTypeFilter, nftables.ChainHookInput, -1), l.dropInputRule()},
	}
}

// create makes the table, its sets and chains, and (again) the chains'
// rules, in one transaction; the sets' elements stay.
func (l layout) create(c *nftables.Conn) error {
	c.AddTable(l.table)
	for _, s := range l.sets() {
		if err := c.AddSet(s, nil); err != nil {
			return err
		}
	}
	for _, ch := range l.chains() {
		c.AddChain(ch.chain)
		c.FlushChain(ch.chain)
		c.AddRule(&nftables.Rule{Table: l.table, Chain: ch.chain, Exprs: ch.rule})
	}
	return nil
}

// Element encodings: a port is 2 bytes, big-endian; an address . port is
// 8 (the port padded to a 32-bit register).
func portKey(p int) []byte { return binary.BigEndian.AppendUint16(nil, uint16(p)) }

func groupSourceKey(g uint32, a netip.Addr) []byte {
	b := a.As4()
	return append(binary.BigEndian.AppendUint32(nil, g), b[:]...)
}

func addrPortKey(a netip.Addr, p int) []byte {
	b := a.As4()
	return append(b[:], byte(p>>8), byte(p), 0, 0)
}

func parseAddrPort(b []byte) (netip.Addr, int, bool) {
	if len(b) < 6 {
		return netip.Addr{}, 0, false
	}
	return netip.AddrFrom4([4]byte(b[:4])), int(binary.BigEndian.Uint16(b[4:6])), true
}

// lastAddr is the last address of a prefix.
func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As4()
	v := binary.BigEndian.Uint32(a[:]) | (uint32(1)<<(32-p.Bits()) - 1)
	if p.Bits() == 0 {
		v = ^uint32(0)
	}
	return netip.AddrFrom4([4]byte(binary.BigEndian.AppendUint32(nil, v)))
}

// rangePrefix is the prefix spanning first..last, if one does.
func rangePrefix(first, last netip.Addr) (netip.Prefix, bool) {
	for bits := 0; bits <= 32; bits++ {
		p := netip.PrefixFrom(first, bits)
		if p.Masked().Addr() == first && lastAddr(p) == last {
			return p, true
		}
	}
	return netip.Prefix{}, false
}

// anywhere is the source range of a forward without sources.
var anywhere = netip.MustParsePrefix("0.0.0.0/0")

// disjoint returns the prefixes with those inside another left out (two
// prefixes nest or do not meet): an interval set refuses overlaps.
func disjoint(ps []netip.Prefix) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range ps {
		p = p.Masked()
		inside := slices.Contains(out, p)
		for _, q := range ps {
			inside = inside || q.Bits() < p.Bits() && q.Contains(p.Addr())
		}
		if !inside {
			out = append(out, p)
		}
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	return out
}

// entry is one forward as the table holds it.
type entry struct {
	fw      Forward // Sources: the group's ranges when guarded, else none
	comment string
	group   uint32
	ranges  []netip.Prefix // its group's elements of sources
}

func (e entry) guarded() bool { return len(e.fw.Sources) > 0 }

// entryOf is the entry of a forward, without its group (see groupFor).
func entryOf(f Forward) entry {
	f.Sources = disjoint(f.Sources)
	if len(f.Sources) == 0 {
		f.Sources = nil
	}
	e := entry{fw: f, comment: instanceComment(f), ranges: f.Sources}
	if !e.guarded() {
		e.ranges = []netip.Prefix{anywhere}
	}
	return e
}

// sameAs reports whether two entries are the same forward (groups aside).
func (e entry) sameAs(o entry) bool {
	return e.comment == o.comment && e.fw.InstanceID == o.fw.InstanceID && e.fw.HostPort == o.fw.HostPort &&
		e.fw.ContainerIP == o.fw.ContainerIP && e.fw.ContainerPort == o.fw.ContainerPort &&
		e.guarded() == o.guarded() && slices.Equal(e.ranges, o.ranges)
}

func (e entry) target() []byte { return addrPortKey(e.fw.ContainerIP, e.fw.ContainerPort) }

func (e entry) sourceElements() []nftables.SetElement {
	var els []nftables.SetElement
	for _, r := range e.ranges {
		els = append(els, nftables.SetElement{Key: groupSourceKey(e.group, r.Addr()), KeyEnd: groupSourceKey(e.group, lastAddr(r))})
	}
	return els
}

// each calls fn with every entry of the index as the updates leave it.
func each(idx map[int]entry, updates map[int]*entry, fn func(entry)) {
	for port, o := range idx {
		if _, changed := updates[port]; !changed {
			fn(o)
		}
	}
	for _, o := range updates {
		if o != nil {
			fn(*o)
		}
	}
}

// groupFor returns the group of e's ranges in the index, or the smallest
// group number no forward of the index uses, and whether the group is new.
func groupFor(e entry, idx map[int]entry) (uint32, bool) {
	used := map[uint32]bool{}
	for _, o := range idx {
		if slices.Equal(o.ranges, e.ranges) {
			return o.group, false
		}
		used[o.group] = true
	}
	g := uint32(0)
	for used[g] {
		g++
	}
	return g, true
}

// add queues the elements of an entry (its group's ranges when newGroup).
func (l layout) add(c *nftables.Conn, e entry, newGroup bool) error {
	errs := []error{
		c.SetAddElements(l.forwards, []nftables.SetElement{{Key: portKey(e.fw.HostPort), Val: e.target(), Comment: e.comment}}),
		c.SetAddElements(l.groups, []nftables.SetElement{{Key: portKey(e.fw.HostPort), Val: binary.BigEndian.AppendUint32(nil, e.group)}}),
		c.SetAddElements(l.targets, []nftables.SetElement{{Key: e.target()}}),
	}
	if newGroup {
		errs = append(errs, c.SetAddElements(l.sources, e.sourceElements()))
	}
	if e.guarded() {
		errs = append(errs,
			c.SetAddElements(l.guardedPorts, []nftables.SetElement{{Key: portKey(e.fw.HostPort)}}),
			c.SetAddElements(l.guardedTargets, []nftables.SetElement{{Key: e.target()}}))
	}
	return errors.Join(errs...)
}

// remove queues the deletion of an entry's elements; a target or a group
// that another forward still uses (in the index with its updates) stays.
func (l layout) remove(c *nftables.Conn, e entry, idx map[int]entry, updates map[int]*entry) error {
	errs := []error{
		c.SetDeleteElements(l.forwards, []nftables.SetElement{{Key: portKey(e.fw.HostPort)}}),
		c.SetDeleteElements(l.groups, []nftables.SetElement{{Key: portKey(e.fw.HostPort)}}),
	}
	var used, guardedUsed, groupUsed bool
	each(idx, updates, func(o entry) {
		if o.fw.ContainerIP == e.fw.ContainerIP && o.fw.ContainerPort == e.fw.ContainerPort {
			used = true
			guardedUsed = guardedUsed || o.guarded()
		}
		groupUsed = groupUsed || o.group == e.group
	})
	if !used {
		errs = append(errs, c.SetDeleteElements(l.targets, []nftables.SetElement{{Key: e.target()}}))
	}
	if !groupUsed {
		errs = append(errs, c.SetDeleteElements(l.sources, e.sourceElements()))
	}
	if e.guarded() {
		errs = append(errs, c.SetDeleteElements(l.guardedPorts, []nftables.SetElement{{Key: portKey(e.fw.HostPort)}}))
		if !guardedUsed {
			errs = append(errs, c.SetDeleteElements(l.guardedTargets, []nftables.SetElement{{Key: e.target()}}))
		}
	}
	return errors.Join(errs...)
}

// read returns the forwards the table holds, by host port.
func (l layout) read(c *nftables.Conn) (map[int]entry, error) {
	elements := map[string][]nftables.SetElement{}
	for _, s := range []*nftables.Set{l.forwards, l.groups, l.sources, l.guardedPorts} {
		els, err := c.GetSetElements(s)
		if err != nil {
			return nil, fmt.Errorf("reading %s of table %s: %w", s.Name, l.table.Name, err)
		}
		elements[s.Name] = els
	}
	ranges := map[uint32][]netip.Prefix{}
	for _, el := range elements[setSources] {
		if len(el.Key) != 8 || len(el.KeyEnd) != 8 {
			continue
		}
		g := binary.BigEndian.Uint32(el.Key)
		if p, ok := rangePrefix(netip.AddrFrom4([4]byte(el.Key[4:])), netip.AddrFrom4([4]byte(el.KeyEnd[4:]))); ok {
			ranges[g] = append(ranges[g], p)
		}
	}
	group := map[int]uint32{}
	for _, el := range elements[setGroups] {
		if len(el.Key) >= 2 && len(el.Val) >= 4 {
			group[int(binary.BigEndian.Uint16(el.Key))] = binary.BigEndian.Uint32(el.Val)
		}
	}
	isGuarded := map[int]bool{}
	for _, el := range elements[setGuardedPorts] {
		if len(el.Key) >= 2 {
			isGuarded[int(binary.BigEndian.Uint16(el.Key))] = true
		}
	}
	idx := map[int]entry{}
	for _, el := range elements[setForwards] {
		tags := commentTags(el.Comment)
		ip, cport, ok := parseAddrPort(el.Val)
		if tags == nil || !ok || len(el.Key) < 2 {
			continue
		}
		port := int(binary.BigEndian.Uint16(el.Key))
		g := group[port]
		e := entry{comment: el.Comment, group: g, ranges: slices.Clone(ranges[g]), fw: Forward{
			InstanceID: tags["instance"], EnvironmentID: tags["environment"], ContainerID: tags["container"],
			HostPort: port, ContainerIP: ip, ContainerPort: cport,
		}}
		slices.SortFunc(e.ranges, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
		if isGuarded[port] {
			e.fw.Sources = e.ranges
		}
		idx[port] = e
	}
	return idx, nil
}
