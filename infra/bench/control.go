package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/envjupyter/envjupyter/shared/instance"
)

func execOutput(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).Output()
	return strings.TrimSpace(string(out)), err
}

// stopAll stops the instances of envs through the API, all at once, and
// waits until none is active; it returns how long that took.
func (b *bench) stopAll(ctx context.Context, envs []env) (time.Duration, error) {
	t0 := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, len(envs))
	for i, e := range envs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, body, _, err := b.api.stop(ctx, e)
			if err == nil && code != http.StatusAccepted && code != http.StatusOK {
				err = fmt.Errorf("stop of %s: HTTP %d %+v", e.ID, code, body.Error)
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return 0, err
		}
	}
	deadline := time.Now().Add(3 * time.Minute)
	for {
		active := 0
		for _, e := range envs {
			if _, err := b.stack.Store.ActiveInstance(ctx, e.ID); err == nil {
				active++
			}
		}
		if active == 0 {
			return time.Since(t0), nil
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("%d of %d instances still active 3 minutes after the stop calls", active, len(envs))
		}
		if err := sleep(ctx, 250*time.Millisecond); err != nil {
			return 0, err
		}
	}
}

// startEvent is the event API Gateway gives the API function for a start.
func startEvent(e env) []byte {
	path := "/api/environments/" + e.ID + "/jupyter/start"
	now := time.Now()
	ev := events.APIGatewayV2HTTPRequest{
		Version: "2.0", RouteKey: "POST /api/environments/{id}/jupyter/start", RawPath: path,
		Headers: map[string]string{"content-type": "application/json"},
		RequestContext: events.APIGatewayV2HTTPRequestContext{
			RouteKey: "POST /api/environments/{id}/jupyter/start", Stage: "$default", RequestID: randomID(),
			Authorizer: &events.APIGatewayV2HTTPRequestContextAuthorizerDescription{JWT: &events.APIGatewayV2HTTPRequestContextAuthorizerJWTDescription{
				Claims: map[string]string{"customer_id": e.Customer, "sub": "user-" + e.Customer},
			}},
			HTTP:      events.APIGatewayV2HTTPRequestContextHTTPDescription{Method: "POST", Path: path, Protocol: "HTTP/1.1", SourceIP: "127.0.0.1"},
			TimeEpoch: now.UnixMilli(),
		},
		PathParameters: map[string]string{"id": e.ID},
	}
	raw, _ := json.Marshal(ev)
	return raw
}

// ghosts registers n environments whose containers do not exist: the API
// accepts their starts as any other, and the sidecar fails them at once
// (container_not_running), so they cost no container.
func (b *bench) ghosts(ctx context.Context, tag string, n int, customer func(i int) string) ([]env, error) {
	var out []env
	for i := range n {
		e, err := b.registerEnv(ctx, fmt.Sprintf("ejb-%s-%d", tag, i), customer(i), "ejbench-ghost-"+randomID())
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}

// fire makes one start call per environment, all released at once, and
// returns their status codes and latencies.
func (b *bench) fire(ctx context.Context, envs []env) ([]int, series, []error) {
	codes := make([]int, len(envs))
	lat := make(series, len(envs))
	errs := make([]error, len(envs))
	var ready, wg sync.WaitGroup
	gate := make(chan struct{})
	for i, e := range envs {
		wg.Add(1)
		ready.Add(1)
		go func() {
			defer wg.Done()
			ready.Done()
			<-gate
			code, _, took, err := b.api.start(ctx, e)
			codes[i], lat[i], errs[i] = code, ms(took), err
		}()
	}
	ready.Wait()
	close(gate)
	wg.Wait()
	return codes, lat, errs
}

func countCodes(codes []int, errs []error) (map[int]int, int) {
	m := map[int]int{}
	nerr := 0
	for i, c := range codes {
		if errs[i] != nil {
			nerr++
			continue
		}
		m[c]++
	}
	return m, nerr
}

func codesString(m map[int]int, nerr int) string {
	var keys []int
	for k := range m {
		keys = append(keys, k)
	}
	sort.Ints(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%d×%d", m[k], k))
	}
	if nerr > 0 {
		parts = append(parts, fmt.Sprintf("%d transport errors", nerr))
	}
	return strings.Join(parts, ", ")
}

func (b *bench) benchControl(ctx context.Context) error {
	// The real environments: the density ones and the main one, stopped
	// first so that they start again here.
	var real []env
	if b.mainRun != nil {
		real = append(real, b.main)
	}
	for _, d := range b.densityEnvs {
		real = append(real, d.env)
	}
	if len(real) > b.control {
		real = real[:b.control]
	}
	if len(real) > 0 {
		all := append([]env(nil), real...)
		for _, d := range b.densityEnvs {
			if !containsEnv(all, d.ID) {
				all = append(all, d.env)
			}
		}
		b.logf("control plane: stopping the %d instances of the earlier benchmarks first", len(all))
		took, err := b.stopAll(ctx, all)
		if err != nil {
			return err
		}
		b.stopAllTook, b.stopAllN = took, len(all)
		b.mainRun = nil
		b.logf("  %d instances stopped in %s (stop calls at once → none active)", len(all), took.Round(100*time.Millisecond))
	}
	// More environments with real containers, as far as the budget and
	// the machine allow; the rest point at containers that do not exist.
	var made []containerResult
	madeTook := time.Duration(0)
	if need := b.control - len(real); need > 0 {
		b.logf("control plane: creating up to %d more containers (%d at a time, budget %s)", need, b.createParallel, b.densityBudget)
		t := time.Now()
		made = b.createContainers(ctx, "c", need, b.createParallel, b.densityBudget)
		madeTook = time.Since(t)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		n := 0
		for _, r := range made {
			if r.err != nil {
				b.logf("  %v", r.err)
				continue
			}
			e, err := b.registerEnv(ctx, fmt.Sprintf("ejb-c-%d", n), fmt.Sprintf("cust-bench-c%d", n/5), r.id)
			if err != nil {
				return err
			}
			real = append(real, e)
			n++
		}
		b.logf("  %d containers created in %s (%s each)", n, madeTook.Round(time.Second), series(createTimes(made)).summary(" s"))
	}
	ghosts, err := b.ghosts(ctx, "g", b.control-len(real), func(i int) string { return fmt.Sprintf("cust-bench-g%d", i/5) })
	if err != nil {
		return err
	}
	envs := append(append([]env(nil), real...), ghosts...)
	b.logf("control plane: %d start requests at once for %d distinct environments (%d with a container of their own, %d whose container does not exist), 5 per customer", len(envs), len(envs), len(real), len(ghosts))
	logsFrom := handlerLogSizes(b.stack.LogDir())
	t0 := time.Now()
	codes, lat, errs := b.fire(ctx, envs)
	fired := time.Since(t0)
	byCode, nerr := countCodes(codes, errs)
	b.logf("  answers %s in %s; latency %s, p99 %s ms", codesString(byCode, nerr), fired.Round(time.Millisecond), lat.summary95(" ms"), num(lat.pct(99)))
	inside := handlerDurations(b.stack.LogDir(), envs, logsFrom)
	b.logf("  the handler's own duration (its log line) for those requests: %s, p99 %s ms", inside.summary95(" ms"), num(inside.pct(99)))
	for i, err := range errs {
		if err != nil {
			b.logf("  %s: %v", envs[i].ID, err)
			break
		}
	}
	// Every instance settles: the real ones run, the ghosts fail.
	outcome := map[string]int{}
	deadline := time.Now().Add(5*time.Minute + time.Duration(len(real))*5*time.Second)
	for {
		outcome = map[string]int{}
		pending := 0
		for _, e := range envs {
			in, err := b.stack.Store.LatestInstance(ctx, e.ID)
			switch {
			case err != nil:
				outcome["no instance"]++
			case in.Status == instance.Starting:
				pending++
			default:
				k := string(in.Status)
				if in.Status.Terminal() {
					k += " (" + strings.SplitN(in.StatusReason, ":", 2)[0] + ")"
				}
				outcome[k]++
			}
		}
		if pending == 0 {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("control plane: %d instances still starting after %s", pending, time.Since(t0).Round(time.Second))
		}
		if err := sleep(ctx, 500*time.Millisecond); err != nil {
			return err
		}
	}
	settled := time.Since(t0)
	// The running ones all answer through the proxy, on distinct ports.
	runningNow, reachable := 0, 0
	ports := map[int]bool{}
	client := &http.Client{Timeout: 5 * time.Second}
	for _, e := range envs {
		in, err := b.stack.Store.ActiveInstance(ctx, e.ID)
		if err != nil || in.Status != instance.Running {
			continue
		}
		runningNow++
		ports[in.ExternalPort] = true
		if st, err := get(ctx, client, "http://127.0.0.1:"+fmt.Sprint(proxyPort)+instance.BasePath(e.ID)+"api"); err == nil && st == http.StatusOK {
			reachable++
		}
	}
	realFailed := 0
	for _, e := range real {
		if in, err := b.stack.Store.LatestInstance(ctx, e.ID); err != nil || in.Status != instance.Running {
			realFailed++
		}
	}
	b.logf("  %d instances running at once (%d with a container did not run), %d answering through the proxy, %d distinct ports; memory available %.0f MiB", runningNow, realFailed, reachable, len(ports), memAvailableMB())
	var outs []string
	for k, v := range outcome {
		outs = append(outs, fmt.Sprintf("%d %s", v, k))
	}
	sort.Strings(outs)
	b.logf("  settled %s after the calls: %s", settled.Round(100*time.Millisecond), strings.Join(outs, ", "))

	// The per-customer limit answers 429, by design.
	limit, err := b.ghosts(ctx, "l", 12, func(int) string { return "cust-bench-limit" })
	if err != nil {
		return err
	}
	lcodes, _, lerrs := b.fire(ctx, limit)
	lby, lerr := countCodes(lcodes, lerrs)
	b.logf("  one customer, 12 starts at once (limit 10 active): %s", codesString(lby, lerr))

	// The handler alone: the API function invoked directly (no nginx, no
	// HTTP API or authorizer), at most 4 at a time as the stack runs 4 copies.
	inv, err := b.ghosts(ctx, "i", b.control, func(i int) string { return fmt.Sprintf("cust-bench-i%d", i/5) })
	if err != nil {
		return err
	}
	handler := make(series, 0, len(inv))
	var hmu sync.Mutex
	sem := make(chan struct{}, 4)
	var wg sync.WaitGroup
	var invErr error
	for _, e := range inv {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			t := time.Now()
			out, err := b.stack.Invoke(ctx, "ApiFunction", startEvent(e))
			d := ms(time.Since(t))
			var resp events.APIGatewayV2HTTPResponse
			if err == nil {
				err = json.Unmarshal(out, &resp)
			}
			if err == nil && resp.StatusCode != http.StatusAccepted {
				err = fmt.Errorf("direct start of %s: %d %s", e.ID, resp.StatusCode, resp.Body)
			}
			hmu.Lock()
			defer hmu.Unlock()
			if err != nil && invErr == nil {
				invErr = err
			}
			handler = append(handler, d)
		}()
	}
	wg.Wait()
	if invErr != nil {
		return invErr
	}
	b.logf("  API function invoked directly, 4 at a time: %s, p99 %s ms", handler.summary95(" ms"), num(handler.pct(99)))

	// Everything stops; no lease may remain.
	var toStop []env
	for _, e := range envs {
		if in, err := b.stack.Store.ActiveInstance(ctx, e.ID); err == nil && in.Status.Active() {
			toStop = append(toStop, e)
		}
	}
	stopTook, err := b.stopAll(ctx, toStop)
	if err != nil {
		return err
	}
	b.logf("  %d instances stopped in %s (stop calls at once → none active)", len(toStop), stopTook.Round(100*time.Millisecond))
	// Instances that failed let their ports go with the failure report;
	// wait for the last ones, and name any that stay.
	grace := 30 * time.Second
	if !b.smoke {
		grace = 4 * time.Minute // past the start timeout (120 s) and a reaper pass (60 s)
	}
	leaseWait, stuck := b.waitNoLeases(ctx, grace)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if stuck != "" {
		b.logf("  ports still leased %s after the stops: %s", leaseWait.Round(100*time.Millisecond), stuck)
	} else {
		b.logf("  no port leased %s after the stops", leaseWait.Round(100*time.Millisecond))
	}

	bad := 0
	for c, n := range byCode {
		if c != http.StatusAccepted && c != http.StatusTooManyRequests {
			bad += n
		}
	}
	bad += nerr
	envNote := fmt.Sprintf("All %d environments had a real container of their own (%d made for this figure in %s, %s each).", len(real), len(made), madeTook.Round(time.Second), series(createTimes(made)).summary(" s"))
	if len(ghosts) > 0 {
		envNote = fmt.Sprintf("%d environments had a real container; the other %d point at containers that do not exist (creating more was limited: budget %s, or disk/memory guard), which the API cannot tell and the sidecar fails at once with container_not_running.", len(real), len(ghosts), b.densityBudget)
	}
	note := fmt.Sprintf("Answers: %s. Client latency through the proxy (nginx → the stack's JWT-verifying API front → kumo HTTP API → one of 4 API function copies): %s. "+
		"With %d requests at once and 4 function copies, the last waits behind about %d others: the spread from min to max is that queue (the handler's own time is below), which Lambda's concurrency removes in production. "+
		"The handler's own duration is its `request handled` log line (duration_ms, from its entry to its answer), for the same concurrent requests: the client p99 minus it is the wait for one of the 4 copies plus the HTTP API front. "+
		"Handler time, the API function invoked directly through kumo's Lambda API 4 at a time on %d more environments (containers absent; the handler does not look): %s, p99 %s ms. "+
		"Outcome %s after the calls: %s; then %d running at once, %d of them answering through the proxy, on %d distinct ports; %d stop calls at once → none active in %s. "+
		"One customer with 12 starts at once (MaxActivePerCustomer 10): %s. %s",
		codesString(byCode, nerr), lat.summary95(" ms"), len(envs), len(envs)/4-1, len(inv), handler.summary95(" ms"), num(handler.pct(99)),
		settled.Round(100*time.Millisecond), strings.Join(outs, ", "), runningNow, reachable, len(ports), len(toStop), stopTook.Round(100*time.Millisecond),
		codesString(lby, lerr), envNote)
	if stuck != "" {
		note += fmt.Sprintf(" Not clean: %s after the last stop, ports were still leased (%s).", leaseWait.Round(time.Second), stuck)
	} else {
		note += fmt.Sprintf(" Every port lease was released %s after the last stop.", leaseWait.Round(100*time.Millisecond))
	}
	b.record(figure{
		ID: "8", Name: fmt.Sprintf("control plane (%d concurrent starts, distinct environments)", len(envs)),
		Result: fmt.Sprintf("%d errors other than designed 429s; client p99 %s ms; the same requests' handler duration measured inside it p99 %s ms (p50 %s, n=%d); %d of %d with a container running after %s",
			bad, num(lat.pct(99)), num(inside.pct(99)), num(inside.med()), len(inside), len(real)-realFailed, len(real), settled.Round(100*time.Millisecond)),
		Baseline: fmt.Sprintf("the handler invoked directly, 4 at a time: p50 %s ms, p99 %s ms", num(handler.med()), num(handler.pct(99))),
		Ratio:    "client p99 / inside p99 " + ratio(lat.pct(99), inside.pct(99)) + "; client p99 / direct handler p50 " + ratio(lat.pct(99), handler.med()),
		Target:   "no errors other than designed 429s; API handler p99 reported",
		Verdict:  b.verdict(bad == 0 && realFailed == 0 && stuck == ""),
		Note:     note,
	})
	return nil
}

var (
	handledLine = regexp.MustCompile(`request handled`)
	handledEnv  = regexp.MustCompile(`environment_id[=":]+([A-Za-z0-9-]+)`)
	handledMS   = regexp.MustCompile(`duration_ms[=":]+([0-9.]+)`)
)

// handlerLogSizes is how far each API function copy's log goes now.
func handlerLogSizes(dir string) map[string]int64 {
	files, _ := filepath.Glob(filepath.Join(dir, "ApiFunction-*.log"))
	out := map[string]int64{}
	for _, f := range files {
		if st, err := os.Stat(f); err == nil {
			out[f] = st.Size()
		}
	}
	return out
}

// handlerDurations reads the API function copies' logs, after the sizes
// from, for the start requests of envs: the duration each handler measured
// itself.
func handlerDurations(dir string, envs []env, from map[string]int64) series {
	want := map[string]bool{}
	for _, e := range envs {
		want[e.ID] = true
	}
	files, _ := filepath.Glob(filepath.Join(dir, "ApiFunction-*.log"))
	var out series
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil || int64(len(raw)) < from[f] {
			continue
		}
		for _, line := range strings.Split(string(raw[from[f]:]), "\n") {
			if !handledLine.MatchString(line) || !strings.Contains(line, "/jupyter/start") {
				continue
			}
			e, d := handledEnv.FindStringSubmatch(line), handledMS.FindStringSubmatch(line)
			if e == nil || d == nil || !want[e[1]] {
				continue
			}
			if v, err := strconv.ParseFloat(d[1], 64); err == nil {
				out = append(out, v)
			}
		}
	}
	return out
}

func containsEnv(list []env, id string) bool {
	for _, e := range list {
		if e.ID == id {
			return true
		}
	}
	return false
}

// waitNoLeases waits until no port of the bench host is leased, or timeout;
// it returns how long it waited and, if some stay, what they are.
func (b *bench) waitNoLeases(ctx context.Context, timeout time.Duration) (time.Duration, string) {
	t0 := time.Now()
	for {
		held, err := b.stack.Store.InstancePorts(ctx, hostID)
		if err == nil && len(held) == 0 {
			return time.Since(t0), ""
		}
		if time.Since(t0) > timeout || ctx.Err() != nil {
			return time.Since(t0), b.describeActive(ctx, len(held))
		}
		if err := sleep(ctx, 250*time.Millisecond); err != nil {
			return time.Since(t0), ""
		}
	}
}

// describeActive names the instances still holding leases.
func (b *bench) describeActive(ctx context.Context, ports int) string {
	ids, err := b.stack.Store.ActiveInstanceIDs(ctx)
	if err != nil {
		return fmt.Sprintf("%d ports (listing active instances: %v)", ports, err)
	}
	var parts []string
	for _, id := range ids {
		in, err := b.stack.Store.Instance(ctx, id)
		if err != nil {
			parts = append(parts, fmt.Sprintf("%s (record: %v)", id, err))
			continue
		}
		parts = append(parts, fmt.Sprintf("%s of %s %s/%s since %s (reported %s)", id, in.EnvironmentID, in.Status, in.Stage,
			in.CreatedAt.Format("15:04:05.000"), in.ReportedAt.Format("15:04:05.000")))
	}
	return fmt.Sprintf("%d ports; active instances: %s", ports, strings.Join(parts, "; "))
}
