package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-lambda-go/events"

	"github.com/envjupyter/envjupyter/functions/internal/control"
	"github.com/envjupyter/envjupyter/shared/instance"
)

// recordingController records what the handler asks of the control plane.
type recordingController struct {
	calls []string // "start <env> <plugins>" or "stop <env> <reason>"
	err   error
}

func (c *recordingController) StartEnvironment(_ context.Context, environmentID string, opts control.StartOptions) (instance.Instance, bool, error) {
	c.calls = append(c.calls, fmt.Sprintf("start %s %s", environmentID, strings.Join(opts.Plugins, ",")))
	return instance.Instance{}, c.err == nil, c.err
}

func (c *recordingController) StopEnvironment(_ context.Context, environmentID, reason string) (instance.Instance, bool, error) {
	c.calls = append(c.calls, fmt.Sprintf("stop %s %s", environmentID, reason))
	return instance.Instance{}, c.err == nil, c.err
}

func sampleEvent(t *testing.T, name string) events.CloudWatchEvent {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "..", "events", "envevents", name))
	if err != nil {
		t.Fatal(err)
	}
	var ev events.CloudWatchEvent
	if err := json.Unmarshal(raw, &ev); err != nil {
		t.Fatalf("decoding %s: %v", name, err)
	}
	return ev
}

// TestSampleEvents runs the handler on the sample events under events/envevents.
func TestSampleEvents(t *testing.T) {
	tests := []struct {
		file  string
		calls []string
	}{
		{"stopped.json", []string{"stop env-demo environment_stopped"}},
		{"running-auto-start.json", []string{"start env-demo jupyterlab-git"}},
		{"running.json", nil},
		{"other-source.json", nil},
		{"bad-environment-id.json", nil},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			c := &recordingController{}
			h := &handler{control: c, log: slog.New(slog.DiscardHandler)}
			if err := h.apply(context.Background(), sampleEvent(t, tt.file)); err != nil { // handle is apply in an X-Ray subsegment
				t.Fatalf("handle: %v (an error makes EventBridge retry)", err)
			}
			if !slices.Equal(c.calls, tt.calls) {
				t.Errorf("calls = %q, want %q", c.calls, tt.calls)
			}
		})
	}
}

// Only a passing failure is retried: EventBridge repeats an event on error.
func TestRetriesOnlyPassingFailures(t *testing.T) {
	tests := []struct {
		err   error
		retry bool
	}{
		{fmt.Errorf("%w: dynamodb throttled", control.ErrUnavailable), true},
		{control.ErrNotFound, false},
		{control.ErrEnvironmentNotRunning, false},
		{control.ErrStopping, false},
		{control.ErrNoFreePort, false},
		// The customer at their limit stays there until they stop something:
		// retried for EventBridge's hour, it would only repeat.
		{fmt.Errorf("starting: %w", control.ErrLimit), false},
		{&control.InputError{Code: "plugin_not_allowed"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.err.Error(), func(t *testing.T) {
			h := &handler{control: &recordingController{err: tt.err}, log: slog.New(slog.DiscardHandler)}
			err := h.apply(context.Background(), sampleEvent(t, "running-auto-start.json"))
			if (err != nil) != tt.retry {
				t.Errorf("handle returned %v; want a retry: %v", err, tt.retry)
			}
		})
	}
}
