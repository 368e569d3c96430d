package firewall

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// The table of one sidecar, family ip:
//
//	map forwards_<g>    host port → container address . port, commented with the
//	                    instance, for the forwards of source group g (forwards with the
//	                    same sources share one)
//	map guarded_ports   host ports forwarded only for their sources → drop (the rest)
//	set targets         container address . port of every forward (masquerade from loopback)
//	set guarded_targets the same, of the guarded forwards (drop what was not forwarded)
//
// and base chains that read them: DNAT in prerouting and output before
// Docker's (priority dstnat-1: the first NAT binding of a connection wins),
// one rule per source range of each group, commented with both (which is
// how the groups are read back); masquerade in postrouting; drops in forward
// and input. All are hash tables (maps rather than sets of ports: the
// kernel keeps a set of 2-byte keys as a bitmap, whose changes walk every
// element): adding or removing a forward is one transaction of a few
// elements, whatever the number of others. The rules
// change only when a group comes or goes (the sidecar gives every forward
// the same sources: one group). An interval set of source ranges keyed with
// the port or the group was the alternative: its updates cost in
// proportion to its size (130 ms per delete at 10 000 elements), and the
// nft command cannot print a rule that concatenates a map's value.
const (
	forwardsPrefix    = "forwards_"
	setGuardedPorts   = "guarded_ports"
	setTargets        = "targets"
	setGuardedTargets = "guarded_targets"
)

// layout is the objects of a sidecar's table.
type layout struct {
	table                                           *nftables.Table
	guardedPorts, targets, guardedTargets           *nftables.Set
	prerouting, output, postrouting, forward, input *nftables.Chain
}

var addrPort = nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetService)

func layoutFor(name string) layout {
	t := &nftables.Table{Name: name, Family: nftables.TableFamilyIPv4}
	chain := func(name string, typ nftables.ChainType, hook *nftables.ChainHook, prio nftables.ChainPriority) *nftables.Chain {
		return &nftables.Chain{Name: name, Table: t, Type: typ, Hooknum: hook, Priority: nftables.ChainPriorityRef(prio)}
	}
	return layout{
		table:          t,
		guardedPorts:   &nftables.Set{Table: t, Name: setGuardedPorts, IsMap: true, KeyType: nftables.TypeInetService, DataType: nftables.TypeVerdict},
		targets:        &nftables.Set{Table: t, Name: setTargets, Concatenation: true, KeyType: addrPort},
		guardedTargets: &nftables.Set{Table: t, Name: setGuardedTargets, Concatenation: true, KeyType: addrPort},
		prerouting:     chain("prerouting", nftables.ChainTypeNAT, nftables.ChainHookPrerouting, -101),
		output:         chain("output", nftables.ChainTypeNAT, nftables.ChainHookOutput, -101),
		postrouting:    chain("postrouting", nftables.ChainTypeNAT, nftables.ChainHookPostrouting, 99),
		forward:        chain("forward", nftables.ChainTypeFilter, nftables.ChainHookForward, -1),
		input:          chain("input", nftables.ChainTypeFilter, nftables.ChainHookInput, -1),
	}
}

func (l layout) sets() []*nftables.Set {
	return []*nftables.Set{l.guardedPorts, l.targets, l.guardedTargets}
}

// forwardsMap is the map of a source group's forwards.
func (l layout) forwardsMap(g uint32) *nftables.Set {
	return &nftables.Set{Table: l.table, Name: forwardsPrefix + strconv.FormatUint(uint64(g), 10), IsMap: true, KeyType: nftables.TypeInetService, DataType: addrPort}
}

// Registers: reg 1 holds a key or a map's value (an address or a group
// and, in its second 32-bit word, reg 9, a port or an address); reg 2 the
// conntrack mark.
const (
	verdictReg, reg1, reg2, reg9 = 0, 1, 2, 9
	tcpDport                     = 2      // offset in the TCP header
	ipSaddr, ipDaddr             = 12, 16 // offsets in the IPv4 header
)

func isTCP() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{unix.IPPROTO_TCP}},
	}
}

// addrAndDport reads the address at an IPv4 header offset into reg 1 and the TCP
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

// dnatRule forwards a host port of a group, to a local address, from a
// source in the range (any, for 0.0.0.0/0), and marks the connection.
func (l layout) dnatRule(chain *nftables.Chain, g uint32, r netip.Prefix) *nftables.Rule {
	e := isTCP()
	e = append(e,
		&expr.Fib{Register: reg1, FlagDADDR: true, ResultADDRTYPE: true},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: native32(unix.RTN_LOCAL)},
	)
	if r.Bits() > 0 {
		mask := net.CIDRMask(r.Bits(), 32)
		addr := r.Masked().Addr().As4()
		e = append(e,
			&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: ipSaddr, Len: 4},
			&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4, Mask: mask, Xor: []byte{0, 0, 0, 0}},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: addr[:]},
		)
	}
	e = append(e, dport(),
		&expr.Lookup{SourceRegister: reg1, DestRegister: reg1, IsDestRegSet: true, SetName: l.forwardsMap(g).Name},
		&expr.Ct{Register: reg2, Key: expr.CtKeyMARK},
		&expr.Bitwise{SourceRegister: reg2, DestRegister: reg2, Len: 4, Mask: native32(^uint32(forwardMark)), Xor: native32(forwardMark)},
		&expr.Ct{Register: reg2, Key: expr.CtKeyMARK, SourceRegister: true},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: reg1, RegProtoMin: reg9},
	)
	comment := fmt.Sprintf("%s group=%d source=%s", commentPrefix, g, r)
	return &nftables.Rule{Table: l.table, Chain: chain, Exprs: e, UserData: userdata.AppendString(nil, userdata.TypeComment, comment)}
}

// groupOfRule reads a DNAT rule's comment: its group and source range.
func groupOfRule(r *nftables.Rule) (uint32, netip.Prefix, bool) {
	comment, ok := userdata.GetString(r.UserData, userdata.TypeComment)
	if !ok {
		return 0, netip.Prefix{}, false
	}
	var g uint32
	var src string
	if n, err := fmt.Sscanf(comment, commentPrefix+" group=%d source=%s", &g, &src); err != nil || n != 2 {
		return 0, netip.Prefix{}, false
	}
	p, err := netip.ParsePrefix(src)
	return g, p, err == nil
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
	return append(e, dport(), &expr.Lookup{SourceRegister: reg1, DestRegister: verdictReg, IsDestRegSet: true, SetName: l.guardedPorts.Name})
}

// create makes the table, its sets and chains, and (again) the rules of
// the chains that do not depend on the groups, in one transaction; the
// sets' elements and the DNAT rules stay.
func (l layout) create(c *nftables.Conn) error {
	c.AddTable(l.table)
	for _, s := range l.sets() {
		if err := c.AddSet(s, nil); err != nil {
			return err
		}
	}
	for _, ch := range []*nftables.Chain{l.prerouting, l.output} {
		c.AddChain(ch)
	}
	for _, r := range []struct {
		chain *nftables.Chain
		exprs []expr.Any
	}{{l.postrouting, l.masqRule()}, {l.forward, l.dropUnforwardedRule()}, {l.input, l.dropInputRule()}} {
		c.AddChain(r.chain)
		c.FlushChain(r.chain)
		c.AddRule(&nftables.Rule{Table: l.table, Chain: r.chain, Exprs: r.exprs})
	}
	return nil
}

// Element encodings: a port is 2 bytes, big-endian; an address . port is
// 8 (the port padded to a 32-bit register).
func portKey(p int) []byte { return binary.BigEndian.AppendUint16(nil, uint16(p)) }

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
	ranges  []netip.Prefix // its group's source ranges (0.0.0.0/0: any)
}

func (e entry) guarded() bool { return len(e.fw.Sources) > 0 }

// entryOf is the entry of a forward, without its group (see groupFor).
func entryOf(f Forward) entry {
	f.Pin = nil // the bridge table's, not this one's
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

// index is the table's forwards by host port, with what they share
// counted, so that a change costs in proportion to what it changes.
type index struct {
	byPort                  map[int]entry
	targets, guardedTargets map[string]int // forwards by target
	groups                  map[uint32]int // forwards by source group
	ranges                  map[uint32][]netip.Prefix
	groupOf                 map[string]uint32 // groups by their ranges
}

func newIndex() *index {
	return &index{byPort: map[int]entry{}, targets: map[string]int{}, guardedTargets: map[string]int{},
		groups: map[uint32]int{}, ranges: map[uint32][]netip.Prefix{}, groupOf: map[string]uint32{}}
}

func rangesKey(rs []netip.Prefix) string { return fmt.Sprint(rs) }

// count adds n (1 or -1) to the counts of what e uses.
func (x *index) count(e entry, n int) {
	t := string(e.target())
	x.targets[t] += n
	if e.guarded() {
		x.guardedTargets[t] += n
	}
	x.groups[e.group] += n
	x.ranges[e.group] = e.ranges
	x.groupOf[rangesKey(e.ranges)] = e.group
	for _, m := range []map[string]int{x.targets, x.guardedTargets} {
		if m[t] == 0 {
			delete(m, t)
		}
	}
	if x.groups[e.group] == 0 {
		delete(x.groups, e.group)
		delete(x.ranges, e.group)
		delete(x.groupOf, rangesKey(e.ranges))
	}
}

// targetsAddr reports whether a forward leads to the container address.
func (x *index) targetsAddr(a netip.Addr) bool {
	for _, e := range x.byPort {
		if e.fw.ContainerIP == a {
			return true
		}
	}
	return false
}

func (x *index) put(e entry) {
	if old, ok := x.byPort[e.fw.HostPort]; ok {
		x.count(old, -1)
	}
	x.byPort[e.fw.HostPort] = e
	x.count(e, 1)
}

func (x *index) drop(port int) {
	if old, ok := x.byPort[port]; ok {
		x.count(old, -1)
		delete(x.byPort, port)
	}
}

// update applies updates (a forward by host port, nil for none).
func (x *index) update(updates map[int]*entry) {
	for port, e := range updates {
		if e == nil {
			x.drop(port)
		} else {
			x.put(*e)
		}
	}
}

// groupFor returns the group of e's ranges, or else the smallest group
// number no forward uses.
func (x *index) groupFor(e entry) uint32 {
	if g, ok := x.groupOf[rangesKey(e.ranges)]; ok {
		return g
	}
	g := uint32(0)
	for x.groups[g] > 0 {
		g++
	}
	return g
}

// apply queues, as one transaction, what turns the table from the index
// into the index with its updates: sets of new groups first, the elements,
// the DNAT rules again if the groups changed, and the sets of the groups
// gone last (no rule uses them by then).
func (l layout) apply(c *nftables.Conn, x *index, updates map[int]*entry) error {
	// The counts after the change, of what the change touches.
	targets, guardedTargets, groups := map[string]int{}, map[string]int{}, map[uint32]int{}
	ranges := map[uint32][]netip.Prefix{}
	touch := func(e entry, n int) {
		t := string(e.target())
		if _, ok := targets[t]; !ok {
			targets[t], guardedTargets[t] = x.targets[t], x.guardedTargets[t]
		}
		if _, ok := groups[e.group]; !ok {
			groups[e.group] = x.groups[e.group]
		}
		targets[t] += n
		if e.guarded() {
			guardedTargets[t] += n
		}
		groups[e.group] += n
		ranges[e.group] = e.ranges
	}
	for port, u := range updates {
		if old, had := x.byPort[port]; had {
			touch(old, -1)
		}
		if u != nil {
			touch(*u, 1)
		}
	}
	var errs []error
	regroup := false
	for g, n := range groups {
		if n > 0 && x.groups[g] == 0 {
			regroup = true
			errs = append(errs, c.AddSet(l.forwardsMap(g), nil))
		}
		regroup = regroup || n == 0 && x.groups[g] > 0
	}
	for port, u := range updates {
		old, had := x.byPort[port]
		if had && u != nil && old.sameAs(*u) && old.group == u.group {
			continue
		}
		if had {
			errs = append(errs, c.SetDeleteElements(l.forwardsMap(old.group), []nftables.SetElement{{Key: portKey(port)}}))
			if old.guarded() {
				errs = append(errs, c.SetDeleteElements(l.guardedPorts, []nftables.SetElement{{Key: portKey(port)}}))
			}
		}
		if u != nil {
			errs = append(errs, l.add(c, *u))
		}
	}
	// A target is deleted once, when the last forward to it goes.
	for t, n := range targets {
		if n == 0 && x.targets[t] > 0 {
			errs = append(errs, c.SetDeleteElements(l.targets, []nftables.SetElement{{Key: []byte(t)}}))
		}
		if guardedTargets[t] == 0 && x.guardedTargets[t] > 0 {
			errs = append(errs, c.SetDeleteElements(l.guardedTargets, []nftables.SetElement{{Key: []byte(t)}}))
		}
	}
	if regroup {
		after := map[uint32][]netip.Prefix{}
		for g := range x.groups {
			after[g] = x.ranges[g]
		}
		for g, n := range groups {
			if n > 0 {
				after[g] = ranges[g]
			} else {
				delete(after, g)
			}
		}
		l.dnatRules(c, after)
		for g, n := range groups {
			if n == 0 && x.groups[g] > 0 {
				c.DelSet(l.forwardsMap(g))
			}
		}
	}
	return errors.Join(errs...)
}

// add queues the elements of an entry.
func (l layout) add(c *nftables.Conn, e entry) error {
	errs := []error{
		c.SetAddElements(l.forwardsMap(e.group), []nftables.SetElement{{Key: portKey(e.fw.HostPort), Val: e.target(), Comment: e.comment}}),
		c.SetAddElements(l.targets, []nftables.SetElement{{Key: e.target()}}),
	}
	if e.guarded() {
		errs = append(errs,
			c.SetAddElements(l.guardedPorts, []nftables.SetElement{{Key: portKey(e.fw.HostPort), VerdictData: &expr.Verdict{Kind: expr.VerdictDrop}}}),
			c.SetAddElements(l.guardedTargets, []nftables.SetElement{{Key: e.target()}}))
	}
	return errors.Join(errs...)
}

// dnatRules queues the DNAT rules of the groups, in place of those there.
func (l layout) dnatRules(c *nftables.Conn, groups map[uint32][]netip.Prefix) {
	ids := slices.Sorted(maps.Keys(groups))
	for _, ch := range []*nftables.Chain{l.prerouting, l.output} {
		c.FlushChain(ch)
		for _, g := range ids {
			for _, r := range groups[g] {
				c.AddRule(l.dnatRule(ch, g, r))
			}
		}
	}
}

// read returns the index of the forwards the table holds.
func (l layout) read(c *nftables.Conn) (*index, error) {
	elements := map[string][]nftables.SetElement{}
	sets, err := c.GetSets(l.table)
	if err != nil {
		return nil, fmt.Errorf("reading the sets of table %s: %w", l.table.Name, err)
	}
	for _, s := range sets {
		els, err := c.GetSetElements(s)
		if err != nil {
			return nil, fmt.Errorf("reading %s of table %s: %w", s.Name, l.table.Name, err)
		}
		elements[s.Name] = els
	}
	rules, err := c.GetRules(l.table, l.prerouting)
	if err != nil {
		return nil, fmt.Errorf("reading the rules of table %s: %w", l.table.Name, err)
	}
	ranges := map[uint32][]netip.Prefix{}
	for _, r := range rules {
		if g, p, ok := groupOfRule(r); ok {
			ranges[g] = append(ranges[g], p)
		}
	}
	isGuarded := map[int]bool{}
	for _, el := range elements[setGuardedPorts] {
		if len(el.Key) >= 2 {
			isGuarded[int(binary.BigEndian.Uint16(el.Key))] = true
		}
	}
	idx := newIndex()
	for name, els := range elements {
		g, err := strconv.ParseUint(strings.TrimPrefix(name, forwardsPrefix), 10, 32)
		if !strings.HasPrefix(name, forwardsPrefix) || err != nil {
			continue
		}
		for _, el := range els {
			tags := commentTags(el.Comment)
			ip, cport, ok := parseAddrPort(el.Val)
			if tags == nil || !ok || len(el.Key) < 2 {
				continue
			}
			port := int(binary.BigEndian.Uint16(el.Key))
			e := entry{comment: el.Comment, group: uint32(g), ranges: slices.Clone(ranges[uint32(g)]), fw: Forward{
				InstanceID: tags["instance"], EnvironmentID: tags["environment"], ContainerID: tags["container"],
				HostPort: port, ContainerIP: ip, ContainerPort: cport,
			}}
			slices.SortFunc(e.ranges, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
			if isGuarded[port] {
				e.fw.Sources = e.ranges
			}
			idx.put(e)
		}
	}
	return idx, nil
}
