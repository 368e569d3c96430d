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

// A command that never ends is killed at its deadline: the call returns a
// deadline error and nothing of the command is left running.
func TestRunKillsAtDeadline(t *testing.T) {
	d := dockerOrSkip(t)
	ctx := context.Background()
	c, err := d.cli.ContainerCreate(ctx, &container.Config{Image: testImage, Cmd: []string{"sleep", "infinity"}}, nil, nil, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.cli.ContainerRemove(context.Background(), c.ID, container.RemoveOptions{Force: true}) })
	if err := d.cli.ContainerStart(ctx, c.ID, container.StartOptions{}); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_, err = d.Run(short, c.ID, []string{"python3", "-c", "import time\nwhile True: time.sleep(1)"}, nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Run of a command that never ends: %v, want a deadline error", err)
	}
	out, err := d.Run(ctx, c.ID, []string{"ps", "-eo", "args"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.Stdout, "time.sleep") {
		t.Fatalf("the command still runs after its deadline:\n%s", out.Stdout)
	}
}
