package container

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
)

// testImage is the environment image infra/image builds.
const testImage = "envjupyter/env-jupyter:bookworm-2"

// dockerOrSkip returns a client of the local dockerd; without one the test
// skips on a laptop and fails in CI.
func dockerOrSkip(t *testing.T) *Docker {
	t.Helper()
	fail := t.Skip
	if os.Getenv("CI") != "" {
		fail = t.Fatal
	}
	if testing.Short() {
		t.Skip("needs dockerd")
	}
	d, err := New()
	if err != nil {
		fail(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, _, err := d.cli.ImageInspectWithRaw(ctx, testImage); err != nil {
		fail("dockerd or the environment image is not available:", err)
	}
	return d
}

// startContainer runs a container of the test image until the test ends.
func startContainer(t *testing.T, d *Docker, env ...string) string {
	t.Helper()
	ctx := context.Background()
	c, err := d.cli.ContainerCreate(ctx, &container.Config{Image: testImage, Cmd: []string{"sleep", "infinity"}, Env: env}, nil, nil, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.cli.ContainerRemove(context.Background(), c.ID, container.RemoveOptions{Force: true}) })
	if err := d.cli.ContainerStart(ctx, c.ID, container.StartOptions{}); err != nil {
		t.Fatal(err)
	}
	return c.ID
}

// Executables are found on the container's own PATH, by their files: a
// file without an execute bit is not one, a directory elsewhere on the
// host's PATH does not count, and a container that went says so.
func TestHasExecutable(t *testing.T) {
	d := dockerOrSkip(t)
	ctx := context.Background()
	id := startContainer(t, d, "PATH=/opt/ej/bin:/usr/bin:/bin")
	if _, err := d.Run(ctx, id, []string{"mkdir", "-p", "/opt/ej/bin", "/usr/local/sbin/jupyter-lab"}, nil); err != nil {
		t.Fatal(err)
	}
	for _, f := range []struct{ name, mode string }{{"/opt/ej/bin/mine", "755"}, {"/opt/ej/bin/plain", "644"}} {
		if out, err := d.Run(ctx, id, []string{"sh", "-c", "touch " + f.name + " && chmod " + f.mode + " " + f.name}, nil); err != nil || out.ExitCode != 0 {
			t.Fatalf("making %s: %v %+v", f.name, err, out)
		}
	}
	info, err := d.Inspect(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(info.Path, ":") != "/opt/ej/bin:/usr/bin:/bin" {
		t.Fatalf("Path = %q, want the container's PATH", info.Path)
	}
	for name, want := range map[string]bool{
		"mine": true, "plain": false, "jupyter-notebook": true, "python3": true,
		"jupyter-lab":  false, // a directory, and not on this PATH anyway
		"nothing-here": false,
	} {
		got, err := d.HasExecutable(ctx, id, info.Path, name)
		if err != nil || got != want {
			t.Errorf("HasExecutable(%q) = %v, %v; want %v", name, got, err, want)
		}
	}
	if err := d.cli.ContainerRemove(ctx, id, container.RemoveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.HasExecutable(ctx, id, info.Path, "python3"); !errors.Is(err, ErrGone) {
		t.Fatalf("HasExecutable in a removed container: %v, want ErrGone", err)
	}
}

// A command that never ends is killed at its deadline: the call returns a
// deadline error and nothing of the command is left running.
func TestRunKillsAtDeadline(t *testing.T) {
	d := dockerOrSkip(t)
	ctx := context.Background()
	id := startContainer(t, d)
	short, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_, err := d.Run(short, id, []string{"python3", "-c", "import time\nwhile True: time.sleep(1)"}, nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Run of a command that never ends: %v, want a deadline error", err)
	}
	out, err := d.Run(ctx, id, []string{"ps", "-eo", "args"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.Stdout, "time.sleep") {
		t.Fatalf("the command still runs after its deadline:\n%s", out.Stdout)
	}
}

// WriteFiles puts every file in one copy, each with its mode and its
// directory 0700, and says when the container went.
func TestWriteFiles(t *testing.T) {
	d := dockerOrSkip(t)
	ctx := context.Background()
	id := startContainer(t, d)
	files := []File{
		{Path: "/var/lib/envjupyter/i-1.json", Content: []byte(`{"secret": 1}`), Mode: 0o600},
		{Path: "/var/lib/envjupyter/config/a.py", Content: []byte("a = 1\n"), Mode: 0o644},
		{Path: "/var/lib/envjupyter/config/b.py", Content: []byte("b = 2\n"), Mode: 0o644},
	}
	if err := d.WriteFiles(ctx, id, files); err != nil {
		t.Fatal(err)
	}
	out, err := d.Run(ctx, id, []string{"stat", "-c", "%n %a %U", "/var/lib/envjupyter", "/var/lib/envjupyter/config",
		"/var/lib/envjupyter/i-1.json", "/var/lib/envjupyter/config/a.py", "/var/lib/envjupyter/config/b.py"}, nil)
	if err != nil || out.ExitCode != 0 {
		t.Fatalf("stat: %v %+v", err, out)
	}
	want := "/var/lib/envjupyter 700 root\n/var/lib/envjupyter/config 700 root\n/var/lib/envjupyter/i-1.json 600 root\n" +
		"/var/lib/envjupyter/config/a.py 644 root\n/var/lib/envjupyter/config/b.py 644 root\n"
	if out.Stdout != want {
		t.Errorf("modes:\n%s\nwant:\n%s", out.Stdout, want)
	}
	for _, f := range files {
		got, err := d.Run(ctx, id, []string{"cat", f.Path}, nil)
		if err != nil || got.Stdout != string(f.Content) {
			t.Errorf("%s holds %q (%v), want %q", f.Path, got.Stdout, err, f.Content)
		}
	}
	if err := d.cli.ContainerRemove(ctx, id, container.RemoveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	if err := d.WriteFiles(ctx, id, files[:1]); !errors.Is(err, ErrGone) {
		t.Fatalf("WriteFiles into a removed container: %v, want ErrGone", err)
	}
}
