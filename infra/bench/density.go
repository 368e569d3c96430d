package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/envjupyter/envjupyter/shared/instance"
)

// footprint is the sidecar's CPU and memory over a window.
type footprint struct {
	cpuPct float64 // of one core
	rss    series  // MiB (VmRSS), sampled every second
	anon   series  // MiB of it private (RssAnon)
	file   series  // MiB of it mapped from files, the binary mostly (RssFile)
	window time.Duration
}

func (b *bench) measureSidecar(ctx context.Context, window time.Duration) (footprint, error) {
	pid, err := b.sidecarPID()
	if err != nil {
		return footprint{}, err
	}
	c0, err := cpuSeconds(pid)
	if err != nil {
		return footprint{}, err
	}
	t0 := time.Now()
	var fp footprint
	every := time.Second
	if window < 10*time.Second {
		every = window / 5
	}
	for time.Since(t0) < window {
		if m, err := statusMB(pid, "VmRSS", "RssAnon", "RssFile"); err == nil {
			fp.rss, fp.anon, fp.file = append(fp.rss, m["VmRSS"]), append(fp.anon, m["RssAnon"]), append(fp.file, m["RssFile"])
		}
		if err := sleep(ctx, every); err != nil {
			return fp, err
		}
	}
	c1, err := cpuSeconds(pid)
	if err != nil {
		return fp, fmt.Errorf("the sidecar (pid %d) went away during the measurement: %w", pid, err)
	}
	fp.window = time.Since(t0)
	fp.cpuPct = (c1 - c0) / fp.window.Seconds() * 100
	return fp, nil
}

func (b *bench) benchFootprintIdle(ctx context.Context) error {
	b.logf("sidecar footprint with no instance, over %s", b.footprint)
	fp, err := b.measureSidecar(ctx, b.footprint)
	if err != nil {
		return err
	}
	b.idle = fp
	b.logf("  idle sidecar: CPU %.2f%% of a core, RSS %s (private %s MiB, file-backed %s MiB)", fp.cpuPct, fp.rss.summary(" MiB"), num(fp.anon.med()), num(fp.file.med()))
	return nil
}

// densityEnv is an environment of the density benchmark.
type densityEnv struct {
	env
	run *running
}

func (b *bench) benchDensity(ctx context.Context, spare []containerResult) error {
	target := b.density
	extra := 0
	if b.mainRun != nil {
		extra = 1 // the main environment's instance runs all along and counts
	}
	need := max(0, target-extra-len(spare))
	memBefore, diskBefore := memAvailableMB(), diskFreeGB("/var/lib/docker")
	b.logf("density: aiming for %d concurrent instances: %d running, %d containers ready, %d to create (%d at a time, budget %s; disk free %.0f GiB, memory available %.0f MiB)",
		target, extra, len(spare), need, b.createParallel, b.densityBudget, diskBefore, memBefore)
	t0 := time.Now()
	made := b.createContainers(ctx, "d", need, b.createParallel, b.densityBudget)
	createTook := time.Since(t0)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	var createErr error
	var containers []string
	for _, r := range spare {
		containers = append(containers, r.id)
	}
	for _, r := range made {
		if r.err != nil {
			createErr = r.err
			continue
		}
		containers = append(containers, r.id)
	}
	limitedBy := ""
	if len(made) < need || createErr != nil {
		switch {
		case createErr != nil:
			limitedBy = "container creation failed: " + createErr.Error()
		case !roomForContainer():
			limitedBy = fmt.Sprintf("disk or memory guard (disk free %.0f GiB, memory available %.0f MiB)", diskFreeGB("/var/lib/docker"), memAvailableMB())
		default:
			limitedBy = fmt.Sprintf("the %s budget for creating containers", b.densityBudget)
		}
	}
	b.logf("  %d containers created in %s (%s each); %s", len(made), createTook.Round(time.Second), series(createTimes(made)).summary(" s"), orNone(limitedBy))
	if len(containers) == 0 && b.mainRun == nil {
		return fmt.Errorf("no container for the density benchmark: %s", limitedBy)
	}

	var envs []*densityEnv
	for i, id := range containers {
		e, err := b.registerEnv(ctx, fmt.Sprintf("ejb-d-%d", i), fmt.Sprintf("cust-bench-d%d", i/5), id)
		if err != nil {
			return err
		}
		envs = append(envs, &densityEnv{env: e})
	}
	memContainers := memAvailableMB()
	b.logf("  starting %d instances at once through the API", len(envs))
	var wg sync.WaitGroup
	errs := make([]error, len(envs))
	apiLat := make([]float64, len(envs))
	tStart := time.Now()
	for i, e := range envs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.Now()
			code, body, _, err := b.api.start(ctx, e.env)
			apiLat[i] = ms(time.Since(t))
			if err == nil && code != http.StatusAccepted {
				err = fmt.Errorf("start of %s: HTTP %d %+v", e.ID, code, body.Error)
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	// Wait for every instance to run.
	failed := map[string]string{}
	deadline := time.Now().Add(5*time.Minute + time.Duration(len(envs))*5*time.Second)
	for {
		pending := 0
		for _, e := range envs {
			if e.run != nil || failed[e.ID] != "" {
				continue
			}
			in, err := b.stack.Store.ActiveInstance(ctx, e.ID)
			if err != nil {
				if latest, lerr := b.stack.Store.LatestInstance(ctx, e.ID); lerr == nil && latest.Status.Terminal() {
					failed[e.ID] = string(latest.Status) + ": " + latest.StatusReason
					continue
				}
				pending++
				continue
			}
			if in.Status == instance.Running {
				e.run = runningOf(e.env, in, in.AccessURL, b.stack.AdvertiseAddr())
			} else {
				pending++
			}
		}
		if pending == 0 {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("density: %d instances not running after %s", pending, time.Since(tStart).Round(time.Second))
		}
		if err := sleep(ctx, 250*time.Millisecond); err != nil {
			return err
		}
	}
	allRunning := time.Since(tStart)
	runs := []*running{}
	if b.mainRun != nil {
		runs = append(runs, b.mainRun)
	}
	for _, e := range envs {
		if e.run != nil {
			runs = append(runs, e.run)
		}
	}
	b.densityEnvs = envs
	// All reachable through the proxy, on distinct ports.
	client := &http.Client{Timeout: 5 * time.Second}
	ports := map[int]string{}
	reachable := 0
	var unreachable []string
	for _, r := range runs {
		if other, dup := ports[r.port]; dup {
			return fmt.Errorf("density: %s and %s share host port %d", other, r.env.ID, r.port)
		}
		ports[r.port] = r.env.ID
		ok := false
		for try := 0; try < 20 && !ok; try++ {
			if st, err := get(ctx, client, r.proxied()+"api"); err == nil && st == http.StatusOK {
				ok = true
			} else if err := sleep(ctx, 250*time.Millisecond); err != nil {
				return err
			}
		}
		if ok {
			reachable++
		} else {
			unreachable = append(unreachable, r.env.ID)
		}
	}
	var rss series
	for _, r := range runs {
		total := 0.0
		for _, pid := range b.jupyterPIDs(r.instanceID) {
			if v, err := rssMB(pid); err == nil {
				total += v
			}
		}
		if total > 0 {
			rss = append(rss, total)
		}
	}
	memAfter := memAvailableMB()
	perInstance := (memContainers - memAfter) / float64(max(1, len(envs)))
	perContainer := (memBefore - memContainers) / float64(max(1, len(made)))
	byMemory := int(memAfter / max(1, perInstance+perContainer))
	n := len(runs)
	b.logf("  %d instances running (all running %s after the first start call; %d failed), %d reachable through the proxy, %d distinct ports; Jupyter RSS %s",
		n, allRunning.Round(100*time.Millisecond), len(failed), reachable, len(ports), rss.summary(" MiB"))
	if len(failed) > 0 {
		var list []string
		for id, why := range failed {
			list = append(list, id+" "+why)
		}
		sort.Strings(list)
		b.logf("  failed: %s", strings.Join(list, "; "))
	}
	note := fmt.Sprintf("The %d start calls were made at once (API latency %s); all ran %s after the first call. "+
		"Containers: %d made here in %s (%s each, %d at a time) with Docker's %s storage driver, %.1f GiB of disk used by them; the limit on the count was %s. "+
		"Memory: MemAvailable %.0f MiB before the containers, %.0f after them, %.0f with the instances running: %.0f MiB per instance (Jupyter and its container's share), %.0f MiB per idle container, so memory alone would allow about %d more.",
		len(envs), series(apiLat).summary(" ms"), allRunning.Round(100*time.Millisecond),
		len(made), createTook.Round(time.Second), series(createTimes(made)).summary(" s"), b.createParallel, dockerDriver(), diskBefore-diskFreeGB("/var/lib/docker"), orNone(limitedBy),
		memBefore, memContainers, memAfter, perInstance, perContainer, byMemory)
	if len(unreachable) > 0 {
		note += " Unreachable through the proxy: " + strings.Join(unreachable, ", ") + "."
	}
	b.record(figure{
		ID: "6a", Name: "host density (concurrent instances on one host)",
		Result: fmt.Sprintf("%d instances running at once, %d of them answering /env-<id>/api 200 through the proxy, %d distinct host ports; RSS per Jupyter %s",
			n, reachable, len(ports), rss.summary(" MiB")),
		Baseline: fmt.Sprintf("memory available before: %.0f MiB (≈ %d instances' worth at the measured cost)", memBefore, int(memBefore/max(1, perInstance+perContainer))),
		Ratio:    fmt.Sprintf("%d / %d aimed", n, target),
		Target:   "aim 50+; all reachable through the proxy on distinct ports",
		Verdict:  b.verdict(n >= 50 && reachable == n && len(ports) == n),
		Note:     note,
	})

	if b.runs("footprint") {
		b.logf("sidecar footprint with %d instances under health checks (every 15 s), over %s", n, b.footprint)
		fp, err := b.measureSidecar(ctx, b.footprint)
		if err != nil {
			return err
		}
		b.record(figure{
			ID: "7", Name: fmt.Sprintf("sidecar footprint (%d instances, health checks every 15 s)", n),
			Result: fmt.Sprintf("CPU %.2f%% of a core over %s; RSS %s, of which private (RssAnon) %s MiB, file-backed %s MiB",
				fp.cpuPct, fp.window.Round(time.Second), fp.rss.summary(" MiB"), num(fp.anon.med()), num(fp.file.med())),
			Baseline: fmt.Sprintf("no instance: CPU %.2f%%, RSS %s (private %s MiB)", b.idle.cpuPct, b.idle.rss.summary(" MiB"), num(b.idle.anon.med())),
			Ratio:    fmt.Sprintf("CPU %s, RSS %s", ratio(fp.cpuPct, b.idle.cpuPct), ratio(fp.rss.med(), b.idle.rss.med())),
			Target:   "RSS ≤ 30 MB and idle CPU ≤ 0.5 % with 50 instances",
			Verdict:  b.verdict(fp.rss.max() <= 30*1e6/(1<<20) && fp.cpuPct <= 0.5 && n >= 50),
			Note: fmt.Sprintf("CPU from /proc/<pid>/stat (utime+stime, 10 ms ticks, so %.3f%% resolution over the window); RSS sampled every second (VmRSS, MiB; 30 MB = %.1f MiB). "+
				"In the window the sidecar long-polls its queue (20 s), checks each instance (GET /api and /api/status through its port) every 15 s, and sends a heartbeat report per instance every 60 s. The file-backed part is the sidecar's own binary (%.0f MiB on disk, built with -ldflags '-s -w' as make sidecar does) paged in, clean and reclaimable (mostly the function tables the runtime reads to walk stacks, and code the packages' init ran); the private part is what grows with instances.", 1.0/fp.window.Seconds(), 30*1e6/(1<<20), b.sidecarBinaryMB()),
		})
	}
	return nil
}

func orNone(s string) string {
	if s == "" {
		return "none (reached the aim)"
	}
	return s
}

func dockerDriver() string {
	out, err := execOutput("docker", "info", "--format", "{{.Driver}}")
	if err != nil {
		return "?"
	}
	return out
}

func (b *bench) sidecarBinaryMB() float64 {
	st, err := os.Stat(filepath.Join(b.work, "bin", "sidecar"))
	if err != nil {
		return 0
	}
	return float64(st.Size()) / (1 << 20)
}
