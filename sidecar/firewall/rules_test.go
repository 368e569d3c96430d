package firewall

import (
	"net/netip"
	"reflect"
	"testing"
)

func TestChainsFor(t *testing.T) {
	tests := []struct {
		name   string
		prefix string
		want   Chains
	}{
		{"production", "EJUP", Chains{DNAT: "EJUP-DNAT", SNAT: "EJUP-SNAT", Forward: "EJUP-FWD", Input: "EJUP-IN"}},
		{"test sidecar", "EJUPT1", Chains{DNAT: "EJUPT1-DNAT", SNAT: "EJUPT1-SNAT", Forward: "EJUPT1-FWD", Input: "EJUPT1-IN"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ChainsFor(tt.prefix); got != tt.want {
				t.Errorf("ChainsFor(%q) = %+v, want %+v", tt.prefix, got, tt.want)
			}
		})
	}
}

func TestJumps(t *testing.T) {
	want := []Rule{
		{"nat", "PREROUTING", []string{"-m", "addrtype", "--dst-type", "LOCAL", "-m", "comment", "--comment", "envjupyter", "-j", "EJUP-DNAT"}},
		{"nat", "OUTPUT", []string{"-m", "addrtype", "--dst-type", "LOCAL", "-m", "comment", "--comment", "envjupyter", "-j", "EJUP-DNAT"}},
		{"nat", "POSTROUTING", []string{"-m", "comment", "--comment", "envjupyter", "-j", "EJUP-SNAT"}},
		{"filter", "FORWARD", []string{"-m", "comment", "--comment", "envjupyter", "-j", "EJUP-FWD"}},
		{"filter", "INPUT", []string{"-m", "comment", "--comment", "envjupyter", "-j", "EJUP-IN"}},
	}
	if got := ChainsFor("EJUP").Jumps(); !reflect.DeepEqual(got, want) {
		t.Errorf("Jumps() =\n %q\nwant\n %q", got, want)
	}
}

func TestRules(t *testing.T) {
	tests := []struct {
		name string
		f    Forward
		want []Rule
	}{
		{
			name: "docker bridge",
			f:    Forward{InstanceID: "ji-abc", HostPort: 20001, ContainerIP: netip.MustParseAddr("172.17.0.2"), ContainerPort: 8888},
			want: []Rule{
				{"nat", "EJUP-DNAT", []string{"-p", "tcp", "-m", "tcp", "--dport", "20001", "-m", "comment", "--comment", "envjupyter instance=ji-abc", "-j", "DNAT", "--to-destination", "172.17.0.2:8888"}},
				{"nat", "EJUP-SNAT", []string{"-s", "127.0.0.0/8", "-d", "172.17.0.2/32", "-p", "tcp", "-m", "tcp", "--dport", "8888", "-m", "comment", "--comment", "envjupyter instance=ji-abc", "-j", "MASQUERADE"}},
				{"filter", "EJUP-FWD", []string{"-d", "172.17.0.2/32", "-p", "tcp", "-m", "tcp", "--dport", "8888", "-m", "conntrack", "--ctstate", "DNAT", "-m", "comment", "--comment", "envjupyter instance=ji-abc", "-j", "ACCEPT"}},
			},
		},
		{
			name: "other network and ports",
			f:    Forward{InstanceID: "ji-0123456789abcdef01234567", HostPort: 65535, ContainerIP: netip.MustParseAddr("10.88.3.250"), ContainerPort: 9999},
			want: []Rule{
				{"nat", "EJUP-DNAT", []string{"-p", "tcp", "-m", "tcp", "--dport", "65535", "-m", "comment", "--comment", "envjupyter instance=ji-0123456789abcdef01234567", "-j", "DNAT", "--to-destination", "10.88.3.250:9999"}},
				{"nat", "EJUP-SNAT", []string{"-s", "127.0.0.0/8", "-d", "10.88.3.250/32", "-p", "tcp", "-m", "tcp", "--dport", "9999", "-m", "comment", "--comment", "envjupyter instance=ji-0123456789abcdef01234567", "-j", "MASQUERADE"}},
				{"filter", "EJUP-FWD", []string{"-d", "10.88.3.250/32", "-p", "tcp", "-m", "tcp", "--dport", "9999", "-m", "conntrack", "--ctstate", "DNAT", "-m", "comment", "--comment", "envjupyter instance=ji-0123456789abcdef01234567", "-j", "ACCEPT"}},
			},
		},
		{
			name: "only from the proxies",
			f: Forward{InstanceID: "ji-abc", HostPort: 20001, ContainerIP: netip.MustParseAddr("172.17.0.2"), ContainerPort: 8888,
				Sources: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("10.0.5.0/24")}},
			want: []Rule{
				{"nat", "EJUP-DNAT", []string{"-s", "127.0.0.0/8", "-p", "tcp", "-m", "tcp", "--dport", "20001", "-m", "comment", "--comment", "envjupyter instance=ji-abc", "-j", "DNAT", "--to-destination", "172.17.0.2:8888"}},
				{"nat", "EJUP-DNAT", []string{"-s", "10.0.5.0/24", "-p", "tcp", "-m", "tcp", "--dport", "20001", "-m", "comment", "--comment", "envjupyter instance=ji-abc", "-j", "DNAT", "--to-destination", "172.17.0.2:8888"}},
				{"nat", "EJUP-SNAT", []string{"-s", "127.0.0.0/8", "-d", "172.17.0.2/32", "-p", "tcp", "-m", "tcp", "--dport", "8888", "-m", "comment", "--comment", "envjupyter instance=ji-abc", "-j", "MASQUERADE"}},
				{"filter", "EJUP-FWD", []string{"-s", "127.0.0.0/8", "-d", "172.17.0.2/32", "-p", "tcp", "-m", "tcp", "--dport", "8888", "-m", "conntrack", "--ctstate", "DNAT", "-m", "comment", "--comment", "envjupyter instance=ji-abc", "-j", "ACCEPT"}},
				{"filter", "EJUP-FWD", []string{"-s", "10.0.5.0/24", "-d", "172.17.0.2/32", "-p", "tcp", "-m", "tcp", "--dport", "8888", "-m", "conntrack", "--ctstate", "DNAT", "-m", "comment", "--comment", "envjupyter instance=ji-abc", "-j", "ACCEPT"}},
				{"filter", "EJUP-FWD", []string{"-d", "172.17.0.2/32", "-p", "tcp", "-m", "tcp", "--dport", "8888", "-m", "comment", "--comment", "envjupyter instance=ji-abc", "-j", "DROP"}},
				{"filter", "EJUP-IN", []string{"-p", "tcp", "-m", "tcp", "--dport", "20001", "-m", "comment", "--comment", "envjupyter instance=ji-abc", "-j", "DROP"}},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ChainsFor("EJUP").Rules(tt.f); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Rules() =\n %q\nwant\n %q", got, tt.want)
			}
		})
	}
}

func TestInstanceFromComment(t *testing.T) {
	tests := []struct {
		name string
		line string
		want string
	}{
		{"dnat rule", `-A EJUP-DNAT -p tcp -m tcp --dport 20001 -m comment --comment "envjupyter instance=ji-abc" -j DNAT --to-destination 172.17.0.2:8888`, "ji-abc"},
		{"snat rule", `-A EJUP-SNAT -s 127.0.0.0/8 -d 172.17.0.2/32 -p tcp -m tcp --dport 8888 -m comment --comment "envjupyter instance=ji-abc" -j MASQUERADE`, "ji-abc"},
		{"forward rule", `-A EJUP-FWD -d 172.17.0.2/32 -p tcp -m tcp --dport 8888 -m conntrack --ctstate DNAT -m comment --comment "envjupyter instance=ji-12" -j ACCEPT`, "ji-12"},
		{"jump rule, comment without spaces is unquoted", `-A PREROUTING -m addrtype --dst-type LOCAL -m comment --comment envjupyter -j EJUP-DNAT`, ""},
		{"chain declaration", `-N EJUP-DNAT`, ""},
		{"policy", `-P PREROUTING ACCEPT`, ""},
		{"docker rule", `-A DOCKER ! -i docker0 -p tcp -m tcp --dport 5432 -j DNAT --to-destination 172.17.0.3:5432`, ""},
		{"tagged with environment and container", `-A EJUP-DNAT -p tcp -m tcp --dport 20001 -m comment --comment "envjupyter instance=ji-abc environment=env-1 container=0123abcd" -j DNAT --to-destination 172.17.0.2:8888`, "ji-abc"},
		{"someone else's comment", `-A EJUP-DNAT -p tcp -m comment --comment "other instance=ji-abc" -j ACCEPT`, ""},
		{"unterminated quote", `-A EJUP-DNAT -m comment --comment "envjupyter instance=ji-abc`, ""},
		{"empty", ``, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := InstanceFromComment(tt.line); got != tt.want {
				t.Errorf("InstanceFromComment(%q) = %q, want %q", tt.line, got, tt.want)
			}
		})
	}
}

func TestSplitRule(t *testing.T) {
	f := Forward{InstanceID: "ji-abc", HostPort: 20001, ContainerIP: netip.MustParseAddr("172.17.0.2"), ContainerPort: 8888}
	rules := ChainsFor("EJUP").Rules(f)
	tests := []struct {
		name string
		line string
		want []string
	}{
		{"dnat line as iptables -S prints it", `-A EJUP-DNAT -p tcp -m tcp --dport 20001 -m comment --comment "envjupyter instance=ji-abc" -j DNAT --to-destination 172.17.0.2:8888`, rules[0].Spec},
		{"snat line", `-A EJUP-SNAT -s 127.0.0.0/8 -d 172.17.0.2/32 -p tcp -m tcp --dport 8888 -m comment --comment "envjupyter instance=ji-abc" -j MASQUERADE`, rules[1].Spec},
		{"forward line", `-A EJUP-FWD -d 172.17.0.2/32 -p tcp -m tcp --dport 8888 -m conntrack --ctstate DNAT -m comment --comment "envjupyter instance=ji-abc" -j ACCEPT`, rules[2].Spec},
		{"unquoted comment", `-A POSTROUTING -m comment --comment envjupyter -j EJUP-SNAT`, []string{"-m", "comment", "--comment", "envjupyter", "-j", "EJUP-SNAT"}},
		{"repeated spaces", `-A X  -j   ACCEPT `, []string{"-j", "ACCEPT"}},
		{"empty quoted word", `-A X -m comment --comment "" -j ACCEPT`, []string{"-m", "comment", "--comment", "", "-j", "ACCEPT"}},
		{"not an append line keeps its words", `-N EJUP-DNAT`, []string{"-N", "EJUP-DNAT"}},
		{"append with nothing after the chain", `-A EJUP-DNAT`, []string{}},
		{"empty", ``, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := splitRule(tt.line)
			if len(got) != len(tt.want) || len(got) > 0 && !reflect.DeepEqual(got, tt.want) {
				t.Errorf("splitRule(%q) = %q, want %q", tt.line, got, tt.want)
			}
		})
	}
}

func TestLineIsWhatSplitRuleReads(t *testing.T) {
	c := ChainsFor("EJUP")
	for _, r := range c.Rules(Forward{InstanceID: "ji-1", HostPort: 9000, ContainerIP: netip.MustParseAddr("172.17.0.2"), ContainerPort: 8888, Sources: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}) {
		if got := splitRule(r.Line("-A")); !reflect.DeepEqual(got, r.Spec) {
			t.Errorf("splitRule(%q) = %q, want %q", r.Line("-A"), got, r.Spec)
		}
	}
}
