package firewall

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

func TestChainsFor(t *testing.T) {
	if got, want := ChainsFor("EJUPT1"), (Chains{Table: "EJUPT1", Forward: "EJUPT1-FWD"}); got != want {
		t.Errorf("ChainsFor = %+v, want %+v", got, want)
	}
}

func TestJumpsAndAccept(t *testing.T) {
	c := ChainsFor("EJUP")
	if got, want := c.Jumps(), []Rule{{"filter", "FORWARD", []string{"-m", "comment", "--comment", "envjupyter", "-j", "EJUP-FWD"}}}; !reflect.DeepEqual(got, want) {
		t.Errorf("Jumps() = %q, want %q", got, want)
	}
	want := Rule{"filter", "EJUP-FWD", []string{"-m", "conntrack", "--ctstate", "DNAT", "--ctdir", "ORIGINAL", "-m", "connmark", "--mark", "0x4000000/0x4000000", "-m", "comment", "--comment", "envjupyter", "-j", "ACCEPT"}}
	if got := c.accept(); !reflect.DeepEqual(got, want) {
		t.Errorf("accept() = %q, want %q", got, want)
	}
}

func TestInstanceComment(t *testing.T) {
	long := strings.Repeat("a", 200)
	tests := []struct {
		name string
		f    Forward
		want string
	}{
		{"tagged", Forward{InstanceID: "ji-abc", EnvironmentID: "env-1", ContainerID: "0123abcd"}, "envjupyter instance=ji-abc environment=env-1 container=0123abcd"},
		{"no container", Forward{InstanceID: "ji-abc", EnvironmentID: "env-1"}, "envjupyter instance=ji-abc"},
		{"a word with a quote", Forward{InstanceID: "ji-abc", EnvironmentID: "env-1", ContainerID: `a" b`}, "envjupyter instance=ji-abc"},
		{"too long", Forward{InstanceID: "ji-abc", EnvironmentID: "env-1", ContainerID: long}, "envjupyter instance=ji-abc"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := instanceComment(tt.f); got != tt.want {
				t.Errorf("instanceComment = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestCommentTags(t *testing.T) {
	tests := []struct {
		comment string
		want    map[string]string
	}{
		{"envjupyter instance=ji-abc", map[string]string{"instance": "ji-abc"}},
		{"envjupyter instance=ji-abc environment=env-1 container=0123abcd", map[string]string{"instance": "ji-abc", "environment": "env-1", "container": "0123abcd"}},
		{"envjupyter instance=", nil},
		{"other instance=ji-abc", nil},
		{"envjupyter", nil},
		{"", nil},
	}
	for _, tt := range tests {
		if got := commentTags(tt.comment); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("commentTags(%q) = %v, want %v", tt.comment, got, tt.want)
		}
	}
}

func prefixes(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

// An interval set refuses overlapping elements, and the proxies' CIDR may
// well hold the host's own advertised address.
func TestDisjoint(t *testing.T) {
	tests := []struct {
		name     string
		in, want []netip.Prefix
	}{
		{"none", nil, nil},
		{"apart", prefixes("192.0.2.7/32", "10.0.5.0/24"), prefixes("10.0.5.0/24", "192.0.2.7/32")},
		{"nested", prefixes("10.0.5.9/32", "10.0.0.0/16", "10.0.5.0/24"), prefixes("10.0.0.0/16")},
		{"repeated and unmasked", prefixes("10.0.5.1/24", "10.0.5.0/24"), prefixes("10.0.5.0/24")},
		{"everything", prefixes("10.0.5.0/24", "0.0.0.0/0"), prefixes("0.0.0.0/0")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := disjoint(tt.in); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("disjoint(%v) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

func TestRangePrefixUndoesLastAddr(t *testing.T) {
	for _, p := range prefixes("0.0.0.0/0", "10.0.0.0/8", "10.0.5.0/24", "192.0.2.7/32", "127.0.0.0/8", "255.255.255.254/31") {
		last := lastAddr(p)
		if got, ok := rangePrefix(p.Addr(), last); !ok || got != p {
			t.Errorf("%v: last %v, rangePrefix = %v %v", p, last, got, ok)
		}
	}
	if got, ok := rangePrefix(netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")); ok {
		t.Errorf("10.0.0.1-10.0.0.2 is no prefix, got %v", got)
	}
}

func TestAddrPortKey(t *testing.T) {
	b := addrPortKey(netip.MustParseAddr("172.17.0.2"), 8888)
	if want := []byte{172, 17, 0, 2, 0x22, 0xb8, 0, 0}; !reflect.DeepEqual(b, want) {
		t.Errorf("addrPortKey = %v, want %v", b, want)
	}
	if a, p, ok := parseAddrPort(b); !ok || a != netip.MustParseAddr("172.17.0.2") || p != 8888 {
		t.Errorf("parseAddrPort = %v %d %v", a, p, ok)
	}
}
