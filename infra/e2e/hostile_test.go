package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
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
			if strings.Contains(line, "jupyter-lab") || strings.Contains(line, "rm -f") {
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
