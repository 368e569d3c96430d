package jupyter_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	dockercontainer "github.com/docker/docker/api/types/container"

	"github.com/envjupyter/envjupyter/sidecar/container"
	"github.com/envjupyter/envjupyter/sidecar/jupyter"
)

// labImage is the JupyterLab 4 environment image infra/image builds
// (infra/devstack.LabImage).
const labImage = "envjupyter/env-jupyter:trixie-2"

// labContainer runs a container of the JupyterLab 4 image, without a
// network, with the launch files in it, until the test ends; without dockerd
// or the image the test skips on a laptop and fails in CI.
func labContainer(t *testing.T) (*container.Docker, string) {
	t.Helper()
	fail := t.Skip
	if os.Getenv("CI") != "" {
		fail = t.Fatal
	}
	if testing.Short() {
		t.Skip("needs dockerd")
	}
	d, err := container.New()
	if err != nil {
		fail(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, _, err := d.Client().ImageInspectWithRaw(ctx, labImage); err != nil {
		fail("dockerd or the JupyterLab image is not available:", err)
	}
	c, err := d.Client().ContainerCreate(ctx, &dockercontainer.Config{Image: labImage, Cmd: []string{"sleep", "infinity"}},
		&dockercontainer.HostConfig{NetworkMode: "none"}, nil, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = d.Client().ContainerRemove(context.Background(), c.ID, dockercontainer.RemoveOptions{Force: true})
	})
	if err := d.Client().ContainerStart(ctx, c.ID, dockercontainer.StartOptions{}); err != nil {
		t.Fatal(err)
	}
	// A node that leaves a mark: JupyterLab runs node (yarn's config)
	// while it is imported, unless the launcher spares it.
	files := []container.File{{Path: "/opt/marknode/node", Mode: 0o755,
		Content: []byte("#!/bin/sh\ntouch /tmp/node-ran\nexec /usr/bin/node \"$@\"\n")}}
	if err := d.WriteFiles(ctx, c.ID, files); err != nil {
		t.Fatal(err)
	}
	return d, c.ID
}

// launcher is the launcher's command, as the sidecar runs it.
var launcher = jupyter.LaunchCommand(jupyter.Flavour{Name: "lab", Executable: "jupyter-lab", App: "ServerApp", Launcher: "python3"})

// run runs argv in the container with node's marker first on PATH and says
// whether node ran. The sidecar's config files are removed first: each
// launch through the launcher must write them.
func run(t *testing.T, d *container.Docker, id string, path string, argv ...string) (container.Output, bool) {
	t.Helper()
	ctx := context.Background()
	if _, err := d.Run(ctx, id, []string{"rm", "-rf", "/tmp/node-ran", jupyter.ExtraConfigDir}, nil); err != nil {
		t.Fatal(err)
	}
	out, err := d.Run(ctx, id, argv, []string{"PATH=" + path})
	if err != nil {
		t.Fatalf("%q: %v", argv, err)
	}
	mark, err := d.Run(ctx, id, []string{"test", "-e", "/tmp/node-ran"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return out, mark.ExitCode == 0
}

// The launcher runs the image's own JupyterLab (its version answers) without
// the node process that `jupyter-lab` runs at every start, and the plain
// `jupyter-lab` does run it: the check can tell the two apart.
func TestLabLauncherSparesYarnConfig(t *testing.T) {
	d, id := labContainer(t)
	const path = "/opt/marknode:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	plain, nodeRan := run(t, d, id, path, "jupyter-lab", "--version")
	if plain.ExitCode != 0 || !strings.Contains(plain.Stdout, "4.") {
		t.Fatalf("jupyter-lab --version: %+v", plain)
	}
	if !nodeRan {
		t.Fatal("the plain jupyter-lab did not run node: this test no longer shows what the launcher spares")
	}
	launched, nodeRan := run(t, d, id, path, append(launcher, "--version")...)
	if launched.ExitCode != 0 || launched.Stdout != plain.Stdout {
		t.Fatalf("through the launcher: %+v, want the same answer as jupyter-lab: %q", launched, plain.Stdout)
	}
	if nodeRan {
		t.Error("node ran under the launcher")
	}
	wroteConfigFiles(t, d, id)
}

// wroteConfigFiles checks that the launcher left the sidecar's config files,
// whole, as the sidecar would have written them.
func wroteConfigFiles(t *testing.T, d *container.Docker, id string) {
	t.Helper()
	for path, content := range jupyter.ConfigFiles() {
		got, err := d.Run(context.Background(), id, []string{"cat", path}, nil)
		if err != nil || got.ExitCode != 0 || got.Stdout != string(content) {
			t.Errorf("%s after the launcher: %q (%v), want the sidecar's file", path, got.Stdout, err)
		}
		mode, _ := d.Run(context.Background(), id, []string{"stat", "-c", "%a", path}, nil)
		if mode.Stdout != "644\n" {
			t.Errorf("%s has mode %q, want 644", path, mode.Stdout)
		}
	}
}

// A jupyter-lab that is not this interpreter's standard script (a wrapper
// of the customer's, another environment's JupyterLab) is exec'd as it is,
// with the launch's options; none on PATH is a clear failure.
func TestLabLauncherExecsAnyOtherJupyterLab(t *testing.T) {
	d, id := labContainer(t)
	ctx := context.Background()
	wrapper := []container.File{
		{Path: "/opt/wrapper/jupyter-lab", Mode: 0o755, Content: []byte("#!/bin/sh\necho \"customer's wrapper: $*\"\n")},
		{Path: "/opt/envpython/jupyter-lab", Mode: 0o755,
			Content: []byte("#!/usr/bin/env python3\nimport sys\nprint('env script', sys.argv[1:])\n# from jupyterlab.labapp import main\n")},
	}
	if err := d.WriteFiles(ctx, id, wrapper); err != nil {
		t.Fatal(err)
	}
	out, _ := run(t, d, id, "/opt/wrapper:/usr/bin:/bin", append(launcher, "--port=1", "--no-browser")...)
	if out.ExitCode != 0 || out.Stdout != "customer's wrapper: --port=1 --no-browser\n" {
		t.Errorf("with a wrapper first on PATH: %+v", out)
	}
	wroteConfigFiles(t, d, id) // the customer's JupyterLab reads them too
	out, _ = run(t, d, id, "/opt/envpython:/usr/bin:/bin", append(launcher, "--port=1")...)
	if out.ExitCode != 0 || out.Stdout != "env script ['--port=1']\n" {
		t.Errorf("with an env-python script first on PATH: %+v", out)
	}
	out, _ = run(t, d, id, "/opt/none", append([]string{"/usr/bin/python3"}, launcher[1:]...)...)
	if out.ExitCode != 127 || !strings.Contains(out.Stderr, "no jupyter-lab on PATH") {
		t.Errorf("with no jupyter-lab: %+v", out)
	}
}
