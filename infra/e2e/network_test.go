package e2e

import (
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// Addresses of the test's own network namespaces (documentation ranges,
// used only inside this machine): a remote proxy, allowed by the sidecar's
// ENVJUPYTER_PROXY_CIDRS, and some other host, not allowed.
const (
	remoteProxyCIDR = "198.51.100.0/30"
	proxyHostSide   = "198.51.100.1"
	proxyNSSide     = "198.51.100.2"
	otherHostSide   = "203.0.113.1"
	otherNSSide     = "203.0.113.2"
)

// netns makes a network namespace linked to the host by a veth pair, and
// removes it when the test ends.
func netns(t *testing.T, name, hostIP, nsIP string) {
	t.Helper()
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	_ = exec.Command("ip", "netns", "del", name).Run()
	_ = exec.Command("ip", "link", "del", name+"-h").Run()
	run("ip", "netns", "add", name)
	t.Cleanup(func() {
		_ = exec.Command("ip", "link", "del", name+"-h").Run()
		_ = exec.Command("ip", "netns", "del", name).Run()
	})
	run("ip", "link", "add", name+"-h", "type", "veth", "peer", "name", name+"-n")
	run("ip", "link", "set", name+"-n", "netns", name)
	run("ip", "addr", "add", hostIP+"/30", "dev", name+"-h")
	run("ip", "link", "set", name+"-h", "up")
	run("ip", "netns", "exec", name, "ip", "addr", "add", nsIP+"/30", "dev", name+"-n")
	run("ip", "netns", "exec", name, "ip", "link", "set", name+"-n", "up")
	run("ip", "netns", "exec", name, "ip", "link", "set", "lo", "up")
}

// fetchFrom GETs url from inside a namespace; it returns the HTTP status,
// or 0 when nothing answered within two seconds.
func fetchFrom(ns, url string) int {
	out, _ := exec.Command("ip", "netns", "exec", ns, "curl", "-s", "-o", "/dev/null", "-m", "2", "-w", "%{http_code}", url).Output()
	var code int
	fmt.Sscan(string(out), &code)
	return code
}

// The host port of an instance answers the proxies (here, on this host, and
// in a namespace inside the allowed CIDRs) and nobody else.
func TestProxyCIDRs(t *testing.T) {
	env, in := running(t)
	port, base := hostPort(t, in.InstanceID), accessBase(t, in.AccessURL)
	path := accessPath(base) // straight to the host port, not through the proxy
	netns(t, "ejt-proxy", proxyHostSide, proxyNSSide)
	netns(t, "ejt-other", otherHostSide, otherNSSide)

	if st, _ := jupyter(t, http.MethodGet, base+"api", "", nil); st != http.StatusOK {
		t.Fatalf("through the local proxy: %d, want 200", st)
	}
	if code := fetchFrom("ejt-proxy", fmt.Sprintf("http://%s:%d%sapi", proxyHostSide, port, path)); code != http.StatusOK {
		t.Fatalf("from the remote proxy's namespace: %d, want 200", code)
	}
	if code := fetchFrom("ejt-other", fmt.Sprintf("http://%s:%d%sapi", otherHostSide, port, path)); code != 0 {
		t.Fatalf("from a namespace outside the proxy CIDRs: %d, want no answer", code)
	}
	stop(t, token(customerA), env)
	waitStatus(t, token(customerA), env, "stopped", 30*time.Second)
	if code := fetchFrom("ejt-proxy", fmt.Sprintf("http://%s:%d%sapi", proxyHostSide, port, path)); code != 0 {
		t.Fatalf("after stop, from the remote proxy: %d, want no answer", code)
	}
}
