package main

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/envjupyter/envjupyter/sidecar/route"
)

// fillRoutes makes the route table hold n made-up routes (besides the real
// ones), adding or removing as needed; have is how many it holds now.
func (b *bench) fillRoutes(ctx context.Context, have, n int) error {
	const batch = 1000
	for i := have; i < n; i += batch {
		pipe := b.api.redis.Pipeline()
		for j := i; j < min(n, i+batch); j++ {
			pipe.Set(ctx, route.Key(fmt.Sprintf("ejb-fill-%d", j)), fmt.Sprintf("10.%d.%d.%d:%d", 200+j/65536, (j/256)%256, j%256+0, 20000+j%1000), time.Hour)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return err
		}
	}
	for i := n; i < have; i += batch {
		var keys []string
		for j := i; j < min(have, i+batch); j++ {
			keys = append(keys, route.Key(fmt.Sprintf("ejb-fill-%d", j)))
		}
		if err := b.api.redis.Del(ctx, keys...).Err(); err != nil {
			return err
		}
	}
	return nil
}

// servedAfterWrite writes a new route to the echo backend and requests it
// through the proxy at once, again and again until it is served; it returns
// the time from the write's acknowledgement to the first 200, and how many
// requests that took.
func (b *bench) servedAfterWrite(ctx context.Context, client *http.Client, echo string, k int) (time.Duration, int, error) {
	id := fmt.Sprintf("ejb-new-%d-%d", k, time.Now().UnixNano()%1e6)
	u := "http://127.0.0.1:" + strconv.Itoa(proxyPort) + "/env-" + id + "/api"
	if err := b.api.redis.Set(ctx, route.Key(id), echo, time.Hour).Err(); err != nil {
		return 0, 0, err
	}
	t := time.Now()
	defer b.api.redis.Del(context.Background(), route.Key(id))
	for n := 1; ; n++ {
		st, err := get(ctx, client, u)
		if err == nil && st == http.StatusOK {
			return time.Since(t), n, nil
		}
		if time.Since(t) > 5*time.Second {
			return 0, n, fmt.Errorf("route %s not served 5 s after it was written (last %d %v)", id, st, err)
		}
	}
}

func (b *bench) benchRoutes(ctx context.Context) error {
	if err := b.ensureMain(ctx); err != nil {
		return err
	}
	r := b.mainRun
	echo, stopEcho, err := echoServer()
	if err != nil {
		return err
	}
	defer stopEcho()
	if err := b.api.redis.Set(ctx, route.Key(echoEnv), echo, time.Hour).Err(); err != nil {
		return err
	}
	defer b.api.redis.Del(context.Background(), route.Key(echoEnv))
	echoURL := "http://127.0.0.1:" + strconv.Itoa(proxyPort) + "/env-" + echoEnv + "/api"
	client := &http.Client{Timeout: 2 * time.Second}
	// The sizes, then the first again: the spread between the two runs at
	// the first size is the noise of this machine.
	sizes := append(append([]int(nil), b.routeSizes...), b.routeSizes[0])
	conc := 16
	have := 0
	ours, err := b.stackNginx()
	if err != nil {
		return err
	}
	defer func() { _ = b.fillRoutes(context.Background(), have, 0) }()
	type row struct {
		size            int
		jup, echo       wrkResult
		served          series
		firstTry, tries int
	}
	var rows []row
	b.logf("route table: at %v made-up routes, wrk (the faster of 2 × %v, c=%d) through the proxy to Jupyter and to the echo backend, and 20 new routes each timed from write to served", b.routeSizes, b.wrkDuration/2, conc)
	for _, n := range sizes {
		if err := b.fillRoutes(ctx, have, n); err != nil {
			return err
		}
		have = n
		keys, _ := b.api.redis.DBSize(ctx).Result()
		rw := row{size: n}
		// Two windows of half the duration each, keeping the faster (as
		// figure 3 keeps the cheaper): one slow window of the machine
		// decided a whole row before.
		for range 2 {
			jup, err := b.wrk(ctx, r.proxied()+"api", conc, b.wrkDuration/2, ours, nil)
			if err != nil {
				return err
			}
			echo, err := b.wrk(ctx, echoURL, conc, b.wrkDuration/2, ours, nil)
			if err != nil {
				return err
			}
			if jup.rps > rw.jup.rps {
				rw.jup = jup
			}
			if echo.rps > rw.echo.rps {
				rw.echo = echo
			}
		}
		for k := range 20 {
			d, tries, err := b.servedAfterWrite(ctx, client, echo, k)
			if err != nil {
				return err
			}
			rw.served = append(rw.served, ms(d))
			rw.tries += tries
			if tries == 1 {
				rw.firstTry++
			}
		}
		rows = append(rows, rw)
		b.logf("  %6d routes (%d keys in Redis): Jupyter %.0f req/s p50 %s p99 %s ms; echo %.0f req/s p50 %s p99 %s ms; new route served after %s, first request served %d/20",
			n, keys, rw.jup.rps, num(rw.jup.p50), num(rw.jup.p99), rw.echo.rps, num(rw.echo.p50), num(rw.echo.p99), rw.served.summary(" ms"), rw.firstTry)
	}
	base, again := rows[0], rows[len(rows)-1]
	noise := math.Abs(again.echo.rps-base.echo.rps) / base.echo.rps
	var parts []string
	flat := true
	var allServed series
	firstTotal := 0
	for _, rw := range rows[:len(rows)-1] {
		d := rw.echo.rps/base.echo.rps - 1
		parts = append(parts, fmt.Sprintf("%d routes: echo %.0f req/s (%+.1f%%), p99 %s ms; Jupyter %.0f req/s, p99 %s ms; new route served %s ms after the write",
			rw.size, rw.echo.rps, d*100, num(rw.echo.p99), rw.jup.rps, num(rw.jup.p99), num(rw.served.med())))
		// Slower by more than the noise is not flat; faster is.
		if d < -math.Max(0.10, 2*noise) || rw.echo.p50 > base.echo.p50*(1+math.Max(0.10, 2*noise)) {
			flat = false
		}
		firstTotal += rw.firstTry
		allServed = append(allServed, rw.served...)
	}
	last := rows[len(rows)-2]
	b.record(figure{
		ID: "5", Name: "route table size (throughput, latency, new route served)",
		Result: fmt.Sprintf("echo through the proxy at %d routes %.0f req/s vs %.0f at %d (%s); new route served %s after its write",
			last.size, last.echo.rps, base.echo.rps, base.size, ratio(last.echo.rps, base.echo.rps), allServed.summary(" ms")),
		Baseline: fmt.Sprintf("%d routes: %.0f req/s, p99 %s ms (again at the end: %.0f req/s, so noise %.1f%%); a request on an existing route: p50 %s ms",
			base.size, base.echo.rps, num(base.echo.p99), again.echo.rps, noise*100, num(base.echo.p50)),
		Ratio:   ratio(last.echo.rps, base.echo.rps),
		Target:  "flat within noise; a new route served ≤ 5 ms after it is written",
		Verdict: b.verdict(flat && allServed.med() <= 5 && allServed.max() <= 5),
		Note:    strings.Join(parts, "; ") + fmt.Sprintf(". Served-after-write = from Redis acknowledging the SET to the first 200 through the proxy; a route the proxy's workers have not read is read from Redis (their copies keep only routes they read, and drop one when Redis says it changed), so the first request after the write is served in %d of %d cases. The throughput rows hit one existing route, which the workers' copies hold after their first request: what grows with the table is Redis's work and memory. Each row keeps the faster of two windows of half the wrk duration. Flat = no size slower (req/s or p50) than the first by more than max(10%%, twice the noise).", firstTotal, 20*(len(rows)-1)),
	})
	return nil
}
