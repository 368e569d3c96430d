// Package container runs commands in environment containers through the
// Docker Engine API. Every call has its own timeout.
package container

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/stdcopy"
)

// ErrGone means the container does not exist or is not running.
var ErrGone = errors.New("container is not running")

// callTimeout bounds one Docker API call.
const callTimeout = 10 * time.Second

// RunTimeout bounds a command run to completion when the caller set no
// shorter deadline: whatever runs in a container is the customer's, and may
// never end.
const RunTimeout = time.Minute

// Docker wraps the Docker client.
type Docker struct {
	cli *client.Client
}

// New connects to the Docker Engine named by the environment (DOCKER_HOST),
// negotiating the API version so an older engine works.
func New() (*Docker, error) {
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return nil, fmt.Errorf("connecting to docker: %w", err)
	}
	return &Docker{cli: cli}, nil
}

// Client returns the underlying client, for event watching.
func (d *Docker) Client() *client.Client { return d.cli }

// Info is what the sidecar needs to know of a running container.
type Info struct {
	ID      string
	PID     int // of the container's first process, on the host
	IP      netip.Addr
	Gateway net.IP
	MAC     net.HardwareAddr // on the network of IP
	// BridgePort is the host's side of the container's link to that
	// network (its veth on the bridge), by interface index; 0 if unknown.
	BridgePort int
	WorkingDir string
	ConfigPath string   // the container's own JUPYTER_CONFIG_PATH, if it sets one
	Path       []string // the directories of its PATH, where docker exec looks for a program
}

// defaultPath is the PATH Docker gives a container that sets none.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// running inspects a running container, or says ErrGone.
func (d *Docker) running(ctx context.Context, id string) (container.InspectResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	c, err := d.cli.ContainerInspect(ctx, id)
	if client.IsErrNotFound(err) {
		return c, fmt.Errorf("container %s: %w", id, ErrGone)
	}
	if err != nil {
		return c, fmt.Errorf("inspecting container %s: %w", id, err)
	}
	if c.State == nil || !c.State.Running || c.State.Paused {
		return c, fmt.Errorf("container %s: %w", id, ErrGone)
	}
	return c, nil
}

// Inspect returns a running container's address, or ErrGone.
func (d *Docker) Inspect(ctx context.Context, id string) (Info, error) {
	c, err := d.running(ctx, id)
	if err != nil {
		return Info{}, err
	}
	info := Info{ID: c.ID, PID: c.State.Pid}
	if c.Config != nil {
		info.WorkingDir = c.Config.WorkingDir
		info.Path = ExecPath(c.Config.Env)
		for _, kv := range c.Config.Env {
			if v, ok := strings.CutPrefix(kv, "JUPYTER_CONFIG_PATH="); ok {
				info.ConfigPath = v
			}
		}
	} else {
		info.Path = ExecPath(nil)
	}
	if c.NetworkSettings != nil {
		for _, n := range c.NetworkSettings.Networks {
			if ip, err := netip.ParseAddr(n.IPAddress); err == nil {
				info.IP, info.Gateway = ip, net.ParseIP(n.Gateway)
				info.MAC, _ = net.ParseMAC(n.MacAddress)
				break
			}
		}
	}
	if !info.IP.IsValid() {
		return Info{}, fmt.Errorf("container %s has no IPv4 address on a network", id)
	}
	info.BridgePort = BridgePort("/proc", info.PID, info.MAC)
	return info, nil
}

// BridgePort returns the host's interface index of the link of the
// container whose first process is pid, on its interface with that MAC:
// the peer index (iflink) of that interface, read from the container's own
// sysfs (the kernel's, which the container cannot change). 0 if unknown.
func BridgePort(procDir string, pid int, mac net.HardwareAddr) int {
	if pid <= 0 || len(mac) == 0 {
		return 0
	}
	dir := filepath.Join(procDir, strconv.Itoa(pid), "root", "sys", "class", "net")
	links, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	for _, l := range links {
		addr, err := os.ReadFile(filepath.Join(dir, l.Name(), "address"))
		if err != nil || !strings.EqualFold(strings.TrimSpace(string(addr)), mac.String()) {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, l.Name(), "iflink"))
		if err != nil {
			return 0
		}
		port, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || port <= 0 {
			return 0
		}
		return port
	}
	return 0
}

// ExecPath returns the directories where docker exec looks for a program
// in a container with that environment: its PATH, or Docker's default.
func ExecPath(env []string) []string {
	path := defaultPath
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			path = v
		}
	}
	var dirs []string
	for _, dir := range filepath.SplitList(path) {
		if filepath.IsAbs(dir) {
			dirs = append(dirs, dir)
		}
	}
	return dirs
}

// HasExecutable reports whether one of the directories (a container's
// Path) holds a file of that name with an execute bit, by asking Docker
// about the container's files: nothing runs in the container.
func (d *Docker) HasExecutable(ctx context.Context, id string, dirs []string, name string) (bool, error) {
	for _, dir := range dirs {
		st, err := d.stat(ctx, id, filepath.Join(dir, name))
		if client.IsErrNotFound(err) {
			continue
		}
		if err != nil {
			return false, fmt.Errorf("looking for %s in container %s: %w", name, id, err)
		}
		// A symbolic link counts: exec follows it, and Docker names its target.
		if st.LinkTarget != "" || (st.Mode.IsRegular() && st.Mode.Perm()&0o111 != 0) {
			return true, nil
		}
	}
	// Not found anywhere, or the container itself is gone (Docker says
	// "not found" for both).
	_, err := d.running(ctx, id)
	return false, err
}

func (d *Docker) stat(ctx context.Context, id, path string) (container.PathStat, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	return d.cli.ContainerStatPath(ctx, id, path)
}

// Output is the result of a command run to completion.
type Output struct {
	Stdout, Stderr string
	ExitCode       int
}

// Run runs argv in the container, with env added to its environment, and
// waits for it to finish, at most until ctx's deadline, or RunTimeout when
// ctx has none. A command still running then is killed, and the error wraps
// context.DeadlineExceeded.
func (d *Docker) Run(ctx context.Context, id string, argv, env []string) (Output, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, RunTimeout)
		defer cancel()
	}
	exec, err := d.cli.ContainerExecCreate(ctx, id, container.ExecOptions{Cmd: argv, Env: env, AttachStdout: true, AttachStderr: true})
	if err != nil {
		return Output{}, d.execError(ctx, id, argv, err)
	}
	att, err := d.cli.ContainerExecAttach(ctx, exec.ID, container.ExecAttachOptions{})
	if err != nil {
		d.kill(exec.ID)
		return Output{}, fmt.Errorf("attaching to %s in %s: %w", argv[0], id, err)
	}
	defer att.Close()
	var stdout, stderr bytes.Buffer
	done := make(chan error, 1)
	go func() {
		_, err := stdcopy.StdCopy(&limited{&stdout, 64 << 10}, &limited{&stderr, 64 << 10}, att.Reader)
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil && !errors.Is(err, io.EOF) {
			return Output{}, fmt.Errorf("reading output of %s in %s: %w", argv[0], id, err)
		}
	case <-ctx.Done():
		d.kill(exec.ID)
		return Output{}, fmt.Errorf("running %s in %s: %w", argv[0], id, ctx.Err())
	}
	ins, err := d.cli.ContainerExecInspect(ctx, exec.ID)
	if err != nil {
		return Output{}, fmt.Errorf("inspecting %s in %s: %w", argv[0], id, err)
	}
	return Output{Stdout: stdout.String(), Stderr: stderr.String(), ExitCode: ins.ExitCode}, nil
}

// kill ends a command that overran its deadline. Docker has no call to
// stop an exec, so its process (on the host, where the sidecar runs) gets
// SIGKILL; its output stream then ends.
func (d *Docker) kill(execID string) {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	ins, err := d.cli.ContainerExecInspect(ctx, execID)
	if err == nil && ins.Running && ins.Pid > 0 {
		_ = syscall.Kill(ins.Pid, syscall.SIGKILL)
	}
}

// Launch starts argv in the container in the background and returns its
// process id on the host. env is passed through Docker, never on a command line.
func (d *Docker) Launch(ctx context.Context, id string, argv, env []string, workdir string) (pid int, execID string, err error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	exec, err := d.cli.ContainerExecCreate(ctx, id, container.ExecOptions{Cmd: argv, Env: env, WorkingDir: workdir})
	if err != nil {
		return 0, "", d.execError(ctx, id, argv, err)
	}
	if err := d.cli.ContainerExecStart(ctx, exec.ID, container.ExecStartOptions{Detach: true}); err != nil {
		return 0, "", fmt.Errorf("starting %s in %s: %w", argv[0], id, err)
	}
	ins, err := d.cli.ContainerExecInspect(ctx, exec.ID)
	if err != nil {
		return 0, "", fmt.Errorf("inspecting %s in %s: %w", argv[0], id, err)
	}
	return ins.Pid, exec.ID, nil
}

// Exited reports whether a launched command has ended, and its exit code.
func (d *Docker) Exited(ctx context.Context, execID string) (bool, int, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	ins, err := d.cli.ContainerExecInspect(ctx, execID)
	if err != nil {
		return false, 0, fmt.Errorf("inspecting exec %s: %w", execID, err)
	}
	return !ins.Running, ins.ExitCode, nil
}

func (d *Docker) execError(ctx context.Context, id string, argv []string, err error) error {
	if client.IsErrNotFound(err) {
		return fmt.Errorf("container %s: %w", id, ErrGone)
	}
	if _, ierr := d.Inspect(ctx, id); errors.Is(ierr, ErrGone) {
		return ierr
	}
	return fmt.Errorf("creating %s in %s: %w", argv[0], id, err)
}

// File is one file to put into a container: its absolute path, content and
// mode. Its directory is created with mode 0700 if missing.
type File struct {
	Path    string
	Content []byte
	Mode    int64
}

// WriteFiles puts files into the container in one copy (Docker unpacks each
// copy in a helper process of its own, tens of milliseconds apiece), owned
// by root. The contents never appear on a command line.
func (d *Docker) WriteFiles(ctx context.Context, id string, files []File) error {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	now := time.Now()
	dirs := map[string]bool{}
	for _, f := range files {
		rel := strings.TrimPrefix(f.Path, "/")
		if dir := filepath.Dir(rel) + "/"; !dirs[dir] {
			dirs[dir] = true
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir, Mode: 0o700, ModTime: now}); err != nil {
				return err
			}
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: rel, Mode: f.Mode, Size: int64(len(f.Content)), ModTime: now}); err != nil {
			return err
		}
		if _, err := tw.Write(f.Content); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := d.cli.CopyToContainer(ctx, id, "/", &buf, container.CopyToContainerOptions{}); err != nil {
		if client.IsErrNotFound(err) {
			return fmt.Errorf("container %s: %w", id, ErrGone)
		}
		return fmt.Errorf("writing %d files in %s: %w", len(files), id, err)
	}
	return nil
}

// limited keeps at most n bytes and discards the rest.
type limited struct {
	buf *bytes.Buffer
	n   int
}

func (l *limited) Write(p []byte) (int, error) {
	if room := l.n - l.buf.Len(); room > 0 {
		l.buf.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}
