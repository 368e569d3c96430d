package devstack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
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
	"golang.org/x/sys/unix"

	"github.com/envjupyter/envjupyter/functions/store"
	"github.com/envjupyter/envjupyter/shared/awsconf"
)

// A second Docker host. Host A is this machine's own dockerd, reached on the
// Docker bridge; host B is a network namespace the stack makes, with a
// dockerd of its own (own data root, exec root and bridge) and a sidecar of
// its own, linked to the root namespace by a veth pair: the proxy and the
// control plane reach it at its address on that link, as they would reach
// another machine. Its sidecar reaches kumo, Redis and the trace receiver
// through relays on B's loopback (startRelays).

// HostB is the stack's second Docker host.
type HostB struct {
	ID        string
	Docker    *client.Client
	Advertise string // B's side of the veth link: where the proxy reaches B's instances
	RootAddr  string // the root namespace's side: the proxy's source address as B sees it

	s         *Stack
	netns     string
	rootVeth  string
	dir       string // data root parent: persists between runs, so B's images do
	execRoot  string
	dockerd   *process
	relays    []io.Closer
	sidecarMu sync.Mutex
	sidecar   *process
}

// hostBNames are the resources of host B, named after the stack so that
// stacks side by side (make up, the tests) each have their own.
func hostBNames(o Options) (netns, rootVeth, dir, execRoot string) {
	short := o.Name
	if len(short) > 11 {
		short = short[:11] // interface names have at most 15 characters
	}
	return o.Name + "-hostb", short + "-vb", filepath.Join("/var/lib", "envjupyter-"+o.Name+"-hostb"),
		filepath.Join("/run", "envjupyter-"+o.Name+"-hostb")
}

// HostB returns the second host, or nil when the stack runs one.
func (s *Stack) HostB() *HostB { return s.hostB }

// HostIDs lists the stack's hosts: A, then B when it runs.
func (s *Stack) HostIDs() []string {
	if s.hostB == nil {
		return []string{s.Opts.HostID}
	}
	return []string{s.Opts.HostID, s.hostB.ID}
}

// startHostB makes host B: the namespace and its link, its dockerd with the
// environment images, the relays, and its sidecar.
func (s *Stack) startHostB(ctx context.Context) error {
	o := s.Opts
	link := o.HostBLink
	if !link.IsValid() || link.Bits() != 30 || !link.Addr().Is4() {
		return fmt.Errorf("host B needs a /30 IPv4 link (HostBLink), have %v", link)
	}
	root := link.Masked().Addr().Next()
	b := &HostB{ID: o.HostBID, Advertise: root.Next().String(), RootAddr: root.String(), s: s}
	b.netns, b.rootVeth, b.dir, b.execRoot = hostBNames(o)
	if b.ID == "" {
		b.ID = o.HostID + "-b"
	}
	s.hostB = b
	removeHostB(o)
	nsVeth := b.rootVeth + "n"
	for _, args := range [][]string{
		{"netns", "add", b.netns},
		{"link", "add", b.rootVeth, "type", "veth", "peer", "name", nsVeth, "netns", b.netns},
		{"addr", "add", b.RootAddr + "/30", "dev", b.rootVeth},
		{"link", "set", b.rootVeth, "up"},
		{"-n", b.netns, "addr", "add", b.Advertise + "/30", "dev", nsVeth},
		{"-n", b.netns, "link", "set", nsVeth, "up"},
		{"-n", b.netns, "link", "set", "lo", "up"},
	} {
		if out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, out)
		}
	}
	if err := b.startDockerd(ctx); err != nil {
		return err
	}
	if err := b.loadImages(ctx); err != nil {
		return err
	}
	b.removeContainers()
	if err := b.startRelays(); err != nil {
		return err
	}
	s.Opts.Log.Info("starting host B's sidecar", "host_id", b.ID, "advertise", b.Advertise)
	return b.StartSidecar()
}

// startDockerd runs dockerd inside the namespace. nsenter enters only the
// network namespace: dockerd needs the host's cgroup and /sys mounts, which
// `ip netns exec` would replace.
func (b *HostB) startDockerd(ctx context.Context) error {
	for _, d := range []string{b.dir, b.execRoot} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	sock := filepath.Join(b.execRoot, "docker.sock")
	p, err := b.s.spawn(b.s.LogDir(), "dockerd-hostb", nil, "nsenter", "--net=/run/netns/"+b.netns, "dockerd",
		"--storage-driver=overlay2", "--data-root", filepath.Join(b.dir, "docker"), "--exec-root", filepath.Join(b.execRoot, "exec"),
		"--pidfile", filepath.Join(b.execRoot, "docker.pid"), "--host", "unix://"+sock,
		"--cgroup-parent", "/envjupyter-"+b.s.Opts.Name+"-hostb")
	if err != nil {
		return err
	}
	b.dockerd = p
	if b.Docker, err = client.NewClientWithOpts(client.WithHost("unix://"+sock), client.WithAPIVersionNegotiation()); err != nil {
		return err
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := b.Docker.Ping(pctx)
		cancel()
		if err == nil {
			return nil
		}
		if p.exited() || time.Now().After(deadline) {
			return fmt.Errorf("host B's dockerd does not answer (see dockerd-hostb.log): %w", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// loadImages copies the default environment image from host A's dockerd into B's,
// unless B has it already (same image id): B's data root persists, so a
// machine pays the copy (about two minutes for the JupyterLab image) once.
func (b *HostB) loadImages(ctx context.Context) error {
	for _, ref := range []string{EnvImage} {
		want, err := b.s.Docker.ImageInspect(ctx, ref)
		if err != nil {
			return fmt.Errorf("host A has no image %s (make prepare builds it): %w", ref, err)
		}
		if have, err := b.Docker.ImageInspect(ctx, ref); err == nil && have.ID == want.ID {
			continue
		}
		b.s.Opts.Log.Warn("copying an environment image into host B (once per machine)", "image", ref)
		cctx, cancel := context.WithTimeout(ctx, 15*time.Minute)
		err = copyImage(cctx, b.s.Docker, b.Docker, ref)
		cancel()
		if err != nil {
			return fmt.Errorf("copying %s into host B: %w", ref, err)
		}
	}
	return nil
}

func copyImage(ctx context.Context, from, to *client.Client, ref string) error {
	rc, err := from.ImageSave(ctx, []string{ref})
	if err != nil {
		return err
	}
	defer rc.Close()
	out, err := to.ImageLoad(ctx, rc, client.ImageLoadWithQuiet(true))
	if err != nil {
		return err
	}
	defer out.Body.Close()
	_, err = io.Copy(io.Discard, out.Body)
	return err
}

// startRelays listens inside B, on its loopback, at the ports kumo, Redis
// and the trace receiver have on the root namespace's loopback, and relays
// there: B's sidecar has the same addresses as A's (and what Redis tells
// of its nodes holds in B too), and nothing of the root namespace listens
// beyond its loopback.
func (b *HostB) startRelays() error {
	for _, port := range b.s.relayedPorts() {
		addr := "127.0.0.1:" + strconv.Itoa(port)
		var ln net.Listener
		err := b.inNetns(func() (err error) {
			ln, err = net.Listen("tcp", addr)
			return err
		})
		if err != nil {
			return fmt.Errorf("relay of %s into host B: %w", addr, err)
		}
		b.relays = append(b.relays, ln)
		go relayTCP(ln, addr)
	}
	traces := b.s.traces.Addr()
	var udp net.PacketConn
	err := b.inNetns(func() (err error) {
		udp, err = net.ListenPacket("udp", traces)
		return err
	})
	if err != nil {
		return fmt.Errorf("relay of the trace receiver into host B: %w", err)
	}
	b.relays = append(b.relays, udp)
	go relayUDP(udp, traces)
	return nil
}

// relayedPorts are the TCP ports of the root namespace's loopback that
// host B's sidecar reaches: kumo's, the Redis nodes' and the sentinels'
// (the sentinels announce the nodes at 127.0.0.1, which the relays make
// true in B as well).
func (s *Stack) relayedPorts() []int {
	ports := append([]int{s.Opts.KumoPort}, s.redisNodePorts()...)
	for i := range redisSentinels {
		ports = append(ports, s.Opts.RedisPort+sentinelPortGap+i)
	}
	return ports
}

func relayTCP(ln net.Listener, to string) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return // closed
		}
		go func() {
			defer c.Close()
			up, err := net.DialTimeout("tcp", to, 5*time.Second)
			if err != nil {
				return
			}
			defer up.Close()
			done := make(chan struct{})
			go func() {
				_, _ = io.Copy(up, c)
				_ = up.(*net.TCPConn).CloseWrite()
				close(done)
			}()
			_, _ = io.Copy(c, up)
			_ = c.(*net.TCPConn).CloseWrite()
			<-done
		}()
	}
}

// relayUDP forwards each datagram (an X-Ray segment: nothing answers).
func relayUDP(in net.PacketConn, to string) {
	out, err := net.Dial("udp", to)
	if err != nil {
		return
	}
	defer out.Close()
	buf := make([]byte, 64<<10)
	for {
		n, _, err := in.ReadFrom(buf)
		if err != nil {
			return // closed
		}
		_, _ = out.Write(buf[:n])
	}
}

// StatusURL is B's sidecar status server, on loopback inside B: reach it
// with Client.
func (b *HostB) StatusURL() string {
	return "http://127.0.0.1:" + strconv.Itoa(b.s.Opts.StatusPort)
}

// Client is an HTTP client whose connections start inside B's namespace.
func (b *HostB) Client() *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: b.DialContext}}
}

// DialContext dials from inside B's network namespace.
func (b *HostB) DialContext(ctx context.Context, network, addr string) (c net.Conn, err error) {
	err = b.inNetns(func() (err error) {
		var d net.Dialer
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	if err != nil && c != nil {
		c.Close() // dialled, but the thread could not leave B
		c = nil
	}
	return c, err
}

// inNetns runs f on a thread moved into B's network namespace: the sockets
// f makes are B's, and stay B's.
func (b *HostB) inNetns(f func() error) error {
	runtime.LockOSThread()
	self, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer self.Close()
	target, err := os.Open("/run/netns/" + b.netns)
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("entering host B's namespace: %w", err)
	}
	ferr := f()
	if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
		// The thread stays locked, so it ends with this goroutine rather
		// than run other goroutines in B's namespace.
		return fmt.Errorf("leaving host B's namespace: %w", err)
	}
	runtime.UnlockOSThread()
	return ferr
}

// StartSidecar starts (or restarts) B's sidecar inside its namespace, with
// its own host id, state and call log, and the proxy's address on the link
// as the only source its forwards accept.
func (b *HostB) StartSidecar() error {
	b.sidecarMu.Lock()
	defer b.sidecarMu.Unlock()
	s := b.s
	env := append(s.processEnv(),
		"DOCKER_HOST=unix://"+filepath.Join(b.execRoot, "docker.sock"),
		"ENVJUPYTER_HOST_ID="+b.ID,
		"ENVJUPYTER_ADVERTISE_ADDR="+b.Advertise,
		"ENVJUPYTER_CHAIN_PREFIX="+s.Opts.ChainPrefix,
		"ENVJUPYTER_STATUS_ADDR=127.0.0.1:"+strconv.Itoa(s.Opts.StatusPort),
		"ENVJUPYTER_SSM_PREFIX=/envjupyter",
		"ENVJUPYTER_STATE_DIR="+filepath.Join(s.Opts.WorkDir, "sidecar-state-b"),
		awsconf.CallLogEnv+"="+s.callLog("sidecar-"+b.ID),
	)
	env = append(append(env, s.sidecarRedisEnv()...), s.Opts.SidecarEnv...)
	env = append(env, "ENVJUPYTER_PROXY_CIDRS="+b.RootAddr+"/32")
	p, err := s.spawn(s.LogDir(), "sidecar-hostb", env, "nsenter", "--net=/run/netns/"+b.netns, filepath.Join(s.Opts.WorkDir, "bin", "sidecar"))
	if err != nil {
		return err
	}
	b.sidecar = p
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		c, err := b.DialContext(ctx, "tcp", "127.0.0.1:"+strconv.Itoa(s.Opts.StatusPort))
		cancel()
		if err == nil {
			c.Close()
			return s.waitHeard(b.ID, p)
		}
		if p.exited() {
			return errors.New("host B's sidecar exited before listening (see sidecar-hostb.log)")
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("host B's sidecar does not listen: %w", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitHeard waits until the control plane has heard the host's sidecar p
// (its heartbeat), if the host's record said it was silent: starts there
// are refused (host_unavailable) until then, and a test that restarts a
// sidecar starts instances right after.
func (s *Stack) waitHeard(hostID string, p *process) error {
	silence := 300 * time.Second // the template's default
	if v, err := strconv.Atoi(s.Opts.Params["HostSilenceSeconds"]); err == nil {
		silence = time.Duration(v) * time.Second
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		heard, err := s.Store.HostLastHeard(ctx, hostID)
		cancel()
		if errors.Is(err, store.ErrNotFound) || (err == nil && time.Since(heard) < silence/2) {
			return nil
		}
		if p.exited() {
			return fmt.Errorf("the sidecar of %s exited (see its log)", hostID)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the control plane has not heard from %s since %s (err %v)", hostID, heard, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// KillSidecar kills B's sidecar with SIGKILL: B falls silent, as a host
// that died would, while its containers keep running.
func (b *HostB) KillSidecar() {
	b.sidecarMu.Lock()
	defer b.sidecarMu.Unlock()
	if b.sidecar != nil {
		b.sidecar.kill()
		b.sidecar = nil
	}
}

// removeContainers removes the stack's containers on B.
func (b *HostB) removeContainers() {
	if b.Docker != nil {
		removeStackContainers(b.Docker, b.s.Opts.Name)
	}
}

// removeStackContainers removes the containers labelled as the stack's
// (and with them their Jupyters) from a host's dockerd.
func removeStackContainers(docker *client.Client, stack string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	list, err := docker.ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(filters.Arg("label", "envjupyter.stack="+stack))})
	if err == nil {
		for _, c := range list {
			_ = docker.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true})
		}
	}
}

// stop ends B: its containers, sidecar, dockerd, relays, link and namespace.
func (b *HostB) stop() {
	b.removeContainers()
	b.sidecarMu.Lock()
	if b.sidecar != nil {
		b.sidecar.stop(10 * time.Second)
		b.sidecar = nil
	}
	b.sidecarMu.Unlock()
	if b.dockerd != nil {
		b.dockerd.stop(30 * time.Second)
	}
	for _, r := range b.relays {
		_ = r.Close()
	}
	removeHostB(b.s.Opts)
}

// removeHostB removes what a run of the stack left of host B (it may have
// been killed): its dockerd, whose pid file is in the exec root, the link
// and the namespace. B's data root stays, with its images.
func removeHostB(o Options) {
	netns, rootVeth, _, execRoot := hostBNames(o)
	if b, err := os.ReadFile(filepath.Join(execRoot, "docker.pid")); err == nil {
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 1 && isDockerd(pid) {
			_ = syscall.Kill(pid, syscall.SIGTERM)
			for i := 0; i < 150 && syscall.Kill(pid, 0) == nil; i++ {
				time.Sleep(100 * time.Millisecond)
			}
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	// Deleting one end of a veth pair deletes both, even when the other
	// end's namespace outlives its name (a process left in it).
	_ = exec.Command("ip", "link", "del", rootVeth).Run()
	_ = exec.Command("ip", "netns", "del", netns).Run()
}

// isDockerd says whether pid is a dockerd (a pid file may outlive its
// process, and its number be reused).
func isDockerd(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
	return err == nil && strings.TrimSpace(string(b)) == "dockerd"
}

// DemoEnvironmentB is the demo environment on host B (Hosts: 2).
const DemoEnvironmentB = "env-demo-b"

// demoEnvironments are the demo customer's environments: one per host.
func (s *Stack) demoEnvironments() []string {
	if s.Opts.Hosts > 1 {
		return []string{DemoEnvironment, DemoEnvironmentB}
	}
	return []string{DemoEnvironment}
}

// dockerOf returns the Docker client of the host.
func (s *Stack) dockerOf(hostID string) (*client.Client, error) {
	switch {
	case hostID == s.Opts.HostID:
		return s.Docker, nil
	case s.hostB != nil && hostID == s.hostB.ID:
		return s.hostB.Docker, nil
	}
	return nil, fmt.Errorf("the stack has no host %q", hostID)
}

// hostBCallLogs is the call log of B's sidecar, if B runs.
func (s *Stack) hostBCallLogs() []CallLog {
	if s.hostB == nil {
		return nil
	}
	return []CallLog{{Path: s.callLog("sidecar-" + s.hostB.ID), PolicyID: "SidecarPolicy", Tags: map[string]string{HostIDTag: s.hostB.ID}}}
}
