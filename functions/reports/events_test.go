package main

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-lambda-go/events"

	"github.com/envjupyter/envjupyter/shared/instance"
	"github.com/envjupyter/envjupyter/shared/message"
)

// TestSampleEvents runs the handler on the sample events under events/reports.
func TestSampleEvents(t *testing.T) {
	tests := []struct {
		name    string
		file    string
		applied []string // instance ids the Applier must receive, in order
		dropped int      // records logged as malformed and dropped
	}{
		{name: "valid report for an unknown instance", file: "running.json", applied: []string{"ji-00000000000000000000dead"}},
		{name: "malformed and unknown version", file: "malformed.json", dropped: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw, err := os.ReadFile(filepath.Join("..", "..", "events", "reports", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			var ev events.SQSEvent
			if err := json.Unmarshal(raw, &ev); err != nil {
				t.Fatalf("decoding %s: %v", tt.file, err)
			}
			var logs bytes.Buffer
			applier := &recordingApplier{}
			h := &handler{control: applier, log: slog.New(slog.NewTextHandler(&logs, nil))}

			resp, err := h.handle(context.Background(), ev)
			if err != nil {
				t.Fatalf("handle: %v", err)
			}
			if len(resp.BatchItemFailures) != 0 {
				t.Errorf("batch item failures = %+v, want none", resp.BatchItemFailures)
			}
			var got []string
			for _, r := range applier.calls {
				got = append(got, r.InstanceID)
				if r.V != message.Version || r.HostID == "" || r.Status != instance.Running || r.At.IsZero() {
					t.Errorf("applied report %+v is not the event's valid v%d running report", r, message.Version)
				}
			}
			if strings.Join(got, ",") != strings.Join(tt.applied, ",") {
				t.Errorf("applied reports for %q, want %q", got, tt.applied)
			}
			if n := strings.Count(logs.String(), "dropping malformed report"); n != tt.dropped {
				t.Errorf("dropped %d reports, want %d; log:\n%s", n, tt.dropped, logs.String())
			}
		})
	}
}

// recordingApplier records the reports it is given and, like the control
// plane for an instance that does not exist, applies none of them.
type recordingApplier struct{ calls []message.Report }

func (a *recordingApplier) ApplyReport(_ context.Context, r message.Report) (bool, error) {
	a.calls = append(a.calls, r)
	return false, nil
}
