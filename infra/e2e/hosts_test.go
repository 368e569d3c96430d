package e2e

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/envjupyter/envjupyter/shared/instance"
)

// hostBLink is the link between the root namespace and host B (a private
// range no other stack of this machine uses).
const hostBLink = "10.231.2.0/30"

// newEnvironmentOn is newEnvironment with the environment placed on the
// given host in the environments table (its container runs there).
func newEnvironmentOn(t *testing.T, customer, hostID string) string {
	t.Helper()
	id := fmt.Sprintf("e2e-%s-%d", strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-")), envSeq.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := stack.CreateEnvironmentOn(ctx, hostID, id, customer, labImage.ref); err != nil {
		t.Fatal(err)
	}
	return id
}

// startOnEachHost starts JupyterLab in one new environment on each host at
// once and waits until both run.
func startOnEachHost(t *testing.T, customer string) (envs []string, ins []instanceBody) {
	t.Helper()
	hosts := stack.HostIDs()
	if len(hosts) != 2 {
		t.Fatalf("the test stack runs hosts %v, want two", hosts)
	}
	envs, ins = make([]string, 2), make([]instanceBody, 2)
	for i, h := range hosts {
		envs[i] = newEnvironmentOn(t, customer, h)
	}
	codes := make([]int, 2)
	var wg sync.WaitGroup
	for i := range envs {
		wg.Go(func() { codes[i], ins[i] = start(t, token(customer), envs[i], "") })
	}
	wg.Wait()
	for i := range envs {
		if codes[i] != http.StatusAccepted {
			t.Fatalf("start on %s: %d %+v", hosts[i], codes[i], ins[i].Error)
		}
	}
	for i := range envs {
		ins[i] = waitStatus(t, token(customer), envs[i], "running", 90*time.Second)
		if got := stored(t, ins[i].InstanceID).HostID; got != hosts[i] {
			t.Fatalf("instance of %s runs on %q, want %s", envs[i], got, hosts[i])
		}
	}
	return envs, ins
}

// Two hosts: starts on both at once, each reachable through the proxy (TC-03:
// REST and a kernel), B's at B's address on its link, not loopback; then the
// environment-stopped event stops each (TC-04) and their routes go.
func TestTwoHosts(t *testing.T) {
	const customer = "cust-two-hosts"
	envs, ins := startOnEachHost(t, customer)
	b := stack.HostB()
	if r := redisRoute(t, envs[1]); !strings.Contains(r, b.Advertise+":") {
		t.Fatalf("route of the environment on B: %q, want B's address %s", r, b.Advertise)
	}
	if r := redisRoute(t, envs[0]); strings.Contains(r, b.Advertise+":") {
		t.Fatalf("route of the environment on A: %q, points at B", r)
	}
	for i, env := range envs {
		base, jtoken := accessBase(t, ins[i].AccessURL), accessToken(t, ins[i].AccessURL)
		if st, raw := jupyter(t, http.MethodGet, base+"api/status", jtoken, nil); st != http.StatusOK {
			t.Fatalf("%s: GET api/status through the proxy: %d %s", env, st, raw)
		}
		if got := runCode(t, base, jtoken, "python3", "6*7"); got != "42" {
			t.Fatalf("%s: python 6*7 = %q, want 42", env, got)
		}
	}
	// B's forwards accept the proxy's address on the link and nothing else:
	// from inside B (its own loopback) the forwarded port does not answer.
	port := hostPort(t, ins[1].InstanceID)
	if code := fetchVia(b.Client(), fmt.Sprintf("http://127.0.0.1:%d%sapi", port, accessPath(accessBase(t, ins[1].AccessURL)))); code != 0 {
		t.Fatalf("B's forwarded port from B's loopback: %d, want no answer", code)
	}
	for i, env := range envs {
		environmentStops(t, env)
		stopped := waitStatus(t, token(customer), env, "stopped", 60*time.Second)
		if stopped.StatusReason != "environment_stopped" {
			t.Fatalf("%s: reason %q, want environment_stopped", env, stopped.StatusReason)
		}
		if r := redisRoute(t, env); r != "" {
			t.Fatalf("%s: route remains after the stop: %s", env, r)
		}
		if st, _ := jupyter(t, http.MethodGet, accessBase(t, ins[i].AccessURL)+"api", "", nil); st == http.StatusOK {
			t.Fatalf("%s: still served through the proxy after the stop", env)
		}
	}
}

// fetchVia GETs url with client; it returns the HTTP status, or 0 when
// nothing answered.
func fetchVia(c *http.Client, url string) int {
	c.Timeout = 2 * time.Second
	resp, err := c.Get(url)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// Host B falls silent (its sidecar killed for good): B's instance goes
// failed with reason host_lost, its route expires, A's instance is
// untouched, and a new start on B is refused at once. B's sidecar is
// restarted at the end, for the tests that follow in the shared stack.
func TestHostBLost(t *testing.T) {
	const customer = "cust-host-lost"
	envs, ins := startOnEachHost(t, customer)
	// A's instance is used while B falls silent; B's is left alone, so no
	// activity of it (which the idle timeout, shorter than the silence,
	// would count from) is ever reported.
	keepActive(t, accessBase(t, ins[0].AccessURL), accessToken(t, ins[0].AccessURL))
	b := stack.HostB()
	b.KillSidecar()
	t.Cleanup(func() {
		if err := b.StartSidecar(); err != nil {
			t.Errorf("restarting B's sidecar: %v", err)
		}
	})
	lost := waitStatus(t, token(customer), envs[1], "failed", 3*time.Minute)
	if !strings.HasPrefix(lost.StatusReason, instance.ReasonHostLost) {
		t.Fatalf("instance on B: reason %q, want %s", lost.StatusReason, instance.ReasonHostLost)
	}
	eventually(t, 30*time.Second, func() error {
		if r := redisRoute(t, envs[1]); r != "" {
			return fmt.Errorf("route of the lost instance remains: %s", r)
		}
		return nil
	})
	if st, _ := jupyter(t, http.MethodGet, accessBase(t, ins[1].AccessURL)+"api", "", nil); st == http.StatusOK {
		t.Fatal("the lost instance is still served through the proxy")
	}
	if code, a := status(t, token(customer), envs[0]); code != http.StatusOK || a.Status != "running" || a.InstanceID != ins[0].InstanceID {
		t.Fatalf("instance on A: %d %+v, want the same one running", code, a)
	}
	if st, _ := jupyter(t, http.MethodGet, accessBase(t, ins[0].AccessURL)+"api", "", nil); st != http.StatusOK {
		t.Fatalf("instance on A through the proxy: %d, want 200", st)
	}

	// A new start on the silent host is refused at once, and says why.
	fresh := newEnvironmentOn(t, customer, b.ID)
	code, refused := start(t, token(customer), fresh, "")
	if code != http.StatusServiceUnavailable || refused.Error == nil || refused.Error.Code != "host_unavailable" {
		t.Fatalf("start on the silent host: %d %+v, want 503 host_unavailable", code, refused.Error)
	}
	stop(t, token(customer), envs[0])
	waitStatus(t, token(customer), envs[0], "stopped", 30*time.Second)
}
