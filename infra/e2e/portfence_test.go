package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"

	"github.com/envjupyter/envjupyter/shared/config"
	"github.com/envjupyter/envjupyter/shared/instance"
	"github.com/envjupyter/envjupyter/shared/message"
	jupyterproc "github.com/envjupyter/envjupyter/sidecar/jupyter"
)

// A port outside the stack's range, so the control plane never hands it out
// while this test gives it to two instances itself.
const fencedPort = 21777

// slowPip is a python3 that runs wait (a shell command) before pip, as a
// customer can make their own start slow on purpose (they own python3
// there). It runs the image's real interpreter (python3 links to a
// versioned one).
func slowPip(wait string) string {
	return "#!/bin/sh\ncase \"$2\" in pip) " + wait + ";; esac\n" +
		"for p in /usr/bin/python3.13 /usr/bin/python3.12 /usr/bin/python3.11; do [ -x \"$p\" ] && exec \"$p\" \"$@\"; done\nexit 127\n"
}

// A start the control plane ended comes late (slow on purpose, redelivered,
// or resumed) after its port went to a newer instance of another customer:
// the port keeps leading to the newer instance only, and the late start
// never comes to life.
func TestLateStartDoesNotTakeBackItsPort(t *testing.T) {
	ctx := context.Background()
	oldEnv, newEnv := newEnvironment(t, "cust-late"), newEnvironment(t, customerA)
	oldRec, err := stack.Store.Environment(ctx, oldEnv)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, oldRec.ContainerID, "/usr/bin/python3", slowPip("sleep 30"), 0o755)
	queueURL := parameter(t, config.HostQueueParameter(stack.Opts.HostID))
	startOf := func(env, id string, sentAt time.Time, plugins []string) message.Command {
		rec, err := stack.Store.Environment(ctx, env)
		if err != nil {
			t.Fatal(err)
		}
		return message.Command{V: message.Version, Type: message.TypeStart, InstanceID: id, EnvironmentID: env, ContainerID: rec.ContainerID,
			HostPort: fencedPort, InternalPort: instance.InternalPort, Token: "tok-" + randomID(), BaseURL: instance.BasePath(env),
			Plugins: plugins, SentAt: sentAt}
	}
	late := startOf(oldEnv, "ji-late-"+randomID()[:8], time.Now().Add(-time.Minute), []string{"envjupyter-hello"})
	next := startOf(newEnv, "ji-next-"+randomID()[:8], time.Now(), nil)
	t.Cleanup(func() {
		for _, c := range []message.Command{late, next} {
			send(t, queueURL, message.Command{V: message.Version, Type: message.TypeStop, InstanceID: c.InstanceID, EnvironmentID: c.EnvironmentID,
				ContainerID: c.ContainerID, HostPort: c.HostPort, Reason: "test", SentAt: time.Now()})
		}
	})

	send(t, queueURL, late)
	eventually(t, 30*time.Second, func() error {
		if !containerRuns(t, oldRec.ContainerID, "sleep 30") {
			return fmt.Errorf("the late start is not in its slow plugin install yet")
		}
		return nil
	})
	send(t, queueURL, next)
	at := func(env string) string {
		return "http://" + stack.AdvertiseAddr() + ":" + strconv.Itoa(fencedPort) + instance.BasePath(env) + "api"
	}
	eventually(t, 60*time.Second, func() error {
		if code := get(t, at(newEnv)); code != http.StatusOK {
			return fmt.Errorf("the newer instance's port answers %d", code)
		}
		return nil
	})
	// The late start's install ends; it must give up rather than take the port.
	eventually(t, 60*time.Second, func() error {
		if containerRuns(t, oldRec.ContainerID, "sleep 30") || containerRuns(t, oldRec.ContainerID, "pip") {
			return fmt.Errorf("the late start is still installing")
		}
		return nil
	})
	eventually(t, 20*time.Second, func() error {
		if procs, _ := jupyterProcesses(late.InstanceID); len(procs) > 0 {
			return fmt.Errorf("the late start's Jupyter runs (%d processes)", len(procs))
		}
		return nil
	})
	if code := get(t, at(newEnv)); code != http.StatusOK {
		t.Fatalf("after the late start, the port answers %d for the newer instance, want 200", code)
	}
	if code := get(t, at(oldEnv)); code != http.StatusNotFound {
		t.Fatalf("the late instance's path on the port answers %d, want 404 from the newer instance's Jupyter", code)
	}
	if got := redisRoute(t, oldEnv); got != "" {
		t.Fatalf("the late start wrote a route: %s", got)
	}
}

// get returns the HTTP status of a GET, or 0 when nothing answers.
func get(t *testing.T, url string) int {
	t.Helper()
	c := &http.Client{Timeout: 3 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Get(url)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// containerRuns reports whether a process of the container has the text in
// its command line.
func containerRuns(t *testing.T, containerID, text string) bool {
	t.Helper()
	top, err := stack.Docker.ContainerTop(context.Background(), containerID, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range top.Processes {
		if strings.Contains(strings.Join(p, " "), text) {
			return true
		}
	}
	return false
}

// writeFile puts a file in a container, replacing what is there.
func writeFile(t *testing.T, containerID, path, content string, mode int64) {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	_ = tw.WriteHeader(&tar.Header{Name: strings.TrimPrefix(path, "/"), Mode: mode, Size: int64(len(content)), ModTime: time.Now()})
	_, _ = tw.Write([]byte(content))
	_ = tw.Close()
	if err := stack.Docker.CopyToContainer(context.Background(), containerID, "/", &buf, container.CopyToContainerOptions{}); err != nil {
		t.Fatalf("writing %s in %s: %v", path, containerID, err)
	}
}

// recorder is a server a customer runs on Jupyter's port in their own
// container: it answers everything as a healthy Jupyter would, and writes
// down every request it gets, with its Authorization header.
const recorder = `import http.server
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        with open("/tmp/seen", "a") as f:
            f.write(self.requestline + " " + str(self.headers.get("Authorization")) + "\n")
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")
    do_POST = do_GET
http.server.ThreadingHTTPServer(("0.0.0.0", 8888), H).serve_forever()
`

// A customer makes their start slow on purpose (a pip that never ends) and
// listens on Jupyter's port themselves; the reaper fails the start after
// the start timeout and frees its port, which goes to a new instance of
// another customer. The new customer's traffic and the sidecar's health
// probe (with the new token) reach only the new customer's Jupyter, and the
// slow start never comes to life.
func TestReapedSlowStartCannotTakeItsPortBack(t *testing.T) {
	ctx := context.Background()
	const port, slowCustomer = 21778, "cust-slow"
	// One port for every start, so the new instance gets the old one's;
	// and a short start timeout, so the reaper acts within the test.
	setParameter(t, "port_range", fmt.Sprintf("%d-%d", port, port))
	setParameter(t, "start_timeout_seconds", "10")
	oldEnv, newEnv := newEnvironment(t, slowCustomer), newEnvironment(t, customerA)
	oldRec, err := stack.Store.Environment(ctx, oldEnv)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, oldRec.ContainerID, "/usr/bin/python3", slowPip("exec sleep 600"), 0o755)
	writeFile(t, oldRec.ContainerID, "/tmp/recorder.py", recorder, 0o644)

	code, old := start(t, token(slowCustomer), oldEnv, `{"plugins":["envjupyter-hello"]}`)
	if code != http.StatusAccepted {
		t.Fatalf("slow start: %d %+v", code, old.Error)
	}
	eventually(t, 60*time.Second, func() error {
		if !containerRuns(t, oldRec.ContainerID, "sleep 600") {
			return fmt.Errorf("the slow start is not in its plugin install yet")
		}
		return nil
	})
	if got := hostPort(t, old.InstanceID); got != port {
		t.Fatalf("the slow start has port %d, want %d", got, port)
	}
	// Past the start's check that Jupyter's port is free, the customer
	// listens on it.
	execInContainer(t, oldRec.ContainerID, "sh", "-c", "python3 /tmp/recorder.py >/dev/null 2>&1 &")
	oldPID := containerPID(t, oldRec.ContainerID)
	eventually(t, 20*time.Second, func() error {
		if on, err := jupyterproc.Listening("/proc", oldPID, instance.InternalPort); err != nil || !on {
			return fmt.Errorf("the customer's recorder does not listen yet (%v)", err)
		}
		return nil
	})

	failed := waitStatus(t, token(slowCustomer), oldEnv, "failed", 90*time.Second)
	if !strings.HasPrefix(failed.StatusReason, instance.ReasonStartTimeout) {
		t.Fatalf("the slow start failed with %q, want %s from the reaper", failed.StatusReason, instance.ReasonStartTimeout)
	}
	// The host gives up the start at once: its install is killed.
	eventually(t, 30*time.Second, func() error {
		if containerRuns(t, oldRec.ContainerID, "sleep 600") {
			return fmt.Errorf("the failed start's plugin install still runs")
		}
		return nil
	})

	// Once the failed start's port has cooled (port_cooldown_seconds).
	next := startWhenFree(t, customerA, newEnv, "")
	if got := hostPort(t, next.InstanceID); got != port {
		t.Fatalf("the new instance has port %d, want the slow start's %d", got, port)
	}
	running := time.Now()
	base, jtoken := accessBase(t, next.AccessURL), accessToken(t, next.AccessURL)
	direct := func(env string) string {
		return "http://" + stack.AdvertiseAddr() + ":" + strconv.Itoa(port) + instance.BasePath(env) + "api"
	}
	// Health checks and heartbeats of the new instance, each a probe with
	// its token; and its customer's traffic, through the proxy and on the port.
	eventually(t, 30*time.Second, func() error {
		in := stored(t, next.InstanceID)
		if in.Health == nil || !in.Health.CheckedAt.After(running) {
			return fmt.Errorf("no health report since the instance runs")
		}
		return nil
	})
	if st, _ := jupyter(t, http.MethodGet, base+"api/status", jtoken, nil); st != http.StatusOK {
		t.Fatalf("the new customer's api/status through the proxy: %d", st)
	}
	if code := get(t, direct(newEnv)); code != http.StatusOK {
		t.Fatalf("the port answers %d for the new instance, want 200", code)
	}
	if code := get(t, direct(oldEnv)); code != http.StatusNotFound {
		t.Fatalf("the slow start's path on the port answers %d, want 404 from the new customer's Jupyter", code)
	}
	if seen := readContainerFile(t, oldRec.ContainerID, "/tmp/seen"); seen != "" {
		t.Fatalf("requests reached the slow customer's container:\n%s", seen)
	}
	// The slow start never came to life.
	if in := stored(t, old.InstanceID); in.Status != instance.Failed {
		t.Fatalf("the slow start is %s, want failed", in.Status)
	}
	if got := redisRoute(t, oldEnv); got != "" {
		t.Fatalf("the slow start has a route: %s", got)
	}
	if rules := instanceRules(t, old.InstanceID); rules != "" {
		t.Fatalf("the slow start has rules:\n%s", rules)
	}
	if procs, _ := jupyterProcesses(old.InstanceID); len(procs) > 0 {
		t.Fatalf("the slow start's Jupyter runs (%d processes)", len(procs))
	}
	stop(t, token(customerA), newEnv)
	waitStatus(t, token(customerA), newEnv, "stopped", 30*time.Second)
	assertNothingLeft(t, newEnv, next.InstanceID, port, base)
}

// containerPID is the host pid of a container's first process.
func containerPID(t *testing.T, containerID string) int {
	t.Helper()
	c, err := stack.Docker.ContainerInspect(context.Background(), containerID)
	if err != nil || c.State == nil {
		t.Fatalf("inspecting %s: %v", containerID, err)
	}
	return c.State.Pid
}

// readContainerFile returns a file of a container, or "" if there is none.
func readContainerFile(t *testing.T, containerID, path string) string {
	t.Helper()
	rc, _, err := stack.Docker.CopyFromContainer(context.Background(), containerID, path)
	if err != nil {
		return ""
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	if _, err := tr.Next(); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(tr)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// instanceRules lists the forwards of the sidecar's table (in any source
// group's map) whose comment names the instance.
func instanceRules(t *testing.T, instanceID string) string {
	t.Helper()
	var found []string
	for _, el := range firewallElements(t, func(set string) bool { return strings.HasPrefix(set, "forwards_") }) {
		if strings.Contains(el.Comment+" ", "instance="+instanceID+" ") {
			found = append(found, fmt.Sprintf("port %x: %s", el.Key, el.Comment))
		}
	}
	return strings.Join(found, "\n")
}
