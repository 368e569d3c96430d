// Package firewall forwards a host port to Jupyter in a container with
// iptables rules in chains the sidecar owns. Rules are tagged with a comment
// naming the instance, so the sidecar finds and removes exactly its own, and
// every change is idempotent.
package firewall

import (
	"fmt"
	"net/netip"
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

func instanceComment(instanceID string) string { return commentPrefix + " instance=" + instanceID }

// InstanceFromComment returns the instance named by a rule listing line, as
// printed by `iptables -S`, or "" if the rule is not an instance rule.
func InstanceFromComment(line string) string {
	const marker = "--comment \"" + commentPrefix + " instance="
	_, rest, ok := strings.Cut(line, marker)
	if !ok {
		return ""
	}
	id, _, ok := strings.Cut(rest, "\"")
	if !ok {
		return ""
	}
	return id
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
	comment := []string{"-m", "comment", "--comment", instanceComment(f.InstanceID)}
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
