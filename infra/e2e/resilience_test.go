package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	"github.com/docker/docker/api/types/container"

	"github.com/envjupyter/envjupyter/functions/envevent"
	"github.com/envjupyter/envjupyter/infra/devstack"
	"github.com/envjupyter/envjupyter/shared/config"
	"github.com/envjupyter/envjupyter/shared/instance"
	"github.com/envjupyter/envjupyter/shared/message"
	jupyterproc "github.com/envjupyter/envjupyter/sidecar/jupyter"
)

// running starts JupyterLab in a new environment and waits until it runs.
func running(t *testing.T) (env string, in instanceBody) {
	t.Helper()
	return runningOn(t, labImage)
}

// runningOn is running in an environment of the given image.
func runningOn(t *testing.T, img envImage) (env string, in instanceBody) {
	t.Helper()
	env = newEnvironmentFrom(t, customerA, img)
	if code, b := start(t, token(customerA), env, ""); code != http.StatusAccepted {
		t.Fatalf("start: %d %+v", code, b.Error)
	}
	return env, waitStatus(t, token(customerA), env, "running", 60*time.Second)
}

// stored reads an instance's record.
func stored(t *testing.T, id string) instance.Instance {
	t.Helper()
	in, err := stack.Store.Instance(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return in
}

// environmentStops marks the environment stopped, as the environment module
// does, and emits its event.
func environmentStops(t *testing.T, env string) {
	t.Helper()
	ctx := context.Background()
	e, err := stack.Store.Environment(ctx, env)
	if err != nil {
		t.Fatal(err)
	}
	e.Status = "stopped"
	if err := stack.Store.PutEnvironment(ctx, e); err != nil {
		t.Fatal(err)
	}
	if err := stack.EmitEnvironmentEvent(ctx, envevent.Detail{EnvironmentID: env, Status: "stopped"}); err != nil {
		t.Fatal(err)
	}
}

// TC-04: the environment-stopped event stops a running JupyterLab (or
// Notebook).
func TestEnvironmentStoppedEvent(t *testing.T) { onEachImage(t, testEnvironmentStoppedEvent) }

func testEnvironmentStoppedEvent(t *testing.T, img envImage) {
	env, in := runningOn(t, img)
	port, base := hostPort(t, in.InstanceID), accessBase(t, in.AccessURL)
	environmentStops(t, env)
	stopped := waitStatus(t, token(customerA), env, "stopped", 30*time.Second)
	if stopped.StatusReason != "environment_stopped" {
		t.Fatalf("reason %q, want environment_stopped", stopped.StatusReason)
	}
	assertNothingLeft(t, env, in.InstanceID, port, base)
}

// TC-04 while starting: the stop wins, whatever stage the start is at.
func TestEnvironmentStoppedWhileStarting(t *testing.T) {
	env := newEnvironment(t, customerA)
	code, started := start(t, token(customerA), env, "")
	if code != http.StatusAccepted {
		t.Fatalf("start: %d", code)
	}
	environmentStops(t, env)
	stopped := waitStatus(t, token(customerA), env, "stopped", 60*time.Second)
	if stopped.StatusReason != "environment_stopped" {
		t.Fatalf("reason %q, want environment_stopped", stopped.StatusReason)
	}
	// The host may finish the start before it reads the stop: give it the
	// time to clean up, then nothing may remain.
	eventually(t, 20*time.Second, func() error {
		if procs, _ := jupyterproc.Processes("/proc", started.InstanceID); len(procs) > 0 {
			return fmt.Errorf("%d processes remain", len(procs))
		}
		return nil
	})
	assertNothingLeft(t, env, started.InstanceID, hostPort(t, started.InstanceID), accessBase(t, started.AccessURL))
}

// An auto-start event starts JupyterLab once, however often it comes.
func TestAutoStartEvent(t *testing.T) {
	env := newEnvironment(t, customerA)
	ctx := context.Background()
	for range 3 {
		if err := stack.EmitEnvironmentEvent(ctx, envevent.Detail{EnvironmentID: env, Status: "running", AutoStartJupyter: true}); err != nil {
			t.Fatal(err)
		}
	}
	in := waitStatus(t, token(customerA), env, "running", 60*time.Second)
	time.Sleep(2 * time.Second) // let any duplicate land
	hist, err := stack.Store.History(ctx, env, 10)
	if err != nil || len(hist) != 1 || hist[0].ID != in.InstanceID {
		t.Fatalf("instances %v (err %v), want exactly %s", ids(hist), err, in.InstanceID)
	}
	// Without the flag, a running event starts nothing new.
	stop(t, token(customerA), env)
	waitStatus(t, token(customerA), env, "stopped", 30*time.Second)
	if err := stack.EmitEnvironmentEvent(ctx, envevent.Detail{EnvironmentID: env, Status: "running"}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	if hist, _ := stack.Store.History(ctx, env, 10); len(hist) != 1 {
		t.Fatalf("instances %v after a running event without auto-start, want 1", ids(hist))
	}
}

func ids(list []instance.Instance) []string {
	var out []string
	for _, in := range list {
		out = append(out, in.ID+":"+string(in.Status))
	}
	return out
}

// docker stop of the environment's container ends its JupyterLab within
// seconds, with nothing left behind, even without an environment event.
func TestContainerStopped(t *testing.T) {
	env, in := running(t)
	port, base := hostPort(t, in.InstanceID), accessBase(t, in.AccessURL)
	timeout := 0
	stoppedAt := time.Now()
	if err := stack.Docker.ContainerStop(context.Background(), stored(t, in.InstanceID).ContainerID, container.StopOptions{Timeout: &timeout}); err != nil {
		t.Fatal(err)
	}
	end := waitStatus(t, token(customerA), env, "stopped", 10*time.Second)
	if end.StatusReason != "container_gone" {
		t.Fatalf("reason %q, want container_gone", end.StatusReason)
	}
	t.Logf("stopped %s after docker stop", time.Since(stoppedAt).Round(time.Millisecond))
	assertNothingLeft(t, env, in.InstanceID, port, base)
}

// mainProcess returns the host pid of an instance's Jupyter.
func mainProcess(t *testing.T, instanceID string) int {
	t.Helper()
	var pid int
	eventually(t, 30*time.Second, func() error {
		procs, err := jupyterproc.Processes("/proc", instanceID)
		if err != nil {
			return err
		}
		p, ok := jupyterproc.Main(procs)
		if !ok {
			return fmt.Errorf("no jupyter process for %s", instanceID)
		}
		pid = p.PID
		return nil
	})
	return pid
}

// A Jupyter that dies is restarted, within a budget; past it the instance fails.
func TestJupyterRestarts(t *testing.T) {
	env, in := running(t)
	port, base, jtoken := hostPort(t, in.InstanceID), accessBase(t, in.AccessURL), accessToken(t, in.AccessURL)
	for i := 1; i <= restartBudget; i++ {
		old := mainProcess(t, in.InstanceID)
		if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		eventually(t, 40*time.Second, func() error {
			if pid := mainProcess(t, in.InstanceID); pid == old {
				return fmt.Errorf("still the killed process %d", pid)
			}
			if st, _ := jupyter(t, http.MethodGet, base+"api/status", jtoken, nil); st != http.StatusOK {
				return fmt.Errorf("api/status: %d", st)
			}
			_, b := status(t, token(customerA), env)
			if b.Status != "running" {
				return fmt.Errorf("instance %s (%s)", b.Status, b.StatusReason)
			}
			return nil
		})
		t.Logf("restart %d: running again", i)
	}
	if err := syscall.Kill(mainProcess(t, in.InstanceID), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	failed := waitStatus(t, token(customerA), env, "failed", 30*time.Second)
	if !strings.HasPrefix(failed.StatusReason, "jupyter_crashed") {
		t.Fatalf("reason %q, want jupyter_crashed", failed.StatusReason)
	}
	assertNothingLeft(t, env, in.InstanceID, port, base)
}

// SIGTERM of the sidecar leaves Jupyters running; the restarted sidecar
// owns them again (it can stop them).
func TestSidecarRestartKeepsInstances(t *testing.T) {
	restartSidecarAfter(t)
	env, in := running(t)
	port, base := hostPort(t, in.InstanceID), accessBase(t, in.AccessURL)
	stack.StopSidecar()
	if st, _ := jupyter(t, http.MethodGet, base+"api", "", nil); st != http.StatusOK {
		t.Fatalf("with the sidecar stopped, GET %sapi: %d, want 200", base, st)
	}
	if err := stack.StartSidecar(); err != nil {
		t.Fatal(err)
	}
	if st, _ := jupyter(t, http.MethodGet, base+"api", "", nil); st != http.StatusOK {
		t.Fatalf("after the sidecar restarted, GET %sapi: %d, want 200", base, st)
	}
	stop(t, token(customerA), env)
	waitStatus(t, token(customerA), env, "stopped", 30*time.Second)
	assertNothingLeft(t, env, in.InstanceID, port, base)
}

// kill -9 of the sidecar during a start: after its restart the instance ends
// running or failed, never stuck, and nothing leaks.
func TestSidecarKilledDuringStart(t *testing.T) {
	restartSidecarAfter(t)
	env := newEnvironment(t, customerA)
	code, started := start(t, token(customerA), env, "")
	if code != http.StatusAccepted {
		t.Fatalf("start: %d", code)
	}
	eventually(t, 30*time.Second, func() error {
		if s := stored(t, started.InstanceID).Stage; s != instance.StageLaunching && s != instance.StageWaiting {
			return fmt.Errorf("stage %q", s)
		}
		return nil
	})
	stack.KillSidecar()
	if err := stack.StartSidecar(); err != nil {
		t.Fatal(err)
	}
	var end instanceBody
	eventually(t, 90*time.Second, func() error {
		_, end = status(t, token(customerA), env)
		if end.Status != "running" && end.Status != "failed" {
			return fmt.Errorf("instance is %s (stage %s)", end.Status, end.Stage)
		}
		return nil
	})
	t.Logf("after the crash the instance is %s %s", end.Status, end.StatusReason)
	if end.Status == "running" {
		if st, _ := jupyter(t, http.MethodGet, accessBase(t, started.AccessURL)+"api", "", nil); st != http.StatusOK {
			t.Fatalf("running after the crash but the proxied api answers %d", st)
		}
		stop(t, token(customerA), env)
		waitStatus(t, token(customerA), env, "stopped", 30*time.Second)
	}
	assertNothingLeft(t, env, started.InstanceID, hostPort(t, started.InstanceID), accessBase(t, started.AccessURL))
}

// Routes lost in Redis come back by themselves.
func TestRoutesHealAfterRedisFlush(t *testing.T) {
	env, in := running(t)
	base := accessBase(t, in.AccessURL)
	if err := redisAs(t, devstack.RedisAdmin).FlushAll(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	if st, _ := jupyter(t, http.MethodGet, base+"api", "", nil); st != http.StatusNotFound {
		t.Fatalf("right after the flush, GET %sapi: %d, want 404", base, st)
	}
	eventually(t, 15*time.Second, func() error {
		if st, _ := jupyter(t, http.MethodGet, base+"api", "", nil); st != http.StatusOK {
			return fmt.Errorf("GET %sapi: %d", base, st)
		}
		return nil
	})
	stop(t, token(customerA), env)
	waitStatus(t, token(customerA), env, "stopped", 30*time.Second)
}

// A start that can never succeed fails with a reason, and frees its port.
func TestStartWithoutJupyterFails(t *testing.T) {
	env := newEnvironment(t, customerA)
	ctx := context.Background()
	e, _ := stack.Store.Environment(ctx, env)
	exec, err := stack.Docker.ContainerExecCreate(ctx, e.ContainerID, container.ExecOptions{
		Cmd: []string{"rm", "-f", "/usr/bin/jupyter-notebook", "/usr/bin/jupyter-server", "/usr/bin/jupyter-lab"},
	})
	if err == nil {
		err = stack.Docker.ContainerExecStart(ctx, exec.ID, container.ExecStartOptions{})
	}
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	_, started := start(t, token(customerA), env, "")
	failed := waitStatus(t, token(customerA), env, "failed", 60*time.Second)
	if !strings.HasPrefix(failed.StatusReason, "no_jupyter_in_image") {
		t.Fatalf("reason %q, want no_jupyter_in_image", failed.StatusReason)
	}
	assertNothingLeft(t, env, started.InstanceID, hostPort(t, started.InstanceID), accessBase(t, started.AccessURL))
}

// Many starts of distinct environments at once: distinct ports, all running
// (or cleanly failed), and nothing left after they stop.
func TestConcurrentStartsOfDistinctEnvironments(t *testing.T) {
	const n = 30
	envs := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			envs[i] = newEnvironment(t, customerA+"-"+fmt.Sprint(i))
		}()
	}
	wg.Wait()
	tokens := func(i int) string { return token(customerA + "-" + fmt.Sprint(i)) }
	started := make([]instanceBody, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, started[i] = start(t, tokens(i), envs[i], "")
		}()
	}
	wg.Wait()
	ports := map[int]string{}
	runningCount := 0
	for i := range n {
		if started[i].InstanceID == "" {
			t.Fatalf("start %d: %+v", i, started[i].Error)
		}
		port := hostPort(t, started[i].InstanceID)
		if other, dup := ports[port]; dup {
			t.Fatalf("environments %s and %s share port %d", other, envs[i], port)
		}
		ports[port] = envs[i]
	}
	for i := range n {
		var end instanceBody
		// An instance that ran may since have been culled as idle (the test
		// stack's idle timeout is short): it ran all the same.
		eventually(t, 3*time.Minute, func() error {
			_, end = status(t, tokens(i), envs[i])
			if end.Status != "running" && end.Status != "failed" && end.StartedAt == "" {
				return fmt.Errorf("%s is %s", envs[i], end.Status)
			}
			return nil
		})
		if end.StartedAt != "" {
			runningCount++
		} else {
			t.Logf("%s failed: %s", envs[i], end.StatusReason)
		}
	}
	t.Logf("%d of %d running", runningCount, n)
	if runningCount == 0 {
		t.Fatal("none of the concurrent starts ran")
	}
	for i := range n {
		stop(t, tokens(i), envs[i])
	}
	for i := range n {
		if _, b := status(t, tokens(i), envs[i]); b.Status != "failed" {
			waitStatus(t, tokens(i), envs[i], "stopped", 60*time.Second)
		}
		assertNothingLeft(t, envs[i], started[i].InstanceID, hostPort(t, started[i].InstanceID), accessBase(t, started[i].AccessURL))
	}
}

// Every command and report of an instance's life, delivered again twice and
// in reverse order after it ended, changes nothing.
func TestReplayedMessagesChangeNothing(t *testing.T) {
	env, in := running(t)
	stop(t, token(customerA), env)
	waitStatus(t, token(customerA), env, "stopped", 30*time.Second)
	rec := stored(t, in.InstanceID)
	ctx := context.Background()

	start := message.Command{V: 1, Type: "start", InstanceID: rec.ID, EnvironmentID: env, ContainerID: rec.ContainerID,
		HostPort: rec.ExternalPort, InternalPort: rec.InternalPort, Token: rec.AccessToken, BaseURL: instance.BasePath(env), SentAt: rec.CreatedAt}
	stopCmd := message.Command{V: 1, Type: "stop", InstanceID: rec.ID, EnvironmentID: env, ContainerID: rec.ContainerID,
		HostPort: rec.ExternalPort, Reason: "user", SentAt: rec.UpdatedAt}
	report := func(s instance.Status, stage instance.Stage, at time.Time) message.Report {
		return message.Report{V: 1, InstanceID: rec.ID, HostID: rec.HostID, Status: s, Stage: stage, At: at}
	}
	reports := []message.Report{
		report(instance.Stopped, "", rec.StoppedAt),
		report(instance.Running, "", rec.StartedAt),
		report(instance.Starting, instance.StageRouting, rec.CreatedAt.Add(time.Second)),
		report(instance.Starting, instance.StagePreparing, rec.CreatedAt),
	}
	commandQueue := parameter(t, config.HostQueueParameter(rec.HostID))
	reportsQueue := parameter(t, "/envjupyter/reports_queue_url")
	for range 2 {
		for _, c := range []message.Command{stopCmd, start} {
			send(t, commandQueue, c)
		}
		for _, r := range reports {
			sendReport(t, reportsQueue, r, hostKey(t, r.HostID))
		}
	}
	time.Sleep(8 * time.Second)
	after := stored(t, in.InstanceID)
	if after.Status != instance.Stopped || after.StatusReason != rec.StatusReason || !after.StoppedAt.Equal(rec.StoppedAt) {
		t.Fatalf("after replay the instance is %s (%s, stopped %s), was stopped (%s, %s)",
			after.Status, after.StatusReason, after.StoppedAt, rec.StatusReason, rec.StoppedAt)
	}
	eventually(t, 20*time.Second, func() error {
		if procs, _ := jupyterproc.Processes("/proc", rec.ID); len(procs) > 0 {
			return fmt.Errorf("a replayed start left %d processes", len(procs))
		}
		return nil
	})
	assertNothingLeft(t, env, rec.ID, rec.ExternalPort, accessBase(t, in.AccessURL))
	if _, err := stack.Store.ActiveInstance(ctx, env); err == nil {
		t.Fatal("the environment has an active instance after the replay")
	}
}

func parameter(t *testing.T, name string) string {
	t.Helper()
	out, err := stack.AWS.SSM.GetParameter(context.Background(), &ssm.GetParameterInput{Name: &name})
	if err != nil {
		t.Fatal(err)
	}
	return aws.ToString(out.Parameter.Value)
}

func send(t *testing.T, queueURL string, v any) {
	t.Helper()
	body, _ := json.Marshal(v)
	if _, err := stack.AWS.SQS.SendMessage(context.Background(), &sqs.SendMessageInput{QueueUrl: &queueURL, MessageBody: aws.String(string(body))}); err != nil {
		t.Fatal(err)
	}
}

// An idle instance is stopped with reason idle; an active one is not.
func TestIdleCulling(t *testing.T) {
	idleEnv, idle := running(t)
	activeEnv, active := running(t)
	base, jtoken := accessBase(t, active.AccessURL), accessToken(t, active.AccessURL)
	deadline := time.Now().Add(idleTimeout + 25*time.Second)
	for time.Now().Before(deadline) {
		// Activity: an authenticated API call (not /api/status, which does not count).
		jupyter(t, http.MethodGet, base+"api/contents", jtoken, nil)
		if _, b := status(t, token(customerA), idleEnv); b.Status == "stopped" {
			break
		}
		time.Sleep(time.Second)
	}
	_, b := status(t, token(customerA), idleEnv)
	if b.Status != "stopped" || b.StatusReason != "idle" {
		t.Fatalf("idle instance %s is %s (%s), want stopped with reason idle", idle.InstanceID, b.Status, b.StatusReason)
	}
	if got := causes(t, idle.InstanceID); !slices.Equal(got, []string{"start:customer", "stop:idle", "end:idle"}) {
		t.Fatalf("idle stop: audit %v", got)
	}
	if _, b := status(t, token(customerA), activeEnv); b.Status != "running" {
		t.Fatalf("active instance is %s (%s), want running", b.Status, b.StatusReason)
	}
	stop(t, token(customerA), activeEnv)
	waitStatus(t, token(customerA), activeEnv, "stopped", 30*time.Second)
}

// While starting, the status shows the stages in order with the elapsed
// time; ?wait= returns as soon as the instance runs.
func TestProgressAndWait(t *testing.T) {
	env := newEnvironment(t, customerA)
	tok := token(customerA)
	if code, _ := start(t, tok, env, ""); code != http.StatusAccepted {
		t.Fatalf("start: %d", code)
	}
	order := []string{"queued", "preparing", "launching", "waiting_for_health", "routing"}
	var seen []string
	lastElapsed := -1.0
	for {
		req, _ := http.NewRequest(http.MethodGet, stack.ProxyURL()+"/api/environments/"+env+"/jupyter", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var b struct {
			Status  string  `json:"status"`
			Stage   string  `json:"stage"`
			Elapsed float64 `json:"elapsed_seconds"`
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		_ = json.Unmarshal(raw, &b)
		if b.Status != "starting" {
			break
		}
		if b.Elapsed < lastElapsed {
			t.Fatalf("elapsed went back from %v to %v", lastElapsed, b.Elapsed)
		}
		lastElapsed = b.Elapsed
		if len(seen) == 0 || seen[len(seen)-1] != b.Stage {
			seen = append(seen, b.Stage)
		}
		time.Sleep(20 * time.Millisecond)
	}
	pos := -1
	for _, s := range seen {
		i := indexOf(order, s)
		if i < pos {
			t.Fatalf("stages %v are out of order", seen)
		}
		pos = i
	}
	if len(seen) < 2 || lastElapsed <= 0 {
		t.Fatalf("saw stages %v with elapsed %v; want at least two stages and a positive elapsed time", seen, lastElapsed)
	}
	t.Logf("stages seen: %v", seen)

	// ?wait=: stop, then start again and wait for running in one call.
	stop(t, tok, env)
	waitStatus(t, tok, env, "stopped", 30*time.Second)
	start(t, tok, env, "")
	before := time.Now()
	code, b := api(t, http.MethodGet, "/api/environments/"+env+"/jupyter?wait=20", tok, "")
	returned := time.Now()
	if code != http.StatusOK || b.Status != "running" {
		t.Fatalf("?wait=20: %d %s, want running", code, b.Status)
	}
	startedAt, _ := time.Parse(time.RFC3339Nano, b.StartedAt)
	if lag := returned.Sub(startedAt); lag > 1500*time.Millisecond {
		t.Fatalf("?wait=20 returned %s after the instance ran, want within a second", lag)
	}
	t.Logf("?wait=20 waited %s", returned.Sub(before).Round(time.Millisecond))
	if code, b := api(t, http.MethodGet, "/api/environments/"+env+"/jupyter?wait=26", tok, ""); code != 400 || b.Error == nil || b.Error.Code != "invalid_wait" {
		t.Fatalf("?wait=26: %d %+v, want 400 invalid_wait", code, b.Error)
	}
	stop(t, tok, env)
	waitStatus(t, tok, env, "stopped", 30*time.Second)
}

func indexOf(list []string, s string) int {
	for i, x := range list {
		if x == s {
			return i
		}
	}
	return -1
}

// The sidecar's metrics show starts and stops.
func TestSidecarMetrics(t *testing.T) {
	env, _ := running(t)
	stop(t, token(customerA), env)
	waitStatus(t, token(customerA), env, "stopped", 30*time.Second)
	resp, err := http.Get(stack.StatusURL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	text := string(raw)
	for _, want := range []string{
		`envjupyter_instances{state="running"}`,
		"envjupyter_start_duration_seconds_count ",
		`envjupyter_starts_total{outcome="running"}`,
		`envjupyter_stops_total{reason="user"}`,
		"envjupyter_health_check_failures_total",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if strings.Contains(text, "envjupyter_start_duration_seconds_count 0\n") {
		t.Error("the start-duration histogram counted no start")
	}
}

// restartSidecarAfter makes sure a test that stops the sidecar leaves it
// running for the tests after it, even when it fails half way.
func restartSidecarAfter(t *testing.T) {
	t.Cleanup(func() {
		if !stack.SidecarRunning() {
			if err := stack.StartSidecar(); err != nil {
				t.Errorf("restarting the sidecar: %v", err)
			}
		}
	})
}

// eventually retries f until it succeeds or the timeout passes.
func eventually(t *testing.T, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %v", timeout, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func jupyterProcesses(instanceID string) ([]jupyterproc.Process, error) {
	return jupyterproc.Processes("/proc", instanceID)
}
