package main

import (
	"math"
	"os"
	"path/filepath"
	"testing"
)

func TestPercentiles(t *testing.T) {
	s := series{5, 1, 4, 2, 3}
	if s.med() != 3 || s.min() != 1 || s.max() != 5 || s.pct(95) != 5 || s.pct(20) != 1 {
		t.Fatalf("med %v min %v max %v p95 %v p20 %v", s.med(), s.min(), s.max(), s.pct(95), s.pct(20))
	}
	if !math.IsNaN(series{}.med()) {
		t.Fatal("the median of nothing is a number")
	}
}

func TestParseWrk(t *testing.T) {
	out := `Running 1s test @ http://127.0.0.1:28082/env-x/api
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.51ms  300.00us   5.00ms   90.00%
    Req/Sec    10.50k     1.00k   11.00k    80.00%
  Latency Distribution
     50%  480.00us
     75%    1.20ms
     90%    2.50ms
     99%    1.02s
  10450 requests in 1.00s, 2.10MB read
  Non-2xx or 3xx responses: 3
  Socket errors: connect 0, read 2, write 0, timeout 1
Requests/sec:  10449.80
Transfer/sec:      2.10MB
`
	r := parseWrk(out)
	if r.p50 != 0.48 || r.p90 != 2.5 || r.p99 != 1020 || r.requests != 10450 || r.rps != 10449.8 || r.non2xx != 3 || r.errors != 3 {
		t.Fatalf("%+v", r)
	}
}

func TestHandlerDurations(t *testing.T) {
	dir := t.TempDir()
	before := `timestamp=2026-11-29T14:03:51.539Z level=INFO message="request handled" route="POST /api/environments/{id}/jupyter/start" environment_id=ejb-a status=202 duration_ms=99.5` + "\n"
	after := `timestamp=2026-11-29T14:03:52.539Z level=INFO message="start sent" environment_id=ejb-a` + "\n" +
		`timestamp=2026-11-29T14:03:52.540Z level=INFO message="request handled" route="POST /api/environments/{id}/jupyter/start" environment_id=ejb-a status=202 duration_ms=12.25` + "\n" +
		`timestamp=2026-11-29T14:03:52.541Z level=INFO message="request handled" route="POST /api/environments/{id}/jupyter/stop" environment_id=ejb-a status=202 duration_ms=7` + "\n" +
		`timestamp=2026-11-29T14:03:52.542Z level=INFO message="request handled" route="POST /api/environments/{id}/jupyter/start" environment_id=ejb-other status=202 duration_ms=8` + "\n"
	f := filepath.Join(dir, "ApiFunction-0.log")
	if err := os.WriteFile(f, []byte(before), 0o644); err != nil {
		t.Fatal(err)
	}
	from := handlerLogSizes(dir)
	if err := os.WriteFile(f, []byte(before+after), 0o644); err != nil {
		t.Fatal(err)
	}
	got := handlerDurations(dir, []env{{ID: "ejb-a"}}, from)
	if len(got) != 1 || got[0] != 12.25 {
		t.Fatalf("durations %v, want [12.25]", got)
	}
}

func TestPairDiffs(t *testing.T) {
	got := series{1, 4, 10}.pairDiffs()
	want := series{-3, -9, 3, -6, 9, 6}
	if len(got) != len(want) {
		t.Fatalf("pairDiffs = %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("pairDiffs = %v, want %v", got, want)
		}
	}
}
