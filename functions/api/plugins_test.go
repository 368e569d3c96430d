package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/aws/aws-lambda-go/events"

	"github.com/envjupyter/envjupyter/infra/apispec"
	"github.com/envjupyter/envjupyter/shared/config"
)

// GET /api/jupyter/plugins lists the allowed names, sorted, from the
// configuration in force (not the one read at cold start), in the shape
// docs/openapi.yaml describes; without an identity it is refused.
func TestPluginsRoute(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "..", "events", "api", "plugins.json"))
	if err != nil {
		t.Fatal(err)
	}
	var ev events.APIGatewayV2HTTPRequest
	if err := json.Unmarshal(raw, &ev); err != nil {
		t.Fatal(err)
	}
	spec, err := apispec.Load(apispec.DefaultPath())
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Config{AllowedPlugins: map[string]string{"jupyterlab-lsp": "jupyterlab-lsp==5.1", "jupyterlab-git": "jupyterlab-git"}}
	h := &handler{control: newUnusedController(t), settings: func() config.Config { return cfg }, customerClaim: "customer_id", log: slog.New(slog.DiscardHandler)}

	call := func(ev events.APIGatewayV2HTTPRequest) events.APIGatewayV2HTTPResponse {
		t.Helper()
		resp, err := h.handle(context.Background(), ev)
		if err != nil {
			t.Fatal(err)
		}
		hdr := http.Header{}
		for k, v := range resp.Headers {
			hdr.Set(k, v)
		}
		if err := spec.Check(httptest.NewRequest(http.MethodGet, ev.RawPath, nil), resp.StatusCode, hdr, []byte(resp.Body)); err != nil {
			t.Error(err)
		}
		return resp
	}
	var got pluginList
	resp := call(ev)
	if err := json.Unmarshal([]byte(resp.Body), &got); resp.StatusCode != http.StatusOK || err != nil ||
		!slices.Equal(got.Plugins, []string{"jupyterlab-git", "jupyterlab-lsp"}) {
		t.Fatalf("%d %s, want 200 with both names sorted", resp.StatusCode, resp.Body)
	}

	cfg = config.Config{}
	if resp := call(ev); resp.Body != `{"plugins":[]}` {
		t.Errorf("after the setting changed to none: %s, want an empty list", resp.Body)
	}

	ev.RequestContext.Authorizer = nil
	if resp := call(ev); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("without an identity: %d, want 401", resp.StatusCode)
	}
}
