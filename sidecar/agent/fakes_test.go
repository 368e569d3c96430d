package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/envjupyter/envjupyter/shared/instance"
	"github.com/envjupyter/envjupyter/shared/message"
	"github.com/envjupyter/envjupyter/sidecar/container"
	"github.com/envjupyter/envjupyter/sidecar/firewall"
	"github.com/envjupyter/envjupyter/sidecar/jupyter"
)

// fakeDocker is a Docker Engine with running containers, each with JupyterLab
// installed; it records launches.
type fakeDocker struct {
	mu       sync.Mutex
	gone     map[string]bool
	launches []string // container ids, one per launch
	probes   int      // looks for a Jupyter executable
	runs     [][]string
	python3  bool       // the containers have python3 (JupyterLab goes through its launcher)
	argvs    [][]string // of the launches
	written  [][]string // the paths of each WriteFiles
	pid      int        // the containers' first process (1; a test restarts them)
	ip       netip.Addr // their address on the bridge
}

func (d *fakeDocker) Inspect(_ context.Context, id string) (container.Info, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.gone[id] {
		return container.Info{}, container.ErrGone
	}
	// Nothing listens at the container's address: the agent probes the fake
	// Jupyter through Config.Dial (host.dial), never over the bridge.
	return container.Info{ID: id, PID: d.pid, IP: d.ip, Gateway: net.IPv4(172, 17, 0, 1), WorkingDir: "/home/user"}, nil
}

func (d *fakeDocker) Run(_ context.Context, id string, argv, _ []string) (container.Output, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.gone[id] {
		return container.Output{}, container.ErrGone
	}
	d.runs = append(d.runs, argv)
	return container.Output{}, nil
}

func (d *fakeDocker) HasExecutable(_ context.Context, id string, _ []string, name string) (bool, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.gone[id] {
		return false, container.ErrGone
	}
	if name == "jupyter-lab" {
		d.probes++ // the first look-up of a detection
	}
	return name == "jupyter-lab" || (name == "python3" && d.python3), nil
}

func (d *fakeDocker) Launch(_ context.Context, id string, argv, env []string, _ string) (int, string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.gone[id] {
		return 0, "", container.ErrGone
	}
	d.launches = append(d.launches, id)
	d.argvs = append(d.argvs, argv)
	return 0, fmt.Sprintf("exec-%d", len(d.launches)), nil
}

func (d *fakeDocker) Exited(context.Context, string) (bool, int, error) { return false, 0, nil }

func (d *fakeDocker) WriteFiles(_ context.Context, _ string, files []container.File) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	var paths []string
	for _, f := range files {
		paths = append(paths, f.Path)
	}
	d.written = append(d.written, paths)
	return nil
}

func (d *fakeDocker) launchCount() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.launches)
}

func (d *fakeDocker) remove(id string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.gone[id] = true
}

// fakeFirewall keeps forwards by instance.
type fakeFirewall struct {
	mu       sync.Mutex
	forwards map[string]firewall.Forward
	added    map[string]time.Time // by instance id, its forward's last Add
}

func (f *fakeFirewall) Add(fw firewall.Forward) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.forwards[fw.InstanceID] = fw
	if f.added == nil {
		f.added = map[string]time.Time{}
	}
	f.added[fw.InstanceID] = time.Now()
	return nil
}

func (f *fakeFirewall) RemoveInstance(id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.forwards, id)
	return nil
}

func (f *fakeFirewall) Instances() (map[string]bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ids := map[string]bool{}
	for id := range f.forwards {
		ids[id] = true
	}
	return ids, nil
}

func (f *fakeFirewall) Forwards() (map[string]firewall.Forward, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	forwards := map[string]firewall.Forward{}
	for id, fw := range f.forwards {
		forwards[id] = fw
	}
	return forwards, nil
}

func (f *fakeFirewall) has(id string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.forwards[id]
	return ok
}

// fakeRoutes is the route table: environment → instance and target.
type fakeRoutes struct {
	mu     sync.Mutex
	routes map[string][2]string
	keys   map[string]string
}

func (r *fakeRoutes) Set(_ context.Context, env, target, id, _ string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.routes[env] = [2]string{id, target}
	return nil
}

// Delete removes the route only if it is still the instance's, as the
// Redis table does.
func (r *fakeRoutes) Delete(_ context.Context, env, _, id string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.routes[env][0] == id {
		delete(r.routes, env)
	}
	return nil
}

func (r *fakeRoutes) PublishKeys(_ context.Context, keys map[string]string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.keys = keys
	return nil
}

func (r *fakeRoutes) instance(env string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.routes[env][0]
}

// fakeReporter records the reports sent.
type fakeReporter struct {
	mu      sync.Mutex
	reports []message.Report
	hold    chan struct{} // if set, a starting report's send returns once it is closed
}

func (r *fakeReporter) Send(_ context.Context, rep message.Report) error {
	r.mu.Lock()
	r.reports = append(r.reports, rep)
	hold := r.hold
	r.mu.Unlock()
	if hold != nil && rep.Status == instance.Starting {
		<-hold
	}
	return nil
}

// since returns what was reported of an instance after the first n reports,
// as "status" or "status:stage" or "status/reason".
func (r *fakeReporter) since(n int, id string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, rep := range r.reports[n:] {
		if rep.InstanceID != id {
			continue
		}
		s := string(rep.Status)
		if rep.Stage != "" {
			s += ":" + string(rep.Stage)
		}
		if rep.Reason != "" {
			s += "/" + rep.Reason
		}
		out = append(out, s)
	}
	return out
}

func (r *fakeReporter) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.reports)
}

// fakeJupyter answers as Jupyter does in its container while healthy.
type fakeJupyter struct {
	healthy atomic.Bool
	port    int

	mu            sync.Mutex
	authorization []string // the Authorization headers of the requests it got
}

func newFakeJupyter(t *testing.T) *fakeJupyter {
	j := &fakeJupyter{}
	j.healthy.Store(true)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a := r.Header.Get("Authorization"); a != "" {
			j.mu.Lock()
			j.authorization = append(j.authorization, a)
			j.mu.Unlock()
		}
		if !j.healthy.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		if strings.HasSuffix(r.URL.Path, "/api/status") {
			_ = json.NewEncoder(w).Encode(map[string]any{"last_activity": time.Now().UTC(), "kernels": 1, "connections": 0})
		}
	}))
	t.Cleanup(srv.Close)
	j.port = srv.Listener.Addr().(*net.TCPAddr).Port
	return j
}

func (j *fakeJupyter) authorizations() []string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return slices.Clone(j.authorization)
}

// host is one Docker host as the agent sees it, through its four interfaces.
type host struct {
	docker   *fakeDocker
	firewall *fakeFirewall
	routes   *fakeRoutes
	reports  *fakeReporter
	jupyter  *fakeJupyter
	procDir  string
	state    string
	ports    map[string]int // host port of each environment's instances

	dialMu sync.Mutex
	dials  [][2]int // pid and port of each Config.Dial
}

func newHost(t *testing.T) *host {
	return &host{
		docker:   &fakeDocker{gone: map[string]bool{}, pid: 1, ip: netip.MustParseAddr("127.0.0.2")},
		firewall: &fakeFirewall{forwards: map[string]firewall.Forward{}},
		routes:   &fakeRoutes{routes: map[string][2]string{}},
		reports:  &fakeReporter{},
		jupyter:  newFakeJupyter(t),
		procDir:  t.TempDir(),
		state:    filepath.Join(t.TempDir(), "instances.json"),
		ports:    map[string]int{},
	}
}

// agent returns an agent of the host; called again, it is the agent after
// a restart of the sidecar (same state file, same fakes).
func (h *host) agent(tune func(*Tuning)) *Agent {
	cfg := Config{
		HostID: "host-1", Advertise: "127.0.0.1", ProcDir: h.procDir, StateFile: h.state,
		Sources: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
		Dial:    h.dial,
		Tuning: Tuning{
			StartTimeout: 10 * time.Second, StopGrace: 50 * time.Millisecond, PluginTimeout: 10 * time.Second,
			HealthEvery: time.Second, HeartbeatEvery: time.Hour, UnhealthyAfter: 2,
			RestartBudget: 1, RestartWindow: time.Hour,
			PortQuarantine: time.Nanosecond, // TestFreedPortIsQuarantined sets it
		},
	}
	if tune != nil {
		tune(&cfg.Tuning)
	}
	return New(cfg, h.docker, h.firewall, h.routes, h.reports, slog.New(slog.DiscardHandler))
}

// dial is the agent's way into a container's network namespace on this
// fake host: the "containers" share the host's, where the fake Jupyter
// listens on loopback. It records where it was asked to go.
func (h *host) dial(ctx context.Context, pid, port int) (net.Conn, error) {
	h.dialMu.Lock()
	h.dials = append(h.dials, [2]int{pid, port})
	h.dialMu.Unlock()
	var d net.Dialer
	return d.DialContext(ctx, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
}

func (h *host) dialed() [][2]int {
	h.dialMu.Lock()
	defer h.dialMu.Unlock()
	return slices.Clone(h.dials)
}

// hostPort is the host port of an environment's instances: one per
// environment, as leases give (the fake Jupyter answers on its own port in
// the "container").
func (h *host) hostPort(env string) int {
	if _, ok := h.ports[env]; !ok {
		h.ports[env] = 20001 + len(h.ports)
	}
	return h.ports[env]
}

func (h *host) start(id, env string) message.Command {
	return message.Command{
		V: message.Version, Type: message.TypeStart, InstanceID: id, EnvironmentID: env, ContainerID: "c-" + env,
		HostPort: h.hostPort(env), InternalPort: h.jupyter.port, Token: "secret-token-" + id, BaseURL: instance.BasePath(env),
		SentAt: time.Now(),
	}
}

// startWithPassword is a start of a JupyterLab protected by a password.
func (h *host) startWithPassword(id, env string) message.Command {
	cmd := h.start(id, env)
	cmd.PasswordHash = "argon2:$argon2id$v=19$m=10240,t=10,p=8$c2FsdA$aGFzaA"
	return cmd
}

func stopOf(start message.Command, reason string) message.Command {
	return message.Command{
		V: message.Version, Type: message.TypeStop, InstanceID: start.InstanceID, EnvironmentID: start.EnvironmentID,
		ContainerID: start.ContainerID, HostPort: start.HostPort, Reason: reason, SentAt: time.Now(),
	}
}

// aliveProcess makes /proc show a Jupyter of the instance (a pid no real
// process can have, so nothing real is ever signalled).
func (h *host) aliveProcess(t *testing.T, id string) {
	dir := filepath.Join(h.procDir, strconv.Itoa(1<<30))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "environ"), []byte(jupyter.MarkerVar+"="+id+"\x00"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "stat"), []byte("1073741824 (jupyter-lab) S 1 1 1"), 0o644); err != nil {
		t.Fatal(err)
	}
}

func (h *host) processGone(t *testing.T) {
	if err := os.RemoveAll(filepath.Join(h.procDir, strconv.Itoa(1<<30))); err != nil {
		t.Fatal(err)
	}
}

func handle(t *testing.T, a *Agent, cmd message.Command) {
	t.Helper()
	if err := a.Handle(context.Background(), cmd); err != nil {
		t.Fatalf("Handle(%s): %v", cmd, err)
	}
}

func wantReports(t *testing.T, got []string, want ...string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("reports = %q, want %q", got, want)
	}
}

func metricsText(t *testing.T, a *Agent) string {
	rec := httptest.NewRecorder()
	a.Metrics().Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	return rec.Body.String()
}
