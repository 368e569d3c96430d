package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"

	"github.com/envjupyter/envjupyter/shared/config"
	"github.com/envjupyter/envjupyter/shared/instance"
	"github.com/envjupyter/envjupyter/shared/message"
)

// A port outside the stack's range, so the control plane never hands it out
// while this test gives it to two instances itself.
const fencedPort = 21777

// slowPip makes pip in a container take a while, as a customer can make
// their own start slow on purpose (they own python3 there).
// It runs the image's real interpreter (python3 links to a versioned one).
const slowPip = "#!/bin/sh\ncase \"$2\" in pip) sleep 30;; esac\n" +
	"for p in /usr/bin/python3.13 /usr/bin/python3.12 /usr/bin/python3.11; do [ -x \"$p\" ] && exec \"$p\" \"$@\"; done\nexit 127\n"

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
	writeFile(t, oldRec.ContainerID, "/usr/bin/python3", slowPip, 0o755)
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
