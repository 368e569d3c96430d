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
// from the kernel.
func elements(t *testing.T, ns nftables.ConnOption, table string) map[string]int {
	t.Helper()
	c, err := nftables.New(ns)
	if err != nil {
		t.Fatal(err)
	}
	l := layoutFor(table)
	got := map[string]int{}
	for _, s := range l.sets() {
		els, err := c.GetSetElements(s)
		if err != nil {
			t.Fatalf("reading %s: %v", s.Name, err)
		}
		got[s.Name] = len(els)
	}
	return got
}

func counts(forwards, allowed, guardedPorts, targets, guardedTargets int) map[string]int {
	return map[string]int{setForwards: forwards, setAllowed: allowed, setGuardedPorts: guardedPorts, setTargets: targets, setGuardedTargets: guardedTargets}
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

var oneRuleEach = map[string]int{"prerouting": 1, "output": 1, "postrouting": 1, "forward": 1, "input": 1}

func guardedFwd(id string, port int, ip string) Forward {
	f := fwd(id, port, ip)
	f.Sources = []netip.Prefix{netip.MustParsePrefix("10.0.5.0/24"), netip.MustParsePrefix("192.0.2.7/32")}
	return f
}

func TestSmoke(t *testing.T) {
	fw, ipt, ns := newFirewall(t, "EJUP")
	if err := fw.Add(guardedFwd("ji-a", 20001, "172.17.0.2")); err != nil {
		t.Fatal(err)
	}
	t.Log(elements(t, ns, "EJUP"), tableRules(t, ns, "EJUP"), listing(ipt))
	got, err := fw.Forwards()
	t.Logf("%+v %v", got, err)
}

var _ = errors.New
var _ = reflect.DeepEqual
