package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	jupyterproc "github.com/envjupyter/envjupyter/sidecar/jupyter"
)

// Bounds the sidecar holds a hostile container to (see sidecar/container
// and the agent's deadlines): the start timeout (60 s on the test stack),
// then the cleanup's rm.
const hostileFailsWithin = 90 * time.Second

// A customer whose rm, sh and python3 hang forever (and ignore SIGTERM):
// their start fails with a clear reason within bounds, nothing they hang is
// left running, and meanwhile another environment on the same host starts,
// runs, reports heartbeats and stops as usual.
func TestHostileContainerDoesNotStallTheHost(t *testing.T) {
	hang := buildTestBinary(t, "hang")
	const hostileCustomer = "cust-hostile"
	hostile := newEnvironment(t, hostileCustomer)
	e, err := stack.Store.Environment(context.Background(), hostile)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"/usr/bin/rm", "/usr/bin/sh", "/usr/bin/python3", "/usr/bin/python3.11", "/usr/bin/python3.13"} {
		copyInto(t, e.ContainerID, hang, name)
	}
	// With a password, the cleanup of a failed start runs rm in the container.
	if code, b := start(t, token(hostileCustomer), hostile, `{"password":"hostile-e2e-password"}`); code != http.StatusAccepted {
		t.Fatalf("start of the hostile environment: %d %+v", code, b.Error)
	}
	eventually(t, 30*time.Second, func() error {
		if _, b := status(t, token(hostileCustomer), hostile); b.Stage == "" || b.Stage == "queued" {
			return fmt.Errorf("the hostile start has not reached the host (stage %q)", b.Stage)
		}
		return nil
	})

	// Meanwhile: another environment starts, runs, reports heartbeats, stops.
	env, in := running(t)
	stopAtEnd(t, customerA, env)
	if _, b := status(t, token(hostileCustomer), hostile); b.Status != "starting" {
		t.Fatalf("the hostile start ended (%s) before the other environment ran: the test shows nothing", b.Status)
	}
	if st, _ := jupyter(t, http.MethodGet, accessBase(t, in.AccessURL)+"api", "", nil); st != http.StatusOK {
		t.Fatalf("the other environment through the proxy: %d", st)
	}
	first := stored(t, in.InstanceID).UpdatedAt
	eventually(t, 20*time.Second, func() error {
		if !stored(t, in.InstanceID).UpdatedAt.After(first) {
			return fmt.Errorf("no heartbeat of the other environment since %s", first)
		}
		return nil
	})
	stop(t, token(customerA), env)
	waitStatus(t, token(customerA), env, "stopped", 30*time.Second)

	// Its JupyterLab (python3) never answers: the start times out.
	failed := waitStatus(t, token(hostileCustomer), hostile, "failed", hostileFailsWithin)
	if !strings.HasPrefix(failed.StatusReason, "start_timeout") {
		t.Fatalf("reason %q, want start_timeout", failed.StatusReason)
	}
	// Nothing the sidecar ran in the hostile container is left hanging.
	eventually(t, 30*time.Second, func() error {
		top, err := stack.Docker.ContainerTop(context.Background(), e.ContainerID, nil)
		if err != nil {
			return err
		}
		for _, p := range top.Processes {
			line := strings.Join(p, " ")
			if strings.Contains(line, "jupyter-lab") || strings.Contains(line, jupyterproc.LauncherMarker) || strings.Contains(line, "rm -f") {
				return fmt.Errorf("still running in the hostile container: %s", line)
			}
		}
		return nil
	})
}

// buildTestBinary builds testdata/<name> as a static binary.
func buildTestBinary(t *testing.T, name string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), name)
	cmd := exec.Command("go", "build", "-o", out, "./testdata/"+name)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building testdata/%s: %v\n%s", name, err, b)
	}
	return out
}

// redirectingJupyter is a customer's own "JupyterLab" (a program named
// jupyter-lab earlier on the container's PATH): every request gets a
// redirect to REDIRECT_TARGET, except the fourth GET of /api, which gets
// 200 (so the start runs, and the health checks after it meet redirects).
const redirectingJupyter = `#!/usr/bin/python3
import http.server, sys
opt = lambda name: next(a.split('=', 1)[1] for a in sys.argv if a.startswith(name))
port, base, seen = int(opt('--port=')), opt('--ServerApp.base_url='), [0]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        path = self.path.split('?')[0]
        if path == base + 'api':
            seen[0] += 1
        if path == base + 'api' and seen[0] == 4:
            body = b'{"version": "2.15.0"}'
            self.send_response(200)
            self.send_header('Content-Type', 'application/json')
            self.send_header('Content-Length', str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_response(302)
        self.send_header('Location', 'REDIRECT_TARGET')
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(('0.0.0.0', port), H).serve_forever()
`

// A customer's Jupyter that answers the host's probes with redirects to an
// address of the host's (here a recorder of the test's on the host's
// loopback, standing in for the metadata service or an internal one): the
// probes never follow them. Readiness waits through the redirects; health
// checks that meet one count as failed, and the instance turns unhealthy.
func TestProbesDoNotFollowRedirectsFromTheContainer(t *testing.T) {
	var fetched atomic.Int64
	recorder := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetched.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"version":"x","last_activity":"2026-01-01T00:00:00Z","kernels":9,"connections":9}`)
	}))
	defer recorder.Close()

	env := newEnvironment(t, customerA)
	e, err := stack.Store.Environment(context.Background(), env)
	if err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(t.TempDir(), "jupyter-lab")
	if err := os.WriteFile(script, []byte(strings.ReplaceAll(redirectingJupyter, "REDIRECT_TARGET", recorder.URL+"/latest/meta-data/")), 0o755); err != nil {
		t.Fatal(err)
	}
	copyInto(t, e.ContainerID, script, "/usr/local/bin/jupyter-lab")
	stopAtEnd(t, customerA, env)
	if code, b := start(t, token(customerA), env, ""); code != http.StatusAccepted {
		t.Fatalf("start: %d %+v", code, b.Error)
	}
	waitStatus(t, token(customerA), env, "running", 60*time.Second)
	waitStatus(t, token(customerA), env, "unhealthy", 30*time.Second)
	if n := fetched.Load(); n != 0 {
		t.Fatalf("the host fetched the redirect target %d times", n)
	}
	// The recorder does answer (the check above can fail).
	resp, err := http.Get(recorder.URL + "/latest/meta-data/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || fetched.Load() != 1 {
		t.Fatalf("the recorder answered %d and counted %d requests, want 200 and 1", resp.StatusCode, fetched.Load())
	}
}
