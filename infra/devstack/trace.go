package devstack

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-xray-sdk-go/header"
	"github.com/aws/aws-xray-sdk-go/xray"
)

// Segment is an X-Ray segment or subsegment document, as the SDK sends it
// to the daemon (the fields the local stack reads).
type Segment struct {
	Name        string         `json:"name"`
	ID          string         `json:"id"`
	TraceID     string         `json:"trace_id,omitempty"`
	ParentID    string         `json:"parent_id,omitempty"`
	Type        string         `json:"type,omitempty"`
	Origin      string         `json:"origin,omitempty"`
	StartTime   float64        `json:"start_time"`
	EndTime     float64        `json:"end_time,omitempty"`
	InProgress  bool           `json:"in_progress,omitempty"`
	Error       bool           `json:"error,omitempty"`
	Fault       bool           `json:"fault,omitempty"`
	Annotations map[string]any `json:"annotations,omitempty"`
	AWS         *struct {
		Operation string `json:"operation,omitempty"`
	} `json:"aws,omitempty"`
	Subsegments []Segment `json:"subsegments,omitempty"`
}

// TraceFile is where a stack working in workDir keeps the segments it
// received, one JSON document a line.
func TraceFile(workDir string) string { return filepath.Join(workDir, "traces.jsonl") }

// traceReceiver plays the X-Ray daemon: it listens on UDP, where every
// datagram is `{"format": "json", "version": 1}` and a newline before one
// segment document, and appends each document to the trace file.
type traceReceiver struct {
	conn *net.UDPConn
	mu   sync.Mutex
	file *os.File
	done chan struct{}
}

func startTraceReceiver(port int, path string) (*traceReceiver, error) {
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
	if err != nil {
		return nil, fmt.Errorf("listening for X-Ray segments on udp port %d: %w", port, err)
	}
	file, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		conn.Close()
		return nil, err
	}
	r := &traceReceiver{conn: conn, file: file, done: make(chan struct{})}
	go r.receive()
	return r, nil
}

// Addr is the value of AWS_XRAY_DAEMON_ADDRESS for the stack's processes.
func (r *traceReceiver) Addr() string { return r.conn.LocalAddr().String() }

func (r *traceReceiver) receive() {
	defer close(r.done)
	buf := make([]byte, 64<<10)
	for {
		n, _, err := r.conn.ReadFromUDP(buf)
		if err != nil {
			return // closed
		}
		if _, doc, ok := bytes.Cut(buf[:n], []byte("\n")); ok {
			r.record(doc)
		}
	}
}

// record appends one segment document, if it is JSON, as one line.
func (r *traceReceiver) record(doc []byte) {
	var line bytes.Buffer
	if json.Compact(&line, doc) != nil {
		return
	}
	line.WriteByte('\n')
	r.mu.Lock()
	defer r.mu.Unlock()
	_, _ = r.file.Write(line.Bytes())
}

// Close stops receiving.
func (r *traceReceiver) Close() {
	r.conn.Close()
	<-r.done
	r.file.Close()
}

// lambdaTracer stands between the functions and kumo's runtime API and does
// what Lambda does for a function with active tracing, which kumo does not:
// for each invocation it continues the caller's trace (the event's
// X-Amzn-Trace-Id header: the HTTP API passes the client's on) or begins one,
// records the function's own segment, and hands the function its trace
// header (Lambda-Runtime-Trace-Id: Root, Parent=that segment, Sampled), from
// which the X-Ray SDK's facade parents the function's subsegments. Locally
// every invocation without an upstream decision is sampled.
type lambdaTracer struct {
	rec   *traceReceiver
	proxy *httputil.ReverseProxy
	mu    sync.Mutex
	open  map[string]*Segment // sampled invocations under way, by request id
}

func newLambdaTracer(kumoURL string, rec *traceReceiver) (*lambdaTracer, error) {
	target, err := url.Parse(kumoURL)
	if err != nil {
		return nil, err
	}
	t := &lambdaTracer{rec: rec, open: map[string]*Segment{}}
	t.proxy = &httputil.ReverseProxy{
		Rewrite:        func(r *httputil.ProxyRequest) { r.SetURL(target) },
		ModifyResponse: t.begin,
		// The functions' long polls end this way whenever the stack stops;
		// they log what they get themselves.
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, _ error) { w.WriteHeader(http.StatusBadGateway) },
	}
	return t, nil
}

func (t *lambdaTracer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	t.proxy.ServeHTTP(w, r)
	// .../runtime/invocation/<request id>/response or /error
	rest, outcome, _ := strings.Cut(strings.TrimSuffix(r.URL.Path, "/"), "/runtime/invocation/")
	requestID, result, _ := strings.Cut(outcome, "/")
	if r.Method != http.MethodPost || rest == "" || result != "response" && result != "error" {
		return
	}
	t.mu.Lock()
	seg, ok := t.open[requestID]
	delete(t.open, requestID)
	t.mu.Unlock()
	if ok {
		seg.EndTime, seg.Fault = unixSeconds(time.Now()), result == "error"
		doc, _ := json.Marshal(seg)
		t.rec.record(doc)
	}
}

// begin starts the function segment of an invocation the runtime handed out.
func (t *lambdaTracer) begin(resp *http.Response) error {
	if resp.StatusCode != http.StatusOK || !strings.HasSuffix(resp.Request.URL.Path, "/runtime/invocation/next") {
		return nil
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(body))
	if err != nil {
		return err
	}
	var event struct {
		Headers map[string]string `json:"headers"`
	}
	_ = json.Unmarshal(body, &event)
	upstream := &header.Header{}
	for k, v := range event.Headers {
		if strings.EqualFold(k, xray.TraceIDHeaderKey) {
			upstream = header.FromString(v)
		}
	}
	fn, _, _ := strings.Cut(strings.TrimPrefix(resp.Request.URL.Path, "/_runtime/"), "/")
	seg := &Segment{
		Name: fn, ID: xray.NewSegmentID(), TraceID: upstream.TraceID, ParentID: upstream.ParentID,
		Origin: "AWS::Lambda::Function", StartTime: unixSeconds(time.Now()),
	}
	if !strings.HasPrefix(seg.TraceID, "1-") {
		seg.TraceID, seg.ParentID = xray.NewTraceID(), ""
	}
	sampled := upstream.SamplingDecision != header.NotSampled
	decision := header.Sampled
	if !sampled {
		decision = header.NotSampled
	}
	resp.Header.Set("Lambda-Runtime-Trace-Id", header.Header{TraceID: seg.TraceID, ParentID: seg.ID, SamplingDecision: decision}.String())
	if sampled {
		t.mu.Lock()
		t.open[resp.Header.Get("Lambda-Runtime-Aws-Request-Id")] = seg
		t.mu.Unlock()
	}
	return nil
}

func unixSeconds(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

// ReadSegments reads a trace file: every segment and subsegment, nested ones
// taken out of their parents (with their parent's id and trace id), each
// once.
func ReadSegments(path string) ([]Segment, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	byID := map[string]int{}
	var out []Segment
	var add func(s Segment)
	add = func(s Segment) {
		for _, sub := range s.Subsegments {
			sub.TraceID, sub.ParentID = s.TraceID, s.ID
			add(sub)
		}
		s.Subsegments = nil
		if i, ok := byID[s.ID]; ok {
			if !s.InProgress {
				out[i] = s // the finished document replaces an in-progress one
			}
			return
		}
		byID[s.ID] = len(out)
		out = append(out, s)
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var s Segment
		if json.Unmarshal(sc.Bytes(), &s) == nil && s.ID != "" {
			add(s)
		}
	}
	return out, sc.Err()
}

// FindTraces returns the ids of the traces that key names: a trace id, or
// an instance id some segment of the trace is annotated with, in the order
// the traces began.
func FindTraces(segs []Segment, key string) []string {
	began := map[string]float64{}
	for _, s := range segs {
		if b, ok := began[s.TraceID]; !ok || s.StartTime < b {
			began[s.TraceID] = s.StartTime
		}
	}
	var ids []string
	for _, s := range segs {
		if (s.TraceID == key || s.Annotations["instance_id"] == key) && !slices.Contains(ids, s.TraceID) {
			ids = append(ids, s.TraceID)
		}
	}
	slices.SortFunc(ids, func(a, b string) int { return cmp.Compare(began[a], began[b]) })
	return ids
}

// Trace returns the segments of one trace.
func Trace(segs []Segment, traceID string) []Segment {
	var out []Segment
	for _, s := range segs {
		if s.TraceID == traceID {
			out = append(out, s)
		}
	}
	return out
}

// PrintTrace writes a trace as a tree: each segment's start after the
// trace's first, its duration, and its name under its parent's.
func PrintTrace(w io.Writer, trace []Segment) {
	if len(trace) == 0 {
		return
	}
	ids := map[string]bool{}
	children := map[string][]Segment{}
	first := trace[0].StartTime
	for _, s := range trace {
		ids[s.ID] = true
		first = min(first, s.StartTime)
	}
	var roots []Segment
	for _, s := range trace {
		if ids[s.ParentID] {
			children[s.ParentID] = append(children[s.ParentID], s)
		} else {
			roots = append(roots, s)
		}
	}
	fmt.Fprintf(w, "trace %s (%d segments)\n   start ms  duration ms\n", trace[0].TraceID, len(trace))
	var print func(s Segment, depth int)
	print = func(s Segment, depth int) {
		name := s.Name
		if s.AWS != nil && s.AWS.Operation != "" {
			name += " " + s.AWS.Operation
		}
		if s.Origin != "" {
			name += " [" + s.Origin + "]"
		}
		if s.ParentID != "" && depth == 0 {
			name += " (parent " + s.ParentID + " not received)"
		}
		if s.Error || s.Fault {
			name += " ERROR"
		}
		duration := "in progress"
		if !s.InProgress && s.EndTime > 0 {
			duration = strconv.FormatFloat((s.EndTime-s.StartTime)*1000, 'f', 1, 64)
		}
		fmt.Fprintf(w, "%11.1f %12s  %s%s\n", (s.StartTime-first)*1000, duration, strings.Repeat("  ", depth), name)
		kids := children[s.ID]
		slices.SortFunc(kids, func(a, b Segment) int { return cmp.Compare(a.StartTime, b.StartTime) })
		for _, k := range kids {
			print(k, depth+1)
		}
	}
	slices.SortFunc(roots, func(a, b Segment) int { return cmp.Compare(a.StartTime, b.StartTime) })
	for _, r := range roots {
		print(r, 0)
	}
}

// ErrNoTrace says that no received segment matches.
var ErrNoTrace = errors.New("no trace of that id or instance has been received")
