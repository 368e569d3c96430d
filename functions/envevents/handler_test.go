package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"testing"

	"github.com/aws/aws-lambda-go/events"

	"github.com/envjupyter/envjupyter/shared/control"
	"github.com/envjupyter/envjupyter/shared/envevent"
	"github.com/envjupyter/envjupyter/shared/instance"
)

// failing is a controller whose calls fail with err.
type failing struct{ err error }

func (f failing) StartEnvironment(context.Context, string, control.StartOptions) (instance.Instance, bool, error) {
	return instance.Instance{}, false, f.err
}

func (f failing) StopEnvironment(context.Context, string, string) (instance.Instance, bool, error) {
	return instance.Instance{}, false, f.err
}

// Only passing failures are returned, so that EventBridge retries them; a
// customer at their limit is not one (it would be retried for an hour).
func TestWhatIsRetried(t *testing.T) {
	tests := []struct {
		name  string
		err   error
		retry bool
	}{
		{"customer limit", fmt.Errorf("starting: %w", control.ErrLimit), false},
		{"no free port", control.ErrNoFreePort, false},
		{"environment not running", control.ErrEnvironmentNotRunning, false},
		{"not found", control.ErrNotFound, false},
		{"unavailable", control.ErrUnavailable, true},
		{"unknown", errors.New("boom"), true},
	}
	detail, _ := json.Marshal(envevent.Detail{EnvironmentID: "env-1", Status: "running", AutoStartJupyter: true})
	ev := events.CloudWatchEvent{ID: "e1", Source: envevent.Source, DetailType: envevent.DetailType, Detail: detail}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs bytes.Buffer
			h := &handler{control: failing{tt.err}, log: slog.New(slog.NewTextHandler(&logs, nil))}
			if err := h.apply(context.Background(), ev); (err != nil) != tt.retry {
				t.Fatalf("apply = %v; want retried %v", err, tt.retry)
			}
		})
	}
}
