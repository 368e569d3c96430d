package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/envjupyter/envjupyter/shared/instance"
	"github.com/envjupyter/envjupyter/shared/message"
	"github.com/envjupyter/envjupyter/shared/queue"
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
			h := &handler{control: applier, keys: testKeys, log: slog.New(slog.NewTextHandler(&logs, nil))}
			for i := range ev.Records {
				signAs(&ev.Records[i], testKeys["local-host-1"]) // the host of the samples
			}

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

// testKeys are the report keys of the hosts the tests know.
var testKeys = fakeKeys{
	"local-host-1": []byte("key of local-host-1"),
	"test-host-1":  []byte("key of test-host-1"),
	"test-host-2":  []byte("key of test-host-2"),
}

type fakeKeys map[string][]byte

func (k fakeKeys) Key(_ context.Context, hostID string, _ bool) ([]byte, error) {
	if key, ok := k[hostID]; ok {
		return key, nil
	}
	return nil, fmt.Errorf("%w: %s", queue.ErrUnknownHost, hostID)
}

func signAs(rec *events.SQSMessage, key []byte) {
	rec.MessageAttributes = map[string]events.SQSMessageAttribute{
		message.SignatureAttribute: {DataType: "String", StringValue: aws.String(message.Sign(key, rec.Body))},
	}
}

// A report is applied only if it is signed with the key of the host it
// names: not unsigned, not signed by another host, not for an unknown host.
func TestReportsFromOtherSendersAreDropped(t *testing.T) {
	body := func(host string) string {
		return `{"v":1,"instance_id":"ji-00000000000000000000dead","host_id":"` + host + `","status":"failed","reason":"x","at":"2026-01-01T00:00:00Z"}`
	}
	tests := []struct {
		name    string
		host    string
		signer  []byte
		applied bool
	}{
		{"signed by its host", "test-host-1", testKeys["test-host-1"], true},
		{"signed by another host", "test-host-1", testKeys["test-host-2"], false},
		{"unsigned", "test-host-1", nil, false},
		{"an unknown host", "test-host-9", testKeys["test-host-1"], false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := events.SQSMessage{MessageId: "m1", Body: body(tt.host)}
			if tt.signer != nil {
				signAs(&rec, tt.signer)
			}
			applier := &recordingApplier{}
			var logs bytes.Buffer
			h := &handler{control: applier, keys: testKeys, log: slog.New(slog.NewTextHandler(&logs, nil))}
			resp, err := h.handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{rec}})
			if err != nil || len(resp.BatchItemFailures) != 0 {
				t.Fatalf("handle: %+v, %v; want no failures (a forged report is dropped, not retried)", resp, err)
			}
			if got := len(applier.calls) == 1; got != tt.applied {
				t.Fatalf("applied = %v, want %v; log:\n%s", got, tt.applied, logs.String())
			}
			if !tt.applied && !strings.Contains(logs.String(), "may not speak for the host") {
				t.Errorf("the drop is not logged:\n%s", logs.String())
			}
		})
	}
}

// A host may write every parameter under its own <prefix>/hosts/<id>/, so
// test-host-1 can make a key at hosts/test-host-1/x/report_key and sign
// reports naming the host "test-host-1/x" with it. Such a host id is not
// one: the report is dropped as malformed, neither applied nor retried, and
// no key is read for it.
func TestReportsWithInvalidHostIDsAreDropped(t *testing.T) {
	forgerKeys := fakeKeys{}
	for host, key := range testKeys {
		forgerKeys[host] = key
	}
	for _, host := range []string{"test-host-1/x", "test-host-1/../test-host-2", "-test-host-1", "test_host_1"} {
		forgerKeys[host] = testKeys["test-host-1"] // what test-host-1 wrote there
		t.Run(host, func(t *testing.T) {
			for _, body := range []string{
				`{"v":1,"instance_id":"ji-00000000000000000000dead","host_id":"` + host + `","status":"failed","reason":"x","at":"2026-01-01T00:00:00Z"}`,
				`{"v":1,"host_id":"` + host + `","at":"2026-01-01T00:00:00Z"}`, // a heartbeat
			} {
				rec := events.SQSMessage{MessageId: "m1", Body: body}
				signAs(&rec, forgerKeys[host])
				applier := &recordingApplier{}
				keys := &countingKeys{keys: forgerKeys}
				var logs bytes.Buffer
				h := &handler{control: applier, keys: keys, log: slog.New(slog.NewTextHandler(&logs, nil))}
				resp, err := h.handle(context.Background(), events.SQSEvent{Records: []events.SQSMessage{rec}})
				if err != nil || len(resp.BatchItemFailures) != 0 {
					t.Fatalf("handle: %+v, %v; want no failures", resp, err)
				}
				if len(applier.calls) != 0 || keys.reads != 0 {
					t.Fatalf("%s: applied %d reports and read %d keys, want none; log:\n%s", body, len(applier.calls), keys.reads, logs.String())
				}
				if !strings.Contains(logs.String(), "dropping malformed report") {
					t.Errorf("the drop is not logged:\n%s", logs.String())
				}
			}
		})
	}
}

type countingKeys struct {
	keys  fakeKeys
	reads int
}

func (k *countingKeys) Key(ctx context.Context, hostID string, fresh bool) ([]byte, error) {
	k.reads++
	return k.keys.Key(ctx, hostID, fresh)
}
