package agent

import (
	"context"
	"testing"
)

// A route lost from the table (Redis flushed, or its TTL ran out) comes back
// at the next refresh, while the instance runs.
func TestRefreshRestoresALostRoute(t *testing.T) {
	h := newHost(t)
	a := h.agent(nil)
	handle(t, a, h.start("ji-1", "env-1"))
	if h.routes.instance("env-1") != "ji-1" {
		t.Fatal("no route after the start")
	}
	h.routes.mu.Lock()
	delete(h.routes.routes, "env-1")
	h.routes.mu.Unlock()
	a.RefreshRoutes(context.Background())
	if got := h.routes.instance("env-1"); got != "ji-1" {
		t.Fatalf("route after the refresh: %q, want ji-1", got)
	}
}
