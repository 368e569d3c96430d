package devstack

import (
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-xray-sdk-go/header"
	"github.com/aws/aws-xray-sdk-go/xray"
)

// waitSegments reads the trace file until it holds n segments.
func waitSegments(t *testing.T, path string, n int) []Segment {
	t.Helper()
	for range 100 {
		segs, err := ReadSegments(path)
		if err != nil {
			t.Fatal(err)
		}
		if len(segs) >= n {
			return segs
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("fewer than %d segments in %s", n, path)
	return nil
}

// The receiver keeps what the daemon protocol brings; nested subsegments
// come out of their parent with its ids; PrintTrace draws the tree.
func TestTraceReceiverAndTree(t *testing.T) {
	path := filepath.Join(t.TempDir(), "traces.jsonl")
	rec, err := startTraceReceiver(0, path)
	if err != nil {
		t.Fatal(err)
	}
	defer rec.Close()
	conn, err := net.Dial("udp", rec.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	trace := xray.NewTraceID()
	for _, doc := range []string{
		`{"name":"api","id":"a000000000000001","trace_id":"` + trace + `","start_time":10,"end_time":10.5,"subsegments":[{"name":"send start command","id":"a000000000000002","start_time":10.1,"end_time":10.2,"subsegments":[{"name":"SQS","id":"a000000000000004","start_time":10.1,"end_time":10.15,"aws":{"operation":"SendMessage"}}]}]}`,
		`{"name":"sidecar start","id":"b000000000000001","trace_id":"` + trace + `","parent_id":"a000000000000002","start_time":10.3,"end_time":12,"annotations":{"instance_id":"ji-1"}}`,
		`{"name":"lost","id":"c000000000000001","trace_id":"` + trace + `","parent_id":"ffffffffffffffff","start_time":11,"in_progress":true}`,
	} {
		if _, err := conn.Write([]byte("{\"format\": \"json\", \"version\": 1}\n" + doc)); err != nil {
			t.Fatal(err)
		}
	}
	segs := waitSegments(t, path, 5)
	if ids := FindTraces(segs, "ji-1"); len(ids) != 1 || ids[0] != trace {
		t.Errorf("FindTraces(ji-1) = %q", ids)
	}
	var b strings.Builder
	PrintTrace(&b, Trace(segs, trace))
	want := []string{
		"        0.0        500.0  api",
		"      100.0        100.0    send start command",
		"      100.0         50.0      SQS SendMessage",
		"      300.0       1700.0      sidecar start",
		"     1000.0  in progress  lost (parent ffffffffffffffff not received)",
	}
	for _, line := range want {
		if !strings.Contains(b.String(), line+"\n") {
			t.Errorf("tree lacks %q:\n%s", line, b.String())
		}
	}
}

// The Lambda stand-in continues the event's trace with its sampling
// decision, hands the function its header, and records the function's
// segment once it answers.
func TestLambdaTracer(t *testing.T) {
	kumo := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/next") {
			id := r.URL.Query().Get("id") // the test names the invocation
			w.Header().Set("Lambda-Runtime-Aws-Request-Id", id)
			_, _ = w.Write([]byte(`{"headers":{"X-Amzn-Trace-Id":"` + r.URL.Query().Get("trace") + `"}}`))
		}
	}))
	defer kumo.Close()
	path := filepath.Join(t.TempDir(), "traces.jsonl")
	rec, err := startTraceReceiver(0, path)
	if err != nil {
		t.Fatal(err)
	}
	defer rec.Close()
	tracer, err := newLambdaTracer(kumo.URL, rec)
	if err != nil {
		t.Fatal(err)
	}
	front := httptest.NewServer(tracer)
	defer front.Close()
	invoke := func(id, upstream string) *header.Header {
		resp, err := http.Get(front.URL + "/_runtime/fn-1/2018-06-01/runtime/invocation/next?id=" + id + "&trace=" + url.QueryEscape(upstream))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		done, err := http.Post(front.URL+"/_runtime/fn-1/2018-06-01/runtime/invocation/"+id+"/response", "application/json", strings.NewReader("{}"))
		if err != nil {
			t.Fatal(err)
		}
		done.Body.Close()
		return header.FromString(resp.Header.Get("Lambda-Runtime-Trace-Id"))
	}
	off := xray.NewTraceID()
	if h := invoke("r-off", "Root="+off+";Sampled=0"); h.TraceID != off || h.SamplingDecision != header.NotSampled {
		t.Errorf("unsampled invocation got %+v", h)
	}
	on := xray.NewTraceID()
	h := invoke("r-on", "Root="+on+";Parent=53995c3f42cd8ad8;Sampled=1")
	if h.TraceID != on || h.SamplingDecision != header.Sampled {
		t.Errorf("sampled invocation got %+v", h)
	}
	fresh := invoke("r-new", "")
	segs := waitSegments(t, path, 2)
	if len(segs) != 2 || segs[0].TraceID != on || segs[0].ID != h.ParentID || segs[0].ParentID != "53995c3f42cd8ad8" ||
		segs[0].Name != "fn-1" || segs[0].Origin != "AWS::Lambda::Function" || segs[0].EndTime == 0 {
		t.Errorf("recorded %+v, want the sampled invocation's function segment under its caller's", segs)
	}
	if fresh.TraceID == "" || fresh.TraceID == on || fresh.SamplingDecision != header.Sampled || segs[1].ID != fresh.ParentID {
		t.Errorf("an invocation without a trace header got %+v (segment %+v), want a sampled trace of its own", fresh, segs[1])
	}
}
