package agent

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/envjupyter/envjupyter/sidecar/jupyter"
)

// dialTo is a probe's way in that goes to addr.
func dialTo(addr string) func(context.Context) (net.Conn, error) {
	return func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}
}

// A probe keeps no connection to an instance for the next one: each opens
// its own (with keep-alive, the second and third would reuse the first).
func TestProbesKeepNoConnection(t *testing.T) {
	var opened atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte(`{}`))
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			opened.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	client := &http.Client{Transport: probeTransport(dialTo(srv.Listener.Addr().String()))}
	for i := 0; i < 3; i++ {
		if _, err := jupyter.Status(t.Context(), client, srv.URL+"/", "token"); err != nil {
			t.Fatalf("probe %d: %v", i, err)
		}
	}
	if got := opened.Load(); got != 3 {
		t.Fatalf("3 probes opened %d connections, want one each", got)
	}
}

// A single start is probed every 10 ms; starts at once share the host's
// budget of about 100 probes a second, each no slower than every 100 ms.
func TestReadyPeriodSharesTheProbeBudget(t *testing.T) {
	for waiting, want := range map[int64]time.Duration{
		0: 10 * time.Millisecond, 1: 10 * time.Millisecond, 4: 40 * time.Millisecond,
		10: 100 * time.Millisecond, 100: 100 * time.Millisecond,
	} {
		if got := readyPeriod(waiting); got != want {
			t.Errorf("readyPeriod(%d) = %v, want %v", waiting, got, want)
		}
	}
}

// Probes carry the instance's token: they never go through the sidecar
// environment's HTTP(S)_PROXY (Go's default transport would send a
// container's address, 172.17.x, there).
func TestProbesIgnoreTheEnvironmentsProxy(t *testing.T) {
	if tr := probeTransport(dialTo("127.0.0.1:1")); tr.Proxy != nil {
		req, _ := http.NewRequest(http.MethodGet, "http://172.17.0.5:8888/api/status", nil)
		u, _ := tr.Proxy(req)
		t.Fatalf("the probes' transport has a proxy function (for a container it answers %v); want none", u)
	}
}

// A probe connects only through its way in, whatever address its request
// names: the transport has no other.
func TestProbeTransportDialsOnlyItsWayIn(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(`{}`)) }))
	defer srv.Close()
	client := &http.Client{Timeout: time.Second, Transport: probeTransport(dialTo(srv.Listener.Addr().String()))}
	if _, err := jupyter.Status(t.Context(), client, "http://192.0.2.1:8888/", "token"); err != nil {
		t.Fatalf("a probe naming another address did not go its way in: %v", err)
	}
}

// The probes, the one carrying the token (Status) among them, go only
// through the agent's way into the container's network namespace
// (Config.Dial, for the container's first process and Jupyter's port in
// it), never over the bridge to the container's address: a neighbour
// container that answers ARP for that address would get them (security
// issue 23). A spy listens at the container's address and Jupyter's port.
func TestProbesGoOnlyThroughTheContainersNamespace(t *testing.T) {
	h := newHost(t)
	h.docker.pid = 4242
	bridge := netip.AddrPortFrom(h.docker.ip, uint16(h.jupyter.port))
	spy, err := net.Listen("tcp", bridge.String())
	if err != nil {
		t.Fatalf("listening at the fake container's address: %v", err)
	}
	defer spy.Close()
	var spied sync.WaitGroup
	var arrived atomic.Int64
	var heard strings.Builder
	var heardMu sync.Mutex
	spied.Go(func() {
		for {
			c, err := spy.Accept()
			if err != nil {
				return
			}
			arrived.Add(1)
			_ = c.SetReadDeadline(time.Now().Add(time.Second))
			b, _ := io.ReadAll(io.LimitReader(c, 4096))
			c.Close()
			heardMu.Lock()
			heard.Write(b)
			heardMu.Unlock()
		}
	})

	a := h.agent(func(t *Tuning) { t.HeartbeatEvery, t.StartTimeout = time.Nanosecond, 3*time.Second })
	cmd := h.start("ji-1", "env-1")
	handle(t, a, cmd) // readiness probes
	h.aliveProcess(t, "ji-1")
	defer h.processGone(t)
	n := h.reports.count()
	a.CheckAll(t.Context()) // health: Ready, then Status with the token
	a.CheckAll(t.Context())
	spy.Close()
	spied.Wait()
	if n := arrived.Load(); n != 0 {
		heardMu.Lock()
		defer heardMu.Unlock()
		t.Fatalf("%d probes went over the bridge to %s (the token in them: %v)", n, bridge, strings.Contains(heard.String(), cmd.Token))
	}
	wantReports(t, h.reports.since(n, "ji-1"), "running", "running")

	want := "token " + cmd.Token
	var withToken int
	for _, got := range h.jupyter.authorizations() {
		if got != want {
			t.Fatalf("Jupyter got Authorization %q, want the instance's token", got)
		}
		withToken++
	}
	if withToken != 2 {
		t.Fatalf("Jupyter got the token %d times through the way in, want once per health check (2)", withToken)
	}
	dials := h.dialed()
	if len(dials) < 5 { // at least one readiness probe, then Ready and Status twice
		t.Fatalf("%d dials, want every probe to dial its way in", len(dials))
	}
	for _, d := range dials {
		if d != [2]int{4242, cmd.InternalPort} {
			t.Fatalf("a probe dialed port %d of process %d, want port %d in the container's first process's namespace (4242)", d[1], d[0], cmd.InternalPort)
		}
	}
}
