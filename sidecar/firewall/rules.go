// Package firewall forwards a host port to Jupyter in a container. The
// forwards live as elements of nftables maps and sets in a table the sidecar
// owns (one netlink transaction adds or removes one, whatever the number of
// others; see nft.go); one static iptables rule, in a chain of the sidecar's
// that FORWARD jumps to first, accepts the connections the table forwarded,
// before Docker's own rules drop them. Every forward is tagged with a
// comment naming its instance, so the sidecar finds and removes exactly its
// own, and every change is idempotent. docs/ARCHITECTURE.md says why
// nftables beside go-iptables.
package firewall

import (
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
	// EnvironmentID and ContainerID (Docker's full id) are written in the
	// forward's comment with the instance: a sidecar that lost its state
	// file learns from its own forwards, which nobody else can write, whose
	// environment an instance serves, never from what runs in a container.
	EnvironmentID, ContainerID string
	// Pin, when set, pins the container at layer 2 on its bridge while it
	// has a forward (Bridge); it is not kept in the table's comments: a
	// forward read back has none.
	Pin *Pin
}

// Chains names what one sidecar owns. Two sidecars on one machine (as in
// tests) use different prefixes and never touch each other's.
type Chains struct {
	Table   string // nftables table (family ip) holding the forwards
	Forward string // iptables filter chain: accepts what the table forwarded (from FORWARD)
}

// ChainsFor returns the names for a prefix of at most 20 characters.
func ChainsFor(prefix string) Chains {
	return Chains{Table: prefix, Forward: prefix + "-FWD"}
}

// legacyChains are the iptables chains of earlier sidecars, which held one
// rule per forward: Setup and Teardown remove them.
func legacyChains(prefix string) []struct{ table, chain string } {
	return []struct{ table, chain string }{{"nat", prefix + "-DNAT"}, {"nat", prefix + "-SNAT"}, {"filter", prefix + "-IN"}}
}

// Rule is an iptables rule spec in a table's chain.
type Rule struct {
	Table, Chain string
	Spec         []string
}

// commentPrefix starts the comment of everything the sidecar makes.
const commentPrefix = "envjupyter"

// maxComment is what an nftables element's comment holds (its user data
// is at most 256 bytes, the comment's own header and NUL included).
const maxComment = 250

// instanceComment tags a forward with its instance and, when they fit and
// are plain words, its environment and container.
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

// commentTags returns the key=value words of an instance comment, or nil if
// it is not one.
func commentTags(comment string) map[string]string {
	rest, ok := strings.CutPrefix(comment, commentPrefix+" instance=")
	if !ok {
		return nil
	}
	tags := map[string]string{}
	for _, w := range strings.Fields("instance=" + rest) {
		if k, v, ok := strings.Cut(w, "="); ok {
			tags[k] = v
		}
	}
	if tags["instance"] == "" {
		return nil
	}
	return tags
}

// forwardMark is the conntrack mark bit the table sets on the connections it
// forwards, which is how the iptables rule recognises them.
const forwardMark = 0x04000000

// Jumps are the rules in built-in chains that lead to the sidecar's chain.
func (c Chains) Jumps() []Rule {
	return []Rule{{"filter", "FORWARD", []string{"-m", "comment", "--comment", commentPrefix, "-j", c.Forward}}}
}

// accept is the sidecar chain's one rule: a connection the table forwarded
// (its DNAT marked it), in its original direction (proxy to Jupyter), is
// accepted before Docker's FORWARD rules, which drop traffic to ports no
// container publishes. An accept in the table's own forward chain would not
// do: in nftables every table's chain at a hook sees the packet, and only a
// drop is final.
func (c Chains) accept() Rule {
	return Rule{"filter", c.Forward, []string{
		"-m", "conntrack", "--ctstate", "DNAT", "--ctdir", "ORIGINAL",
		"-m", "connmark", "--mark", markArg,
		"-m", "comment", "--comment", commentPrefix, "-j", "ACCEPT"}}
}

// markArg is forwardMark as iptables' connmark match lists it.
const markArg = "0x4000000/0x4000000"
