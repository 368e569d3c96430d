// Command bench measures envjupyter on the real local stack (issue #6):
// start and stop latency, proxy overhead, kernel WebSockets, the route
// table, host density and iptables rules, the sidecar's footprint and the
// control plane. Every figure is printed with a baseline measured in the
// same run and the ratio to it, as medians with min and max.
//
//	go run ./infra/bench          # the full run (about 30 minutes)
//	go run ./infra/bench -smoke   # every benchmark, tiny, no verdicts (CI)
//
// It starts its own stack (infra/devstack) on ports of its own, so it runs
// beside `make up` and the end-to-end tests, and removes everything it made
// when it ends, on Ctrl-C too. Run it as root, under the heavy-run lock:
//
//	flock /tmp/envjupyter-heavy.lock go run ./infra/bench
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/client"

	"github.com/envjupyter/envjupyter/functions/store"
	"github.com/envjupyter/envjupyter/infra/devstack"
)

// The bench stack's own names and ports: apart from `make up` (4566, 6390,
// 8080, 9464, EJUP, 20000-20999) and the e2e tests (14566, 16391, 18081,
// 19464, EJTEST, 21000-21499).
const (
	stackName    = "ejbench"
	benchLabel   = "envjupyter.bench" // on the containers the bench makes
	kumoPort     = 24566
	redisPort    = 26392
	proxyPort    = 28082
	statusPort   = 29465
	chainPrefix  = "EJBENCH"
	portRange    = "22000-22999"
	hostID       = "bench-host-1"
	rulesPrefix  = "EJBRULES" // throwaway table of the firewall benchmark
	defaultKumo  = "/var/cache/envjupyter/bin/kumo-v0.33.1"
	heavyLockMsg = "run it under the heavy-run lock: flock /tmp/envjupyter-heavy.lock go run ./infra/bench"
)

type config struct {
	smoke          bool
	starts         int
	wrkDuration    time.Duration
	concurrencies  []int
	wsRounds       int
	routeSizes     []int
	ruleSizes      []int
	ruleProbes     int
	density        int
	densityBudget  time.Duration
	createParallel int
	footprint      time.Duration
	control        int
	reaperSizes    []int
	only           map[string]bool
	markdownPath   string
	timeout        time.Duration
	keepWork       bool
}

func (c config) runs(name string) bool { return len(c.only) == 0 || c.only[name] }

// bench is one run: the stack, the clients, and the figures so far.
type bench struct {
	config
	stack   *devstack.Stack
	docker  *client.Client
	api     *apiClient
	work    string
	figures []figure
	out     sync.Mutex
	started time.Time

	// main is the environment most benchmarks use; mainRun is its running
	// instance once the start benchmark is done.
	main    env
	mainRun *running
	// made are the containers this run created, for removal.
	madeMu      sync.Mutex
	made        []string
	createCosts []float64 // seconds per container made

	idle        footprint // the sidecar with no instance
	densityEnvs []*densityEnv
	stopAllTook time.Duration
	stopAllN    int

	// hub is the JupyterHub peer, running from the hub benchmark until the
	// proxy benchmark has measured configurable-http-proxy; hubFig its
	// start and stop, for the ratios of figures 1 and 2.
	hub    *hubPeer
	hubFig *hubFigures
}

func (b *bench) printf(format string, a ...any) {
	b.out.Lock()
	defer b.out.Unlock()
	fmt.Printf(format, a...)
}

// logf prints a progress line with the time since the run began.
func (b *bench) logf(format string, a ...any) {
	b.printf("[%6.1fs] %s\n", time.Since(b.started).Seconds(), fmt.Sprintf(format, a...))
}

func main() {
	cfg, err := parseFlags()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	if err := run(cfg); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func parseFlags() (config, error) {
	var c config
	var conc, routes, rules, reaper, only string
	flag.BoolVar(&c.smoke, "smoke", false, "run every benchmark tiny, print figures, judge no target (for CI)")
	flag.IntVar(&c.starts, "starts", 20, "API starts (and as many direct boots) for the start and stop figures")
	flag.DurationVar(&c.wrkDuration, "wrk", 10*time.Second, "duration of each wrk run")
	flag.StringVar(&conc, "concurrency", "1,4,16,64", "wrk connections, comma-separated")
	flag.IntVar(&c.wsRounds, "ws", 200, "WebSocket execute round trips, each way")
	flag.StringVar(&routes, "routes", "10,1000,10000", "route table sizes")
	flag.StringVar(&rules, "rules", "10,100,1000", "forwards in the throwaway table")
	flag.IntVar(&c.ruleProbes, "rule-probes", 20, "rule adds and removes timed at each size")
	flag.IntVar(&c.density, "density", 50, "concurrent instances to aim for")
	flag.DurationVar(&c.densityBudget, "density-budget", 15*time.Minute, "time allowed for creating the density containers")
	flag.IntVar(&c.createParallel, "create-parallel", 4, "containers created at once")
	flag.DurationVar(&c.footprint, "footprint", time.Minute, "window of each sidecar footprint measurement")
	flag.IntVar(&c.control, "control", 100, "concurrent start requests for the control-plane figure")
	flag.StringVar(&reaper, "reaper", "1000,10000,100000", "active instances in the reaper benchmark's tables")
	flag.StringVar(&only, "only", "", "run only these benchmarks (comma-separated: hub,start,proxy,ws,routes,rules,density,footprint,control,reaper)")
	flag.StringVar(&c.markdownPath, "markdown", "", "also write the results table as Markdown to this file")
	flag.DurationVar(&c.timeout, "timeout", 75*time.Minute, "give up after this long (everything is cleaned up)")
	flag.BoolVar(&c.keepWork, "keep", false, "keep the work directory (logs) even when the run succeeds")
	flag.Parse()
	set := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if c.smoke {
		// Tiny everything, unless a flag says otherwise.
		smoke := map[string]func(){
			"starts": func() { c.starts = 2 }, "wrk": func() { c.wrkDuration = time.Second },
			"concurrency": func() { conc = "1,16" }, "ws": func() { c.wsRounds = 20 },
			"routes": func() { routes = "10,1000" }, "rules": func() { rules = "10,100" },
			"rule-probes": func() { c.ruleProbes = 3 }, "density": func() { c.density = 3 },
			"footprint": func() { c.footprint = 5 * time.Second }, "control": func() { c.control = 10 },
			"reaper":  func() { reaper = "40,80" },
			"timeout": func() { c.timeout = 10 * time.Minute }, "density-budget": func() { c.densityBudget = 5 * time.Minute },
		}
		for name, f := range smoke {
			if !set[name] {
				f()
			}
		}
	}
	var err error
	if c.concurrencies, err = ints(conc); err != nil {
		return c, fmt.Errorf("-concurrency: %w", err)
	}
	if c.routeSizes, err = ints(routes); err != nil {
		return c, fmt.Errorf("-routes: %w", err)
	}
	if c.ruleSizes, err = ints(rules); err != nil {
		return c, fmt.Errorf("-rules: %w", err)
	}
	if c.reaperSizes, err = ints(reaper); err != nil {
		return c, fmt.Errorf("-reaper: %w", err)
	}
	if only != "" {
		c.only = map[string]bool{}
		for _, n := range strings.Split(only, ",") {
			c.only[strings.TrimSpace(n)] = true
		}
	}
	if c.starts < 1 || c.density < 1 || c.control < 1 {
		return c, errors.New("-starts, -density and -control must be at least 1")
	}
	return c, nil
}

func ints(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q is not a list of positive numbers", s)
		}
		out = append(out, n)
	}
	return out, nil
}

func run(cfg config) (err error) {
	b := &bench{config: cfg, started: time.Now()}
	if err := checkMachine(); err != nil {
		return err
	}
	ctx, stopSignals := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stopSignals()
	ctx, cancel := context.WithTimeout(ctx, cfg.timeout)
	defer cancel()

	if b.docker, err = client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation()); err != nil {
		return fmt.Errorf("connecting to docker: %w", err)
	}
	// What a killed run left goes first.
	b.removeContainers(true)
	defer b.removeContainers(false)

	root, err := repoRoot()
	if err != nil {
		return err
	}
	if b.work, err = os.MkdirTemp("", "envjupyter-bench-"); err != nil {
		return err
	}
	// nginx workers run as nobody and read the console and temp files here.
	if err := os.Chmod(b.work, 0o755); err != nil {
		return err
	}
	defer func() {
		if err == nil && !b.keepWork {
			_ = os.RemoveAll(b.work)
		} else {
			fmt.Fprintln(os.Stderr, "bench: logs and state kept in", b.work)
		}
	}()
	b.printMachine()

	kumo := os.Getenv("KUMO_BIN")
	if kumo == "" {
		kumo = defaultKumo
	}
	opts := devstack.Options{
		Root: root, WorkDir: b.work, Name: stackName, KumoBin: kumo,
		KumoPort: kumoPort, RedisPort: redisPort, ProxyPort: proxyPort, StatusPort: statusPort,
		HostID: hostID, ChainPrefix: chainPrefix, PortRange: portRange,
		LambdaConcurrency: 4,
		// The benchmarks address environments by path on 127.0.0.1 (wrk
		// resolves no *.localhost name); the proxy does the same work per
		// request in both modes but for one comparison of the Host.
		EnvOrigin: devstack.OriginPath,
		// The production defaults (health checks every 15 s, heartbeat
		// 60 s, no idle culling), except a start timeout that suits a
		// loaded 2-core machine.
		Params: map[string]string{"StartTimeoutSeconds": "120"},
		Log:    slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}

	// The main environment's container is made while the stack starts (on
	// a vfs Docker it takes tens of seconds); in smoke mode, the density
	// containers too.
	pre := 1
	if b.smoke && b.runs("density") {
		pre = 1 + max(0, b.density-1)
	}
	containers := make(chan containerResult, pre)
	go func() {
		res := b.createContainers(ctx, "m", pre, pre, 0)
		for _, r := range res {
			containers <- r
		}
		close(containers)
	}()

	b.logf("starting the bench stack (kumo :%d, redis :%d, proxy :%d, sidecar status :%d, chains %s, ports %s)", kumoPort, redisPort, proxyPort, statusPort, chainPrefix, portRange)
	t0 := time.Now()
	b.stack, err = devstack.Start(ctx, opts)
	if err != nil {
		drain(containers)
		return fmt.Errorf("starting the stack: %w", err)
	}
	defer func() {
		b.logf("stopping the stack")
		t := time.Now()
		b.stack.Stop()
		b.logf("stack stopped in %s", time.Since(t).Round(100*time.Millisecond))
	}()
	b.logf("stack up in %s", time.Since(t0).Round(100*time.Millisecond))
	if b.api, err = newAPIClient(b.stack); err != nil {
		return err
	}
	defer func() {
		if b.hub != nil {
			b.hub.close()
		}
	}()

	var made []containerResult
	for r := range containers {
		if r.err != nil {
			return r.err
		}
		made = append(made, r)
	}
	if len(made) == 0 {
		return errors.New("no container for the main environment")
	}
	b.logf("containers ready: %d (creation %s each)", len(made), series(createTimes(made)).summary(" s"))
	if b.main, err = b.registerEnv(ctx, "ejb-main", "cust-bench-main", made[0].id); err != nil {
		return err
	}
	spare := made[1:]

	steps := []struct {
		name string
		f    func(context.Context) error
	}{
		{"footprint", b.benchFootprintIdle},
		{"hub", b.benchHub},
		{"start", b.benchStartStop},
		{"proxy", b.benchProxy},
		{"ws", b.benchWebSocket},
		{"routes", b.benchRoutes},
		{"rules", b.benchRules},
		{"density", func(ctx context.Context) error { return b.benchDensity(ctx, spare) }},
		{"control", b.benchControl},
		{"reaper", b.benchReaper},
	}
	for _, s := range steps {
		if ctx.Err() != nil {
			break
		}
		if !b.runs(s.name) && !(s.name == "density" && b.runs("footprint")) {
			continue
		}
		if err := s.f(ctx); err != nil {
			if ctx.Err() != nil {
				err = fmt.Errorf("%w (%v)", err, context.Cause(ctx))
			}
			return fmt.Errorf("%s: %w", s.name, err)
		}
	}
	if ctx.Err() != nil {
		return fmt.Errorf("interrupted: %w", ctx.Err())
	}
	b.printf("\n\n=== results (%s, %s)\n\n%s\n", time.Now().UTC().Format(time.RFC3339), modeName(b.smoke), markdown(b.figures))
	if b.markdownPath != "" {
		if err := os.WriteFile(b.markdownPath, []byte(markdown(b.figures)), 0o644); err != nil {
			return err
		}
	}
	b.logf("done")
	return nil
}

func modeName(smoke bool) string {
	if smoke {
		return "smoke run: tiny samples, no verdicts"
	}
	return "full run"
}

func drain(c chan containerResult) {
	for range c {
	}
}

func createTimes(list []containerResult) []float64 {
	var out []float64
	for _, r := range list {
		out = append(out, r.took.Seconds())
	}
	return out
}

// checkMachine names what the machine lacks, and installs wrk if missing.
func checkMachine() error {
	if os.Geteuid() != 0 {
		return errors.New("must run as root (iptables and dockerd need it)")
	}
	for _, bin := range []string{"docker", "iptables", "iptables-restore", "redis-server", "nginx"} {
		if _, err := exec.LookPath(bin); err != nil {
			return fmt.Errorf("%s is not installed (run `make up` once, or infra/local/prepare.sh)", bin)
		}
	}
	for _, img := range []string{devstack.EnvImage, hubImage} {
		if err := exec.Command("docker", "image", "inspect", img).Run(); err != nil {
			return fmt.Errorf("docker or the image %s is not available (infra/local/prepare.sh builds it)", img)
		}
	}
	if _, err := exec.LookPath("wrk"); err != nil {
		return errors.New("wrk is not installed (infra/local/prepare.sh installs it)")
	}
	return nil
}

func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "template.yaml")); err == nil {
			if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
				return d, nil
			}
		}
		if d == filepath.Dir(d) {
			return "", errors.New("run from inside the repository (no template.yaml and go.mod above " + dir + ")")
		}
	}
}

// printMachine prints what the results depend on.
func (b *bench) printMachine() {
	out := func(name string, args ...string) string {
		o, err := exec.Command(name, args...).Output()
		if err != nil {
			return "?"
		}
		return strings.TrimSpace(string(o))
	}
	b.printf("envjupyter benchmarks, %s, %s\n", time.Now().UTC().Format(time.RFC3339), modeName(b.smoke))
	b.printf("machine: %s CPUs (nproc %s), kernel %s, Docker storage driver %s, Go %s\n",
		strconv.Itoa(runtime.NumCPU()), out("nproc"), out("uname", "-r"), out("docker", "info", "--format", "{{.Driver}}"), runtime.Version())
	b.printf("%s\n", out("free", "-h"))
	b.printf("load average: %s; disk free under /var/lib/docker: %.0f GiB\n\n", out("cat", "/proc/loadavg"), diskFreeGB("/var/lib/docker"))
}

// env is an environment of the bench with its own container.
type env struct {
	ID, Customer, ContainerID string
}

func (b *bench) registerEnv(ctx context.Context, id, customer, containerID string) (env, error) {
	e := env{ID: id, Customer: customer, ContainerID: containerID}
	err := b.stack.Store.PutEnvironment(ctx, store.Environment{ID: id, CustomerID: customer, HostID: hostID, ContainerID: containerID, Status: store.EnvironmentRunning})
	return e, err
}

type containerResult struct {
	id   string
	took time.Duration
	err  error
}

// createContainers makes up to n environment containers, parallel at a
// time, stopping early when budget (if set) has passed or the machine runs
// short of disk or memory.
func (b *bench) createContainers(ctx context.Context, tag string, n, parallel int, budget time.Duration) []containerResult {
	var (
		mu   sync.Mutex
		out  []containerResult
		next int
		wg   sync.WaitGroup
	)
	began := time.Now()
	for range max(1, min(parallel, n)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				i := next
				next++
				mu.Unlock()
				if i >= n || ctx.Err() != nil || (budget > 0 && time.Since(began) > budget) || !roomForContainer() {
					return
				}
				t := time.Now()
				id, err := b.createContainer(ctx, fmt.Sprintf("%s%d", tag, i))
				took := time.Since(t)
				mu.Lock()
				out = append(out, containerResult{id: id, took: took, err: err})
				mu.Unlock()
				if err == nil {
					b.madeMu.Lock()
					b.createCosts = append(b.createCosts, took.Seconds())
					b.madeMu.Unlock()
				}
				if err != nil {
					return
				}
			}
		}()
	}
	wg.Wait()
	return out
}

// roomForContainer keeps 8 GiB of disk (a vfs container takes 1.1 GiB) and
// 1.5 GiB of memory free.
func roomForContainer() bool {
	return diskFreeGB("/var/lib/docker") > 9 && memAvailableMB() > 1536
}

func (b *bench) createContainer(ctx context.Context, name string) (string, error) {
	return b.createContainerFrom(ctx, name, devstack.EnvImage)
}

func (b *bench) createContainerFrom(ctx context.Context, name, img string) (string, error) {
	full := stackName + "-" + name
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	_ = b.docker.ContainerRemove(ctx, full, container.RemoveOptions{Force: true})
	created, err := b.docker.ContainerCreate(ctx, &container.Config{
		Image: img, Labels: map[string]string{benchLabel: stackName},
	}, &container.HostConfig{}, nil, nil, full)
	if err != nil {
		return "", fmt.Errorf("creating container %s: %w", full, err)
	}
	b.madeMu.Lock()
	b.made = append(b.made, created.ID)
	b.madeMu.Unlock()
	if err := b.docker.ContainerStart(ctx, created.ID, container.StartOptions{}); err != nil {
		return "", fmt.Errorf("starting container %s: %w", full, err)
	}
	return created.ID, nil
}

// removeContainers removes the bench's containers, four at a time (on vfs
// each takes seconds). quiet skips the progress line.
func (b *bench) removeContainers(quiet bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	list, err := b.docker.ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(filters.Arg("label", benchLabel+"="+stackName))})
	if err != nil || len(list) == 0 {
		return
	}
	t := time.Now()
	if !quiet {
		fmt.Printf("bench: removing %d containers\n", len(list))
		defer func() { fmt.Printf("bench: removed them in %s\n", time.Since(t).Round(100*time.Millisecond)) }()
	}
	ids := make(chan string)
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := range ids {
				_ = b.docker.ContainerRemove(ctx, id, container.RemoveOptions{Force: true})
			}
		}()
	}
	for _, c := range list {
		ids <- c.ID
	}
	close(ids)
	wg.Wait()
}
