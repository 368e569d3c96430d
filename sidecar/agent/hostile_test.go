package agent

import (
	"context"
	"testing"
	"time"
)

// A start the control plane ended, coming late after its port went to a
// newer instance (slow, redelivered, resumed), gives up: it neither
// launches nor takes the port back.
func TestLateStartDoesNotTakeBackItsPort(t *testing.T) {
	h := newHost(t)
	a := h.agent(nil)
	newer := h.start("ji-new", "env-new")
	handle(t, a, newer)
	late := h.start("ji-late", "env-late")
	late.HostPort = newer.HostPort
	late.SentAt = newer.SentAt.Add(-time.Minute)
	launches := h.docker.launchCount()

	handle(t, a, late)
	wantReports(t, h.reports.since(0, "ji-late"), "failed/"+portReassigned)
	if h.docker.launchCount() != launches || h.firewall.has("ji-late") || h.routes.instance("env-late") != "" {
		t.Fatal("the late start launched, forwarded or routed")
	}
	if !h.firewall.has("ji-new") || h.routes.instance("env-new") != "ji-new" {
		t.Fatal("the newer instance lost its forward or its route")
	}
	handle(t, a, late) // redelivered: still nothing
	if h.docker.launchCount() != launches {
		t.Fatal("a redelivered late start launched")
	}
}

// A running instance whose port the control plane gave to a newer instance
// (it ended the old one and its stop has not arrived yet) is stopped when the
// newer start claims the port: the old route must not lead to the new
// customer's Jupyter.
func TestNewerStartEvictsARunningInstanceFromItsPort(t *testing.T) {
	h := newHost(t)
	a := h.agent(nil)
	old := h.start("ji-old", "env-old")
	handle(t, a, old)
	newer := h.start("ji-new", "env-new")
	newer.HostPort = old.HostPort
	handle(t, a, newer)

	deadline := time.Now().Add(10 * time.Second)
	for h.routes.instance("env-old") != "" || h.firewall.has("ji-old") {
		if time.Now().After(deadline) {
			t.Fatal("the old instance keeps its route or its forward after its port went to a newer one")
		}
		time.Sleep(10 * time.Millisecond)
	}
	for len(h.reports.since(0, "ji-old")) == 0 || h.reports.since(0, "ji-old")[len(h.reports.since(0, "ji-old"))-1] != "stopped/reaped" {
		if time.Now().After(deadline) {
			t.Fatalf("the old instance's reports %v, want stopped/reaped last", h.reports.since(0, "ji-old"))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !h.firewall.has("ji-new") || h.routes.instance("env-new") != "ji-new" {
		t.Fatal("the newer instance lost its forward or its route")
	}
}

// Work under way on one environment (here, its lock held as a hung command
// would) holds up neither the health checks nor the route refresh of
// another environment.
func TestBusyEnvironmentDoesNotHoldUpTheHost(t *testing.T) {
	h := newHost(t)
	a := h.agent(func(t *Tuning) { t.HeartbeatEvery = time.Nanosecond })
	handle(t, a, h.start("ji-1", "env-1"))
	handle(t, a, h.start("ji-2", "env-2"))
	h.aliveProcess(t, "ji-1")
	defer h.processGone(t)
	unlock := a.lockEnvironment("env-2")
	defer unlock()

	n := h.reports.count()
	done := make(chan struct{})
	go func() {
		a.CheckAll(context.Background())
		a.RefreshRoutes(context.Background())
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the host-wide loops wait for a busy environment")
	}
	wantReports(t, h.reports.since(n, "ji-1"), "running")
}

// Environments' locks are dropped once nobody holds or waits for them.
func TestEnvironmentLocksDoNotAccumulate(t *testing.T) {
	h := newHost(t)
	a := h.agent(nil)
	for _, env := range []string{"env-1", "env-2", "env-3"} {
		cmd := h.start("ji-"+env, env)
		handle(t, a, cmd)
		handle(t, a, stopOf(cmd, "user"))
	}
	a.CheckAll(context.Background())
	a.mu.Lock()
	n := len(a.envLocks)
	a.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d environment locks kept, want none", n)
	}
}

// A start for a container this host does not have (a command meant for
// another host's container, on a port one of this host's instances holds)
// claims nothing: the running instance keeps its port, forward and route,
// and the start fails as container_not_running.
func TestStartForAContainerNotHereEvictsNothing(t *testing.T) {
	h := newHost(t)
	a := h.agent(nil)
	old := h.start("ji-old", "env-old")
	handle(t, a, old)
	stranger := h.start("ji-stranger", "env-elsewhere")
	stranger.HostPort = old.HostPort
	h.docker.mu.Lock()
	h.docker.gone[stranger.ContainerID] = true
	h.docker.mu.Unlock()
	handle(t, a, stranger)
	time.Sleep(100 * time.Millisecond) // an eviction would have begun
	if !h.firewall.has("ji-old") || h.routes.instance("env-old") != "ji-old" {
		t.Fatal("a start for a container not on this host evicted the instance on its port")
	}
	if got := h.reports.since(0, "ji-stranger"); len(got) == 0 || got[len(got)-1] != "failed/container_not_running" {
		t.Fatalf("the stranger's reports %v, want failed/container_not_running", got)
	}
	if got := h.reports.since(0, "ji-old"); len(got) > 0 && got[len(got)-1] != "running" {
		t.Fatalf("the old instance's reports %v: it was touched", got)
	}
}
