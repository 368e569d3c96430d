// Package firewall forwards a host port to Jupyter in a container with
// iptables rules in chains the sidecar owns. Rules are tagged with a comment
// naming the instance, so the sidecar finds and removes exactly its own, and
// every change is idempotent.
package firewall

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Forward is one host port forwarded to a container.
type Forward struct {
	InstanceID    string
	HostPort      int
	ContainerIP   netip.Addr
	ContainerPort int
	// Sources, when set, are the only addresses (the proxies) the port is
	// forwarded for; traffic from anywhere else to the port, or to Jupyter's
	// port in the container, is dropped.
	Sources []netip.Prefix
	// EnvironmentID and ContainerID (Docker's full id) are written in the
	// rules' comments with the instance: a sidecar that lost its state file
	// learns from its own rules, which nobody else can write, whose
	// environment an instance serves, never from what runs in a container.
	EnvironmentID, ContainerID string
}

// Chains names the chains of one sidecar. Two sidecars on one machine (as in
// tests) use different prefixes and never touch each other's rules.
type Chains struct {
	DNAT    string // nat: host port → container (from PREROUTING and OUTPUT)
	SNAT    string // nat: masquerade loopback-sourced forwarded traffic (from POSTROUTING)
	Forward string // filter: accept forwarded traffic to forwarded ports (from FORWARD)
	Input   string // filter: drop what reaches a forwarded port unforwarded (from INPUT)
}

// ChainsFor returns the chain names for a prefix of at most 20 characters.
func ChainsFor(prefix string) Chains {
	return Chains{DNAT: prefix + "-DNAT", SNAT: prefix + "-SNAT", Forward: prefix + "-FWD", Input: prefix + "-IN"}
}

// Rule is a rule spec in a table's chain.
type Rule struct {
	Table, Chain string
	Spec         []string
}

// commentPrefix starts the comment of every rule the sidecar makes.
const commentPrefix = "envjupyter"

// maxComment is what iptables' comment match holds.
const maxComment = 255

// instanceComment tags a forward's rules with its instance and, when they fit
// and are plain words, its environment and container.
func instanceComment(f Forward) string {
	c := commentPrefix + " instance=" + f.InstanceID
	tagged := c + " environment=" + f.EnvironmentID + " container=" + f.ContainerID
	if plainWord(f.EnvironmentID) && plainWord(f.ContainerID) && len(tagged) <= maxComment {
		return tagged
	}
	return c
}

// plainWord reports whether s can stand in a comment unquoted and be read back.
func plainWord(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '-' || r == '_' || r == '.') {
			return false
		}
	}
	return true
}

// commentTags returns the key=value words of the instance comment of a rule
// listing line, as printed by `iptables -S`, or nil if the rule is not an
// instance rule.
func commentTags(line string) map[string]string {
	const marker = "--comment \"" + commentPrefix + " instance="
	_, rest, ok := strings.Cut(line, marker)
	if !ok {
		return nil
	}
	comment, _, ok := strings.Cut(rest, "\"")
	if !ok {
		return nil
	}
	words := strings.Fields("instance=" + comment)
	tags := map[string]string{}
	for _, w := range words {
		if k, v, ok := strings.Cut(w, "="); ok {
			tags[k] = v
		}
	}
	if tags["instance"] == "" {
		return nil
	}
	return tags
}

// InstanceFromComment returns the instance named by a rule listing line, as
// printed by `iptables -S`, or "" if the rule is not an instance rule.
func InstanceFromComment(line string) string {
	return commentTags(line)["instance"]
}

// forwardFromDNAT reads the forward a DNAT rule listing line makes, with
// what its comment says; ok is false for any other line.
func forwardFromDNAT(line string) (Forward, bool) {
	tags := commentTags(line)
	if tags == nil {
		return Forward{}, false
	}
	f := Forward{InstanceID: tags["instance"], EnvironmentID: tags["environment"], ContainerID: tags["container"]}
	words := splitRule(line)
	for i := 0; i+1 < len(words); i++ {
		switch words[i] {
		case "--dport":
			f.HostPort, _ = strconv.Atoi(words[i+1])
		case "--to-destination":
			if ap, err := netip.ParseAddrPort(words[i+1]); err == nil {
				f.ContainerIP, f.ContainerPort = ap.Addr(), int(ap.Port())
			}
		}
	}
	if f.HostPort == 0 || !f.ContainerIP.IsValid() {
		return Forward{}, false
	}
	return f, true
}

// Jumps are the rules in built-in chains that lead to the sidecar's chains.
func (c Chains) Jumps() []Rule {
	tag := []string{"-m", "comment", "--comment", commentPrefix}
	local := []string{"-m", "addrtype", "--dst-type", "LOCAL"}
	return []Rule{
		{"nat", "PREROUTING", concat(local, tag, []string{"-j", c.DNAT})},
		{"nat", "OUTPUT", concat(local, tag, []string{"-j", c.DNAT})},
		{"nat", "POSTROUTING", concat(tag, []string{"-j", c.SNAT})},
		{"filter", "FORWARD", concat(tag, []string{"-j", c.Forward})},
		{"filter", "INPUT", concat(tag, []string{"-j", c.Input})},
	}
}

// tables lists the sidecar's chains with their tables.
func (c Chains) tables() []struct{ table, chain string } {
	return []struct{ table, chain string }{
		{"nat", c.DNAT}, {"nat", c.SNAT}, {"filter", c.Forward}, {"filter", c.Input},
	}
}

// Rules returns the rules that make one forward.
func (c Chains) Rules(f Forward) []Rule {
	comment := []string{"-m", "comment", "--comment", instanceComment(f)}
	dst := f.ContainerIP.String()
	cport := fmt.Sprint(f.ContainerPort)
	hport := fmt.Sprint(f.HostPort)
	// One rule per allowed source; with none, one rule for any source.
	sources := [][]string{nil}
	if len(f.Sources) > 0 {
		sources = nil
		for _, p := range f.Sources {
			sources = append(sources, []string{"-s", p.String()})
		}
	}
	var rules []Rule
	for _, src := range sources {
		rules = append(rules, Rule{"nat", c.DNAT, concat(src,
			[]string{"-p", "tcp", "-m", "tcp", "--dport", hport}, comment,
			[]string{"-j", "DNAT", "--to-destination", netip.AddrPortFrom(f.ContainerIP, uint16(f.ContainerPort)).String()})})
	}
	// A proxy on this host connects to 127.0.0.1: the reply must come
	// back through the host, so the source is rewritten.
	rules = append(rules, Rule{"nat", c.SNAT, concat(
		[]string{"-s", "127.0.0.0/8", "-d", dst + "/32", "-p", "tcp", "-m", "tcp", "--dport", cport}, comment,
		[]string{"-j", "MASQUERADE"})})
	for _, src := range sources {
		rules = append(rules, Rule{"filter", c.Forward, concat(src,
			[]string{"-d", dst + "/32", "-p", "tcp", "-m", "tcp", "--dport", cport, "-m", "conntrack", "--ctstate", "DNAT"}, comment,
			[]string{"-j", "ACCEPT"})})
	}
	if len(f.Sources) > 0 {
		rules = append(rules,
			// Jupyter's port in the container, from anything else (another
			// container on the bridge): dropped.
			Rule{"filter", c.Forward, concat(
				[]string{"-d", dst + "/32", "-p", "tcp", "-m", "tcp", "--dport", cport}, comment, []string{"-j", "DROP"})},
			// The host port from a source that was not forwarded: dropped.
			Rule{"filter", c.Input, concat(
				[]string{"-p", "tcp", "-m", "tcp", "--dport", hport}, comment, []string{"-j", "DROP"})},
		)
	}
	return rules
}

func concat(parts ...[]string) []string {
	var out []string
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// Line is the rule as a line of iptables-restore input (and of `iptables
// -S`), after op ("-A" or "-D"): words holding spaces are double-quoted,
// which is what splitRule undoes.
func (r Rule) Line(op string) string {
	words := []string{op, r.Chain}
	for _, w := range r.Spec {
		if strings.Contains(w, " ") {
			w = `"` + w + `"`
		}
		words = append(words, w)
	}
	return strings.Join(words, " ")
}

// splitRule turns a line of `iptables -S CHAIN` into a rule spec: the
// leading "-A CHAIN" goes, and double-quoted words stay whole.
func splitRule(line string) []string {
	var words []string
	var cur strings.Builder
	inQuote, inWord := false, false
	for _, r := range line {
		switch {
		case r == '"':
			inQuote, inWord = !inQuote, true
		case r == ' ' && !inQuote:
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	if len(words) >= 2 && words[0] == "-A" {
		words = words[2:]
	}
	return words
}
