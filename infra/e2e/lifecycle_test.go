package e2e

import (
	"context"
	"encoding/binary"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/redis/go-redis/v9"

	"github.com/envjupyter/envjupyter/functions/store"
	"github.com/envjupyter/envjupyter/infra/devstack"
	jupyterproc "github.com/envjupyter/envjupyter/sidecar/jupyter"
	"github.com/envjupyter/envjupyter/sidecar/route"
)

const (
	customerA = "cust-a"
	customerB = "cust-b" // a neighbour of customerA's on the same host
)

// TC-01 and TC-03: start, use through the proxy (REST, the user interface's
// page and kernel WebSockets, Python and R), stop, and nothing left behind;
// on JupyterLab 4 and on the classic Notebook 6.
func TestStartUseStop(t *testing.T) { onEachImage(t, testStartUseStop) }

func testStartUseStop(t *testing.T, img envImage) {
	env := newEnvironmentFrom(t, customerA, img)
	tok := token(customerA)

	code, started := start(t, tok, env, "")
	if code != http.StatusAccepted || started.InstanceID == "" || started.Status != "starting" {
		t.Fatalf("start: %d %+v, want 202 starting with an instance id", code, started)
	}
	if !strings.HasPrefix(started.AccessURL, stack.EnvURL(env)+"?token=") {
		t.Fatalf("access URL %q, want %s?token=...", started.AccessURL, stack.EnvURL(env))
	}
	running := waitStatus(t, tok, env, "running", 60*time.Second)
	if running.InstanceID != started.InstanceID || running.StartedAt == "" {
		t.Fatalf("running instance %+v, want %s with started_at", running, started.InstanceID)
	}

	base, jtoken := accessBase(t, started.AccessURL), accessToken(t, started.AccessURL)
	if st, raw := jupyter(t, http.MethodGet, base+"api", "", nil); st != http.StatusOK {
		t.Fatalf("GET %sapi through the proxy: %d %s", base, st, raw)
	}
	if st, _ := jupyter(t, http.MethodGet, base+"api/status", jtoken, nil); st != http.StatusOK {
		t.Fatalf("GET %sapi/status with the token: %d, want 200", base, st)
	}
	if st, _ := jupyter(t, http.MethodGet, base+"api/status", "", nil); st != http.StatusForbidden {
		t.Fatalf("GET %sapi/status without the token: %d, want 403", base, st)
	}
	if st, _ := jupyter(t, http.MethodGet, base+"api/status", "not-the-token", nil); st != http.StatusForbidden {
		t.Fatalf("GET %sapi/status with a wrong token: %d, want 403", base, st)
	}
	if st, page := jupyter(t, http.MethodGet, base+img.ui, jtoken, nil); st != http.StatusOK || !strings.Contains(string(page), accessPath(base)) {
		t.Fatalf("GET %s%s (the user interface) with the token: %d, want 200 and a page that knows its base URL", base, img.ui, st)
	}
	st, specs := jupyter(t, http.MethodGet, base+"api/kernelspecs", jtoken, nil)
	if st != http.StatusOK || !strings.Contains(string(specs), `"python3"`) || !strings.Contains(string(specs), `"ir"`) {
		t.Fatalf("kernel specs: %d %s, want python3 and ir", st, specs)
	}
	if got := runCode(t, base, jtoken, "python3", "1+1"); got != "2" {
		t.Fatalf("python 1+1 = %q, want 2", got)
	}
	if got := runCode(t, base, jtoken, "ir", "1+1"); got != "[1] 2" {
		t.Fatalf("R 1+1 = %q, want [1] 2", got)
	}
	assertKernelNoDelayConfig(t, env, started.InstanceID)

	port := hostPort(t, started.InstanceID)
	if !firewallHasPort(t, port) {
		t.Fatalf("no DNAT rule for port %d while running", port)
	}

	code, stopping := stop(t, tok, env)
	if code != http.StatusAccepted || stopping.Status != "stopping" {
		t.Fatalf("stop: %d %+v, want 202 stopping", code, stopping)
	}
	stopped := waitStatus(t, tok, env, "stopped", 30*time.Second)
	if stopped.StoppedAt == "" || stopped.StatusReason != "user" {
		t.Fatalf("stopped instance %+v, want stopped_at and reason user", stopped)
	}
	assertNothingLeft(t, env, started.InstanceID, port, base)

	// Stop again: nothing running, 200, nothing changes.
	if code, b := stop(t, tok, env); code != http.StatusOK || b.Status != "stopped" {
		t.Fatalf("second stop: %d %+v, want 200 stopped", code, b)
	}
}

// kernelNoDelayCheck runs in the container: the instance's Jupyter (found by
// its marker) searches the sidecar's config directory last, where both
// flavours' files set TCP_NODELAY on kernel WebSockets.
const kernelNoDelayCheck = `
import glob, os, sys
marker = ("ENVJUPYTER_INSTANCE_ID=" + sys.argv[1]).encode()
for p in glob.glob("/proc/[0-9]*/environ"):
    try:
        env = open(p, "rb").read().split(b"\0")
    except OSError:
        continue
    if marker in env:
        path = [e for e in env if e.startswith(b"JUPYTER_CONFIG_PATH=")]
        assert path and path[0].split(b"=", 1)[1].split(b":")[-1] == b"/var/lib/envjupyter/config", path
        for name in ("jupyter_server_config.py", "jupyter_notebook_config.py"):
            assert "set_nodelay(True)" in open("/var/lib/envjupyter/config/" + name).read(), name
        sys.exit(0)
sys.exit("no process of the instance")
`

func assertKernelNoDelayConfig(t *testing.T, env, instanceID string) {
	t.Helper()
	e, err := stack.Store.Environment(context.Background(), env)
	if err != nil {
		t.Fatal(err)
	}
	execInContainer(t, e.ContainerID, "python3", "-c", kernelNoDelayCheck, instanceID)
}

// hostPort reads the instance's leased host port from the store.
func hostPort(t *testing.T, instanceID string) int {
	t.Helper()
	in, err := stack.Store.Instance(context.Background(), instanceID)
	if err != nil {
		t.Fatal(err)
	}
	return in.ExternalPort
}

// firewallHasPort reports whether the sidecar's nftables table forwards
// the host port (in any source group's map), or drops it for others.
func firewallHasPort(t *testing.T, port int) bool {
	t.Helper()
	for _, el := range firewallElements(t, func(set string) bool {
		return strings.HasPrefix(set, "forwards_") || set == "guarded_ports"
	}) {
		if len(el.Key) == 2 && int(binary.BigEndian.Uint16(el.Key)) == port {
			return true
		}
	}
	return false
}

// firewallElements reads the elements of the sets and maps of the
// sidecar's nftables table (named by the stack's chain prefix) that want
// names.
func firewallElements(t *testing.T, want func(set string) bool) []nftables.SetElement {
	t.Helper()
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	table := &nftables.Table{Name: stack.Opts.ChainPrefix, Family: nftables.TableFamilyIPv4}
	sets, err := c.GetSets(table)
	if err != nil {
		t.Fatalf("reading the sets of table %s: %v", table.Name, err)
	}
	var all []nftables.SetElement
	for _, s := range sets {
		if !want(s.Name) {
			continue
		}
		els, err := c.GetSetElements(s)
		if err != nil {
			t.Fatalf("reading set %s of table %s: %v", s.Name, table.Name, err)
		}
		all = append(all, els...)
	}
	return all
}

func redisRoute(t *testing.T, env string) string {
	t.Helper()
	rdb, err := stack.Redis(devstack.RedisAdmin)
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close() // called in loops: no connection outlives the call
	v, err := rdb.Get(context.Background(), route.Key(env)).Result()
	if errors.Is(err, redis.Nil) {
		return ""
	}
	if v == "" {
		return "(an empty route)" // present, and broken
	}
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// assertNothingLeft checks that an ended instance holds no lease, rule,
// route or process, and that its URL answers 404.
func assertNothingLeft(t *testing.T, env, instanceID string, port int, base string) {
	t.Helper()
	ctx := context.Background()
	held, err := stack.Store.InstancePorts(ctx, stack.Opts.HostID)
	if err != nil {
		t.Fatal(err)
	}
	if held[port] {
		t.Errorf("port %d is still leased", port)
	}
	if _, err := stack.Store.ActiveInstance(ctx, env); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("environment %s still has an active instance (err %v)", env, err)
	}
	if firewallHasPort(t, port) {
		t.Errorf("a DNAT rule for port %d remains", port)
	}
	if r := redisRoute(t, env); r != "" {
		t.Errorf("route of %s remains: %s", env, r)
	}
	// "stopped" means nothing of the instance runs any more: the host
	// reports it once its processes (kernels and terminals too) are gone.
	if procs, err := jupyterproc.Processes("/proc", instanceID); err != nil || len(procs) > 0 {
		t.Errorf("the instance is stopped, yet processes of instance %s remain: %v (err %v)", instanceID, procs, err)
	}
	if st, _ := jupyter(t, http.MethodGet, base+"api", "", nil); st != http.StatusNotFound {
		t.Errorf("GET %sapi after stop: %d, want 404", base, st)
	}
}

// A second start while starting or running returns the same instance, even
// when many arrive at once.
func TestStartIsIdempotent(t *testing.T) {
	env := newEnvironment(t, customerA)
	tok := token(customerA)
	const n = 20
	ids := make([]string, n)
	codes := make([]int, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, b := start(t, tok, env, "")
			codes[i], ids[i] = c, b.InstanceID
		}()
	}
	wg.Wait()
	accepted := 0
	for i := range n {
		if ids[i] == "" || ids[i] != ids[0] {
			t.Fatalf("concurrent starts gave instances %v (codes %v), want one", ids, codes)
		}
		if codes[i] == http.StatusAccepted {
			accepted++
		}
	}
	if accepted != 1 {
		t.Fatalf("%d starts answered 202 (codes %v), want exactly one; the others 200", accepted, codes)
	}
	running := waitStatus(t, tok, env, "running", 60*time.Second)
	code, again := start(t, tok, env, "")
	if code != http.StatusOK || again.InstanceID != running.InstanceID || again.Status != "running" {
		t.Fatalf("start while running: %d %+v, want 200 with instance %s", code, again, running.InstanceID)
	}
	stop(t, tok, env)
	waitStatus(t, tok, env, "stopped", 30*time.Second)
}

// Errors: each has its status and stable code, and changes nothing.
func TestErrors(t *testing.T) {
	running := newEnvironment(t, customerA)
	ctx := context.Background()
	stoppedEnv := store.Environment{ID: "e2e-stopped-env", CustomerID: customerA, HostID: stack.Opts.HostID, ContainerID: "none", Status: "stopped"}
	if err := stack.Store.PutEnvironment(ctx, stoppedEnv); err != nil {
		t.Fatal(err)
	}
	heldBefore, _ := stack.Store.InstancePorts(ctx, stack.Opts.HostID)

	tests := []struct {
		name, method, path, token, body string
		status                          int
		code                            string
	}{
		{"unknown environment", "POST", "/api/environments/no-such-env/jupyter/start", token(customerA), "", 404, "environment_not_found"},
		{"other customer's environment", "POST", "/api/environments/" + running + "/jupyter/start", token("cust-b"), "", 404, "environment_not_found"},
		{"other customer's status", "GET", "/api/environments/" + running + "/jupyter", token("cust-b"), "", 404, "environment_not_found"},
		{"other customer's stop", "POST", "/api/environments/" + running + "/jupyter/stop", token("cust-b"), "", 404, "environment_not_found"},
		{"environment not running", "POST", "/api/environments/" + stoppedEnv.ID + "/jupyter/start", token(customerA), "", 409, "environment_not_running"},
		{"unknown field", "POST", "/api/environments/" + running + "/jupyter/start", token(customerA), `{"port":1}`, 400, "invalid_body"},
		{"not JSON", "POST", "/api/environments/" + running + "/jupyter/start", token(customerA), `plugins=x`, 400, "invalid_body"},
		{"trailing data", "POST", "/api/environments/" + running + "/jupyter/start", token(customerA), `{}}`, 400, "invalid_body"},
		{"plugin not allowed", "POST", "/api/environments/" + running + "/jupyter/start", token(customerA), `{"plugins":["evil; rm -rf /"]}`, 400, "plugin_not_allowed"},
		{"bad environment id", "POST", "/api/environments/bad.id/jupyter/start", token(customerA), "", 400, "invalid_environment_id"},
		{"oversized body", "POST", "/api/environments/" + running + "/jupyter/start", token(customerA), `{"plugins":["` + strings.Repeat("a", 20000) + `"]}`, 413, "body_too_large"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, b := api(t, tc.method, tc.path, tc.token, tc.body)
			if code != tc.status || b.Error == nil || b.Error.Code != tc.code || b.Error.Message == "" {
				t.Fatalf("%d %+v, want %d with code %s and a message", code, b.Error, tc.status, tc.code)
			}
		})
	}
	t.Run("no identity", func(t *testing.T) {
		req, _ := http.NewRequest("POST", stack.ProxyURL()+"/api/environments/"+running+"/jupyter/start", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("%d, want 401", resp.StatusCode)
		}
	})

	// Nothing changed: no instance anywhere, no lease taken.
	for _, env := range []string{running, stoppedEnv.ID, "no-such-env"} {
		if hist, err := stack.Store.History(ctx, env, 10); err != nil || len(hist) != 0 {
			t.Errorf("environment %s has instances %v after errors (err %v)", env, hist, err)
		}
	}
	heldAfter, _ := stack.Store.InstancePorts(ctx, stack.Opts.HostID)
	if len(heldAfter) != len(heldBefore) {
		t.Errorf("leases changed: %d before, %d after", len(heldBefore), len(heldAfter))
	}
	if code, b := status(t, token(customerA), running); code != 200 || b.Status != "not_started" {
		t.Errorf("status after errors: %d %+v, want not_started", code, b)
	}
}
