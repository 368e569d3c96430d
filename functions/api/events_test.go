package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/envjupyter/envjupyter/functions/internal/control"
	"github.com/envjupyter/envjupyter/functions/store"
	"github.com/envjupyter/envjupyter/shared/config"
	"github.com/envjupyter/envjupyter/shared/instance"
	"github.com/envjupyter/envjupyter/shared/message"
)

// TestSampleEvents runs the handler on the sample events under events/api
// that are answered before the control plane touches a table or a queue.
func TestSampleEvents(t *testing.T) {
	tests := []struct {
		name    string
		file    string
		control func(t *testing.T) Controller
		status  int
		code    string
		allowed []string
	}{
		{name: "bad body", file: "start-bad-body.json", control: newUnusedController, status: 400, code: "invalid_body"},
		{name: "no identity", file: "start-no-identity.json", control: newUnusedController, status: 401, code: "unauthorized"},
		{name: "bad environment id", file: "start-bad-environment-id.json", control: newUnusedController, status: 400, code: "invalid_environment_id"},
		{name: "plugin not allowed", file: "start-with-plugins.json", control: newService, status: 400, code: "plugin_not_allowed", allowed: []string{"jupyterlab-git"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw, err := os.ReadFile(filepath.Join("..", "..", "events", "api", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			var ev events.APIGatewayV2HTTPRequest
			if err := json.Unmarshal(raw, &ev); err != nil {
				t.Fatalf("decoding %s: %v", tt.file, err)
			}
			h := &handler{control: tt.control(t), customerClaim: "customer_id", log: slog.New(slog.DiscardHandler)}

			resp, err := h.handle(context.Background(), ev)
			if err != nil {
				t.Fatalf("handle: %v", err)
			}
			if resp.StatusCode != tt.status {
				t.Errorf("status = %d, want %d (body %s)", resp.StatusCode, tt.status, resp.Body)
			}
			if ct := resp.Headers["Content-Type"]; ct != "application/json" {
				t.Errorf("Content-Type = %q, want application/json", ct)
			}
			var body apiError
			if err := json.Unmarshal([]byte(resp.Body), &body); err != nil {
				t.Fatalf("body %q is not an error response: %v", resp.Body, err)
			}
			if body.Error.Code != tt.code {
				t.Errorf("error code = %q, want %q (body %s)", body.Error.Code, tt.code, resp.Body)
			}
			if body.Error.Message == "" {
				t.Errorf("error message is empty (body %s)", resp.Body)
			}
			if !slices.Equal(body.Error.Allowed, tt.allowed) {
				t.Errorf("allowed = %q, want %q", body.Error.Allowed, tt.allowed)
			}
		})
	}
}

// unusedController fails the test on any call: the request must be answered
// before reaching the control plane.
type unusedController struct{ t *testing.T }

func newUnusedController(t *testing.T) Controller { return unusedController{t} }

func (c unusedController) Start(context.Context, string, string, control.StartOptions) (instance.Instance, bool, error) {
	c.t.Error("Controller.Start called")
	return instance.Instance{}, false, control.ErrUnavailable
}

func (c unusedController) Stop(context.Context, string, string, string) (instance.Instance, bool, error) {
	c.t.Error("Controller.Stop called")
	return instance.Instance{}, false, control.ErrUnavailable
}

func (c unusedController) AccessLink(instance.Instance) string {
	c.t.Error("Controller.AccessLink called")
	return ""
}

func (c unusedController) Status(context.Context, string, string) (instance.Instance, bool, error) {
	c.t.Error("Controller.Status called")
	return instance.Instance{}, false, control.ErrUnavailable
}

// newService is the real control plane with one allowed plugin, over a
// store and a command queue that must not be used.
func newService(t *testing.T) Controller {
	return &control.Service{
		Store:    unusedStore{t},
		Commands: unusedCommands{t},
		Config:   config.Config{AllowedPlugins: map[string]string{"jupyterlab-git": "jupyterlab-git==0.50.0"}},
		Log:      slog.New(slog.DiscardHandler),
	}
}

type unusedStore struct{ t *testing.T }

func (s unusedStore) fail(method string) error {
	s.t.Errorf("Store.%s called", method)
	return store.ErrNotFound
}

func (s unusedStore) Environment(context.Context, string) (store.Environment, error) {
	return store.Environment{}, s.fail("Environment")
}

func (s unusedStore) Instance(context.Context, string) (instance.Instance, error) {
	return instance.Instance{}, s.fail("Instance")
}

func (s unusedStore) ActiveInstance(context.Context, string) (instance.Instance, error) {
	return instance.Instance{}, s.fail("ActiveInstance")
}

func (s unusedStore) LatestInstance(context.Context, string) (instance.Instance, error) {
	return instance.Instance{}, s.fail("LatestInstance")
}

func (s unusedStore) HeldPorts(context.Context, string) (map[int]bool, error) {
	return nil, s.fail("HeldPorts")
}

func (s unusedStore) CreateInstance(context.Context, instance.Instance, store.CreateOptions) error {
	return s.fail("CreateInstance")
}

func (s unusedStore) Update(context.Context, instance.Instance, int64) error {
	return s.fail("Update")
}

type unusedCommands struct{ t *testing.T }

func (c unusedCommands) Send(_ context.Context, hostID string, cmd message.Command) error {
	c.t.Errorf("Commands.Send(%s, %s) called", hostID, cmd)
	return control.ErrUnavailable
}

func (s unusedStore) DueInstances(context.Context, time.Time, func([]string) error) error {
	return s.fail("DueInstances")
}

func (s unusedStore) Rearm(context.Context, string, int64, time.Time) error {
	return s.fail("Rearm")
}

func (s unusedStore) HostHeard(context.Context, string, time.Time) error {
	return s.fail("HostHeard")
}

func (s unusedStore) HostLastHeard(context.Context, string) (time.Time, error) {
	return time.Time{}, s.fail("HostLastHeard")
}

func (s unusedStore) SilentHosts(context.Context, time.Time) ([]store.Host, error) {
	return nil, s.fail("SilentHosts")
}

func (s unusedStore) HostInstanceIDs(context.Context, string) ([]string, error) {
	return nil, s.fail("HostInstanceIDs")
}

func (s unusedStore) ForgetHost(context.Context, store.Host) error {
	return s.fail("ForgetHost")
}
