package queue

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/aws/aws-xray-sdk-go/header"
	"github.com/aws/aws-xray-sdk-go/xray"

	"github.com/envjupyter/envjupyter/shared/message"
)

// emitted is what the X-Ray SDK sent of a segment or subsegment.
type emitted struct{ name, traceID, id, parentID string }

// recorder stands in for the X-Ray daemon.
type recorder struct {
	mu   sync.Mutex
	segs []emitted
}

func (r *recorder) Emit(seg *xray.Segment) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.segs = append(r.segs, emitted{seg.Name, seg.TraceID, seg.ID, seg.ParentID})
}

func (r *recorder) RefreshEmitterWithAddress(*net.UDPAddr) {}

// named returns the segments of that name, one per id: the SDK may emit a
// segment again when its last subsegment's flush races its own close, and
// X-Ray keeps one document per id.
func (r *recorder) named(name string) []emitted {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []emitted
	seen := map[string]bool{}
	for _, s := range r.segs {
		if s.name == name && !seen[s.id] {
			seen[s.id] = true
			out = append(out, s)
		}
	}
	return out
}

func tracingContext(t *testing.T) (context.Context, *recorder) {
	t.Helper()
	rec := &recorder{}
	ctx, err := xray.ContextWithConfig(context.Background(), xray.Config{Emitter: rec, DaemonAddr: "127.0.0.1:2000"})
	if err != nil {
		t.Fatal(err)
	}
	return ctx, rec
}

// sent records what is sent.
type sent struct{ in []*sqs.SendMessageInput }

func (s *sent) SendMessage(_ context.Context, in *sqs.SendMessageInput, _ ...func(*sqs.Options)) (*sqs.SendMessageOutput, error) {
	s.in = append(s.in, in)
	return &sqs.SendMessageOutput{}, nil
}

func (s *sent) GetQueueUrl(_ context.Context, in *sqs.GetQueueUrlInput, _ ...func(*sqs.Options)) (*sqs.GetQueueUrlOutput, error) {
	return &sqs.GetQueueUrlOutput{QueueUrl: aws.String("http://sqs.local/000000000000/" + aws.ToString(in.QueueName))}, nil
}

// sendCommand sends a stop command within a trace whose incoming header is
// apiHeader, as the API does, and returns the message as the host receives it.
func sendCommand(t *testing.T, ctx context.Context, apiHeader string) sqstypes.Message {
	t.Helper()
	out := &sent{}
	c := &Commands{sqs: out, urls: map[string]string{"host-1": "http://sqs.local/q"}}
	cmd := message.Command{V: message.Version, Type: message.TypeStop, InstanceID: "ji-1", EnvironmentID: "env-1",
		ContainerID: "c1", HostPort: 20001, Reason: "user", SentAt: time.Now().UTC()}
	err := ContinueTrace(ctx, "api", apiHeader, func(ctx context.Context) error { return c.Send(ctx, "host-1", cmd) })
	if err != nil || len(out.in) != 1 {
		t.Fatalf("send: %v, %d messages", err, len(out.in))
	}
	return sqstypes.Message{Body: out.in[0].MessageBody, ReceiptHandle: aws.String("r1"), MessageAttributes: out.in[0].MessageAttributes}
}

// receive hands m to a host's queue and returns the header of the report
// the handler sends, as the sidecar does.
func receive(t *testing.T, ctx context.Context, m sqstypes.Message) *header.Header {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	q, err := RegisterHost(ctx, &fakeSQS{done: cancel, batch: []sqstypes.Message{m}}, &fakeSSM{}, DefaultHostPrefix, "host-1", time.Minute, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	out := &sent{}
	reports := NewReports(out, "http://sqs.local/reports", []byte("key"))
	q.Receive(ctx, func(ctx context.Context, cmd message.Command) error {
		return reports.Send(ctx, message.Report{V: message.Version, InstanceID: cmd.InstanceID, HostID: "host-1", Status: "stopped", At: time.Now().UTC()})
	})
	if len(out.in) != 1 {
		t.Fatalf("%d reports sent", len(out.in))
	}
	return header.FromString(aws.ToString(out.in[0].MessageAttributes[TraceAttribute].StringValue))
}

// The API's send subsegment is the parent of the sidecar's segment, which
// is the grandparent of the report's: one tree across the queue.
func TestTraceContinuesAcrossTheQueue(t *testing.T) {
	ctx, rec := tracingContext(t)
	traceID := xray.NewTraceID()
	m := sendCommand(t, ctx, "Root="+traceID+";Sampled=1")
	cmdHeader := header.FromString(aws.ToString(m.MessageAttributes[TraceAttribute].StringValue))
	sends := rec.named("send stop command")
	// The send subsegment is emitted within the API's segment.
	if api := rec.named("api"); len(api) != 1 || api[0].traceID != traceID {
		t.Fatalf("api segments %+v, want one in trace %s", api, traceID)
	}
	if cmdHeader.TraceID != traceID || cmdHeader.SamplingDecision != header.Sampled || cmdHeader.ParentID == "" {
		t.Fatalf("command carries %+v (sends %+v)", cmdHeader, sends)
	}

	repHeader := receive(t, ctx, m)
	sidecar := rec.named("sidecar stop")
	if len(sidecar) != 1 {
		t.Fatalf("sidecar segments: %+v", sidecar)
	}
	if sidecar[0].traceID != traceID || sidecar[0].parentID != cmdHeader.ParentID {
		t.Errorf("sidecar segment %+v, want trace %s and parent %s (the API's send)", sidecar[0], traceID, cmdHeader.ParentID)
	}
	if repHeader.TraceID != traceID || repHeader.SamplingDecision != header.Sampled || repHeader.ParentID == sidecar[0].id || repHeader.ParentID == "" {
		t.Errorf("report carries %+v, want trace %s, sampled, parent the report's send within %s", repHeader, traceID, sidecar[0].id)
	}
}

// With sampling off upstream, the sidecar records nothing and passes the
// decision on.
func TestUnsampledTraceRecordsNothingDownstream(t *testing.T) {
	ctx, rec := tracingContext(t)
	m := sendCommand(t, ctx, "Root="+xray.NewTraceID()+";Sampled=0")
	repHeader := receive(t, ctx, m)
	if len(rec.segs) != 0 {
		t.Errorf("emitted %+v with sampling off", rec.segs)
	}
	if repHeader.SamplingDecision != header.NotSampled {
		t.Errorf("report carries %+v, want Sampled=0", repHeader)
	}
}

// A header that is not X-Ray's (a host may send anything) starts no segment.
func TestMalformedTraceHeaderIsIgnored(t *testing.T) {
	ctx, rec := tracingContext(t)
	for _, h := range []string{"", "Root=evil;Sampled=1", "Root=" + xray.NewTraceID() + ";Parent=../x;Sampled=1"} {
		if err := ContinueTrace(ctx, "report", h, func(context.Context) error { return nil }); err != nil {
			t.Fatal(err)
		}
	}
	if len(rec.segs) != 0 {
		t.Errorf("emitted %+v for malformed headers", rec.segs)
	}
}
