package e2e

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/envjupyter/envjupyter/infra/devstack"
	"github.com/envjupyter/envjupyter/sidecar/route"
)

// A route that outlives its instance leads nowhere: customer A's instance
// stops, and its route and token come back in Redis as they were (what a
// deletion that failed, or one a Sentinel failover lost, leaves: the keys
// with what was left of their TTL). Customer B's next start on the same
// host gets A's port only once its cool-down has passed, longer than any
// route can live; A's browser, still sending to A's address with A's token,
// never reaches B's Jupyter. (With no cool-down, B got the port at once and
// A's requests, token and all, reached B's Jupyter.)
func TestStaleRouteNeverLeadsToTheNextInstance(t *testing.T) {
	// One port on the host for this test: the next instance can only be
	// on the port the first one had.
	port := 21499
	setParameter(t, "port_range", strconv.Itoa(port)+"-"+strconv.Itoa(port))
	envA, envB := newEnvironment(t, customerA), newEnvironment(t, customerB)
	a := startWhenFree(t, customerA, envA, "")
	stopAtEnd(t, customerA, envA)
	if hostPort(t, a.InstanceID) != port {
		t.Fatalf("A's instance is not on port %d", port)
	}
	ctx := context.Background()
	admin := redisAs(t, devstack.RedisAdmin)
	left := map[string]string{}
	for _, key := range []string{route.Key(envA), "jupyter:token:" + envA} {
		v, err := admin.Get(ctx, key).Result()
		if err != nil {
			t.Fatalf("A's %s before the stop: %v", key, err)
		}
		left[key] = v
	}
	stop(t, token(customerA), envA)
	waitStatus(t, token(customerA), envA, "stopped", 30*time.Second)
	stoppedAt := time.Now()
	for key, v := range left {
		if err := admin.Set(ctx, key, v, 6*time.Second).Err(); err != nil { // the sidecars' route TTL
			t.Fatal(err)
		}
	}

	b := startWhenFree(t, customerB, envB, "")
	stopAtEnd(t, customerB, envB)
	t.Logf("B's instance ran %s after A's stop", time.Since(stoppedAt).Round(time.Second))
	if hostPort(t, b.InstanceID) != port {
		t.Fatalf("B's instance is not on port %d", port)
	}
	// A's browser, as it was: A's address and A's token.
	req, _ := http.NewRequest(http.MethodGet, accessBase(t, a.AccessURL)+"api/contents", nil)
	req.Header = tokenHeader(accessToken(t, a.AccessURL))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Header.Get("X-Envjupyter-Error") == "" {
		t.Fatalf("A's request answered %d by a Jupyter (no proxy error): it reached B's instance on A's old port", resp.StatusCode)
	}
	if !strings.Contains(resp.Header.Get("X-Envjupyter-Error"), "unknown_environment") {
		t.Logf("A's request: %d %s", resp.StatusCode, resp.Header.Get("X-Envjupyter-Error"))
	}
}

// startWhenFree starts JupyterLab in env once a host port is free (on a
// narrow port range, the port a test wants may still be held or cooling:
// port_cooldown_seconds) and waits until it runs.
func startWhenFree(t *testing.T, customer, env, body string) instanceBody {
	t.Helper()
	deadline := time.Now().Add(portCooldown + 30*time.Second)
	for {
		code, b := start(t, token(customer), env, body)
		if code == http.StatusAccepted {
			return waitStatus(t, token(customer), env, "running", 60*time.Second)
		}
		if code != http.StatusServiceUnavailable || time.Now().After(deadline) {
			t.Fatalf("start of %s: %d %+v", env, code, b.Error)
		}
		time.Sleep(500 * time.Millisecond) // no_free_port: held or cooling
	}
}
