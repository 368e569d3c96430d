package agent

import (
	"context"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/envjupyter/envjupyter/shared/message"
	"github.com/envjupyter/envjupyter/sidecar/firewall"
	"github.com/envjupyter/envjupyter/sidecar/jupyter"
)

// startedReports are what a start that runs reports, in order.
var startedReports = []string{"starting:preparing", "starting:launching", "starting:waiting_for_health", "starting:routing", "running"}

func TestStartReportsEachStageThenRunning(t *testing.T) {
	h := newHost(t)
	a := h.agent(nil)
	cmd := h.start("ji-1", "env-1")
	handle(t, a, cmd)

	wantReports(t, h.reports.since(0, "ji-1"), startedReports...)
	if h.docker.launchCount() != 1 {
		t.Fatalf("launches = %d, want 1", h.docker.launchCount())
	}
	if !h.firewall.has("ji-1") {
		t.Fatal("no forward for the running instance")
	}
	if got := h.routes.instance("env-1"); got != "ji-1" {
		t.Fatalf("route of env-1 = %q, want ji-1", got)
	}
	if fi, err := os.Stat(h.state); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file: %v, %v (want mode 0600: it holds tokens)", fi, err)
	}
	text := metricsText(t, a)
	for _, want := range []string{`envjupyter_starts_total{outcome="running"} 1`, `envjupyter_instances{state="running"} 1`, "envjupyter_start_duration_seconds_count 1"} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// A stage's report goes beside the start's work, not in its way: Jupyter is
// launched while the first stage's report is still on its way, and the
// final report comes after every stage's.
func TestStageReportsDoNotHoldUpTheStart(t *testing.T) {
	h := newHost(t)
	release := make(chan struct{})
	h.reports.hold = release
	a := h.agent(nil)
	cmd := h.start("ji-1", "env-1")
	handled := make(chan error, 1)
	go func() { handled <- a.Handle(context.Background(), cmd) }()
	deadline := time.After(10 * time.Second)
	for h.docker.launchCount() == 0 {
		select {
		case err := <-handled:
			t.Fatalf("the start ended (%v) without launching while its first report was held", err)
		case <-deadline:
			t.Fatal("Jupyter was not launched while the first stage's report was held")
		case <-time.After(5 * time.Millisecond):
		}
	}
	if got := h.reports.since(0, "ji-1"); !slices.Equal(got, []string{"starting:preparing"}) {
		t.Fatalf("reports sent while the first is held: %v, want only the first", got)
	}
	close(release)
	if err := <-handled; err != nil {
		t.Fatal(err)
	}
	wantReports(t, h.reports.since(0, "ji-1"), startedReports...)
}

// A host port whose route was just deleted leads nowhere for the port
// quarantine before another instance's forward takes it (longer than a
// proxy worker may use a copy of the old route); so does every port in a
// sidecar's first quarantine after it starts, since an earlier run may have
// freed it just before it died.
func TestFreedPortIsQuarantined(t *testing.T) {
	const quarantine = 300 * time.Millisecond
	h := newHost(t)
	began := time.Now()
	a := h.agent(func(tu *Tuning) { tu.PortQuarantine = quarantine })
	first := h.start("ji-1", "env-1")
	handle(t, a, first)
	if got := forwardAdded(h, "ji-1").Sub(began); got < quarantine {
		t.Fatalf("a just started sidecar forwarded a port %v after it began, within the quarantine of %v", got, quarantine)
	}
	stopping := time.Now() // before the route's deletion
	handle(t, a, stopOf(first, "stopped"))
	next := h.start("ji-2", "env-2")
	next.HostPort = first.HostPort
	handle(t, a, next)
	if got := forwardAdded(h, "ji-2").Sub(stopping); got < quarantine {
		t.Fatalf("the port's next forward came %v after the stop began, within the quarantine of %v", got, quarantine)
	}
	wantReports(t, h.reports.since(0, "ji-2"), startedReports...)
}

// forwardAdded is when the fake firewall last added the instance's forward.
func forwardAdded(h *host, id string) time.Time {
	h.firewall.mu.Lock()
	defer h.firewall.mu.Unlock()
	return h.firewall.added[id]
}

func TestStopRemovesRouteForwardAndState(t *testing.T) {
	h := newHost(t)
	a := h.agent(nil)
	cmd := h.start("ji-1", "env-1")
	handle(t, a, cmd)
	n := h.reports.count()
	handle(t, a, stopOf(cmd, "user"))

	wantReports(t, h.reports.since(n, "ji-1"), "stopped/user")
	if h.firewall.has("ji-1") || h.routes.instance("env-1") != "" {
		t.Fatal("a stopped instance keeps its forward or its route")
	}
	if saved, err := (stateFile{path: h.state}).load(); err != nil || len(saved) != 0 {
		t.Fatalf("state after stop = %v, %v; want empty", saved, err)
	}
	if !strings.Contains(metricsText(t, a), `envjupyter_stops_total{reason="user"} 1`) {
		t.Error("the stop is not counted")
	}
}

func TestDuplicateCommandsAreHarmless(t *testing.T) {
	h := newHost(t)
	a := h.agent(nil)
	cmd := h.start("ji-1", "env-1")
	handle(t, a, cmd)
	n := h.reports.count()

	handle(t, a, cmd) // SQS delivers at least once
	wantReports(t, h.reports.since(n, "ji-1"), "running")
	if h.docker.launchCount() != 1 {
		t.Fatalf("a repeated start launched again: %d launches", h.docker.launchCount())
	}

	handle(t, a, stopOf(cmd, "user"))
	n = h.reports.count()
	handle(t, a, stopOf(cmd, "user"))
	wantReports(t, h.reports.since(n, "ji-1"), "stopped/user")
}

// The password's config file goes with the instance: removed at its stop,
// which carries no password itself; a stop of an instance without one runs
// nothing in the container.
func TestStopRemovesThePasswordConfig(t *testing.T) {
	h := newHost(t)
	a := h.agent(nil)
	plain := h.start("ji-1", "env-1")
	handle(t, a, plain)
	handle(t, a, stopOf(plain, "user"))
	withPassword := h.startWithPassword("ji-2", "env-2")
	handle(t, a, withPassword)
	handle(t, a, stopOf(withPassword, "user"))
	h.docker.mu.Lock()
	defer h.docker.mu.Unlock()
	var rms []string
	for _, argv := range h.docker.runs {
		if argv[0] == "rm" {
			rms = append(rms, strings.Join(argv, " "))
		}
	}
	if want := "rm -f " + jupyter.ConfigPath("ji-2"); len(rms) != 1 || rms[0] != want {
		t.Fatalf("removals run in containers: %q, want only %q", rms, want)
	}
}

// A container with python3 gets JupyterLab through the launcher, which
// writes the config files itself: nothing is copied into the container
// unless the start has a password, and then only its config file.
func TestLauncherNeedsNoCopyIntoTheContainer(t *testing.T) {
	h := newHost(t)
	h.docker.python3 = true
	a := h.agent(nil)
	first := h.start("ji-1", "env-1")
	handle(t, a, first)
	handle(t, a, stopOf(first, "user"))
	withPassword := h.startWithPassword("ji-2", "env-1")
	handle(t, a, withPassword)
	h.docker.mu.Lock()
	defer h.docker.mu.Unlock()
	if len(h.docker.argvs) != 2 {
		t.Fatalf("launches = %d, want 2", len(h.docker.argvs))
	}
	for _, argv := range h.docker.argvs {
		if len(argv) < 3 || argv[0] != "python3" || argv[1] != "-c" || !strings.HasPrefix(argv[2], jupyter.LauncherMarker) {
			t.Errorf("launched %.60q, want python3 -c <the launcher>", argv)
		}
	}
	want := [][]string{{jupyter.ConfigPath("ji-2")}}
	if !reflect.DeepEqual(h.docker.written, want) {
		t.Errorf("copied into the container: %q, want only the password's config file: %q", h.docker.written, want)
	}
}

// Without python3, JupyterLab is launched directly, after the config files.
func TestNoLauncherWithoutPython3(t *testing.T) {
	h := newHost(t)
	a := h.agent(nil)
	handle(t, a, h.start("ji-1", "env-1"))
	h.docker.mu.Lock()
	defer h.docker.mu.Unlock()
	if len(h.docker.argvs) != 1 || h.docker.argvs[0][0] != "jupyter-lab" {
		t.Fatalf("launched %q, want jupyter-lab", h.docker.argvs)
	}
	var want []string
	for path := range jupyter.ConfigFiles() {
		want = append(want, path)
	}
	slices.Sort(want)
	if len(h.docker.written) != 1 || !slices.Equal(slices.Sorted(slices.Values(h.docker.written[0])), want) {
		t.Errorf("copied into the container: %q, want the config files %q", h.docker.written, want)
	}
}

// The flavour is looked up once per container: a second start in the same
// container launches without looking again.
func TestDetectionOncePerContainer(t *testing.T) {
	h := newHost(t)
	a := h.agent(nil)
	first := h.start("ji-1", "env-1")
	handle(t, a, first)
	handle(t, a, stopOf(first, "user"))
	handle(t, a, h.start("ji-2", "env-1"))
	if h.docker.launchCount() != 2 {
		t.Fatalf("launches = %d, want 2", h.docker.launchCount())
	}
	h.docker.mu.Lock()
	defer h.docker.mu.Unlock()
	if h.docker.probes != 1 {
		t.Fatalf("looked for jupyter-lab %d times over two starts in one container, want 1", h.docker.probes)
	}
}

// A stop that overtakes its start: the late start must not bring the
// instance to life.
func TestStopBeforeStartKeepsTheInstanceStopped(t *testing.T) {
	h := newHost(t)
	a := h.agent(nil)
	cmd := h.start("ji-1", "env-1")
	handle(t, a, stopOf(cmd, "user"))
	handle(t, a, cmd)

	wantReports(t, h.reports.since(0, "ji-1"), "stopped/user", "stopped/stopped_before_start")
	if h.docker.launchCount() != 0 || h.firewall.has("ji-1") || h.routes.instance("env-1") != "" {
		t.Fatal("a start after its stop left something behind")
	}
}

// A stop of an old instance must not remove the route of the environment's
// new one.
func TestStopOfAnOldInstanceKeepsTheNewRoute(t *testing.T) {
	h := newHost(t)
	a := h.agent(nil)
	old := h.start("ji-old", "env-1")
	handle(t, a, old)
	handle(t, a, stopOf(old, "user"))
	handle(t, a, h.start("ji-new", "env-1"))
	handle(t, a, stopOf(old, "user")) // delivered again, late

	if got := h.routes.instance("env-1"); got != "ji-new" {
		t.Fatalf("route of env-1 = %q, want ji-new", got)
	}
	if !h.firewall.has("ji-new") {
		t.Fatal("the new instance lost its forward")
	}
}

func TestRestartedAgentAdoptsWhatRuns(t *testing.T) {
	h := newHost(t)
	cmd := h.start("ji-1", "env-1")
	handle(t, h.agent(nil), cmd)
	// The sidecar restarts; iptables and Redis lost their entries meanwhile,
	// and the firewall holds the rule of an instance nobody owns.
	h.firewall.forwards = map[string]firewall.Forward{"ji-orphan": {InstanceID: "ji-orphan"}}
	h.routes.routes = map[string][2]string{}
	h.aliveProcess(t, "ji-1")
	n := h.reports.count()

	a := h.agent(nil)
	var resumed []message.Command
	if err := a.Reconcile(context.Background(), func(c message.Command) { resumed = append(resumed, c) }); err != nil {
		t.Fatal(err)
	}
	wantReports(t, h.reports.since(n, "ji-1"), "running")
	if len(resumed) != 0 {
		t.Fatalf("resumed %d starts of a running instance", len(resumed))
	}
	if !h.firewall.has("ji-1") || h.routes.instance("env-1") != "ji-1" {
		t.Fatal("the adopted instance's forward or route was not restored")
	}
	if h.firewall.has("ji-orphan") {
		t.Fatal("the orphan's rule survived the reconcile")
	}
	handle(t, a, cmd) // the start, delivered again
	if h.docker.launchCount() != 1 {
		t.Fatalf("the adopted instance was launched again: %d launches", h.docker.launchCount())
	}
	if !strings.Contains(metricsText(t, a), `envjupyter_reconcile_actions_total{action="adopt"} 1`) {
		t.Error("the adoption is not counted")
	}
}

func TestRestartedAgentResumesAStartCutShort(t *testing.T) {
	h := newHost(t)
	cmd := h.start("ji-1", "env-1")
	if err := (stateFile{path: h.state}).save(map[string]savedInstance{"ji-1": {Command: cmd}}); err != nil {
		t.Fatal(err)
	}
	a := h.agent(nil)
	var resumed []message.Command
	if err := a.Reconcile(context.Background(), func(c message.Command) { resumed = append(resumed, c) }); err != nil {
		t.Fatal(err)
	}
	if len(resumed) != 1 || resumed[0].InstanceID != "ji-1" {
		t.Fatalf("resumed = %v, want the start of ji-1", resumed)
	}
	handle(t, a, resumed[0])
	if got := h.reports.since(0, "ji-1"); got[len(got)-1] != "running" {
		t.Fatalf("reports = %q, want to end running", got)
	}
}

func TestRestartedAgentEndsInstancesOfGoneContainers(t *testing.T) {
	h := newHost(t)
	cmd := h.start("ji-1", "env-1")
	handle(t, h.agent(nil), cmd)
	h.docker.remove(cmd.ContainerID)
	n := h.reports.count()

	if err := h.agent(nil).Reconcile(context.Background(), func(message.Command) { t.Error("resumed a start") }); err != nil {
		t.Fatal(err)
	}
	wantReports(t, h.reports.since(n, "ji-1"), "stopped/container_gone")
	if h.firewall.has("ji-1") || h.routes.instance("env-1") != "" {
		t.Fatal("a gone container's instance left its forward or route")
	}
}

func TestContainerGoneEndsItsInstance(t *testing.T) {
	h := newHost(t)
	a := h.agent(nil)
	cmd := h.start("ji-1", "env-1")
	handle(t, a, cmd)
	n := h.reports.count()
	h.docker.remove(cmd.ContainerID)
	a.containerGone(context.Background(), cmd.ContainerID)

	wantReports(t, h.reports.since(n, "ji-1"), "stopped/container_gone")
	if h.firewall.has("ji-1") {
		t.Fatal("forward left behind")
	}
}

// A container that restarted unseen (its die event lost in a break of
// Docker's event stream) has another first process, hence another network
// namespace: its instance ended with the Jupyter it ran and is lost, not
// launched again where its probes would never reach it.
func TestRestartedContainerLosesItsInstance(t *testing.T) {
	h := newHost(t)
	a := h.agent(nil)
	cmd := h.start("ji-1", "env-1")
	handle(t, a, cmd)
	n := h.reports.count()
	h.docker.mu.Lock()
	h.docker.pid = 2
	h.docker.mu.Unlock()
	h.jupyter.healthy.Store(false) // and no process in /proc: it died with the container

	a.CheckAll(context.Background())
	wantReports(t, h.reports.since(n, "ji-1"), "stopped/container_gone")
	if h.docker.launchCount() != 1 || h.firewall.has("ji-1") || h.routes.instance("env-1") != "" || a.get("ji-1") != nil {
		t.Fatal("the instance of a restarted container was launched again or left something behind")
	}
}

// A Jupyter that stops answering but still runs becomes unhealthy after
// UnhealthyAfter failed checks, and running again when it answers.
func TestHealthTransitions(t *testing.T) {
	h := newHost(t)
	a := h.agent(nil) // UnhealthyAfter: 2
	handle(t, a, h.start("ji-1", "env-1"))
	h.aliveProcess(t, "ji-1")
	n := h.reports.count()

	ctx := context.Background()
	h.jupyter.healthy.Store(false)
	a.CheckAll(ctx)
	wantReports(t, h.reports.since(n, "ji-1")) // one failed check is not enough
	a.CheckAll(ctx)
	a.CheckAll(ctx) // no repeat while it stays unhealthy
	wantReports(t, h.reports.since(n, "ji-1"), "unhealthy/not_responding: 2 failed checks")

	h.jupyter.healthy.Store(true)
	a.CheckAll(ctx)
	a.CheckAll(ctx) // no heartbeat due yet
	wantReports(t, h.reports.since(n, "ji-1"), "unhealthy/not_responding: 2 failed checks", "running")
	if !strings.Contains(metricsText(t, a), "envjupyter_health_check_failures_total 3") {
		t.Error("failed checks are not counted")
	}
	h.processGone(t)
}

// A Jupyter whose process died is restarted within the restart budget;
// past it, the instance fails and nothing of it stays.
func TestRestartBudget(t *testing.T) {
	h := newHost(t)
	a := h.agent(nil) // RestartBudget: 1 per hour
	handle(t, a, h.start("ji-1", "env-1"))
	n := h.reports.count()

	ctx := context.Background()
	h.jupyter.healthy.Store(false) // and no process in /proc: it died
	a.CheckAll(ctx)
	wantReports(t, h.reports.since(n, "ji-1"), "unhealthy/jupyter_died: restarting")
	if h.docker.launchCount() != 2 {
		t.Fatalf("launches = %d, want 2 (the restart)", h.docker.launchCount())
	}

	a.CheckAll(ctx)
	got := h.reports.since(n, "ji-1")
	if len(got) != 2 || !strings.HasPrefix(got[1], "failed/jupyter_crashed: died after 1 restarts") {
		t.Fatalf("reports = %q, want a failure after the budget", got)
	}
	if h.docker.launchCount() != 2 || h.firewall.has("ji-1") || h.routes.instance("env-1") != "" {
		t.Fatal("a Jupyter past its budget was restarted or left something behind")
	}
	a.CheckAll(ctx)
	if len(h.reports.since(n, "ji-1")) != 2 {
		t.Fatal("a failed instance is still checked")
	}
}

// An idle host still says it is alive: a report of the host alone.
func TestHostHeartbeatWithoutInstances(t *testing.T) {
	h := newHost(t)
	a := h.agent(nil)
	a.HostHeartbeat(context.Background())
	h.reports.mu.Lock()
	defer h.reports.mu.Unlock()
	if len(h.reports.reports) != 1 {
		t.Fatalf("reports after one host heartbeat: %+v, want one", h.reports.reports)
	}
	r := h.reports.reports[0]
	if !r.HostOnly() || r.HostID != a.HostID || r.HostID == "" || r.Validate() != nil {
		t.Fatalf("host heartbeat %+v (valid: %v), want a host-only report from %q", r, r.Validate(), a.HostID)
	}
}
