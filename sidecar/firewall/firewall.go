package firewall

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/coreos/go-iptables/iptables"
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
}

// Firewall manages one sidecar's chains.
type Firewall struct {
	ipt    IPTables
	chains Chains
	mu     sync.Mutex
}

// New returns a firewall over the system's iptables.
func New(prefix string) (*Firewall, error) {
	ipt, err := iptables.New()
	if err != nil {
		return nil, fmt.Errorf("opening iptables: %w", err)
	}
	return &Firewall{ipt: ipt, chains: ChainsFor(prefix)}, nil
}

// NewWith returns a firewall over the given iptables (for tests).
func NewWith(ipt IPTables, prefix string) *Firewall {
	return &Firewall{ipt: ipt, chains: ChainsFor(prefix)}
}

// Setup creates the chains and the jumps to them, if absent.
func (f *Firewall) Setup() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.chains.tables() {
		ok, err := f.ipt.ChainExists(c.table, c.chain)
		if err != nil {
			return fmt.Errorf("checking chain %s/%s: %w", c.table, c.chain, err)
		}
		if !ok {
			if err := f.ipt.NewChain(c.table, c.chain); err != nil {
				return fmt.Errorf("creating chain %s/%s: %w", c.table, c.chain, err)
			}
		}
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

// Teardown removes the jumps and the chains with all their rules.
func (f *Firewall) Teardown() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	var errs []error
	for _, j := range f.chains.Jumps() {
		// A jump to a chain that does not exist cannot exist either, and
		// iptables fails to even look for it ("Chain ... does not
		// exist"): on a clean machine there is nothing to remove.
		if ok, err := f.ipt.ChainExists(j.Table, j.Spec[len(j.Spec)-1]); err == nil && !ok {
			continue
		}
		if err := f.ipt.DeleteIfExists(j.Table, j.Chain, j.Spec...); err != nil {
			errs = append(errs, err)
		}
	}
	for _, c := range f.chains.tables() {
		if ok, _ := f.ipt.ChainExists(c.table, c.chain); ok {
			if err := f.ipt.ClearAndDeleteChain(c.table, c.chain); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// Add installs a forward; adding it again changes nothing. A host port
// forwards to one instance only: the first DNAT rule for a port wins, so the
// rules of ours that forward the port for any other instance (one the
// control plane ended while this host was still starting it, and whose port
// it gave to another customer) are removed first.
func (f *Firewall) Add(fw Forward) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.evictPort(fw); err != nil {
		return fmt.Errorf("adding forward of port %d for instance %s: %w", fw.HostPort, fw.InstanceID, err)
	}
	for _, r := range f.chains.Rules(fw) {
		if err := f.ipt.AppendUnique(r.Table, r.Chain, r.Spec...); err != nil {
			return fmt.Errorf("adding forward of port %d for instance %s: %w", fw.HostPort, fw.InstanceID, err)
		}
	}
	return nil
}

// Remove deletes a forward; removing one that is absent is not an error.
func (f *Firewall) Remove(fw Forward) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	var errs []error
	for _, r := range f.chains.Rules(fw) {
		if err := f.ipt.DeleteIfExists(r.Table, r.Chain, r.Spec...); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("removing forward of port %d for instance %s: %w", fw.HostPort, fw.InstanceID, err)
	}
	return nil
}

// evictPort removes the rules of every other instance that forward the
// forward's host port.
func (f *Firewall) evictPort(fw Forward) error {
	lines, err := f.ipt.List("nat", f.chains.DNAT)
	if err != nil {
		return fmt.Errorf("listing %s: %w", f.chains.DNAT, err)
	}
	port := "--dport " + strconv.Itoa(fw.HostPort) + " "
	for _, line := range lines {
		id := InstanceFromComment(line)
		if id == "" || id == fw.InstanceID || !strings.Contains(line, port) {
			continue
		}
		if err := f.removeInstance(id); err != nil {
			return fmt.Errorf("evicting instance %s from port %d: %w", id, fw.HostPort, err)
		}
	}
	return nil
}

// RemoveInstance deletes every rule tagged with the instance, whatever its
// ports; it is how an instance whose details are lost is cleaned up.
func (f *Firewall) RemoveInstance(instanceID string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.removeInstance(instanceID)
}

func (f *Firewall) removeInstance(instanceID string) error {
	var errs []error
	for _, c := range f.chains.tables() {
		lines, err := f.ipt.List(c.table, c.chain)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, line := range lines {
			if InstanceFromComment(line) != instanceID {
				continue
			}
			if err := f.ipt.DeleteIfExists(c.table, c.chain, splitRule(line)...); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// Forwards returns the forwards the sidecar's DNAT chain makes, by
// instance, read back from the rules (with the environment and container
// their comments name, when they do).
func (f *Firewall) Forwards() (map[string]Forward, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	lines, err := f.ipt.List("nat", f.chains.DNAT)
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", f.chains.DNAT, err)
	}
	forwards := map[string]Forward{}
	for _, line := range lines {
		if fw, ok := forwardFromDNAT(line); ok {
			forwards[fw.InstanceID] = fw
		}
	}
	return forwards, nil
}

// Instances returns the instances that have rules in the sidecar's DNAT chain.
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
