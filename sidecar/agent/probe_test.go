package agent

import (
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

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
