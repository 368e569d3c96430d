package agent

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/envjupyter/envjupyter/shared/message"
	"github.com/envjupyter/envjupyter/sidecar/firewall"
	"github.com/envjupyter/envjupyter/sidecar/jupyter"
)

// process makes /proc show a process with the environment, in the PID
// namespace ns (the fake containers' first process, pid 1, is in "pid:[1]").
func (h *host) process(t *testing.T, pid int, ns string, env ...string) {
	t.Helper()
	for p, link := range map[int]string{1: "pid:[1]", pid: ns} {
		dir := filepath.Join(h.procDir, strconv.Itoa(p))
		if err := os.MkdirAll(filepath.Join(dir, "ns"), 0o755); err != nil {
			t.Fatal(err)
		}
		_ = os.Remove(filepath.Join(dir, "ns", "pid"))
		if err := os.Symlink(link, filepath.Join(dir, "ns", "pid")); err != nil {
			t.Fatal(err)
		}
	}
	dir := filepath.Join(h.procDir, strconv.Itoa(pid))
	var environ []byte
	for _, kv := range env {
		environ = append(environ, kv+"\x00"...)
	}
	if err := os.WriteFile(filepath.Join(dir, "environ"), environ, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "stat"), []byte(strconv.Itoa(pid)+" (jupyter-lab) S 1 1 1"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// A state file that cannot be read: the restarted agent keeps the instance
// its own rules and the Jupyter in the rules' container vouch for, with the
// token that Jupyter has; it keeps nothing on the word of a process alone.
func TestUnreadableStateIsRebuiltFromRulesAndProcesses(t *testing.T) {
	h := newHost(t)
	kept, planted := h.start("ji-1", "env-1"), h.start("ji-2", "env-2")
	handle(t, h.agent(nil), kept)
	handle(t, h.agent(nil), planted)
	if got := h.firewall.forwards["ji-1"]; got.EnvironmentID != "env-1" || got.ContainerID != "c-env-1" {
		t.Fatalf("the forward does not name its environment and container: %+v", got)
	}
	// ji-1's Jupyter runs in its container; the only process tagged ji-2 is
	// in some other container (a customer can tag a process as anything).
	h.process(t, 1<<30, "pid:[1]", jupyter.MarkerVar+"=ji-1", jupyter.TokenVar+"="+kept.Token)
	h.process(t, 1<<30+1, "pid:[77]", jupyter.MarkerVar+"=ji-2", jupyter.TokenVar+"=chosen-by-someone")
	// A rule from before rules named their environment.
	h.firewall.forwards["ji-old"] = firewall.Forward{InstanceID: "ji-old", HostPort: 9, ContainerPort: 8888}
	h.routes.routes = map[string][2]string{}
	if err := os.WriteFile(h.state, []byte("\x00\xffgarbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	n := h.reports.count()

	a := h.agent(nil)
	if err := a.Reconcile(context.Background(), func(c message.Command) { t.Errorf("resumed %s", c) }); err != nil {
		t.Fatal(err)
	}
	wantReports(t, h.reports.since(n, "ji-1"), "running")
	wantReports(t, h.reports.since(n, "ji-2"), "failed/jupyter_died: not running when the sidecar restarted without its state file")
	if h.routes.instance("env-1") != "ji-1" || h.routes.routes["env-1"][1] == "" {
		t.Fatalf("the kept instance's route was not restored: %v", h.routes.routes)
	}
	if h.routes.instance("env-2") != "" || h.firewall.has("ji-2") || h.firewall.has("ji-old") {
		t.Fatal("an instance nothing vouches for kept its rules or got a route")
	}
	if !h.firewall.has("ji-1") || a.get("ji-1") == nil || a.get("ji-1").cmd.Token != kept.Token {
		t.Fatal("the kept instance is not adopted with its token")
	}
	saved, err := (stateFile{path: h.state}).load()
	if err != nil || !saved["ji-1"].Rebuilt || len(saved) != 1 {
		t.Fatalf("the rebuilt state was not saved: %v, %v", saved, err)
	}
	if h.docker.launchCount() != 2 {
		t.Fatalf("%d launches, want the two starts only", h.docker.launchCount())
	}
}

// A stop removed an instance's rules and Jupyter, and the sidecar died
// before the save that forgets it: the restarted agent does not bring it
// back.
func TestRestartedAgentDoesNotReviveWhatAStopRemoved(t *testing.T) {
	h := newHost(t)
	cmd := h.start("ji-1", "env-1")
	handle(t, h.agent(nil), cmd)
	h.firewall.forwards = map[string]firewall.Forward{}
	n := h.reports.count()

	a := h.agent(nil)
	if err := a.Reconcile(context.Background(), func(c message.Command) { t.Errorf("resumed %s", c) }); err != nil {
		t.Fatal(err)
	}
	if got := h.reports.since(n, "ji-1"); len(got) != 0 {
		t.Fatalf("reports = %q, want none (the stop reports)", got)
	}
	if h.firewall.has("ji-1") || h.routes.instance("env-1") != "" || a.get("ji-1") != nil {
		t.Fatal("the stopped instance came back")
	}
	a.CheckAll(context.Background())
	if h.docker.launchCount() != 1 {
		t.Fatalf("the stopped instance was launched again: %d launches", h.docker.launchCount())
	}
}
