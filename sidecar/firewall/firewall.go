package firewall

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"

	"github.com/coreos/go-iptables/iptables"
	"github.com/google/nftables"
)

// IPTables is the part of go-iptables the firewall uses.
type IPTables interface {
	ChainExists(table, chain string) (bool, error)
	NewChain(table, chain string) error
	ClearAndDeleteChain(table, chain string) error
	Exists(table, chain string, rulespec ...string) (bool, error)
	Insert(table, chain string, pos int, rulespec ...string) error
	AppendUnique(table, chain string, rulespec ...string) error
	DeleteIfExists(table, chain string, rulespec ...string) error
	List(table, chain string) ([]string, error)
	ClearChain(table, chain string) error
}

// Firewall manages one sidecar's table and chain.
type Firewall struct {
	ipt     IPTables
	nftOpts []nftables.ConnOption
	bridge  *Bridge // the layer-2 pins of the forwards' containers
	chains  Chains
	prefix  string
	table   layout
	mu      sync.Mutex
	// index is the table's forwards by host port, read from the kernel
	// when nil. Only this sidecar writes its table, so it stays true; a
	// change that fails reads it again and is tried once more.
	index *index
}

// New returns a firewall over the system's iptables and nftables.
func New(prefix string) (*Firewall, error) {
	ipt, err := iptables.New()
	if err != nil {
		return nil, fmt.Errorf("opening iptables: %w", err)
	}
	return NewWith(ipt, prefix), nil
}

// NewWith returns a firewall over the given iptables and nftables
// connection options (for tests: a network namespace).
func NewWith(ipt IPTables, prefix string, nftOpts ...nftables.ConnOption) *Firewall {
	c := ChainsFor(prefix)
	return &Firewall{ipt: ipt, nftOpts: nftOpts, chains: c, prefix: prefix, table: layoutFor(c.Table), bridge: NewBridge(prefix, nftOpts...)}
}

func (f *Firewall) conn() (*nftables.Conn, error) {
	c, err := nftables.New(f.nftOpts...)
	if err != nil {
		return nil, fmt.Errorf("opening nftables: %w", err)
	}
	return c, nil
}

// Setup creates the table (keeping the forwards it holds), the chain and
// the jump to it, if absent, and removes the chains of earlier sidecars.
func (f *Firewall) Setup() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.index = nil
	if err := f.removeLegacy(); err != nil {
		return err
	}
	c, err := f.conn()
	if err != nil {
		return err
	}
	if err = f.table.create(c); err == nil {
		err = c.Flush()
	}
	if err != nil {
		return fmt.Errorf("creating table %s: %w", f.chains.Table, err)
	}
	ch := f.chains.Forward
	ok, err := f.ipt.ChainExists("filter", ch)
	if err != nil {
		return fmt.Errorf("checking chain filter/%s: %w", ch, err)
	}
	if !ok {
		if err := f.ipt.NewChain("filter", ch); err != nil {
			return fmt.Errorf("creating chain filter/%s: %w", ch, err)
		}
	}
	if err := f.onlyAccept(); err != nil {
		return fmt.Errorf("setting the accept rule of filter/%s: %w", ch, err)
	}
	if err := f.setupPins(); err != nil {
		return err
	}
	for _, j := range f.chains.Jumps() {
		ok, err := f.ipt.Exists(j.Table, j.Chain, j.Spec...)
		if err != nil {
			return fmt.Errorf("checking jump from %s/%s: %w", j.Table, j.Chain, err)
		}
		if !ok {
			// First, so Docker's own rules (which drop unpublished
			// forwarded traffic) come after ours.
			if err := f.ipt.Insert(j.Table, j.Chain, 1, j.Spec...); err != nil {
				return fmt.Errorf("adding jump from %s/%s: %w", j.Table, j.Chain, err)
			}
		}
	}
	return nil
}

// setupPins makes the bridge table and drops the pins of containers that
// no forward leads to any more (their instance ended while no sidecar ran).
func (f *Firewall) setupPins() error {
	if err := f.bridge.Setup(); err != nil {
		return err
	}
	if err := f.load(); err != nil {
		return err
	}
	pins, err := f.bridge.Pins()
	if err != nil {
		return err
	}
	for _, p := range pins {
		if !f.index.targetsAddr(p.IP) {
			if err := f.bridge.Unpin(p); err != nil {
				return err
			}
		}
	}
	return nil
}

// onlyAccept makes the accept rule the chain's only rule. The chain of an
// earlier sidecar held rules per forward, drops among them, which would
// come before it; a chain as it should be is left alone, so a restart
// never leaves a moment without the rule.
func (f *Firewall) onlyAccept() error {
	a := f.chains.accept()
	lines, err := f.ipt.List(a.Table, a.Chain)
	if err != nil {
		return err
	}
	rules := 0
	for _, l := range lines {
		if strings.HasPrefix(l, "-A ") {
			rules++
		}
	}
	ok, err := f.ipt.Exists(a.Table, a.Chain, a.Spec...)
	if err != nil || ok && rules == 1 {
		return err
	}
	if rules > 0 {
		if err := f.ipt.ClearChain(a.Table, a.Chain); err != nil {
			return err
		}
	}
	return f.ipt.AppendUnique(a.Table, a.Chain, a.Spec...)
}

// Teardown removes the jump, the chain and the table with all its forwards
// (and the chains of earlier sidecars).
func (f *Firewall) Teardown() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.index = nil
	var errs []error
	for _, j := range f.chains.Jumps() {
		errs = append(errs, f.deleteJump(j))
	}
	errs = append(errs, f.deleteChain("filter", f.chains.Forward), f.removeLegacy(), f.bridge.Teardown())
	c, err := f.conn()
	if err == nil {
		// Added first, so that deleting it is no error when it is absent.
		c.AddTable(f.table.table)
		c.DelTable(f.table.table)
		err = c.Flush()
	}
	if err != nil {
		errs = append(errs, fmt.Errorf("deleting table %s: %w", f.chains.Table, err))
	}
	return errors.Join(errs...)
}

// removeLegacy removes the jumps to and the chains of earlier sidecars,
// which kept one iptables rule per forward.
func (f *Firewall) removeLegacy() error {
	var errs []error
	for _, c := range legacyChains(f.prefix) {
		ok, err := f.ipt.ChainExists(c.table, c.chain)
		if err != nil || !ok {
			errs = append(errs, err)
			continue
		}
		tag := []string{"-m", "comment", "--comment", commentPrefix}
		local := []string{"-m", "addrtype", "--dst-type", "LOCAL"}
		var jumps []Rule
		switch c.table + "/" + c.chain {
		case "nat/" + f.prefix + "-DNAT":
			jumps = []Rule{{"nat", "PREROUTING", concat(local, tag, []string{"-j", c.chain})}, {"nat", "OUTPUT", concat(local, tag, []string{"-j", c.chain})}}
		case "nat/" + f.prefix + "-SNAT":
			jumps = []Rule{{"nat", "POSTROUTING", concat(tag, []string{"-j", c.chain})}}
		default:
			jumps = []Rule{{"filter", "INPUT", concat(tag, []string{"-j", c.chain})}}
		}
		for _, j := range jumps {
			errs = append(errs, f.ipt.DeleteIfExists(j.Table, j.Chain, j.Spec...))
		}
		errs = append(errs, f.ipt.ClearAndDeleteChain(c.table, c.chain))
	}
	return errors.Join(errs...)
}

func (f *Firewall) deleteJump(j Rule) error {
	// A jump to a chain that does not exist cannot exist either, and
	// iptables fails to even look for it ("Chain ... does not exist"): on
	// a clean machine there is nothing to remove.
	if ok, err := f.ipt.ChainExists(j.Table, j.Spec[len(j.Spec)-1]); err == nil && !ok {
		return nil
	}
	return f.ipt.DeleteIfExists(j.Table, j.Chain, j.Spec...)
}

func (f *Firewall) deleteChain(table, chain string) error {
	if ok, _ := f.ipt.ChainExists(table, chain); ok {
		return f.ipt.ClearAndDeleteChain(table, chain)
	}
	return nil
}

func concat(parts ...[]string) []string {
	var out []string
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// change applies, as one transaction, the updates plan computes from the
// index (a forward by host port, nil for none); a failure (an index that
// no longer matches the kernel) reads the table again and tries once more.
func (f *Firewall) change(plan func(x *index) map[int]*entry) error {
	var err error
	for range 2 {
		if err = f.load(); err != nil {
			return err
		}
		updates := plan(f.index)
		if len(updates) == 0 {
			return nil
		}
		var c *nftables.Conn
		if c, err = f.conn(); err != nil {
			return err
		}
		if err = f.table.apply(c, f.index, updates); err == nil {
			err = c.Flush()
		}
		if err == nil {
			f.index.update(updates)
			return nil
		}
		f.index = nil
	}
	return err
}

// load reads the table into the index if it is not there.
func (f *Firewall) load() error {
	if f.index != nil {
		return nil
	}
	c, err := f.conn()
	if err != nil {
		return err
	}
	idx, err := f.table.read(c)
	if err != nil {
		return err
	}
	f.index = idx
	return nil
}

// Add installs a forward; adding it again changes nothing. A host port
// forwards to one instance only: the forward of the port for any other
// instance (one the control plane ended while this host was still starting
// it, and whose port it gave to another customer) is removed in the same
// transaction.
func (f *Firewall) Add(fw Forward) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	// Pinned first: no moment forwards to a container a neighbour can
	// impersonate.
	if fw.Pin != nil {
		if err := f.bridge.Pin(*fw.Pin); err != nil {
			return fmt.Errorf("pinning the container of instance %s: %w", fw.InstanceID, err)
		}
	}
	want := entryOf(fw)
	err := f.change(func(x *index) map[int]*entry {
		if old, had := x.byPort[fw.HostPort]; had && old.sameAs(want) {
			return nil
		}
		e := want
		e.group = x.groupFor(e)
		return map[int]*entry{fw.HostPort: &e}
	})
	if err != nil {
		// A pin no forward leads to would hold the address for a container
		// Docker may give it to next.
		if fw.Pin != nil && f.load() == nil && !f.index.targetsAddr(fw.Pin.IP) {
			_ = f.bridge.Unpin(*fw.Pin)
		}
		return fmt.Errorf("adding forward of port %d for instance %s: %w", fw.HostPort, fw.InstanceID, err)
	}
	return nil
}

// Remove deletes a forward; removing one that is absent is not an error.
func (f *Firewall) Remove(fw Forward) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.removeWhere(func(e entry) bool { return e.fw.HostPort == fw.HostPort && e.fw.InstanceID == fw.InstanceID }); err != nil {
		return fmt.Errorf("removing forward of port %d for instance %s: %w", fw.HostPort, fw.InstanceID, err)
	}
	return nil
}

// RemoveInstance deletes every forward of the instance, whatever its ports;
// it is how an instance whose details are lost is cleaned up.
func (f *Firewall) RemoveInstance(instanceID string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.removeWhere(func(e entry) bool { return e.fw.InstanceID == instanceID }); err != nil {
		return fmt.Errorf("removing the forwards of instance %s: %w", instanceID, err)
	}
	return nil
}

// removeWhere removes the forwards that match, and the pins of the
// containers no forward leads to any more. It looks at every forward of
// the index, in memory (tens of microseconds at 10 000); the kernel
// changes only the matching elements.
func (f *Firewall) removeWhere(match func(entry) bool) error {
	var gone []netip.Addr
	err := f.change(func(x *index) map[int]*entry {
		updates := map[int]*entry{}
		gone = gone[:0]
		for port, e := range x.byPort {
			if match(e) {
				updates[port] = nil
				gone = append(gone, e.fw.ContainerIP)
			}
		}
		return updates
	})
	if err != nil {
		return err
	}
	for _, a := range gone {
		if !f.index.targetsAddr(a) {
			if err := f.bridge.UnpinAddr(a); err != nil {
				return err
			}
		}
	}
	return nil
}

// Forwards returns the forwards the sidecar's table makes, by instance, as
// the kernel holds them (with the environment and container their comments
// name, when they do).
func (f *Firewall) Forwards() (map[string]Forward, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.index = nil
	if err := f.load(); err != nil {
		return nil, err
	}
	forwards := map[string]Forward{}
	for _, e := range f.index.byPort {
		forwards[e.fw.InstanceID] = e.fw
	}
	return forwards, nil
}

// Instances returns the instances that have forwards in the sidecar's table.
func (f *Firewall) Instances() (map[string]bool, error) {
	forwards, err := f.Forwards()
	if err != nil {
		return nil, err
	}
	ids := map[string]bool{}
	for id := range forwards {
		ids[id] = true
	}
	return ids, nil
}
