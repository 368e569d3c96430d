package agent

import (
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/envjupyter/envjupyter/sidecar/jupyter"
)

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
	client := &http.Client{Transport: probeTransport()}
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
	if tr := probeTransport(); tr.Proxy != nil {
		req, _ := http.NewRequest(http.MethodGet, "http://172.17.0.5:8888/api/status", nil)
		u, _ := tr.Proxy(req)
		t.Fatalf("the probes' transport has a proxy function (for a container it answers %v); want none", u)
	}
}
