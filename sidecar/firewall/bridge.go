package firewall

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Pin is an instance's container on the Docker bridge: the bridge port it
// is plugged into (the host side of its veth, by interface index), the one
// MAC and IPv4 address it sends as, Jupyter's port in it, and its gateway
// (the bridge's own address, which no container may claim: none can then
// stand between its neighbours and the host).
type Pin struct {
	Port    int
	MAC     net.HardwareAddr
	IP      netip.Addr
	Jupyter int
	Gateway netip.Addr
}

// Bridge pins the instances' containers at layer 2, in a table of family
// bridge of its own (so it holds whether or not br_netfilter hands bridged
// frames to the ip family's hooks):
//
//	set guarded_ip    the pinned containers' addresses
//	set guarded_mac   their MACs
//	set owned_ip      bridge port . address: where each address may come from
//	set owned_mac     bridge port . MAC
//	set jupyter       address . port of each pinned Jupyter
//
// In prerouting, a frame that claims a pinned address or MAC (as its
// Ethernet source, its ARP sender, or its IPv4 source) from any other port
// than the container's is dropped: a neighbour cannot answer ARP for it,
// take over its MAC in the bridge's forwarding table, or spoof its packets,
// so what the host sends it (the proxy's requests, and the sidecar's probes)
// reaches it alone. In forward (frames bridged from one container to
// another), TCP to a pinned Jupyter is dropped: only the host's forward
// reaches it.
type Bridge struct {
	nftOpts []nftables.ConnOption
	table   *nftables.Table
	mu      sync.Mutex

	guardedIP, guardedMAC, ownedIP, ownedMAC, jupyter *nftables.Set
	prerouting, forward                               *nftables.Chain
}

// NewBridge returns the layer-2 pins of a sidecar's table prefix (the
// table is named <prefix>-L2).
func NewBridge(prefix string, nftOpts ...nftables.ConnOption) *Bridge {
	t := &nftables.Table{Name: prefix + "-L2", Family: nftables.TableFamilyBridge}
	set := func(name string, key nftables.SetDatatype) *nftables.Set {
		return &nftables.Set{Table: t, Name: name, KeyType: key}
	}
	concat := func(name string, key nftables.SetDatatype) *nftables.Set {
		s := set(name, key)
		s.Concatenation = true
		return s
	}
	prio := nftables.ChainPriorityRef(-200) // NF_BR_PRI_FILTER_BRIDGED
	accept := nftables.ChainPolicyAccept
	return &Bridge{
		nftOpts: nftOpts, table: t,
		guardedIP:  set("guarded_ip", nftables.TypeIPAddr),
		guardedMAC: set("guarded_mac", nftables.TypeEtherAddr),
		ownedIP:    concat("owned_ip", nftables.MustConcatSetType(nftables.TypeIFIndex, nftables.TypeIPAddr)),
		ownedMAC:   concat("owned_mac", nftables.MustConcatSetType(nftables.TypeIFIndex, nftables.TypeEtherAddr)),
		jupyter:    concat("jupyter", addrPort),
		prerouting: &nftables.Chain{Name: "prerouting", Table: t, Type: nftables.ChainTypeFilter, Hooknum: nftables.ChainHookPrerouting, Priority: prio, Policy: &accept},
		forward:    &nftables.Chain{Name: "forward", Table: t, Type: nftables.ChainTypeFilter, Hooknum: nftables.ChainHookForward, Priority: prio, Policy: &accept},
	}
}

func (b *Bridge) sets() []*nftables.Set {
	return []*nftables.Set{b.guardedIP, b.guardedMAC, b.ownedIP, b.ownedMAC, b.jupyter}
}

// Offsets in the headers a rule reads.
const (
	ethSaddr      = 6  // link layer
	arpSenderMAC  = 8  // network header of an ARP (Ethernet/IPv4) packet
	arpSenderIP   = 14 // the same
	ipProtoOffset = 9  // IPv4 header
	etherTypeARP  = 0x0806
	etherTypeIPv4 = 0x0800
)

// claims is a rule that drops a frame whose field (at base+offset, len
// bytes) is in guarded but does not come from its owner's bridge port.
func claims(proto uint16, base expr.PayloadBase, offset, length uint32, guarded, owned *nftables.Set) []expr.Any {
	var e []expr.Any
	if proto != 0 {
		e = append(e,
			&expr.Meta{Key: expr.MetaKeyPROTOCOL, Register: reg1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: binary.BigEndian.AppendUint16(nil, proto)})
	}
	return append(e,
		&expr.Payload{DestRegister: reg1, Base: base, Offset: offset, Len: length},
		&expr.Lookup{SourceRegister: reg1, SetName: guarded.Name, SetID: guarded.ID},
		&expr.Meta{Key: expr.MetaKeyIIF, Register: reg1},
		&expr.Payload{DestRegister: reg9, Base: base, Offset: offset, Len: length},
		&expr.Lookup{SourceRegister: reg1, SetName: owned.Name, SetID: owned.ID, Invert: true},
		&expr.Verdict{Kind: expr.VerdictDrop},
	)
}

// toJupyter drops bridged TCP to a pinned Jupyter.
func (b *Bridge) toJupyter() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyPROTOCOL, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: binary.BigEndian.AppendUint16(nil, etherTypeIPv4)},
		&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: ipProtoOffset, Len: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: ipDaddr, Len: 4},
		&expr.Payload{DestRegister: reg9, Base: expr.PayloadBaseTransportHeader, Offset: tcpDport, Len: 2},
		&expr.Lookup{SourceRegister: reg1, SetName: b.jupyter.Name, SetID: b.jupyter.ID},
		&expr.Verdict{Kind: expr.VerdictDrop},
	}
}

func (b *Bridge) conn() (*nftables.Conn, error) {
	c, err := nftables.New(b.nftOpts...)
	if err != nil {
		return nil, fmt.Errorf("opening nftables: %w", err)
	}
	return c, nil
}

// Setup creates the table, its sets and chains and (again) their rules,
// keeping the pins the sets hold.
func (b *Bridge) Setup() error {
	return b.batch("creating", func(c *nftables.Conn) error {
		c.AddTable(b.table)
		for _, s := range b.sets() {
			if err := c.AddSet(s, nil); err != nil {
				return err
			}
		}
		c.AddChain(b.prerouting)
		c.FlushChain(b.prerouting)
		for _, r := range [][]expr.Any{
			claims(0, expr.PayloadBaseLLHeader, ethSaddr, 6, b.guardedMAC, b.ownedMAC),
			claims(etherTypeARP, expr.PayloadBaseNetworkHeader, arpSenderMAC, 6, b.guardedMAC, b.ownedMAC),
			claims(etherTypeARP, expr.PayloadBaseNetworkHeader, arpSenderIP, 4, b.guardedIP, b.ownedIP),
			claims(etherTypeIPv4, expr.PayloadBaseNetworkHeader, ipSaddr, 4, b.guardedIP, b.ownedIP),
		} {
			c.AddRule(&nftables.Rule{Table: b.table, Chain: b.prerouting, Exprs: r})
		}
		c.AddChain(b.forward)
		c.FlushChain(b.forward)
		c.AddRule(&nftables.Rule{Table: b.table, Chain: b.forward, Exprs: b.toJupyter()})
		return nil
	})
}

// elements are a pin's entries, set by set.
func (b *Bridge) elements(p Pin) map[*nftables.Set][]nftables.SetElement {
	ip := p.IP.As4()
	mac := make([]byte, 8) // padded to 32-bit registers in a concatenation
	copy(mac, p.MAC)
	port := native32(uint32(p.Port))
	return map[*nftables.Set][]nftables.SetElement{
		b.guardedIP:  {{Key: ip[:]}},
		b.guardedMAC: {{Key: append([]byte(nil), p.MAC...)}},
		b.ownedIP:    {{Key: append(port, ip[:]...)}},
		b.ownedMAC:   {{Key: append(append([]byte(nil), port...), mac...)}},
		b.jupyter:    {{Key: addrPortKey(p.IP, p.Jupyter)}},
	}
}

// valid checks a pin to add (with its gateway) or to remove (without).
func (p Pin) valid(adding bool) error {
	if p.Port <= 0 || len(p.MAC) != 6 || !p.IP.Is4() || p.Jupyter <= 0 || p.Jupyter > 65535 || adding && !p.Gateway.Is4() {
		return fmt.Errorf("pin %+v: want a bridge port, a MAC, IPv4 addresses and a port", p)
	}
	return nil
}

// Pin adds a container's pin; adding it again changes nothing.
func (b *Bridge) Pin(p Pin) error {
	if err := p.valid(true); err != nil {
		return err
	}
	gw := p.Gateway.As4()
	return b.batch("pinning in", func(c *nftables.Conn) error {
		for s, els := range b.elements(p) {
			if err := c.SetAddElements(s, els); err != nil {
				return err
			}
		}
		// Never removed but with the table: every pin on the bridge needs it.
		return c.SetAddElements(b.guardedIP, []nftables.SetElement{{Key: gw[:]}})
	})
}

// Unpin removes a container's pin; removing an absent one is no error (it
// is added first in the same transaction, as a table is by Teardown).
func (b *Bridge) Unpin(p Pin) error {
	if err := p.valid(false); err != nil {
		return err
	}
	return b.batch("unpinning in", func(c *nftables.Conn) error {
		for s, els := range b.elements(p) {
			if err := c.SetAddElements(s, els); err != nil {
				return err
			}
			if err := c.SetDeleteElements(s, els); err != nil {
				return err
			}
		}
		return nil
	})
}

// UnpinAddr removes the pin of the container at addr, if any: the sidecar
// knows a forward's container address when it ends it, not always the
// rest.
func (b *Bridge) UnpinAddr(addr netip.Addr) error {
	pins, err := b.Pins()
	if err != nil {
		return err
	}
	for _, p := range pins {
		if p.IP == addr {
			if err := b.Unpin(p); err != nil {
				return err
			}
		}
	}
	return nil
}

// batch makes f's changes in one transaction; doing names it in errors.
func (b *Bridge) batch(doing string, f func(*nftables.Conn) error) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	c, err := b.conn()
	if err != nil {
		return err
	}
	if err := f(c); err != nil {
		return err
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("%s table bridge %s: %w", doing, b.table.Name, err)
	}
	return nil
}

// Pins returns the pins the table holds (their Jupyter port and gateway
// as well, read back from its sets).
func (b *Bridge) Pins() ([]Pin, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	c, err := b.conn()
	if err != nil {
		return nil, err
	}
	read := func(s *nftables.Set) ([]nftables.SetElement, error) {
		els, err := c.GetSetElements(s)
		if err != nil {
			return nil, fmt.Errorf("reading table bridge %s: %w", b.table.Name, err)
		}
		return els, nil
	}
	owned, err := read(b.ownedIP)
	if err != nil {
		return nil, err
	}
	macs, err := read(b.ownedMAC)
	if err != nil {
		return nil, err
	}
	ports, err := read(b.jupyter)
	if err != nil {
		return nil, err
	}
	var pins []Pin
	for _, e := range owned {
		if len(e.Key) != 8 {
			continue
		}
		p := Pin{Port: int(binaryutil.NativeEndian.Uint32(e.Key[:4])), IP: netip.AddrFrom4([4]byte(e.Key[4:8]))}
		for _, m := range macs {
			if len(m.Key) == 12 && int(binaryutil.NativeEndian.Uint32(m.Key[:4])) == p.Port {
				p.MAC = net.HardwareAddr(append([]byte(nil), m.Key[4:10]...))
			}
		}
		for _, j := range ports {
			if a, port, ok := parseAddrPort(j.Key); ok && a == p.IP {
				p.Jupyter = port
			}
		}
		pins = append(pins, p)
	}
	return pins, nil
}

// Teardown removes the table with every pin (added first, so that
// deleting it is no error when it is absent).
func (b *Bridge) Teardown() error {
	return b.batch("deleting", func(c *nftables.Conn) error {
		c.AddTable(b.table)
		c.DelTable(b.table)
		return nil
	})
}
