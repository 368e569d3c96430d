package e2e

import (
	"bufio"
	"crypto/rand"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// keptInstance is a running instance that must come through a sidecar
// crash untouched.
type keptInstance struct {
	env, customer, id string
	port, pid         int
	base, jtoken      string
}

// The sidecar killed while it saves its state, then restarted on a
// truncated state file, then on one filled with garbage: each time it
// starts, says so in its log, and keeps what runs (the same Jupyter
// process, answering through the proxy with the same instance id, still
// reporting); the stop the crash cut short is completed. Stopped
// afterwards, nothing of them is left.
func TestSidecarStateLoss(t *testing.T) {
	restartSidecarAfter(t)
	var kept []keptInstance
	for _, customer := range []string{customerA, "cust-state"} {
		env := newEnvironment(t, customer)
		if code, b := start(t, token(customer), env, ""); code != http.StatusAccepted {
			t.Fatalf("start: %d %+v", code, b.Error)
		}
		in := waitStatus(t, token(customer), env, "running", 60*time.Second)
		k := keptInstance{env: env, customer: customer, id: in.InstanceID, port: hostPort(t, in.InstanceID),
			pid: mainProcess(t, in.InstanceID), base: accessBase(t, in.AccessURL), jtoken: accessToken(t, in.AccessURL)}
		keepActive(t, k.base, k.jtoken) // the test outlasts the stack's idle timeout
		kept = append(kept, k)
	}

	t.Run("killed while saving", func(t *testing.T) {
		env := newEnvironment(t, customerA)
		if code, b := start(t, token(customerA), env, ""); code != http.StatusAccepted {
			t.Fatalf("start: %d %+v", code, b.Error)
		}
		stopped := waitStatus(t, token(customerA), env, "running", 60*time.Second)
		port, base := hostPort(t, stopped.InstanceID), accessBase(t, stopped.AccessURL)
		before, _ := os.ReadFile(stack.SidecarStateFile())
		// The stop first saves the state without the instance: the
		// sidecar dies as it moves the new file into place.
		killAtStateRename(t, func() {
			if code, _ := stop(t, token(customerA), env); code != http.StatusAccepted {
				t.Fatalf("stop: %d", code)
			}
		})
		if tmps, _ := filepath.Glob(stack.SidecarStateFile() + ".tmp-*"); len(tmps) == 0 {
			t.Fatal("no unfinished save is left: the kill did not cut a save short")
		}
		if after, _ := os.ReadFile(stack.SidecarStateFile()); string(after) != string(before) || !strings.Contains(string(after), stopped.InstanceID) {
			t.Fatal("the state file changed: the save was not cut short")
		}
		restartAndExpectLog(t, "a save of the state file was cut short")
		keepsRunning(t, kept)
		// The stop the crash left unconfirmed is completed (the reaper
		// ends it and tells the host again).
		waitStatus(t, token(customerA), env, "stopped", 60*time.Second)
		eventually(t, 30*time.Second, func() error { // the host hears of it just after the store
			if procs, _ := jupyterProcesses(stopped.InstanceID); firewallHasPort(t, port) || len(procs) > 0 {
				return fmt.Errorf("the host has not stopped %s yet", stopped.InstanceID)
			}
			return nil
		})
		assertNothingLeft(t, env, stopped.InstanceID, port, base)
	})
	t.Run("truncated", func(t *testing.T) {
		stack.KillSidecar()
		b, err := os.ReadFile(stack.SidecarStateFile())
		if err != nil || len(b) < 10 {
			t.Fatalf("reading the state file: %d bytes, %v", len(b), err)
		}
		if err := os.Truncate(stack.SidecarStateFile(), int64(len(b)/2)); err != nil {
			t.Fatal(err)
		}
		restartAndExpectLog(t, "the state file is unreadable: rebuilding")
		keepsRunning(t, kept)
	})
	t.Run("garbage", func(t *testing.T) {
		stack.KillSidecar()
		garbage := make([]byte, 4096)
		_, _ = rand.Read(garbage)
		if err := os.WriteFile(stack.SidecarStateFile(), garbage, 0o600); err != nil {
			t.Fatal(err)
		}
		restartAndExpectLog(t, "the state file is unreadable: rebuilding")
		keepsRunning(t, kept)
	})

	for _, k := range kept {
		if code, _ := stop(t, token(k.customer), k.env); code != http.StatusAccepted {
			t.Fatalf("stop of %s: %d", k.env, code)
		}
	}
	for _, k := range kept {
		waitStatus(t, token(k.customer), k.env, "stopped", 30*time.Second)
		assertNothingLeft(t, k.env, k.id, k.port, k.base)
	}
}

// killAtStateRename runs action with the sidecar traced by strace, which
// kills it with SIGKILL the moment it renames a file: the only file it
// renames is its new state, so it dies in the middle of a save. It returns
// once the sidecar is dead.
func killAtStateRename(t *testing.T, action func()) {
	t.Helper()
	pid := stack.SidecarPID()
	if pid == 0 {
		t.Fatal("the sidecar is not running")
	}
	renames := "rename,renameat,renameat2"
	tracer := exec.Command("strace", "-f", "-p", strconv.Itoa(pid), "-e", "trace="+renames, "-e", "inject="+renames+":signal=SIGKILL")
	stderr, err := tracer.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := tracer.Start(); err != nil {
		t.Fatalf("strace (a test dependency, see infra/local/prepare.sh): %v", err)
	}
	t.Cleanup(func() { _ = tracer.Process.Kill(); _ = tracer.Wait() })
	lines := bufio.NewScanner(stderr)
	for lines.Scan() && !strings.Contains(lines.Text(), "attached") {
	}
	go func() { // drain, so strace never blocks on its output
		for lines.Scan() {
		}
	}()
	action()
	eventually(t, 30*time.Second, func() error {
		if stack.SidecarRunning() {
			return fmt.Errorf("the sidecar still runs")
		}
		return nil
	})
}

// restartAndExpectLog starts the sidecar again and checks that its log says
// what it found.
func restartAndExpectLog(t *testing.T, says string) {
	t.Helper()
	logFile := filepath.Join(stack.LogDir(), "sidecar.log")
	before, _ := os.ReadFile(logFile)
	stack.KillSidecar() // forgets the dead process
	if err := stack.StartSidecar(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, func() error {
		after, _ := os.ReadFile(logFile)
		if len(after) < len(before) || !strings.Contains(string(after[len(before):]), says) {
			return fmt.Errorf("the restarted sidecar's log does not say %q", says)
		}
		return nil
	})
}

// keepsRunning checks that each instance still runs as the same Jupyter
// process, answers through the proxy, and that its host reports it again.
func keepsRunning(t *testing.T, kept []keptInstance) {
	t.Helper()
	restarted := time.Now()
	for _, k := range kept {
		eventually(t, 30*time.Second, func() error {
			if pid := mainProcess(t, k.id); pid != k.pid {
				return fmt.Errorf("instance %s runs as process %d, was %d: it was killed", k.id, pid, k.pid)
			}
			if st, _ := jupyter(t, http.MethodGet, k.base+"api/status", k.jtoken, nil); st != http.StatusOK {
				return fmt.Errorf("%sapi/status through the proxy: %d", k.base, st)
			}
			if _, b := status(t, token(k.customer), k.env); b.InstanceID != k.id || b.Status != "running" {
				return fmt.Errorf("environment %s: instance %s %s (%s), want %s running", k.env, b.InstanceID, b.Status, b.StatusReason, k.id)
			}
			if in := stored(t, k.id); !in.ReportedAt.After(restarted) {
				return fmt.Errorf("instance %s: no report since the restart (last %s)", k.id, in.ReportedAt)
			}
			return nil
		})
	}
}
