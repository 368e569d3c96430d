package firewall

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"
)

// fakeIPTables keeps chains and rules in memory and lists them the way
// `iptables -S` prints them (a word with spaces is double-quoted).
type fakeIPTables struct {
	chains  map[string][][]string // "table/chain" → rules in order
	builtin map[string]bool
	calls   map[string]int
	failOn  map[string]error // method name → error
}

func newFakeIPTables() *fakeIPTables {
	f := &fakeIPTables{chains: map[string][][]string{}, builtin: map[string]bool{}, calls: map[string]int{}, failOn: map[string]error{}}
	for _, c := range []string{"nat/PREROUTING", "nat/OUTPUT", "nat/POSTROUTING", "nat/DOCKER", "filter/FORWARD", "filter/INPUT", "filter/DOCKER"} {
		f.chains[c] = nil
		f.builtin[c] = !strings.HasSuffix(c, "/DOCKER")
	}
	// Docker's rules, which must stay where they are and after our jumps.
	f.chains["nat/PREROUTING"] = [][]string{{"-m", "addrtype", "--dst-type", "LOCAL", "-j", "DOCKER"}}
	f.chains["filter/FORWARD"] = [][]string{{"-j", "DOCKER-USER"}, {"-o", "docker0", "-j", "DOCKER"}}
	return f
}

func key(table, chain string) string { return table + "/" + chain }

func (f *fakeIPTables) call(name string) error {
	f.calls[name]++
	return f.failOn[name]
}

func (f *fakeIPTables) index(k string, spec []string) int {
	return slices.IndexFunc(f.chains[k], func(r []string) bool { return slices.Equal(r, spec) })
}

func (f *fakeIPTables) ChainExists(table, chain string) (bool, error) {
	if err := f.call("ChainExists"); err != nil {
		return false, err
	}
	_, ok := f.chains[key(table, chain)]
	return ok, nil
}

func (f *fakeIPTables) NewChain(table, chain string) error {
	if err := f.call("NewChain"); err != nil {
		return err
	}
	if _, ok := f.chains[key(table, chain)]; ok {
		return fmt.Errorf("iptables: Chain %s already exists", chain)
	}
	f.chains[key(table, chain)] = nil
	return nil
}

func (f *fakeIPTables) ClearAndDeleteChain(table, chain string) error {
	if err := f.call("ClearAndDeleteChain"); err != nil {
		return err
	}
	k := key(table, chain)
	if f.builtin[k] {
		return fmt.Errorf("iptables: cannot delete built-in chain %s", chain)
	}
	// A chain still jumped to cannot be deleted.
	for other, rules := range f.chains {
		for _, r := range rules {
			if i := slices.Index(r, "-j"); i >= 0 && i+1 < len(r) && r[i+1] == chain && strings.HasPrefix(other, table+"/") {
				return fmt.Errorf("iptables: Too many links for %s", chain)
			}
		}
	}
	delete(f.chains, k)
	return nil
}

func (f *fakeIPTables) Exists(table, chain string, spec ...string) (bool, error) {
	if err := f.call("Exists"); err != nil {
		return false, err
	}
	k := key(table, chain)
	if _, ok := f.chains[k]; !ok {
		return false, fmt.Errorf("iptables: No chain/target/match by that name (%s)", k)
	}
	return f.index(k, spec) >= 0, nil
}

func (f *fakeIPTables) Insert(table, chain string, pos int, spec ...string) error {
	if err := f.call("Insert"); err != nil {
		return err
	}
	k := key(table, chain)
	rules, ok := f.chains[k]
	if !ok || pos < 1 || pos > len(rules)+1 {
		return fmt.Errorf("iptables: bad insert %s at %d", k, pos)
	}
	f.chains[k] = slices.Insert(rules, pos-1, slices.Clone(spec))
	return nil
}

func (f *fakeIPTables) AppendUnique(table, chain string, spec ...string) error {
	if err := f.call("AppendUnique"); err != nil {
		return err
	}
	k := key(table, chain)
	if _, ok := f.chains[k]; !ok {
		return fmt.Errorf("iptables: No chain/target/match by that name (%s)", k)
	}
	if f.index(k, spec) < 0 {
		f.chains[k] = append(f.chains[k], slices.Clone(spec))
	}
	return nil
}

func (f *fakeIPTables) DeleteIfExists(table, chain string, spec ...string) error {
	if err := f.call("DeleteIfExists"); err != nil {
		return err
	}
	k := key(table, chain)
	if _, ok := f.chains[k]; !ok {
		return fmt.Errorf("iptables: No chain/target/match by that name (%s)", k)
	}
	// Like iptables -C, a rule that jumps to a missing chain is an error.
	if i := slices.Index(spec, "-j"); i >= 0 && i+1 < len(spec) && strings.Contains(spec[i+1], "-") { // a user chain, not DNAT or ACCEPT
		if _, ok := f.chains[key(table, spec[i+1])]; !ok {
			return fmt.Errorf("iptables: Chain '%s' does not exist", spec[i+1])
		}
	}
	if i := f.index(k, spec); i >= 0 {
		f.chains[k] = slices.Delete(f.chains[k], i, i+1)
	}
	return nil
}

func (f *fakeIPTables) List(table, chain string) ([]string, error) {
	if err := f.call("List"); err != nil {
		return nil, err
	}
	k := key(table, chain)
	rules, ok := f.chains[k]
	if !ok {
		return nil, fmt.Errorf("iptables: No chain/target/match by that name (%s)", k)
	}
	var lines []string
	if f.builtin[k] {
		lines = append(lines, "-P "+chain+" ACCEPT")
	} else {
		lines = append(lines, "-N "+chain)
	}
	for _, r := range rules {
		words := make([]string, len(r))
		for i, w := range r {
			if strings.Contains(w, " ") {
				w = `"` + w + `"`
			}
			words[i] = w
		}
		lines = append(lines, "-A "+chain+" "+strings.Join(words, " "))
	}
	return lines, nil
}

func (f *fakeIPTables) ClearChain(table, chain string) error {
	if err := f.call("ClearChain"); err != nil {
		return err
	}
	f.chains[key(table, chain)] = nil
	return nil
}

func (f *fakeIPTables) rules(table, chain string) [][]string { return f.chains[key(table, chain)] }

func (f *fakeIPTables) has(table, chain string) bool {
	_, ok := f.chains[key(table, chain)]
	return ok
}

// listing renders every chain (sorted by name) and its rules (in order) as
// one string each, so that an empty chain compares equal whether it holds nil
// or an empty slice.
func listing(f *fakeIPTables) []string {
	keys := make([]string, 0, len(f.chains))
	for k := range f.chains {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var out []string
	for _, k := range keys {
		out = append(out, "chain "+k)
		for _, r := range f.chains[k] {
			out = append(out, k+": "+strings.Join(r, " "))
		}
	}
	return out
}

func fwd(id string, port int, ip string) Forward {
	return Forward{InstanceID: id, HostPort: port, ContainerIP: netip.MustParseAddr(ip), ContainerPort: 8888}
}

// netns returns the nftables option of a new network namespace of this
// test's own, so that the tests write real tables without touching the
// host's. It needs root: without it the test is skipped, but fails in CI.
func netns(t *testing.T) nftables.ConnOption {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("the firewall tests need root (a network namespace and nftables)")
		}
		t.Skip("not root: the firewall tests need a network namespace")
	}
	type result struct {
		fd  int
		err error
	}
	done := make(chan result)
	go func() {
		// The thread is never unlocked: it ends with the goroutine, and
		// its namespace lives on through the descriptor.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			done <- result{-1, err}
			return
		}
		fd, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		done <- result{fd, err}
	}()
	r := <-done
	if r.err != nil {
		t.Fatalf("creating a network namespace: %v", r.err)
	}
	t.Cleanup(func() { _ = unix.Close(r.fd) })
	return nftables.WithNetNSFd(r.fd)
}

// newFirewall is a firewall over a fake iptables and the nftables of a
// namespace of its own, set up.
func newFirewall(t *testing.T, prefix string) (*Firewall, *fakeIPTables, nftables.ConnOption) {
	t.Helper()
	ipt, ns := newFakeIPTables(), netns(t)
	fw := NewWith(ipt, prefix, ns)
	if err := fw.Setup(); err != nil {
		t.Fatalf("Setup: %v", err)
	}
	return fw, ipt, ns
}

// elements returns the number of elements of each set of a table, read
// from the kernel, with the groups' forwards maps summed as "forwards" and
// counted as "groups".
func elements(t *testing.T, ns nftables.ConnOption, table string) map[string]int {
	t.Helper()
	c, err := nftables.New(ns)
	if err != nil {
		t.Fatal(err)
	}
	sets, err := c.GetSets(&nftables.Table{Name: table, Family: nftables.TableFamilyIPv4})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{"forwards": 0, "groups": 0}
	for _, s := range sets {
		els, err := c.GetSetElements(s)
		if err != nil {
			t.Fatalf("reading %s: %v", s.Name, err)
		}
		if strings.HasPrefix(s.Name, forwardsPrefix) {
			got["forwards"] += len(els)
			got["groups"]++
			continue
		}
		got[s.Name] = len(els)
	}
	return got
}

// counts are the elements of the sets of a table.
func counts(forwards, groups, guardedPorts, targets, guardedTargets int) map[string]int {
	return map[string]int{"forwards": forwards, "groups": groups, setGuardedPorts: guardedPorts, setTargets: targets, setGuardedTargets: guardedTargets}
}

// tableRules returns the number of rules of each chain of a table, or nil
// when there is no such table.
func tableRules(t *testing.T, ns nftables.ConnOption, table string) map[string]int {
	t.Helper()
	c, err := nftables.New(ns)
	if err != nil {
		t.Fatal(err)
	}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyIPv4)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]int
	for _, ch := range chains {
		if ch.Table.Name != table {
			continue
		}
		rules, err := c.GetRules(ch.Table, ch)
		if err != nil {
			t.Fatal(err)
		}
		if got == nil {
			got = map[string]int{}
		}
		got[ch.Name] = len(rules)
	}
	return got
}

// rulesFor are the rules of a table's chains with DNAT rules for n source
// ranges (of all groups).
func rulesFor(n int) map[string]int {
	return map[string]int{"prerouting": n, "output": n, "postrouting": 1, "forward": 1, "input": 1}
}

func guardedFwd(id string, port int, ip string) Forward {
	f := fwd(id, port, ip)
	f.Sources = []netip.Prefix{netip.MustParsePrefix("10.0.5.0/24"), netip.MustParsePrefix("192.0.2.7/32")}
	return f
}

func TestSetupTwice(t *testing.T) {
	fw, ipt, ns := newFirewall(t, "EJUP")
	if err := fw.Add(guardedFwd("ji-a", 20001, "172.17.0.2")); err != nil {
		t.Fatal(err)
	}
	// A restart: Setup again keeps the forwards and makes nothing twice.
	again := NewWith(ipt, "EJUP", ns)
	if err := again.Setup(); err != nil {
		t.Fatalf("second Setup: %v", err)
	}
	if n := ipt.calls["ClearChain"]; n != 0 {
		t.Errorf("Setup flushed a chain as it should be (%d times): new connections would be dropped meanwhile", n)
	}
	if got, want := tableRules(t, ns, "EJUP"), rulesFor(2); !reflect.DeepEqual(got, want) {
		t.Errorf("rules after two Setups = %v, want %v", got, want)
	}
	if got, want := elements(t, ns, "EJUP"), counts(1, 1, 1, 1, 1); !reflect.DeepEqual(got, want) {
		t.Errorf("elements after two Setups = %v, want %v", got, want)
	}
	if ids, err := again.Instances(); err != nil || !reflect.DeepEqual(ids, map[string]bool{"ji-a": true}) {
		t.Errorf("Instances after a restart = %v, %v", ids, err)
	}
	c := ChainsFor("EJUP")
	wantFwd := [][]string{c.Jumps()[0].Spec, {"-j", "DOCKER-USER"}, {"-o", "docker0", "-j", "DOCKER"}}
	if got := ipt.rules("filter", "FORWARD"); !reflect.DeepEqual(got, wantFwd) {
		t.Errorf("FORWARD = %q, want our jump first, then Docker's: %q", got, wantFwd)
	}
	if got, want := ipt.rules("filter", c.Forward), [][]string{c.accept().Spec}; !reflect.DeepEqual(got, want) {
		t.Errorf("%s = %q, want %q", c.Forward, got, want)
	}
}

func TestSetupRepairsMissingJump(t *testing.T) {
	fw, ipt, _ := newFirewall(t, "EJUP")
	ipt.chains["filter/FORWARD"] = ipt.chains["filter/FORWARD"][1:]
	if err := fw.Setup(); err != nil {
		t.Fatal(err)
	}
	if got := ipt.rules("filter", "FORWARD"); len(got) != 3 || !slices.Equal(got[0], ChainsFor("EJUP").Jumps()[0].Spec) {
		t.Errorf("FORWARD after Setup = %q, want the jump first again", got)
	}
}

func TestSetupError(t *testing.T) {
	ipt, ns := newFakeIPTables(), netns(t)
	ipt.failOn["Insert"] = errors.New("boom")
	if err := NewWith(ipt, "EJUP", ns).Setup(); err == nil || !strings.Contains(err.Error(), "boom") {
		t.Errorf("Setup = %v, want the iptables error", err)
	}
}

// Earlier sidecars kept one iptables rule per forward, in chains that
// Setup removes (the new table forwards from then on).
func TestSetupRemovesLegacyChains(t *testing.T) {
	ipt, ns := newFakeIPTables(), netns(t)
	tag := []string{"-m", "comment", "--comment", "envjupyter"}
	local := []string{"-m", "addrtype", "--dst-type", "LOCAL"}
	ipt.chains["nat/EJUP-DNAT"] = [][]string{{"-p", "tcp", "--dport", "20001", "-j", "DNAT", "--to-destination", "172.17.0.2:8888"}}
	ipt.chains["nat/EJUP-SNAT"] = nil
	ipt.chains["filter/EJUP-IN"] = nil
	ipt.chains["filter/EJUP-FWD"] = [][]string{{"-d", "172.17.0.2/32", "-j", "ACCEPT"}, {"-d", "172.17.0.2/32", "-j", "DROP"}, ChainsFor("EJUP").accept().Spec}
	ipt.chains["nat/PREROUTING"] = append([][]string{concat(local, tag, []string{"-j", "EJUP-DNAT"})}, ipt.chains["nat/PREROUTING"]...)
	ipt.chains["nat/OUTPUT"] = [][]string{concat(local, tag, []string{"-j", "EJUP-DNAT"})}
	ipt.chains["nat/POSTROUTING"] = [][]string{concat(tag, []string{"-j", "EJUP-SNAT"})}
	ipt.chains["filter/INPUT"] = [][]string{concat(tag, []string{"-j", "EJUP-IN"})}
	if err := NewWith(ipt, "EJUP", ns).Setup(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"nat/EJUP-DNAT", "nat/EJUP-SNAT", "filter/EJUP-IN"} {
		if _, ok := ipt.chains[c]; ok {
			t.Errorf("%s survived Setup", c)
		}
	}
	for _, c := range []string{"nat/OUTPUT", "nat/POSTROUTING", "filter/INPUT"} {
		if got := ipt.chains[c]; len(got) != 0 {
			t.Errorf("%s still holds %q", c, got)
		}
	}
	if got := ipt.rules("nat", "PREROUTING"); len(got) != 1 || got[0][len(got[0])-1] != "DOCKER" {
		t.Errorf("PREROUTING = %q, want Docker's jump only", got)
	}
	// The FWD chain keeps its name and holds the accept rule only: an
	// earlier sidecar's drops would come before it.
	if got, want := ipt.rules("filter", "EJUP-FWD"), [][]string{ChainsFor("EJUP").accept().Spec}; !reflect.DeepEqual(got, want) {
		t.Errorf("EJUP-FWD = %q, want %q", got, want)
	}
}

func TestAddIsIdempotent(t *testing.T) {
	fw, _, ns := newFirewall(t, "EJUP")
	f := guardedFwd("ji-a", 20001, "172.17.0.2")
	for range 2 {
		if err := fw.Add(f); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := elements(t, ns, "EJUP"), counts(1, 1, 1, 1, 1); !reflect.DeepEqual(got, want) {
		t.Errorf("elements after adding twice = %v, want %v", got, want)
	}
	// The same again from a firewall that has not read the table yet (a
	// restarted sidecar adopting its instance).
	if err := NewWith(newFakeIPTables(), "EJUP", ns).Add(f); err != nil {
		t.Fatalf("Add from a fresh firewall: %v", err)
	}
	if got, want := elements(t, ns, "EJUP"), counts(1, 1, 1, 1, 1); !reflect.DeepEqual(got, want) {
		t.Errorf("elements after adding from a fresh firewall = %v, want %v", got, want)
	}
}

// A source inside another (the host's own address within the proxies'
// CIDR) is one range of the set, which refuses overlaps.
func TestAddWithNestedSources(t *testing.T) {
	fw, _, ns := newFirewall(t, "EJUP")
	f := fwd("ji-a", 20001, "172.17.0.2")
	f.Sources = prefixes("10.0.0.0/16", "10.0.5.9/32")
	if err := fw.Add(f); err != nil {
		t.Fatal(err)
	}
	if got, want := elements(t, ns, "EJUP"), counts(1, 1, 1, 1, 1); !reflect.DeepEqual(got, want) {
		t.Errorf("elements = %v, want %v", got, want)
	}
}

func TestAddEvictsAnotherInstanceOnThePort(t *testing.T) {
	fw, _, ns := newFirewall(t, "EJUP")
	if err := fw.Add(guardedFwd("ji-old", 20001, "172.17.0.2")); err != nil {
		t.Fatal(err)
	}
	if err := fw.Add(guardedFwd("ji-other", 20002, "172.17.0.4")); err != nil {
		t.Fatal(err)
	}
	if err := fw.Add(guardedFwd("ji-new", 20001, "172.17.0.3")); err != nil {
		t.Fatal(err)
	}
	got, err := NewWith(newFakeIPTables(), "EJUP", ns).Forwards()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got["ji-new"].ContainerIP != netip.MustParseAddr("172.17.0.3") || got["ji-other"].HostPort != 20002 {
		t.Errorf("forwards after the port changed hands = %+v, want ji-new on 20001 and ji-other", got)
	}
	if got, want := elements(t, ns, "EJUP"), counts(2, 1, 2, 2, 2); !reflect.DeepEqual(got, want) {
		t.Errorf("elements = %v, want %v (none of ji-old's left)", got, want)
	}
}

// A forward that changes (its container restarted elsewhere) replaces the
// old one.
func TestAddReplacesAChangedForward(t *testing.T) {
	fw, _, ns := newFirewall(t, "EJUP")
	if err := fw.Add(guardedFwd("ji-a", 20001, "172.17.0.2")); err != nil {
		t.Fatal(err)
	}
	if err := fw.Add(fwd("ji-a", 20001, "172.17.0.9")); err != nil {
		t.Fatal(err)
	}
	got, err := fw.Forwards()
	if err != nil || got["ji-a"].ContainerIP != netip.MustParseAddr("172.17.0.9") || got["ji-a"].Sources != nil {
		t.Errorf("Forwards = %+v, %v; want ji-a to 172.17.0.9 from anywhere", got, err)
	}
	if got, want := elements(t, ns, "EJUP"), counts(1, 1, 0, 1, 0); !reflect.DeepEqual(got, want) {
		t.Errorf("elements = %v, want %v", got, want)
	}
}

func TestRemove(t *testing.T) {
	fw, _, ns := newFirewall(t, "EJUP")
	a, b := guardedFwd("ji-a", 20001, "172.17.0.2"), guardedFwd("ji-b", 20002, "172.17.0.3")
	for _, f := range []Forward{a, b} {
		if err := fw.Add(f); err != nil {
			t.Fatal(err)
		}
	}
	// Another instance's port: nothing happens.
	if err := fw.Remove(guardedFwd("ji-x", 20001, "172.17.0.2")); err != nil {
		t.Fatal(err)
	}
	if err := fw.Remove(a); err != nil {
		t.Fatal(err)
	}
	if err := fw.Remove(a); err != nil {
		t.Errorf("removing an absent forward: %v", err)
	}
	if got, want := elements(t, ns, "EJUP"), counts(1, 1, 1, 1, 1); !reflect.DeepEqual(got, want) {
		t.Errorf("elements = %v, want %v", got, want)
	}
	if ids, _ := fw.Instances(); !reflect.DeepEqual(ids, map[string]bool{"ji-b": true}) {
		t.Errorf("Instances = %v, want ji-b", ids)
	}
}

func TestRemoveInstance(t *testing.T) {
	fw, _, ns := newFirewall(t, "EJUP")
	for _, f := range []Forward{guardedFwd("ji-a", 20001, "172.17.0.2"), guardedFwd("ji-a", 20005, "172.17.0.2"), fwd("ji-b", 20002, "172.17.0.3")} {
		if err := fw.Add(f); err != nil {
			t.Fatal(err)
		}
	}
	if err := fw.RemoveInstance("ji-a"); err != nil {
		t.Fatal(err)
	}
	if err := fw.RemoveInstance("ji-a"); err != nil {
		t.Errorf("removing an absent instance: %v", err)
	}
	if got, want := elements(t, ns, "EJUP"), counts(1, 1, 0, 1, 0); !reflect.DeepEqual(got, want) {
		t.Errorf("elements = %v, want only ji-b's %v", got, want)
	}
}

// Two forwards to one container's Jupyter port (an instance whose
// successor in the same container started before its own stop was
// handled): removing one leaves the other's target.
func TestSharedTargetStays(t *testing.T) {
	fw, _, ns := newFirewall(t, "EJUP")
	for _, f := range []Forward{guardedFwd("ji-a", 20001, "172.17.0.2"), guardedFwd("ji-b", 20002, "172.17.0.2")} {
		if err := fw.Add(f); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := elements(t, ns, "EJUP"), counts(2, 1, 2, 1, 1); !reflect.DeepEqual(got, want) {
		t.Errorf("elements = %v, want %v", got, want)
	}
	if err := fw.RemoveInstance("ji-a"); err != nil {
		t.Fatal(err)
	}
	if got, want := elements(t, ns, "EJUP"), counts(1, 1, 1, 1, 1); !reflect.DeepEqual(got, want) {
		t.Errorf("elements after removing one = %v, want %v", got, want)
	}
	if err := fw.RemoveInstance("ji-b"); err != nil {
		t.Fatal(err)
	}
	if got, want := elements(t, ns, "EJUP"), counts(0, 0, 0, 0, 0); !reflect.DeepEqual(got, want) {
		t.Errorf("elements after removing both = %v, want %v", got, want)
	}
}

// A firewall whose index no longer matches the table (another process
// changed it) reads it again and succeeds.
func TestStaleIndexIsReadAgain(t *testing.T) {
	fw, ipt, ns := newFirewall(t, "EJUP")
	if err := fw.Add(guardedFwd("ji-a", 20001, "172.17.0.2")); err != nil {
		t.Fatal(err)
	}
	other := NewWith(ipt, "EJUP", ns)
	if err := other.RemoveInstance("ji-a"); err != nil {
		t.Fatal(err)
	}
	// fw still believes ji-a is there: deleting its elements fails once.
	if err := fw.RemoveInstance("ji-a"); err != nil {
		t.Errorf("RemoveInstance with a stale index: %v", err)
	}
	if err := fw.Add(guardedFwd("ji-b", 20001, "172.17.0.3")); err != nil {
		t.Errorf("Add with a stale index: %v", err)
	}
	if got, want := elements(t, ns, "EJUP"), counts(1, 1, 1, 1, 1); !reflect.DeepEqual(got, want) {
		t.Errorf("elements = %v, want %v", got, want)
	}
}

func TestInstancesWithoutTable(t *testing.T) {
	fw := NewWith(newFakeIPTables(), "EJUP", netns(t))
	if _, err := fw.Instances(); err == nil || !strings.Contains(err.Error(), "EJUP") {
		t.Errorf("Instances before Setup: error = %v, want one naming the table EJUP", err)
	}
}

func TestTeardown(t *testing.T) {
	ipt, ns := newFakeIPTables(), netns(t)
	before := listing(ipt)
	fw := NewWith(ipt, "EJUP", ns)
	if err := fw.Setup(); err != nil {
		t.Fatal(err)
	}
	for _, f := range []Forward{fwd("ji-a", 20001, "172.17.0.2"), guardedFwd("ji-b", 20002, "172.17.0.3")} {
		if err := fw.Add(f); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 2 {
		if err := fw.Teardown(); err != nil {
			t.Fatalf("Teardown %d: %v", i, err)
		}
		if got := listing(ipt); !reflect.DeepEqual(got, before) {
			t.Errorf("iptables after Teardown %d:\n %q\nwant what was there before Setup\n %q", i, got, before)
		}
		if got := tableRules(t, ns, "EJUP"); got != nil {
			t.Errorf("table EJUP after Teardown %d: %v", i, got)
		}
	}
}

// On a clean machine (the first `make up`) there is nothing to remove, and
// that is no error.
func TestTeardownOfNothing(t *testing.T) {
	if err := NewWith(newFakeIPTables(), "EJUP", netns(t)).Teardown(); err != nil {
		t.Fatalf("Teardown with nothing there: %v", err)
	}
}

func TestTwoPrefixesDoNotTouchEachOther(t *testing.T) {
	ipt, ns := newFakeIPTables(), netns(t)
	one, two := NewWith(ipt, "EJUP1", ns), NewWith(ipt, "EJUP2", ns)
	for _, fw := range []*Firewall{one, two} {
		if err := fw.Setup(); err != nil {
			t.Fatal(err)
		}
	}
	if err := one.Add(fwd("ji-a", 20001, "172.17.0.2")); err != nil {
		t.Fatal(err)
	}
	if err := two.Add(fwd("ji-b", 21001, "172.17.0.3")); err != nil {
		t.Fatal(err)
	}
	if err := one.Teardown(); err != nil {
		t.Fatalf("Teardown one: %v", err)
	}
	got, err := two.Instances()
	if err != nil || !reflect.DeepEqual(got, map[string]bool{"ji-b": true}) {
		t.Errorf("two.Instances after one.Teardown = %v, %v; want ji-b", got, err)
	}
	if got := tableRules(t, ns, "EJUP2"); !reflect.DeepEqual(got, rulesFor(1)) {
		t.Errorf("EJUP2's chains = %v", got)
	}
	if ipt.has("filter", "EJUP1-FWD") || !ipt.has("filter", "EJUP2-FWD") {
		t.Errorf("iptables chains after one.Teardown: %q", listing(ipt))
	}
}

// The forwards read back from the table are the forwards added, with the
// environment and container their comments name; a value that could not be
// read back from a comment is left out of it.
func TestForwardsReadBack(t *testing.T) {
	fw, ipt, ns := newFirewall(t, "EJUP")
	tagged := Forward{InstanceID: "ji-a", HostPort: 20001, ContainerIP: netip.MustParseAddr("172.17.0.2"), ContainerPort: 8888,
		Sources:       prefixes("127.0.0.0/8", "10.0.5.0/24"),
		EnvironmentID: "env-1", ContainerID: strings.Repeat("0123abcd", 8)}
	odd := Forward{InstanceID: "ji-b", HostPort: 20002, ContainerIP: netip.MustParseAddr("172.17.0.3"), ContainerPort: 9999,
		EnvironmentID: "env-2", ContainerID: `my container" x`}
	for _, f := range []Forward{tagged, odd} {
		if err := fw.Add(f); err != nil {
			t.Fatal(err)
		}
	}
	got, err := NewWith(ipt, "EJUP", ns).Forwards()
	if err != nil {
		t.Fatal(err)
	}
	tagged.Sources = prefixes("10.0.5.0/24", "127.0.0.0/8")
	odd.EnvironmentID, odd.ContainerID = "", ""
	if want := map[string]Forward{"ji-a": tagged, "ji-b": odd}; !reflect.DeepEqual(got, want) {
		t.Errorf("Forwards =\n %+v\nwant\n %+v", got, want)
	}
}

// A table of that name that is not the sidecar's (a set of another type)
// fails Setup, with the table named.
func TestSetupOverAForeignTable(t *testing.T) {
	ns := netns(t)
	c, err := nftables.New(ns)
	if err != nil {
		t.Fatal(err)
	}
	table := c.AddTable(&nftables.Table{Name: "EJUP", Family: nftables.TableFamilyIPv4})
	if err := c.AddSet(&nftables.Set{Table: table, Name: setTargets, KeyType: nftables.TypeIPAddr}, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := NewWith(newFakeIPTables(), "EJUP", ns).Setup(); err == nil || !strings.Contains(err.Error(), "table EJUP") {
		t.Errorf("Setup over a foreign table = %v, want an error naming the table", err)
	}
}

// Forwards with the same sources share a group, whose ranges have a DNAT
// rule each; a group goes with its last forward, and each forward reads
// back with its own sources.
func TestSourceGroups(t *testing.T) {
	fw, ipt, ns := newFirewall(t, "EJUP")
	x, y := prefixes("10.0.5.0/24", "192.0.2.7/32"), prefixes("198.51.100.0/30")
	a, b, c := fwd("ji-a", 20001, "172.17.0.2"), fwd("ji-b", 20002, "172.17.0.3"), fwd("ji-c", 20003, "172.17.0.4")
	a.Sources, b.Sources, c.Sources = x, y, x
	for _, f := range []Forward{a, b, c} {
		if err := fw.Add(f); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := elements(t, ns, "EJUP"), counts(3, 2, 3, 3, 3); !reflect.DeepEqual(got, want) {
		t.Errorf("elements = %v, want %v", got, want)
	}
	if got, want := tableRules(t, ns, "EJUP"), rulesFor(3); !reflect.DeepEqual(got, want) {
		t.Errorf("rules = %v, want %v", got, want)
	}
	got, err := NewWith(ipt, "EJUP", ns).Forwards()
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]Forward{"ji-a": a, "ji-b": b, "ji-c": c}; !reflect.DeepEqual(got, want) {
		t.Errorf("Forwards =\n %+v\nwant\n %+v", got, want)
	}
	if err := fw.RemoveInstance("ji-b"); err != nil {
		t.Fatal(err)
	}
	if got, want := elements(t, ns, "EJUP"), counts(2, 1, 2, 2, 2); !reflect.DeepEqual(got, want) {
		t.Errorf("elements after the last of a group went = %v, want %v", got, want)
	}
	if got, want := tableRules(t, ns, "EJUP"), rulesFor(2); !reflect.DeepEqual(got, want) {
		t.Errorf("rules after the last of a group went = %v, want %v", got, want)
	}
	// Its group number is free again, and a new group takes it.
	d := fwd("ji-d", 20004, "172.17.0.5")
	d.Sources = prefixes("203.0.113.0/24")
	if err := fw.Add(d); err != nil {
		t.Fatal(err)
	}
	got, err = NewWith(ipt, "EJUP", ns).Forwards()
	if err != nil || !reflect.DeepEqual(got["ji-d"], d) || !reflect.DeepEqual(got["ji-a"], a) {
		t.Errorf("Forwards = %+v, %v; want ji-d with its own sources", got, err)
	}
}
