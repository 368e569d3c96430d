package main

import (
	"math"
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
