package firewall

import (
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
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

// chainRules are the rules of the three sidecar chains.
func chainRules(ipt *fakeIPTables, c Chains) map[string][][]string {
	return map[string][][]string{
		"dnat": ipt.rules("nat", c.DNAT),
		"snat": ipt.rules("nat", c.SNAT),
		"fwd":  ipt.rules("filter", c.Forward),
	}
}

// wantRules builds the expected chain contents from forwards, in order.
func wantRules(c Chains, fs ...Forward) map[string][][]string {
	want := map[string][][]string{"dnat": nil, "snat": nil, "fwd": nil}
	for _, f := range fs {
		r := c.Rules(f)
		want["dnat"] = append(want["dnat"], r[0].Spec)
		want["snat"] = append(want["snat"], r[1].Spec)
		want["fwd"] = append(want["fwd"], r[2].Spec)
	}
	return want
}

func TestSetupTwice(t *testing.T) {
	ipt := newFakeIPTables()
	fw := NewWith(ipt, "EJUP")
	c := ChainsFor("EJUP")
	for i := range 2 {
		if err := fw.Setup(); err != nil {
			t.Fatalf("Setup #%d: %v", i+1, err)
		}
	}
	for _, ch := range []struct{ table, chain string }{{"nat", c.DNAT}, {"nat", c.SNAT}, {"filter", c.Forward}} {
		if !ipt.has(ch.table, ch.chain) {
			t.Errorf("chain %s/%s missing", ch.table, ch.chain)
		}
		if n := len(ipt.rules(ch.table, ch.chain)); n != 0 {
			t.Errorf("chain %s/%s has %d rules, want none", ch.table, ch.chain, n)
		}
	}
	if ipt.calls["NewChain"] != 4 || ipt.calls["Insert"] != 5 {
		t.Errorf("NewChain called %d times and Insert %d; want 4 and 5", ipt.calls["NewChain"], ipt.calls["Insert"])
	}
	want := map[string][][]string{
		"nat/PREROUTING": {
			{"-m", "addrtype", "--dst-type", "LOCAL", "-m", "comment", "--comment", "envjupyter", "-j", "EJUP-DNAT"},
			{"-m", "addrtype", "--dst-type", "LOCAL", "-j", "DOCKER"},
		},
		"nat/OUTPUT":      {{"-m", "addrtype", "--dst-type", "LOCAL", "-m", "comment", "--comment", "envjupyter", "-j", "EJUP-DNAT"}},
		"nat/POSTROUTING": {{"-m", "comment", "--comment", "envjupyter", "-j", "EJUP-SNAT"}},
		"filter/FORWARD": {
			{"-m", "comment", "--comment", "envjupyter", "-j", "EJUP-FWD"},
			{"-j", "DOCKER-USER"},
			{"-o", "docker0", "-j", "DOCKER"},
		},
	}
	for k, rules := range want {
		if got := ipt.chains[k]; !reflect.DeepEqual(got, rules) {
			t.Errorf("%s =\n %q\nwant (jump first, once)\n %q", k, got, rules)
		}
	}
}

func TestSetupRepairsMissingJump(t *testing.T) {
	ipt := newFakeIPTables()
	fw := NewWith(ipt, "EJUP")
	if err := fw.Setup(); err != nil {
		t.Fatal(err)
	}
	// Someone flushed FORWARD (a Docker restart does this).
	ipt.chains["filter/FORWARD"] = [][]string{{"-j", "DOCKER-USER"}}
	if err := fw.Setup(); err != nil {
		t.Fatal(err)
	}
	want := [][]string{{"-m", "comment", "--comment", "envjupyter", "-j", "EJUP-FWD"}, {"-j", "DOCKER-USER"}}
	if got := ipt.chains["filter/FORWARD"]; !reflect.DeepEqual(got, want) {
		t.Errorf("FORWARD = %q, want %q", got, want)
	}
	if ipt.calls["NewChain"] != 4 {
		t.Errorf("NewChain called %d times, want 4", ipt.calls["NewChain"])
	}
}

func TestSetupError(t *testing.T) {
	ipt := newFakeIPTables()
	boom := errors.New("iptables: lock held")
	ipt.failOn["NewChain"] = boom
	if err := NewWith(ipt, "EJUP").Setup(); !errors.Is(err, boom) {
		t.Errorf("Setup error = %v, want %v", err, boom)
	}
}

func TestAddIsIdempotent(t *testing.T) {
	ipt := newFakeIPTables()
	fw := NewWith(ipt, "EJUP")
	c := ChainsFor("EJUP")
	if err := fw.Setup(); err != nil {
		t.Fatal(err)
	}
	a := fwd("ji-a", 20001, "172.17.0.2")
	b := fwd("ji-b", 20002, "172.17.0.3")
	for _, f := range []Forward{a, a, b, a, b} {
		if err := fw.Add(f); err != nil {
			t.Fatalf("Add %s: %v", f.InstanceID, err)
		}
	}
	if got, want := chainRules(ipt, c), wantRules(c, a, b); !reflect.DeepEqual(got, want) {
		t.Errorf("rules =\n %q\nwant one copy each\n %q", got, want)
	}
}

// A port forwards to one instance: adding a forward evicts any other
// instance's rules on that port (and only those), whatever their address.
func TestAddEvictsAnotherInstanceOnThePort(t *testing.T) {
	ipt := newFakeIPTables()
	fw := NewWith(ipt, "EJUP")
	c := ChainsFor("EJUP")
	if err := fw.Setup(); err != nil {
		t.Fatal(err)
	}
	old := fwd("ji-old", 2000, "172.17.0.2")
	neighbour := fwd("ji-n", 20001, "172.17.0.4") // a port with 2000 as a prefix
	next := fwd("ji-next", 2000, "172.17.0.3")
	for _, f := range []Forward{old, neighbour, next} {
		if err := fw.Add(f); err != nil {
			t.Fatalf("Add %s: %v", f.InstanceID, err)
		}
	}
	if got, want := chainRules(ipt, c), wantRules(c, neighbour, next); !reflect.DeepEqual(got, want) {
		t.Errorf("rules =\n %q\nwant the old instance's gone\n %q", got, want)
	}
	ipt.failOn["List"] = errors.New("iptables: listing failed")
	if err := fw.Add(fwd("ji-other", 20002, "172.17.0.5")); err == nil {
		t.Error("Add with a failing listing: no error; a port could forward twice")
	}
}

func TestAddError(t *testing.T) {
	ipt := newFakeIPTables()
	fw := NewWith(ipt, "EJUP")
	if err := fw.Setup(); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("iptables: resource busy")
	ipt.failOn["AppendUnique"] = boom
	err := fw.Add(fwd("ji-a", 20001, "172.17.0.2"))
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "ji-a") || !strings.Contains(err.Error(), "20001") {
		t.Errorf("Add error = %v, want it to wrap %v and name ji-a and 20001", err, boom)
	}
}

func TestRemove(t *testing.T) {
	a := fwd("ji-a", 20001, "172.17.0.2")
	b := fwd("ji-b", 20002, "172.17.0.3")
	tests := []struct {
		name   string
		added  []Forward
		remove Forward
		want   []Forward
	}{
		{"present", []Forward{a, b}, a, []Forward{b}},
		{"absent instance", []Forward{b}, a, []Forward{b}},
		{"empty chains", nil, a, nil},
		{"same instance, other port and address", []Forward{a}, fwd("ji-a", 20009, "172.17.0.9"), []Forward{a}},
		{"twice", []Forward{a, b}, b, []Forward{a}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ipt := newFakeIPTables()
			fw := NewWith(ipt, "EJUP")
			c := ChainsFor("EJUP")
			if err := fw.Setup(); err != nil {
				t.Fatal(err)
			}
			for _, f := range tt.added {
				if err := fw.Add(f); err != nil {
					t.Fatal(err)
				}
			}
			if err := fw.Remove(tt.remove); err != nil {
				t.Fatalf("Remove: %v", err)
			}
			if err := fw.Remove(tt.remove); err != nil {
				t.Fatalf("Remove again: %v", err)
			}
			got, want := chainRules(ipt, c), wantRules(c, tt.want...)
			for k := range want {
				if len(got[k]) != len(want[k]) || len(got[k]) > 0 && !reflect.DeepEqual(got[k], want[k]) {
					t.Errorf("%s = %q, want %q", k, got[k], want[k])
				}
			}
		})
	}
}

func TestRemoveInstance(t *testing.T) {
	a := fwd("ji-a", 20001, "172.17.0.2")
	a2 := fwd("ji-a", 20005, "172.17.0.9")  // a stale second forward of the same instance
	ab := fwd("ji-ab", 20002, "172.17.0.3") // id with ji-a as a prefix
	b := fwd("ji-b", 20003, "172.17.0.4")
	ipt := newFakeIPTables()
	fw := NewWith(ipt, "EJUP")
	c := ChainsFor("EJUP")
	if err := fw.Setup(); err != nil {
		t.Fatal(err)
	}
	for _, f := range []Forward{a, ab, a2, b} {
		if err := fw.Add(f); err != nil {
			t.Fatal(err)
		}
	}
	// A rule in our chain that is not an instance rule stays.
	foreign := []string{"-p", "udp", "-j", "RETURN"}
	if err := ipt.AppendUnique("nat", c.DNAT, foreign...); err != nil {
		t.Fatal(err)
	}

	if err := fw.RemoveInstance("ji-a"); err != nil {
		t.Fatalf("RemoveInstance: %v", err)
	}
	want := wantRules(c, ab, b)
	want["dnat"] = append(want["dnat"], foreign)
	if got := chainRules(ipt, c); !reflect.DeepEqual(got, want) {
		t.Errorf("after RemoveInstance(ji-a):\n %q\nwant\n %q", got, want)
	}
	if err := fw.RemoveInstance("ji-a"); err != nil {
		t.Errorf("RemoveInstance of a gone instance: %v", err)
	}
	if err := fw.RemoveInstance("ji-none"); err != nil {
		t.Errorf("RemoveInstance of an unknown instance: %v", err)
	}
	if got := chainRules(ipt, c); !reflect.DeepEqual(got, want) {
		t.Errorf("repeated RemoveInstance changed rules to %q", got)
	}
	// The built-in chains keep their jumps.
	if n := len(ipt.chains["nat/POSTROUTING"]); n != 1 {
		t.Errorf("POSTROUTING has %d rules, want the jump", n)
	}
}

func TestRemoveInstanceListError(t *testing.T) {
	ipt := newFakeIPTables()
	fw := NewWith(ipt, "EJUP")
	if err := fw.Setup(); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("iptables: permission denied")
	ipt.failOn["List"] = boom
	if err := fw.RemoveInstance("ji-a"); !errors.Is(err, boom) {
		t.Errorf("RemoveInstance error = %v, want %v", err, boom)
	}
}

func TestInstances(t *testing.T) {
	tests := []struct {
		name  string
		added []Forward
		want  map[string]bool
	}{
		{"none", nil, map[string]bool{}},
		{"two", []Forward{fwd("ji-a", 20001, "172.17.0.2"), fwd("ji-12", 20002, "172.17.0.3")}, map[string]bool{"ji-a": true, "ji-12": true}},
		{"one instance with two ports", []Forward{fwd("ji-a", 20001, "172.17.0.2"), fwd("ji-a", 20004, "172.17.0.2")}, map[string]bool{"ji-a": true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ipt := newFakeIPTables()
			fw := NewWith(ipt, "EJUP")
			if err := fw.Setup(); err != nil {
				t.Fatal(err)
			}
			for _, f := range tt.added {
				if err := fw.Add(f); err != nil {
					t.Fatal(err)
				}
			}
			got, err := fw.Instances()
			if err != nil {
				t.Fatalf("Instances: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Instances = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestInstancesWithoutChain(t *testing.T) {
	fw := NewWith(newFakeIPTables(), "EJUP")
	if _, err := fw.Instances(); err == nil || !strings.Contains(err.Error(), "EJUP-DNAT") {
		t.Errorf("Instances before Setup: error = %v, want one naming EJUP-DNAT", err)
	}
}

func TestTeardown(t *testing.T) {
	ipt := newFakeIPTables()
	before := map[string][][]string{}
	for k, v := range ipt.chains {
		before[k] = slices.Clone(v)
	}
	fw := NewWith(ipt, "EJUP")
	if err := fw.Setup(); err != nil {
		t.Fatal(err)
	}
	for _, f := range []Forward{fwd("ji-a", 20001, "172.17.0.2"), fwd("ji-b", 20002, "172.17.0.3")} {
		if err := fw.Add(f); err != nil {
			t.Fatal(err)
		}
	}
	if err := fw.Teardown(); err != nil {
		t.Fatalf("Teardown: %v", err)
	}
	if got := listing(ipt); !reflect.DeepEqual(got, listing(&fakeIPTables{chains: before})) {
		t.Errorf("after Teardown:\n %q\nwant what was there before Setup\n %q", got, before)
	}
	if err := fw.Teardown(); err != nil {
		t.Errorf("second Teardown: %v", err)
	}
	if got := listing(ipt); !reflect.DeepEqual(got, listing(&fakeIPTables{chains: before})) {
		t.Errorf("after second Teardown: %q", got)
	}
}

// On a clean machine (the first `make up`) there is nothing to remove, and
// that is no error.
func TestTeardownOfNothing(t *testing.T) {
	if err := NewWith(newFakeIPTables(), "EJUP").Teardown(); err != nil {
		t.Fatalf("Teardown with no chains: %v", err)
	}
}

func TestTwoPrefixesDoNotTouchEachOther(t *testing.T) {
	ipt := newFakeIPTables()
	one, two := NewWith(ipt, "EJUP1"), NewWith(ipt, "EJUP2")
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
	c2 := ChainsFor("EJUP2")
	if got, want := chainRules(ipt, c2), wantRules(c2, fwd("ji-b", 21001, "172.17.0.3")); !reflect.DeepEqual(got, want) {
		t.Errorf("EJUP2 rules = %q, want %q", got, want)
	}
	if ipt.has("nat", "EJUP1-DNAT") {
		t.Errorf("EJUP1-DNAT survived its Teardown")
	}
}

// The forwards read back from the rules are the forwards added, with the
// environment and container their comments name; a value that could not be
// read back from a comment is left out of it.
func TestForwardsReadBack(t *testing.T) {
	fw := NewWith(newFakeIPTables(), "EJUP")
	if err := fw.Setup(); err != nil {
		t.Fatal(err)
	}
	tagged := Forward{InstanceID: "ji-a", HostPort: 20001, ContainerIP: netip.MustParseAddr("172.17.0.2"), ContainerPort: 8888,
		Sources:       []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("10.0.5.0/24")},
		EnvironmentID: "env-1", ContainerID: "0123abcd"}
	odd := Forward{InstanceID: "ji-b", HostPort: 20002, ContainerIP: netip.MustParseAddr("172.17.0.3"), ContainerPort: 8888,
		EnvironmentID: "env-2", ContainerID: `my container" x`}
	for _, f := range []Forward{tagged, odd} {
		if err := fw.Add(f); err != nil {
			t.Fatal(err)
		}
	}
	got, err := fw.Forwards()
	if err != nil {
		t.Fatal(err)
	}
	tagged.Sources, odd.Sources = nil, nil
	odd.EnvironmentID, odd.ContainerID = "", ""
	if want := map[string]Forward{"ji-a": tagged, "ji-b": odd}; !reflect.DeepEqual(got, want) {
		t.Errorf("Forwards = %+v, want %+v", got, want)
	}
	if err := fw.RemoveInstance("ji-a"); err != nil {
		t.Fatal(err)
	}
	if ids, _ := fw.Instances(); !reflect.DeepEqual(ids, map[string]bool{"ji-b": true}) {
		t.Errorf("after removing the tagged instance, Instances = %v", ids)
	}
}
