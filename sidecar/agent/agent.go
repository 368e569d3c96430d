// Package agent is the sidecar's core: it carries out start and stop
// commands on this host (Jupyter in the environment's container, the
// firewall forward, the proxy route), watches what it started, and reports
// to the control plane. It reaches the world only through the four
// interfaces below and Config.Dial (its way to Jupyter in a container), so
// it is tested with small fakes of them.
package agent

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-xray-sdk-go/xray"

	"github.com/envjupyter/envjupyter/shared/accesslink"
	"github.com/envjupyter/envjupyter/shared/instance"
	"github.com/envjupyter/envjupyter/shared/message"
	"github.com/envjupyter/envjupyter/sidecar/container"
	"github.com/envjupyter/envjupyter/sidecar/firewall"
	"github.com/envjupyter/envjupyter/sidecar/jupyter"
	"github.com/envjupyter/envjupyter/sidecar/metrics"
)

// Docker is what the agent needs of the Docker Engine.
type Docker interface {
	Inspect(ctx context.Context, id string) (container.Info, error)
	Run(ctx context.Context, id string, argv, env []string) (container.Output, error)
	HasExecutable(ctx context.Context, id string, dirs []string, name string) (bool, error)
	Launch(ctx context.Context, id string, argv, env []string, workdir string) (int, string, error)
	Exited(ctx context.Context, execID string) (bool, int, error)
	WriteFiles(ctx context.Context, id string, files []container.File) error
}

// Firewall is what the agent needs of the firewall.
type Firewall interface {
	Add(f firewall.Forward) error
	RemoveInstance(instanceID string) error
	Instances() (map[string]bool, error)
	Forwards() (map[string]firewall.Forward, error)
}

// Routes is what the agent needs of the route table.
type Routes interface {
	Set(ctx context.Context, environmentID, target, instanceID, token string) error
	Delete(ctx context.Context, environmentID, target, instanceID string) error
	PublishKeys(ctx context.Context, keys map[string]string) error
}

// Reporter sends reports to the control plane.
type Reporter interface {
	Send(ctx context.Context, r message.Report) error
}

// Tuning are the agent's timings and budgets.
type Tuning struct {
	StartTimeout   time.Duration
	StopGrace      time.Duration
	HealthEvery    time.Duration // how often running instances are checked
	HeartbeatEvery time.Duration // how often an unchanged instance is reported
	UnhealthyAfter int           // consecutive failed checks before unhealthy
	PluginTimeout  time.Duration // bounds a plugin install
	RestartBudget  int           // restarts of a dead Jupyter allowed per RestartWindow
	RestartWindow  time.Duration
	PortQuarantine time.Duration // see DefaultPortQuarantine; 0 means the default
}

// Config is what the agent knows of its host.
type Config struct {
	HostID    string
	Advertise string // the address the proxy reaches this host at
	Sources   []netip.Prefix
	PipEnv    []string // extra PIP_* settings for plugin installs (an index mirror, a wheel directory)
	ProcDir   string   // the host's /proc
	StateFile string   // where the agent keeps what it runs, for its restarts
	// Dial connects to TCP port on the loopback of the network namespace
	// of host process pid (an instance's container's first process), where
	// the health and readiness probes go: the sidecar wires
	// netns.Dialer.Dial; the unit tests, whose fake Jupyter listens on the
	// host's loopback, a plain dial. Required.
	Dial func(ctx context.Context, pid, port int) (net.Conn, error)
	Tuning
}

// Agent carries out commands on this host and keeps what it started.
type Agent struct {
	Config
	docker   Docker
	firewall Firewall
	routes   Routes
	reports  Reporter
	state    stateFile
	metrics  *metrics.Metrics
	log      *slog.Logger

	stateMu   sync.Mutex // serialises saves of the state file; taken before mu
	mu        sync.Mutex
	linkKeys  map[string]string          // access-link keys for the proxy (kid → base64 secret)
	instances map[string]*managed        // by instance id: starting or running here
	ended     map[string]time.Time       // stopped instances, so a late start is ignored
	unrouted  map[int]time.Time          // host port → when a route leading to it was last deleted
	started   time.Time                  // every port counts as unrouted then: an earlier run may have just freed it
	ports     map[int]portClaim          // host port → the newest instance given it
	starts    map[string]func()          // cancels a start under way, by instance id
	envLocks  map[string]*envLock        // only while someone holds or waits for one
	flavours  map[string]jupyter.Flavour // by container id

	waitingStarts atomic.Int64 // starts waiting for their Jupyter to answer
}

// portClaim is the instance a host port was last given to, by the time the
// control plane sent its start: the control plane gives a port to a new
// instance only after ending the one before, so the newest claim is the
// only rightful one, and an older start that comes late (slow, redelivered,
// resumed after a restart) must not take the port back.
type portClaim struct {
	instanceID string
	sentAt     time.Time
}

// envLock serialises work on one environment; refs counts its holders and
// waiters, so that it is dropped when nobody needs it.
type envLock struct {
	sync.Mutex
	refs int
}

// managed is an instance this sidecar runs. Its fields change only under
// its environment's lock; running and status also under the agent's mu
// (setStatus), so that the metrics read them without the environment's.
type managed struct {
	cmd     message.Command
	flavour jupyter.Flavour
	forward firewall.Forward
	pid     int    // the container's first process, on the host: the probes go through its network namespace
	target  string // host:port written to the route table
	running bool   // false while the start is under way
	rebuilt bool   // cmd was recovered without the state file (savedInstance.Rebuilt)

	status     instance.Status // last reported while running: running or unhealthy
	failures   int             // consecutive failed health checks
	restarts   []time.Time
	lastReport time.Time
}

// detectTimeout bounds one probe for a Jupyter executable.
const detectTimeout = 30 * time.Second

// refreshLockWait is how long the route refresh waits for an environment
// that a health check or a command is working on: longer than a health
// probe of a Jupyter that answers, far shorter than a route's lifetime.
const refreshLockWait = 3 * time.Second

// cleanupTimeout bounds each command a cleanup runs in a container (the
// customer's rm may never return).
const cleanupTimeout = 10 * time.Second

// portReassigned is the reason a start fails when the control plane ended it
// and gave its port to a newer instance while it was under way.
const portReassigned = "ended_during_start: the instance was ended and its port given to another"

// probeBase is where the sidecar checks an instance's Jupyter: on the
// loopback of its container, reached through probeClient. The probes carry
// the instance's token (Status), so they go neither over the Docker bridge
// to the container's address, where a neighbour container with NET_RAW can
// answer ARP for that address and receive them (security issue 23), nor
// through the host port, which may still lead to an instance this host was
// told to forget.
func probeBase(m *managed) string {
	return "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(m.cmd.InternalPort)) + m.cmd.BaseURL
}

// probeTimeout bounds one probe, its connection included.
const probeTimeout = 2 * time.Second

// probeClient is the client of an instance's probes: whatever address a
// request names, it connects through Config.Dial to the instance's port in
// its container's network namespace, so a probe cannot go anywhere else.
// It is made per probe (from the fields the caller read under the
// environment's lock): it keeps no connection (probeTransport).
func (a *Agent) probeClient(m *managed) *http.Client {
	pid, port := m.pid, m.cmd.InternalPort
	return &http.Client{Timeout: probeTimeout, Transport: probeTransport(func(ctx context.Context) (net.Conn, error) {
		return a.Dial(ctx, pid, port)
	})}
}

// targetOf is the route target of a host port: where the proxy connects.
func targetOf(advertise string, port int) string {
	return net.JoinHostPort(advertise, strconv.Itoa(port))
}

// endedRetention is how long a stopped instance is remembered; a start
// delayed longer than this is refused by the control plane instead (it tells
// the host to stop a stray instance).
const endedRetention = time.Hour

// New returns an agent; Reconcile must run before it handles commands.
func New(cfg Config, docker Docker, fw Firewall, routes Routes, reports Reporter, log *slog.Logger) *Agent {
	if cfg.Dial == nil {
		// No fallback to the bridge: it is what the probes must not cross.
		panic("agent: Config.Dial is required (the probes' way into the containers)")
	}
	if cfg.PortQuarantine == 0 {
		cfg.PortQuarantine = DefaultPortQuarantine
	}
	a := &Agent{
		Config: cfg, docker: docker, firewall: fw, routes: routes, reports: reports, log: log,
		started:   time.Now(),
		state:     stateFile{path: cfg.StateFile},
		instances: map[string]*managed{},
		ended:     map[string]time.Time{},
		unrouted:  map[int]time.Time{},
		ports:     map[int]portClaim{},
		starts:    map[string]func(){},
		envLocks:  map[string]*envLock{},
		flavours:  map[string]jupyter.Flavour{},
	}
	a.metrics = metrics.New(a.instancesByState)
	return a
}

// probeTransport opens a connection per probe and closes it after. Kept
// from one health check to the next (every 15 s), an idle connection to
// each instance held its buffers and two goroutines in the sidecar's
// memory (docs/BENCHMARKS.md, figure 7) to save a handshake on the host's
// own bridge.
// It never goes through an HTTP(S)_PROXY of the sidecar's environment:
// health checks carry the instance's token, which must reach nothing but
// the instance. Every connection is dial's, whatever the request's address.
func probeTransport(dial func(context.Context) (net.Conn, error)) *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DisableKeepAlives = true
	t.Proxy = nil
	t.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) { return dial(ctx) }
	t.DialTLSContext = nil // probes are plain HTTP on the container's loopback
	return t
}

// Metrics are the agent's series.
func (a *Agent) Metrics() *metrics.Metrics { return a.metrics }

// instancesByState counts the instances of this host for the metrics. It
// reads running and status under mu, where they are written (setStatus,
// put), not under the environments' locks it does not take.
func (a *Agent) instancesByState() map[string]int {
	a.mu.Lock()
	defer a.mu.Unlock()
	counts := map[string]int{}
	for _, in := range a.instances {
		state := "starting"
		if in.running {
			state = string(in.status)
		}
		counts[state]++
	}
	return counts
}

// setStatus changes an instance's reported status.
func (a *Agent) setStatus(m *managed, s instance.Status) {
	a.mu.Lock()
	m.status = s
	a.mu.Unlock()
}

// SetLinkKeys replaces the access-link keys published to the proxy; the
// next refresh publishes them.
func (a *Agent) SetLinkKeys(keys []accesslink.Key) {
	m := map[string]string{}
	for _, k := range keys {
		m[k.ID] = base64.StdEncoding.EncodeToString(k.Secret)
	}
	a.mu.Lock()
	a.linkKeys = m
	a.mu.Unlock()
}

// lockEnvironment serialises work on one environment.
func (a *Agent) lockEnvironment(id string) func() {
	l := a.envLock(id)
	l.Lock()
	return func() { a.releaseEnvironment(id, l) }
}

// tryLockEnvironment takes the environment's lock if it is free. Host-wide
// loops use it: work under way on one environment (a start, a stop, a
// container that does not answer) never holds them up; the work reports by
// itself, and the next round looks again.
func (a *Agent) tryLockEnvironment(id string) (func(), bool) {
	return a.lockEnvironmentWithin(id, 0)
}

// lockEnvironmentWithin takes the environment's lock if it comes free within
// wait. The route refresh waits a little: the health check holds the lock
// during its probes, every second or so, and a refresh that gave up at
// once would keep missing a healthy instance until its route expired.
func (a *Agent) lockEnvironmentWithin(id string, wait time.Duration) (func(), bool) {
	l := a.envLock(id)
	deadline := time.Now().Add(wait)
	for !l.TryLock() {
		if !time.Now().Before(deadline) {
			a.mu.Lock()
			a.dropRef(id, l)
			a.mu.Unlock()
			return nil, false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return func() { a.releaseEnvironment(id, l) }, true
}

func (a *Agent) envLock(id string) *envLock {
	a.mu.Lock()
	defer a.mu.Unlock()
	l, ok := a.envLocks[id]
	if !ok {
		l = &envLock{}
		a.envLocks[id] = l
	}
	l.refs++
	return l
}

func (a *Agent) releaseEnvironment(id string, l *envLock) {
	a.mu.Lock()
	defer a.mu.Unlock()
	l.Unlock()
	a.dropRef(id, l)
}

// dropRef forgets a lock nobody holds or waits for; a.mu is held.
func (a *Agent) dropRef(id string, l *envLock) {
	if l.refs--; l.refs == 0 {
		delete(a.envLocks, id)
	}
}

func (a *Agent) managedCopy() []*managed {
	a.mu.Lock()
	defer a.mu.Unlock()
	list := make([]*managed, 0, len(a.instances))
	for _, m := range a.instances {
		list = append(list, m)
	}
	return list
}

func (a *Agent) get(id string) *managed {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.instances[id]
}

// put records (m != nil) or forgets an instance, and saves the state file.
// Puts are serialised (stateMu) so that snapshots reach the file in order.
func (a *Agent) put(id string, m *managed) {
	a.stateMu.Lock()
	defer a.stateMu.Unlock()
	a.mu.Lock()
	if m == nil {
		delete(a.instances, id)
	} else {
		a.instances[id] = m
	}
	saved := make(map[string]savedInstance, len(a.instances))
	for id, m := range a.instances {
		saved[id] = savedInstance{Command: m.cmd, Running: m.running, Rebuilt: m.rebuilt}
	}
	a.mu.Unlock()
	if err := a.state.save(saved); err != nil {
		a.log.Error("saving state; a restart may not find this instance", "instance_id", id, "error", err)
	}
}

func (a *Agent) forget(id string) {
	a.markEnded(id)
	a.put(id, nil)
}

// markEnded records that an instance has ended: a start of it that has not
// begun is ignored, one under way is cancelled, and its port claim goes.
func (a *Agent) markEnded(id string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.ended[id] = time.Now()
	if cancel := a.starts[id]; cancel != nil {
		cancel()
	}
	for port, c := range a.ports {
		if c.instanceID == id {
			delete(a.ports, port)
		}
	}
}

func (a *Agent) isEnded(id string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	_, ok := a.ended[id]
	return ok
}

// claimPort gives the command's host port to its instance, unless a newer
// instance holds it; it reports whether the instance holds it now.
func (a *Agent) claimPort(cmd message.Command) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	c, ok := a.ports[cmd.HostPort]
	if ok && c.instanceID != cmd.InstanceID && c.sentAt.After(cmd.SentAt) {
		return false
	}
	if !ok || c.instanceID != cmd.InstanceID {
		a.ports[cmd.HostPort] = portClaim{instanceID: cmd.InstanceID, sentAt: cmd.SentAt}
		if cancel := a.starts[c.instanceID]; ok && cancel != nil {
			cancel() // an older start of the port can no longer finish
		}
		if old := a.instances[c.instanceID]; ok && old != nil && old.running {
			// The control plane ended it and gave its port away before
			// this host heard: its route would lead to the new instance.
			go a.evict(old.cmd)
		}
	}
	return true
}

// evictTimeout bounds the stop of an instance whose port went to another.
const evictTimeout = 2 * time.Minute

// evict stops a running instance whose port a newer instance claimed, as
// the control plane's stop (which may still be on its way) would.
func (a *Agent) evict(start message.Command) {
	ctx, cancel := context.WithTimeout(context.Background(), evictTimeout)
	defer cancel()
	stop := message.Command{
		V: message.Version, Type: message.TypeStop, InstanceID: start.InstanceID, EnvironmentID: start.EnvironmentID,
		ContainerID: start.ContainerID, HostPort: start.HostPort, Reason: instance.ReasonReaped, SentAt: time.Now().UTC(),
	}
	if err := a.Handle(ctx, stop); err != nil {
		a.log.Warn("stopping an instance whose port went to another", "instance_id", start.InstanceID, "error", err)
	}
}

// cancellable returns the context a start works in: cancelled when the
// instance ends or a newer instance claims its port, so that a start the
// control plane gave up on stops its work (a slow plugin install, the wait
// for Jupyter) at once instead of at its next stage.
func (a *Agent) cancellable(ctx context.Context, id string) (context.Context, func()) {
	ctx, cancel := context.WithCancel(ctx)
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ended := a.ended[id]; ended {
		cancel()
	}
	a.starts[id] = cancel
	return ctx, func() {
		a.mu.Lock()
		delete(a.starts, id)
		a.mu.Unlock()
		cancel()
	}
}

// holdsPort reports whether the instance still holds its port and has not
// ended: a start checks it before each step that others could see.
func (a *Agent) holdsPort(cmd message.Command) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	_, ended := a.ended[cmd.InstanceID]
	return !ended && a.ports[cmd.HostPort].instanceID == cmd.InstanceID
}

// Handle carries out one command. It returns an error only when the command
// should be delivered again (the report could not be sent).
func (a *Agent) Handle(ctx context.Context, cmd message.Command) error {
	if cmd.Type == message.TypeStop {
		// At once, not behind the environment's lock: a start of the
		// instance under way gives up at its next stage.
		a.markEnded(cmd.InstanceID)
	}
	defer a.lockEnvironment(cmd.EnvironmentID)()
	log := a.log.With("instance_id", cmd.InstanceID, "environment_id", cmd.EnvironmentID, "container_id", cmd.ContainerID)
	lag := time.Since(cmd.SentAt).Seconds()
	a.metrics.CommandLag.Observe(lag)
	switch cmd.Type {
	case message.TypeStart:
		return a.start(ctx, log, cmd)
	case message.TypeStop:
		return a.stop(ctx, log, cmd)
	}
	return nil
}

func (a *Agent) report(ctx context.Context, id string, status instance.Status, stage instance.Stage, reason string, health *instance.Health) error {
	r := message.Report{V: message.Version, InstanceID: id, HostID: a.HostID, Status: status, Stage: stage, Reason: reason, Health: health, At: time.Now().UTC()}
	var err error
	for attempt := range 3 {
		if err = a.reports.Send(ctx, r); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(time.Duration(attempt+1) * 500 * time.Millisecond):
		}
	}
	return err
}

func (a *Agent) start(ctx context.Context, log *slog.Logger, cmd message.Command) error {
	if a.isEnded(cmd.InstanceID) {
		log.Info("ignoring start of an instance already stopped")
		return a.report(ctx, cmd.InstanceID, instance.Stopped, "", instance.ReasonStoppedBeforeStart, nil)
	}
	// A start names a container of this host's: one this host does not
	// have (a command meant for another host) claims no port and evicts
	// nothing, and neither does one Docker cannot vouch for now.
	if _, err := a.docker.Inspect(ctx, cmd.ContainerID); err != nil {
		reason := instance.WithDetail(instance.ReasonDockerError, "inspecting the container before claiming its port")
		if errors.Is(err, container.ErrGone) {
			reason = instance.ReasonContainerNotRunning
		}
		log.Warn("ignoring a start for a container this host cannot vouch for", "error", err)
		return a.report(ctx, cmd.InstanceID, instance.Failed, "", reason, nil)
	}
	if !a.claimPort(cmd) {
		log.Warn("ignoring a start whose port went to a newer instance", "port", cmd.HostPort)
		a.markEnded(cmd.InstanceID)
		return a.report(ctx, cmd.InstanceID, instance.Failed, "", portReassigned, nil)
	}
	if m := a.get(cmd.InstanceID); m != nil && m.running {
		log.Info("start repeated; instance already running")
		return a.report(ctx, cmd.InstanceID, m.status, "", "", nil)
	}
	began := time.Now()
	a.put(cmd.InstanceID, &managed{cmd: cmd})
	launchCtx, done := a.cancellable(ctx, cmd.InstanceID)
	m, reason := a.launch(launchCtx, log, cmd)
	done()
	if m == nil {
		stopped := a.isEnded(cmd.InstanceID) // before forget, which marks it ended
		if !stopped && !a.holdsPort(cmd) {
			reason = portReassigned // whatever the cancelled stage said
		}
		a.cleanup(context.WithoutCancel(ctx), log, cmd)
		a.forget(cmd.InstanceID) // a redelivered copy of the start is not tried again
		if stopped {
			// A stop ended this start under way; it waits for the
			// environment's lock and reports the instance stopped, with
			// its own reason, once this returns.
			log.Info("start given up: the instance was stopped")
			return nil
		}
		log.Warn("start failed", "reason", reason)
		a.metrics.Starts.WithLabelValues("failed").Inc()
		return a.report(ctx, cmd.InstanceID, instance.Failed, "", reason, nil)
	}
	m.running, m.status, m.lastReport = true, instance.Running, time.Now() // not shared yet
	a.put(cmd.InstanceID, m)
	a.metrics.StartDuration.Observe(time.Since(began).Seconds())
	a.metrics.Starts.WithLabelValues("running").Inc()
	log.Info("instance running", "port", cmd.HostPort, "duration_ms", time.Since(began).Milliseconds())
	return a.report(ctx, cmd.InstanceID, instance.Running, "", "", nil)
}

// launch runs the start stages; on failure it returns nil and a reason.
func (a *Agent) launch(ctx context.Context, log *slog.Logger, cmd message.Command) (*managed, string) {
	stages := a.reportStages(ctx, log, cmd.InstanceID)
	defer stages.done()
	stage := stages.send
	stage(instance.StagePreparing)
	info, err := a.docker.Inspect(ctx, cmd.ContainerID)
	if errors.Is(err, container.ErrGone) {
		return nil, instance.ReasonContainerNotRunning
	}
	if err != nil {
		log.Error("inspecting container", "error", err)
		return nil, instance.ReasonDockerError
	}
	var flavour jupyter.Flavour
	err = xray.Capture(ctx, "detect jupyter", func(ctx context.Context) (err error) {
		flavour, err = a.detect(ctx, info)
		return err
	})
	if errors.Is(err, jupyter.ErrNoJupyter) {
		return nil, instance.WithDetail(instance.ReasonNoJupyterInImage, err.Error())
	}
	if errors.Is(err, context.DeadlineExceeded) {
		log.Warn("detecting jupyter: the container does not answer", "error", err)
		return nil, instance.WithDetail(instance.ReasonContainerUnresponsive, fmt.Sprintf("looking for Jupyter in the container did not finish within %s", detectTimeout))
	}
	if err != nil {
		log.Error("detecting jupyter", "error", err)
		return nil, instance.ReasonDockerError
	}
	// An earlier attempt at this start (the sidecar died during it) may
	// have left processes; begin from nothing.
	if procs, _ := jupyter.Processes(a.ProcDir, cmd.InstanceID); len(procs) > 0 {
		log.Info("stopping what an earlier attempt left", "processes", len(procs))
	}
	if err := jupyter.Terminate(a.ProcDir, cmd.InstanceID, a.StopGrace); err != nil {
		log.Warn("clearing leftovers of an earlier attempt", "error", err)
	}
	if busy, err := a.portBusy(ctx, info.PID, cmd.InternalPort); err != nil {
		log.Warn("checking the internal port", "error", err)
	} else if busy {
		return nil, instance.WithDetail(instance.ReasonPortInUse, fmt.Sprintf("something in the container already listens on port %d", cmd.InternalPort))
	}
	if len(cmd.Plugins) > 0 {
		stage(instance.StagePlugins)
		if reason := traced(ctx, "install plugins", func(ctx context.Context) string { return a.installPlugins(ctx, log, cmd) }); reason != "" {
			return nil, reason
		}
	}
	if !a.holdsPort(cmd) {
		return nil, portReassigned
	}
	stage(instance.StageLaunching)
	var execID string
	err = xray.Capture(ctx, "docker exec", func(ctx context.Context) (err error) {
		execID, err = a.exec(ctx, cmd, flavour, info)
		return err
	})
	if err != nil {
		log.Error("launching jupyter", "error", err)
		a.forgetContainer(cmd.ContainerID)
		if errors.Is(err, container.ErrGone) {
			return nil, instance.ReasonContainerNotRunning
		}
		return nil, instance.ReasonLaunchFailed
	}
	log.Info("jupyter launched", "flavour", flavour.Name, "version", flavour.Version)
	m := &managed{
		cmd: cmd, flavour: flavour, pid: info.PID,
		forward: a.forwardOf(cmd, info),
		target:  targetOf(a.Advertise, cmd.HostPort),
	}
	if !a.holdsPort(cmd) {
		return nil, portReassigned
	}
	if !a.waitQuarantine(ctx, cmd.HostPort) {
		return nil, instance.ReasonSidecarStopping
	}
	if reason := traced(ctx, "firewall", func(context.Context) string { return a.forward(log, m, info) }); reason != "" {
		return nil, reason
	}
	stage(instance.StageWaiting)
	if reason := traced(ctx, "health wait", func(ctx context.Context) string {
		return a.waitReady(ctx, cmd, flavour, execID, a.probeClient(m), probeBase(m))
	}); reason != "" {
		return nil, reason
	}
	stage(instance.StageRouting)
	if !a.holdsPort(cmd) {
		return nil, portReassigned
	}
	err = xray.Capture(ctx, "route write", func(ctx context.Context) error {
		return a.routes.Set(ctx, cmd.EnvironmentID, m.target, cmd.InstanceID, cmd.Token)
	})
	if err != nil {
		log.Error("writing route", "error", err)
		return nil, instance.ReasonRouteError
	}
	return m, ""
}

// stageReports sends a start's stage reports in order, beside the start's
// own work instead of in its way (each is a queue round trip); done waits
// for them, so that the start's final report comes after its stages.
type stageReports struct {
	queue chan instance.Stage
	sent  chan struct{}
}

// maxStages is more than the stages a start reports (instance.Stage*).
const maxStages = 8

func (a *Agent) reportStages(ctx context.Context, log *slog.Logger, id string) *stageReports {
	s := &stageReports{queue: make(chan instance.Stage, maxStages), sent: make(chan struct{})}
	go func() {
		defer close(s.sent)
		for stage := range s.queue {
			if err := a.report(ctx, id, instance.Starting, stage, "", nil); err != nil {
				log.Warn("could not report stage", "stage", stage, "error", err)
			}
		}
	}()
	return s
}

// send queues a stage's report; a start reports each stage at most once, so
// the queue never fills.
func (s *stageReports) send(stage instance.Stage) { s.queue <- stage }

func (s *stageReports) done() {
	close(s.queue)
	<-s.sent
}

// traced runs a stage of a start in an X-Ray subsegment named name, so that
// a start's trace shows where it spent its time; a failure reason marks the
// subsegment failed.
func traced(ctx context.Context, name string, stage func(context.Context) string) string {
	var reason string
	_ = xray.Capture(ctx, name, func(ctx context.Context) error {
		if reason = stage(ctx); reason != "" {
			return errors.New(reason)
		}
		return nil
	})
	return reason
}

// installPlugins pip-installs the start's plugins in the container, within
// pluginTimeout; it returns a failure reason with pip's last words, or "".
func (a *Agent) installPlugins(ctx context.Context, log *slog.Logger, cmd message.Command) string {
	ctx, cancel := context.WithTimeout(ctx, a.PluginTimeout)
	defer cancel()
	argv := append([]string{"python3", "-m", "pip", "install", "--no-input", "--disable-pip-version-check",
		"--root-user-action=ignore"}, cmd.Plugins...)
	// Debian's Python refuses system-wide installs without this (PEP 668).
	env := append([]string{"PIP_BREAK_SYSTEM_PACKAGES=1"}, a.PipEnv...)
	out, err := a.docker.Run(ctx, cmd.ContainerID, argv, env)
	switch {
	case errors.Is(err, container.ErrGone):
		return instance.ReasonContainerNotRunning
	case err != nil:
		log.Error("installing plugins", "error", err)
		return instance.WithDetail(instance.ReasonPluginInstallFailed, err.Error())
	case out.ExitCode != 0:
		log.Warn("plugin install failed", "exit_code", out.ExitCode)
		return instance.WithDetail(instance.ReasonPluginInstallFailed, lastLine(out.Stdout+"\n"+out.Stderr)) // pip ends with its ERROR on stderr
	}
	log.Info("plugins installed", "plugins", len(cmd.Plugins))
	return ""
}

// lastLine returns the last non-empty line of s, shortened: pip's summary.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if l := strings.TrimSpace(lines[i]); l != "" {
			if len(l) > 300 {
				l = l[:300]
			}
			return l
		}
	}
	return "no output"
}

// detect finds the container's Jupyter, once per container.
func (a *Agent) detect(ctx context.Context, info container.Info) (jupyter.Flavour, error) {
	a.mu.Lock()
	f, ok := a.flavours[info.ID]
	a.mu.Unlock()
	if ok {
		return f, nil
	}
	f, err := jupyter.Detect(ctx, a.finder(info), a.runner(info.ID))
	if err == nil {
		a.mu.Lock()
		a.flavours[info.ID] = f
		a.mu.Unlock()
	}
	return f, err
}

// forgetContainer drops what is known of a container that went.
func (a *Agent) forgetContainer(containerID string) {
	a.mu.Lock()
	delete(a.flavours, containerID)
	a.mu.Unlock()
}

// portBusy reports whether something listens on the port in the container,
// giving a process that was just told to stop (an earlier attempt) a few
// seconds to let go of it.
func (a *Agent) portBusy(ctx context.Context, containerPID, port int) (bool, error) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		busy, err := jupyter.Listening(a.ProcDir, containerPID, port)
		if err != nil || !busy || time.Now().After(deadline) {
			return busy, err
		}
		select {
		case <-ctx.Done():
			return busy, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// exec launches Jupyter in the container; its token goes in the
// environment, never on the command line.
func (a *Agent) exec(ctx context.Context, cmd message.Command, f jupyter.Flavour, info container.Info) (string, error) {
	workdir := info.WorkingDir
	if workdir == "" || workdir == "/" {
		workdir = "/root"
	}
	opts := jupyter.Options{BasePath: cmd.BaseURL, Port: cmd.InternalPort}
	var files []container.File
	if cmd.PasswordHash != "" {
		opts.ConfigFile = jupyter.ConfigPath(cmd.InstanceID)
		files = append(files, container.File{Path: opts.ConfigFile, Content: jupyter.PasswordConfig(f, cmd.PasswordHash), Mode: 0o600})
	}
	if f.Launcher == "" { // the launcher writes them itself, without a copy through Docker
		for path, content := range jupyter.ConfigFiles() {
			files = append(files, container.File{Path: path, Content: content, Mode: 0o644})
		}
	}
	if len(files) > 0 {
		if err := a.docker.WriteFiles(ctx, cmd.ContainerID, files); err != nil {
			return "", err
		}
	}
	argv := jupyter.Argv(f, opts)
	_, execID, err := a.docker.Launch(ctx, cmd.ContainerID, argv, jupyter.Env(cmd.InstanceID, cmd.Token, info.ConfigPath), workdir)
	return execID, err
}

// forwardOf is the forward of an instance's host port to its container,
// with the container's layer-2 pin on its bridge (firewall.Bridge) when
// Docker gave it a MAC there.
func (a *Agent) forwardOf(cmd message.Command, info container.Info) firewall.Forward {
	fw := firewall.Forward{
		InstanceID: cmd.InstanceID, HostPort: cmd.HostPort, ContainerIP: info.IP, ContainerPort: cmd.InternalPort, Sources: a.Sources,
		EnvironmentID: cmd.EnvironmentID, ContainerID: info.ID,
	}
	if len(info.MAC) > 0 {
		gw, _ := netip.AddrFromSlice(info.Gateway.To4())
		fw.Pin = &firewall.Pin{Port: info.BridgePort, MAC: info.MAC, IP: info.IP, Jupyter: cmd.InternalPort, Gateway: gw}
	}
	return fw
}

// DefaultPortQuarantine is how long a host port leads nowhere after a route
// to it was deleted, before another instance's forward may use it: longer
// than a proxy worker may go on using its copy of a route without having
// heard from Redis (infra/proxy/lua/routecache.lua), so that no request
// meant for the instance that had the port reaches the next one. Ports are
// leased at random, so a start rarely waits. A sidecar that has just
// started does not know what its earlier run freed, so for its first
// quarantine every port counts as just freed.
const DefaultPortQuarantine = time.Second

// waitQuarantine waits until the port's quarantine is over; false if the
// start was cancelled meanwhile.
func (a *Agent) waitQuarantine(ctx context.Context, port int) bool {
	a.mu.Lock()
	freed := a.unrouted[port]
	if freed.Before(a.started) {
		freed = a.started
	}
	wait := time.Until(freed.Add(a.PortQuarantine))
	a.mu.Unlock()
	if wait <= 0 {
		return true
	}
	select {
	case <-ctx.Done():
		return false
	case <-time.After(wait):
		return true
	}
}

// forward opens the host port to the container; it returns a failure reason or "".
func (a *Agent) forward(log *slog.Logger, m *managed, info container.Info) string {
	if err := a.firewall.Add(m.forward); err != nil {
		log.Error("adding forward", "error", err)
		return instance.ReasonFirewallError
	}
	return ""
}

// Probing a starting Jupyter: the host sends at most about readyProbesPerSecond
// probes a second among all its starts (10 ms apart for a single start, a
// tenth of its boot's second, slower when many start at once, never more than
// maxReadyPeriod apart); whether the launch has exited is asked of Docker
// every exitCheckEvery.
const (
	readyProbesPerSecond = 100
	maxReadyPeriod       = 100 * time.Millisecond
	exitCheckEvery       = time.Second
)

// readyPeriod is the wait between one start's probes while waiting starts
// share the host's probe budget.
func readyPeriod(waiting int64) time.Duration {
	return min(maxReadyPeriod, time.Duration(max(waiting, 1))*time.Second/readyProbesPerSecond)
}

// waitReady polls Jupyter in its container (client and base, see
// probeClient) until it answers, it exits, or the start timeout passes; it
// returns a failure reason or "".
func (a *Agent) waitReady(ctx context.Context, cmd message.Command, f jupyter.Flavour, execID string, client *http.Client, base string) string {
	a.waitingStarts.Add(1)
	defer a.waitingStarts.Add(-1)
	deadline := time.Now().Add(a.StartTimeout)
	nextExitCheck := time.Now().Add(exitCheckEvery)
	for {
		if jupyter.Ready(ctx, client, base) {
			return ""
		}
		if now := time.Now(); now.After(nextExitCheck) {
			nextExitCheck = now.Add(exitCheckEvery)
			if exited, code, err := a.docker.Exited(ctx, execID); err == nil && exited {
				if _, gone := a.docker.Inspect(ctx, cmd.ContainerID); errors.Is(gone, container.ErrGone) {
					return instance.ReasonContainerNotRunning
				}
				a.forgetContainer(cmd.ContainerID) // look again next time
				return instance.WithDetail(instance.ReasonJupyterExited, jupyter.DescribeExit(f, code))
			}
		}
		if time.Now().After(deadline) {
			return instance.WithDetail(instance.ReasonStartTimeout, fmt.Sprintf("no answer within %s", a.StartTimeout))
		}
		select {
		case <-ctx.Done():
			return instance.ReasonSidecarStopping
		case <-time.After(readyPeriod(a.waitingStarts.Load())):
		}
	}
}

// stop ends an instance: first nothing reaches it (route and rules gone),
// then its processes end (Jupyter, its kernels and terminals: SIGTERM, and
// SIGKILL for what is left after StopGrace, so a hostile container cannot
// hold a stop longer), and only then goes the report: "stopped" means
// nothing of the instance runs. A sidecar that dies before the report
// kills them as orphans when it comes back (the instance is no longer in
// its state), and the stop's next delivery reports.
func (a *Agent) stop(ctx context.Context, log *slog.Logger, cmd message.Command) error {
	// A stop carries no password: whether the start left a config file is
	// the start's to say (unknown when this host no longer knows it: look).
	m := a.get(cmd.InstanceID)
	hadConfig := m == nil || m.cmd.PasswordHash != ""
	// Forgotten first, in the state file too: a crash during the stop
	// leaves either the whole instance, adopted again and stopped by the
	// stop's next delivery, or orphans that the restart removes; never an
	// instance whose rules are gone and whose Jupyter runs.
	a.forget(cmd.InstanceID)
	a.unroute(ctx, log, cmd)
	a.metrics.Stops.WithLabelValues(cmd.Reason).Inc()
	reason := cmd.Reason
	if reason == "" {
		reason = instance.ReasonStopped
	}
	a.endProcesses(ctx, log, cmd, hadConfig)
	err := a.report(ctx, cmd.InstanceID, instance.Stopped, "", reason, nil)
	log.Info("instance stopped", "reason", cmd.Reason)
	return err
}

// cleanup removes everything of an instance from this host: its route, its
// rules, its processes. Each part is idempotent, so it is safe to repeat
// and works from the command alone, without memory of the start.
func (a *Agent) cleanup(ctx context.Context, log *slog.Logger, cmd message.Command) {
	a.unroute(ctx, log, cmd)
	a.endProcesses(ctx, log, cmd, cmd.PasswordHash != "")
}

// unroute makes an instance unreachable: the route first, so the proxy
// stops sending traffic at once, then the rules.
func (a *Agent) unroute(ctx context.Context, log *slog.Logger, cmd message.Command) {
	if err := a.routes.Delete(ctx, cmd.EnvironmentID, targetOf(a.Advertise, cmd.HostPort), cmd.InstanceID); err != nil {
		log.Error("removing route", "error", err)
	}
	a.mu.Lock()
	a.unrouted[cmd.HostPort] = time.Now()
	a.mu.Unlock()
	if err := a.firewall.RemoveInstance(cmd.InstanceID); err != nil {
		log.Error("removing forward", "error", err)
	}
}

// endProcesses ends an instance's processes and removes its password's
// config file, if any (a gone container takes it along).
func (a *Agent) endProcesses(ctx context.Context, log *slog.Logger, cmd message.Command, hasConfig bool) {
	if err := jupyter.Terminate(a.ProcDir, cmd.InstanceID, a.StopGrace); err != nil {
		log.Error("stopping jupyter", "error", err)
	}
	if hasConfig {
		rctx, cancel := context.WithTimeout(ctx, cleanupTimeout)
		defer cancel()
		if _, err := a.docker.Run(rctx, cmd.ContainerID, []string{"rm", "-f", jupyter.ConfigPath(cmd.InstanceID)}, nil); err != nil && !errors.Is(err, container.ErrGone) {
			log.Warn("removing the config file", "error", err)
		}
	}
}

// RefreshRoutes re-writes the routes of running instances, renewing their
// TTL and restoring any that Redis lost; it also forgets old tombstones.
func (a *Agent) RefreshRoutes(ctx context.Context) {
	a.mu.Lock()
	keys := a.linkKeys
	a.mu.Unlock()
	if keys != nil {
		if err := a.routes.PublishKeys(ctx, keys); err != nil {
			a.log.Warn("publishing access-link keys", "error", err)
		}
	}
	a.mu.Lock()
	for port, t := range a.unrouted {
		if time.Since(t) > a.PortQuarantine {
			delete(a.unrouted, port)
		}
	}
	for id, t := range a.ended {
		if time.Since(t) > endedRetention {
			delete(a.ended, id)
		}
	}
	a.mu.Unlock()
	for _, m := range a.managedCopy() {
		unlock, ok := a.lockEnvironmentWithin(m.cmd.EnvironmentID, refreshLockWait)
		if !ok {
			continue // a command is at work there; it writes or removes the route itself
		}
		var err error
		// Read again under the lock: the copy may predate a start's end.
		if cur := a.get(m.cmd.InstanceID); cur != nil && cur.running {
			err = a.routes.Set(ctx, cur.cmd.EnvironmentID, cur.target, cur.cmd.InstanceID, cur.cmd.Token)
		}
		unlock()
		if err != nil {
			a.log.Warn("refreshing routes", "error", err)
			return // Redis is down: one line, not one per route
		}
	}
}
