package e2e

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-xray-sdk-go/xray"

	"github.com/envjupyter/envjupyter/infra/devstack"
)

// A start is one X-Ray tree: the API's function segment, beneath it the
// sidecar's segment (parent: the API's send of the command) with its stages,
// and beneath those the reports function's segments. With sampling off
// upstream, nothing of the start is recorded, on the host either.
func TestTraces(t *testing.T) {
	customer := "cust-traces"
	tok := token(customer)
	unsampledEnv, env := newEnvironment(t, customer), newEnvironment(t, customer)

	// Sampling off first: by the time the sampled start's tree is complete,
	// the sidecar has long finished (and would have sent) this one's segment.
	unsampled := xray.NewTraceID()
	code, _ := apiWith(t, http.MethodPost, "/api/environments/"+unsampledEnv+"/jupyter/start", tok, "", traceHeader(unsampled, "0"))
	if code != http.StatusAccepted {
		t.Fatalf("unsampled start: %d", code)
	}
	waitStatus(t, tok, unsampledEnv, "running", 90*time.Second)

	startTrace, stopTrace := xray.NewTraceID(), xray.NewTraceID()
	code, in := apiWith(t, http.MethodPost, "/api/environments/"+env+"/jupyter/start", tok, "", traceHeader(startTrace, "1"))
	if code != http.StatusAccepted {
		t.Fatalf("start: %d", code)
	}
	waitStatus(t, tok, env, "running", 90*time.Second)
	if code, _ := apiWith(t, http.MethodPost, "/api/environments/"+env+"/jupyter/stop", tok, "", traceHeader(stopTrace, "1")); code != http.StatusAccepted && code != http.StatusOK {
		t.Fatalf("stop: %d", code)
	}
	waitStatus(t, tok, env, "stopped", 60*time.Second)
	if code, _ := stop(t, tok, unsampledEnv); code != http.StatusAccepted && code != http.StatusOK {
		t.Fatalf("stop of the unsampled instance: %d", code)
	}

	// The segments arrive over UDP after the work they describe.
	var start, stopped tree
	deadline := time.Now().Add(30 * time.Second)
	for {
		segs, err := stack.Segments()
		if err != nil {
			t.Fatal(err)
		}
		start, stopped = newTree(devstack.Trace(segs, startTrace)), newTree(devstack.Trace(segs, stopTrace))
		problem := start.check("start", "running", "docker exec", "firewall", "health wait", "route write")
		if problem == "" {
			problem = stopped.check("stop", "stopped")
		}
		if problem == "" {
			if got := devstack.Trace(segs, unsampled); len(got) != 0 {
				t.Errorf("sampling off, yet %d segments were recorded, the first %q", len(got), got[0].Name)
			}
			// What `devstack trace <instance id>` prints.
			if got := devstack.FindTraces(segs, in.InstanceID); !slices.Equal(got, []string{startTrace, stopTrace}) {
				t.Errorf("traces of instance %s: %q, want its start's and its stop's", in.InstanceID, got)
			}
			var b strings.Builder
			devstack.PrintTrace(&b, devstack.Trace(segs, startTrace))
			t.Logf("the start's trace:\n%s", b.String())
			break
		}
		if time.Now().After(deadline) {
			var b strings.Builder
			devstack.PrintTrace(&b, devstack.Trace(segs, startTrace))
			devstack.PrintTrace(&b, devstack.Trace(segs, stopTrace))
			t.Fatalf("%s\nreceived:\n%s", problem, b.String())
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func traceHeader(traceID, sampled string) http.Header {
	return http.Header{"X-Amzn-Trace-Id": {"Root=" + traceID + ";Sampled=" + sampled}}
}

// tree is one trace's segments by id.
type tree map[string]devstack.Segment

func newTree(segs []devstack.Segment) tree {
	t := tree{}
	for _, s := range segs {
		t[s.ID] = s
	}
	return t
}

// named returns the segments of that name.
func (t tree) named(name string) []devstack.Segment {
	var out []devstack.Segment
	for _, s := range t {
		if s.Name == name {
			out = append(out, s)
		}
	}
	return out
}

// under reports whether s descends from the segment of id ancestor,
// following parent links, each of which must resolve.
func (t tree) under(s devstack.Segment, ancestor string) bool {
	for s.ParentID != "" {
		if s.ParentID == ancestor {
			return true
		}
		p, ok := t[s.ParentID]
		if !ok {
			return false
		}
		s = p
	}
	return false
}

// check describes what the trace of a command of type cmd lacks, or "":
// the API function's segment; beneath it the sidecar's, whose parent is the
// API's send of the command; beneath that the stages and the send of the
// final report, and the reports function's segment beneath that send.
func (t tree) check(cmd, final string, stages ...string) string {
	var apiFn []devstack.Segment
	for _, s := range t {
		if s.Origin == "AWS::Lambda::Function" && s.Name == stack.Opts.Name+"-ApiFunction" {
			apiFn = append(apiFn, s)
		}
		if _, ok := t[s.ParentID]; s.ParentID != "" && !ok {
			return fmt.Sprintf("%s: the parent %s of %q is not in the trace", cmd, s.ParentID, s.Name)
		}
	}
	if len(apiFn) != 1 {
		return cmd + ": no API function segment"
	}
	sidecar := t.named("sidecar " + cmd)
	if len(sidecar) != 1 || !t.under(sidecar[0], apiFn[0].ID) {
		return cmd + ": no sidecar segment beneath the API function's"
	}
	if send := t[sidecar[0].ParentID]; send.Name != "send "+cmd+" command" {
		return fmt.Sprintf("%s: the sidecar segment's parent is %q, not the API's send of the command", cmd, send.Name)
	}
	for _, stage := range append(stages, "send "+final+" report") {
		if !slices.ContainsFunc(t.named(stage), func(s devstack.Segment) bool { return t.under(s, sidecar[0].ID) }) {
			return fmt.Sprintf("%s: no %q subsegment beneath the sidecar's segment", cmd, stage)
		}
	}
	for _, r := range t.named("report") {
		if t[r.ParentID].Name == "send "+final+" report" && t.under(r, sidecar[0].ID) {
			return ""
		}
	}
	return fmt.Sprintf("%s: no reports function segment beneath the send of the %s report", cmd, final)
}
