package e2e

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"

	"github.com/envjupyter/envjupyter/shared/instance"
)

// A customer at the limit of active instances gets 429 with Retry-After,
// and nothing changes; after a stop there is room again.
func TestCustomerLimit(t *testing.T) {
	const customer = "cust-limited"
	tok := token(customer)
	envs := make([]string, customerLimit+1)
	for i := range envs {
		envs[i] = newEnvironment(t, customer)
	}
	for _, env := range envs[:customerLimit] {
		if code, b := start(t, tok, env, ""); code != http.StatusAccepted {
			t.Fatalf("start within the limit: %d %+v", code, b.Error)
		}
	}
	req, _ := http.NewRequest(http.MethodPost, stack.ProxyURL()+"/api/environments/"+envs[customerLimit]+"/jupyter/start", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("start over the limit: %d, Retry-After %q; want 429 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if _, b := status(t, tok, envs[customerLimit]); b.Status != "not_started" {
		t.Fatalf("the refused start left %s", b.Status)
	}
	stop(t, tok, envs[0])
	waitStatus(t, tok, envs[0], "stopped", 60*time.Second)
	if code, b := start(t, tok, envs[customerLimit], ""); code != http.StatusAccepted {
		t.Fatalf("start after a stop freed room: %d %+v", code, b.Error)
	}
	for _, env := range envs[1:] {
		waitStatus(t, tok, env, "running", 60*time.Second)
		stop(t, tok, env)
	}
	for _, env := range envs[1:] {
		waitStatus(t, tok, env, "stopped", 60*time.Second)
	}
}

// Jupyter may listen on another port inside the container; a port already
// taken there fails the start with a clear reason.
func TestInternalPort(t *testing.T) {
	env := newEnvironment(t, customerA)
	tok := token(customerA)
	code, b := start(t, tok, env, `{"internal_port":9999}`)
	if code != http.StatusAccepted {
		t.Fatalf("start on port 9999: %d %+v", code, b.Error)
	}
	in := waitStatus(t, tok, env, "running", 60*time.Second)
	if rec := stored(t, in.InstanceID); rec.InternalPort != 9999 {
		t.Fatalf("internal_port %d, want 9999", rec.InternalPort)
	}
	if st, _ := jupyter(t, http.MethodGet, accessBase(t, in.AccessURL)+"api", "", nil); st != http.StatusOK {
		t.Fatalf("through the proxy: %d", st)
	}
	stop(t, tok, env)
	waitStatus(t, tok, env, "stopped", 30*time.Second)

	// Something else listens on 9998 in the container.
	ctx := context.Background()
	e, _ := stack.Store.Environment(ctx, env)
	exec, err := stack.Docker.ContainerExecCreate(ctx, e.ContainerID, container.ExecOptions{Cmd: []string{"python3", "-m", "http.server", "9998"}})
	if err == nil {
		err = stack.Docker.ContainerExecStart(ctx, exec.ID, container.ExecStartOptions{Detach: true})
	}
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, func() error {
		out, _ := stack.Docker.ContainerExecInspect(ctx, exec.ID)
		if !out.Running {
			return fmt.Errorf("the squatter is not running")
		}
		return nil
	})
	time.Sleep(time.Second)
	start(t, tok, env, `{"internal_port":9998}`)
	failed := waitStatus(t, tok, env, "failed", 60*time.Second)
	if !strings.HasPrefix(failed.StatusReason, "port_in_use") {
		t.Fatalf("reason %q, want port_in_use", failed.StatusReason)
	}
}

// causes lists the audit trail as action:cause.
func causes(t *testing.T, instanceID string) []string {
	t.Helper()
	var out []string
	for _, a := range stored(t, instanceID).Audit {
		out = append(out, a.Action+":"+a.Cause)
	}
	return out
}

// The audit trail says who or what started and stopped each instance.
func TestAuditTrail(t *testing.T) {
	env, in := running(t)
	stop(t, token(customerA), env)
	waitStatus(t, token(customerA), env, "stopped", 30*time.Second)
	rec := stored(t, in.InstanceID)
	if got := causes(t, in.InstanceID); !slices.Equal(got, []string{"start:customer", "stop:customer", "end:host"}) {
		t.Fatalf("API start and stop: audit %v", got)
	}
	if rec.Audit[0].Actor != "user-"+customerA || rec.Audit[1].Detail != "user" {
		t.Fatalf("audit %+v: want the customer's subject as actor and the reason", rec.Audit)
	}
	_, b := status(t, token(customerA), env)
	if b.Status != "stopped" {
		t.Fatal(b.Status)
	}

	env2, in2 := running(t)
	environmentStops(t, env2)
	waitStatus(t, token(customerA), env2, "stopped", 30*time.Second)
	if got := causes(t, in2.InstanceID); !slices.Equal(got, []string{"start:customer", "stop:environment_event", "end:host"}) {
		t.Fatalf("environment event stop: audit %v", got)
	}
}

// A host that falls silent: the reaper fails its instances (timeout), frees
// their ports; when the host comes back it is told to stop them.
func TestHostLost(t *testing.T) {
	restartSidecarAfter(t)
	env, in := running(t)
	port, base := hostPort(t, in.InstanceID), accessBase(t, in.AccessURL)
	stack.StopSidecar()
	failed := waitStatus(t, token(customerA), env, "failed", 90*time.Second)
	if !strings.HasPrefix(failed.StatusReason, "host_lost") {
		t.Fatalf("reason %q, want host_lost", failed.StatusReason)
	}
	if got := causes(t, in.InstanceID); !slices.Contains(got, "end:timeout") {
		t.Fatalf("audit %v, want an end by timeout", got)
	}
	held, _ := stack.Store.InstancePorts(context.Background(), stack.Opts.HostID)
	if held[port] {
		t.Fatalf("port %d still leased after the host was lost", port)
	}
	if err := stack.StartSidecar(); err != nil {
		t.Fatal(err)
	}
	// The sidecar adopts the Jupyter and reports it; the control plane,
	// which ended it, tells it to stop: nothing may keep running.
	eventually(t, 30*time.Second, func() error {
		if procs, _ := jupyterProcesses(in.InstanceID); len(procs) > 0 {
			return fmt.Errorf("%d processes of the lost instance still run", len(procs))
		}
		if firewallHasPort(t, port) || redisRoute(t, env) != "" {
			return fmt.Errorf("the lost instance's rule or route remains")
		}
		return nil
	})
	assertNothingLeft(t, env, in.InstanceID, port, base)
	if stored(t, in.InstanceID).Status != instance.Failed {
		t.Fatal("the lost instance came back to life in the record")
	}
}
