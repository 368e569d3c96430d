package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/envjupyter/envjupyter/shared/instance"
	"github.com/envjupyter/envjupyter/sidecar/container"
	"github.com/envjupyter/envjupyter/sidecar/jupyter"
)

// directPort is where the baseline Jupyter listens in the container (the
// sidecar's uses 8888; they never run at the same time, but a slow exit
// must not make the next one fail).
const directPort = 8899

// directJupyter launches the environment's Jupyter the way the sidecar does
// (docker exec, same executable, options and base URL) without any of the
// product around it.
type directJupyter struct {
	docker  *container.Docker
	env     env
	flavour jupyter.Flavour
	ip      string
	port    int
	bindIP  string // when set, replaces the sidecar's --ip
}

func (b *bench) newDirect(ctx context.Context, e env) (*directJupyter, error) {
	j, err := newDirectFresh(ctx, e, jupyter.Flavour{})
	if err != nil {
		return nil, err
	}
	if j.flavour, err = detectIn(ctx, j.docker, e.ContainerID); err != nil {
		return nil, err
	}
	return j, nil
}

// detectIn finds the container's Jupyter as the sidecar does.
func detectIn(ctx context.Context, d *container.Docker, id string) (jupyter.Flavour, error) {
	// Not d.Inspect: the hub's container has no address of its own.
	c, err := d.Client().ContainerInspect(ctx, id)
	if err != nil {
		return jupyter.Flavour{}, err
	}
	var env []string
	if c.Config != nil {
		env = c.Config.Env
	}
	dirs := container.ExecPath(env)
	find := func(ctx context.Context, name string) (bool, error) { return d.HasExecutable(ctx, id, dirs, name) }
	return jupyter.Detect(ctx, find, func(ctx context.Context, argv []string) (string, int, error) {
		out, err := d.Run(ctx, id, argv, nil)
		return out.Stdout, out.ExitCode, err
	})
}

// boot execs Jupyter and waits for GET <base>api = 200 on the container's
// address, polling every 10 ms; then it stops it with SIGTERM and waits for
// the process to go. It returns both times.
func (j *directJupyter) boot(ctx context.Context) (boot, stop time.Duration, err error) {
	argv := jupyter.Argv(j.flavour, jupyter.Options{BasePath: instance.BasePath(j.env.ID), Port: j.port})
	if j.bindIP != "" {
		argv = bindArgv(argv, j.bindIP)
	}
	tok := make([]byte, 16)
	_, _ = rand.Read(tok)
	url := "http://" + net.JoinHostPort(j.ip, strconv.Itoa(j.port)) + instance.BasePath(j.env.ID) + "api"
	client := &http.Client{Timeout: time.Second}
	t0 := time.Now()
	pid, _, err := j.docker.Launch(ctx, j.env.ContainerID, argv, []string{"JUPYTER_TOKEN=" + hex.EncodeToString(tok)}, "/root")
	if err != nil {
		return 0, 0, err
	}
	defer func() {
		// Whatever happened, nothing of it stays.
		if processExists(pid) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}()
	deadline := t0.Add(90 * time.Second)
	for {
		if st, err := get(ctx, client, url); err == nil && st == http.StatusOK {
			boot = time.Since(t0)
			break
		}
		if time.Now().After(deadline) {
			return 0, 0, fmt.Errorf("directly exec'd Jupyter did not answer %s within 90 s", url)
		}
		if err := sleep(ctx, 10*time.Millisecond); err != nil {
			return 0, 0, err
		}
	}
	t1 := time.Now()
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		return 0, 0, fmt.Errorf("stopping the direct Jupyter (pid %d): %w", pid, err)
	}
	for processExists(pid) || listening(j.ip, j.port) {
		if time.Since(t1) > 20*time.Second {
			return 0, 0, fmt.Errorf("the direct Jupyter (pid %d) did not stop within 20 s of SIGTERM", pid)
		}
		if err := sleep(ctx, 5*time.Millisecond); err != nil {
			return 0, 0, err
		}
	}
	return boot, time.Since(t1), nil
}

// newDirectFresh is the Jupyter of flavour in a container the sidecar has
// not seen (no detection: that would warm the container).
func newDirectFresh(ctx context.Context, e env, flavour jupyter.Flavour) (*directJupyter, error) {
	d, err := container.New()
	if err != nil {
		return nil, err
	}
	info, err := d.Inspect(ctx, e.ContainerID)
	if err != nil {
		return nil, err
	}
	return &directJupyter{docker: d, env: e, flavour: flavour, ip: info.IP.String(), port: directPort}, nil
}

// newDirectHostNet is the Jupyter of a container on the host's network,
// listening on loopback only.
func newDirectHostNet(ctx context.Context, e env, port int) (*directJupyter, error) {
	d, err := container.New()
	if err != nil {
		return nil, err
	}
	f, err := detectIn(ctx, d, e.ContainerID)
	if err != nil {
		return nil, err
	}
	// The hub's baseline is the image's own jupyter-lab, the JupyterLab its
	// spawner runs, not the sidecar's launcher.
	f.Launcher = ""
	return &directJupyter{docker: d, env: e, flavour: f, ip: "127.0.0.1", port: port, bindIP: "127.0.0.1"}, nil
}

func processExists(pid int) bool {
	st, err := jupyter.ReadStat("/proc", pid)
	// A zombie has exited; it only waits for its parent.
	return err == nil && st.State != 'Z'
}

func listening(ip string, port int) bool {
	c, err := net.DialTimeout("tcp", net.JoinHostPort(ip, strconv.Itoa(port)), 200*time.Millisecond)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// startSample is one API start, taken apart.
type startSample struct {
	total, api                                 float64 // ms
	toRecord, queue, lag, prepare, launchReady float64 // ms, from timestamps and metrics
	report                                     float64
	stageSeen                                  map[string]float64 // ms from t0 when each stage was first seen
	sidecarMS                                  float64
}

func (b *bench) benchStartStop(ctx context.Context) error {
	b.logf("start and stop: %d API starts and stops of %s, alternating with %d direct boots of the same Jupyter in the same container", b.starts, b.main.ID, b.starts)
	direct, err := b.newDirect(ctx, b.main)
	if err != nil {
		return fmt.Errorf("preparing the direct baseline: %w", err)
	}
	b.logf("the image's Jupyter: %s %s (%s), launched as %q", direct.flavour.Name, direct.flavour.Version, direct.flavour.Executable, strings.Join(jupyter.Argv(direct.flavour, jupyter.Options{BasePath: instance.BasePath(b.main.ID), Port: directPort}), " "))
	if err := b.benchFreshStarts(ctx, direct.flavour); err != nil {
		return err
	}
	b.logf("start and stop, repeated in one container (the sidecar's detection is cached after the first)")
	// The image's own jupyter-lab, without the sidecar's launcher: what the
	// launcher saves.
	plain := *direct
	plain.flavour.Launcher = ""
	// Warm-up, not counted: the first boot of a container reads its files cold.
	if _, _, err := direct.boot(ctx); err != nil {
		return err
	}
	var (
		starts, boots, overheads                           series
		stops, stopBase                                    series
		api, toRecord, queue, lag, prepare, ready, report  series
		sidecarTotal                                       series
		stDetect, stExec, stHealth, stRoute                series
		stopAPI, stopRoute, stopRule, stopStatus, stopPort series
		stopUnreachable, stopProcs                         series
		plainBoots                                         series
	)
	for i := range b.starts {
		var boot, bstop time.Duration
		doBoot := func() error {
			var err error
			boot, bstop, err = direct.boot(ctx)
			return err
		}
		if i%2 == 0 {
			if err := doBoot(); err != nil {
				return err
			}
		}
		if plain.flavour != direct.flavour {
			pboot, _, err := plain.boot(ctx)
			if err != nil {
				return err
			}
			plainBoots = append(plainBoots, ms(pboot))
		}
		lag0, _ := b.sidecarMetric(ctx, "envjupyter_command_lag_seconds_sum")
		r, tl, err := b.startAndWait(ctx, b.main, 20*time.Millisecond, 120*time.Second)
		if err != nil {
			return err
		}
		lag1, _ := b.sidecarMetric(ctx, "envjupyter_command_lag_seconds_sum")
		s := b.takeApart(r, tl, (lag1-lag0)*1000)
		if i%2 == 1 {
			if err := doBoot(); err != nil {
				return err
			}
		}
		st, err := b.stopAndWait(ctx, r, 10*time.Millisecond, 60*time.Second)
		if err != nil {
			return err
		}
		starts = append(starts, s.total)
		boots = append(boots, ms(boot))
		overheads = append(overheads, s.total-ms(boot))
		api, toRecord, queue, lag = append(api, s.api), append(toRecord, s.toRecord), append(queue, s.queue), append(lag, s.lag)
		prepare, ready, report = append(prepare, s.prepare), append(ready, s.launchReady), append(report, s.report)
		sidecarTotal = append(sidecarTotal, s.sidecarMS)
		seen := s.stageSeen
		if a, ok := seen["preparing"]; ok {
			if c, ok := seen["launching"]; ok {
				stDetect = append(stDetect, c-a)
			}
		}
		if a, ok := seen["launching"]; ok {
			if c, ok := seen["waiting_for_health"]; ok {
				stExec = append(stExec, c-a)
			}
		}
		if a, ok := seen["waiting_for_health"]; ok {
			if c, ok := seen["routing"]; ok {
				stHealth = append(stHealth, c-a)
			}
		}
		if a, ok := seen["routing"]; ok {
			stRoute = append(stRoute, s.total-a)
		}
		stops = append(stops, ms(st.done().Sub(st.t0)))
		stopBase = append(stopBase, ms(bstop))
		stopAPI = append(stopAPI, ms(st.apiReturned.Sub(st.t0)))
		stopUnreachable = append(stopUnreachable, ms(st.unreachable.Sub(st.t0)))
		stopRoute = append(stopRoute, ms(st.routeGone.Sub(st.t0)))
		stopRule = append(stopRule, ms(st.ruleGone.Sub(st.t0)))
		stopStatus = append(stopStatus, ms(st.statusStopped.Sub(st.t0)))
		stopPort = append(stopPort, ms(st.portReleased.Sub(st.t0)))
		stopProcs = append(stopProcs, ms(st.processesGone.Sub(st.t0)))
		b.logf("  start %2d: %5.0f ms to running (direct boot %5.0f ms, overhead %5.0f ms); stop %4.0f ms (direct %3.0f ms)",
			i+1, s.total, ms(boot), s.total-ms(boot), ms(st.done().Sub(st.t0)), ms(bstop))
	}

	bd := func(name string, s series) string { return fmt.Sprintf("%s %s ms", name, num(s.med())) }
	note := strings.Join([]string{
		"Where the time goes (medians, ms; sequential segments from the client's clock, the instance record's created_at and started_at, and the sidecar's log on one clock):",
		bd("client → record created (nginx, kumo HTTP API + JWT, Lambda, environment and lease reads)", toRecord) + ";",
		bd("record → sidecar takes the command (DynamoDB transaction, SQS send, queue)", queue) + fmt.Sprintf(", of which SQS send→take %s ms (sidecar's command-lag metric);", num(lag.med())),
		bd("sidecar: inspect + detect the Jupyter (its files, read through Docker) + its config files + launch", prepare) + ";",
		bd("sidecar: forward + Jupyter boot/health wait (probes 10 ms apart for a lone start) + route + the last stage report", ready) + fmt.Sprintf(" (direct boot alone %s ms);", num(boots.med())),
		bd("running report → record → seen (reports queue, event-source poller, reports function; 20 ms polls)", report) + ".",
		fmt.Sprintf("The API call itself returned in %s. Sidecar total (its duration_ms) %s.", api.summary(" ms"), sidecarTotal.summary(" ms")),
		fmt.Sprintf("Stages as seen in the record (each shifted by the report pipeline): preparing→launching %s; launching→waiting_for_health %s; waiting_for_health→routing %s; routing→running %s.",
			stDetect.summary(" ms"), stExec.summary(" ms"), stHealth.summary(" ms"), stRoute.summary(" ms")),
		"Not broken down: the split inside the sidecar between inspect, detection and exec, and between forward, health wait and route write (the sidecar logs only `jupyter launched` and `instance running` with duration_ms, and the record keeps no stage timestamps).",
	}, " ")
	b.record(figure{
		ID: "1r", Name: "start overhead, repeated starts in one container (API start → running, minus direct boot)",
		Result:   "overhead " + overheads.summary95(" ms") + "; API start → running " + starts.summary95(" ms"),
		Baseline: "same Jupyter exec'd directly in the same container to /api 200, launched as the sidecar launches it: " + boots.summary95(" ms") + plainNote(plainBoots, boots),
		Ratio:    ratio(starts.med(), boots.med()),
		Target:   "none (figure 1 is the first start in a fresh container); shown for the earlier runs",
		Verdict:  "-",
		Note:     note,
	})
	hubStop, hubRatio := "JupyterHub not measured in this run", "n/a"
	if b.hubFig != nil {
		hubStop = "JupyterHub 5.2's stop, same run (DELETE → server gone): " + b.hubFig.stop.summary95(" ms")
		hubRatio = "all gone " + ratio(stops.med(), b.hubFig.stop.med()) + " JupyterHub's stop"
	}
	b.record(figure{
		ID: "2", Name: "stop (call → unreachable through the proxy; call → stopped, every process of the instance gone, port released, rule and route gone)",
		Result:   "unreachable " + stopUnreachable.summary95(" ms") + "; all gone and stopped " + stops.summary95(" ms"),
		Baseline: hubStop + "; SIGTERM to the direct Jupyter → process gone and port closed: " + stopBase.summary(" ms"),
		Ratio:    hubRatio + "; " + ratio(stops.med(), stopBase.med()) + " the direct SIGTERM",
		Target:   "unreachable p50 ≤ 50 ms; all gone and stopped p50 ≤ 200 ms",
		Verdict:  b.verdict(stopUnreachable.med() <= 50 && stops.med() <= 200),
		Note: fmt.Sprintf("Medians from the stop call: API answered %s ms, unreachable through the proxy %s ms, route gone %s ms, forward gone from the firewall %s ms, Jupyter's processes gone %s ms, status stopped %s ms, port lease released %s ms (polled every 10 ms). \"All gone\" includes the processes' exit, as JupyterHub's \"server gone\" does (its spawner waits for the process).",
			num(stopAPI.med()), num(stopUnreachable.med()), num(stopRoute.med()), num(stopRule.med()), num(stopProcs.med()), num(stopStatus.med()), num(stopPort.med())),
	})
	return b.ensureMain(ctx)
}

// plainNote compares the image's own jupyter-lab boots with the boots
// through the sidecar's launcher, when they differ.
func plainNote(plain, launched series) string {
	if len(plain) == 0 {
		return ""
	}
	return fmt.Sprintf("; the image's own `jupyter-lab` (no launcher) in the same container: %s, so the launcher saves %s ms at the median",
		plain.summary95(" ms"), num(plain.med()-launched.med()))
}

// takeApart derives the stages of a start from the timestamps on one clock.
func (b *bench) takeApart(r *running, tl startTimeline, lagMS float64) startSample {
	s := startSample{
		total: ms(tl.seenRunning.Sub(tl.t0)), api: ms(tl.apiReturned.Sub(tl.t0)),
		toRecord: ms(tl.rec.CreatedAt.Sub(tl.t0)), lag: lagMS, report: ms(tl.seenRunning.Sub(tl.rec.StartedAt)),
		stageSeen: map[string]float64{},
	}
	for k, t := range tl.stages {
		s.stageSeen[k] = ms(t.Sub(tl.t0))
	}
	lines := b.sidecarLog(r.instanceID)
	run, ok1 := findLine(lines, "instance running")
	launched, ok2 := findLine(lines, "jupyter launched")
	if ok1 && ok2 {
		began := run.Time.Add(-time.Duration(run.DurationMS) * time.Millisecond)
		s.sidecarMS = float64(run.DurationMS)
		s.queue = ms(began.Sub(tl.rec.CreatedAt))
		s.prepare = ms(launched.Time.Sub(began))
		s.launchReady = ms(tl.rec.StartedAt.Sub(launched.Time))
	}
	return s
}

// ensureMain makes sure the main environment's Jupyter runs, for the
// benchmarks that use it.
func (b *bench) ensureMain(ctx context.Context) error {
	if b.mainRun != nil {
		return nil
	}
	r, _, err := b.startAndWait(ctx, b.main, 50*time.Millisecond, 120*time.Second)
	if err != nil {
		return err
	}
	b.mainRun = r
	// Wait for the proxied route to answer, as a customer would.
	client := &http.Client{Timeout: 2 * time.Second}
	for i := 0; ; i++ {
		if st, err := get(ctx, client, r.proxied()+"api"); err == nil && st == http.StatusOK {
			return nil
		}
		if i > 100 {
			return fmt.Errorf("%sapi does not answer through the proxy", r.proxied())
		}
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
}
