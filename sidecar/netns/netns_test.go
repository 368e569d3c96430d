package netns

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// requireRoot skips a test that enters network namespaces when it cannot,
// except in CI, which runs as root and must never skip it (as the
// firewall's tests do).
func requireRoot(t *testing.T) {
	t.Helper()
	skip := t.Skipf
	if os.Getenv("CI") != "" {
		skip = t.Fatalf
	}
	if os.Geteuid() != 0 {
		skip("needs root: entering another process's network namespace (setns) takes CAP_SYS_ADMIN")
	}
	for _, tool := range []string{"unshare", "ip"} {
		if _, err := exec.LookPath(tool); err != nil {
			skip("needs %s to make a network namespace: %v", tool, err)
		}
	}
}

// namespace starts a process in a network namespace of its own, with its
// loopback up (as Docker brings a container's up), and returns its PID.
func namespace(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("unshare", "--net", "sh", "-c", "ip link set lo up && echo ready && exec sleep 600")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	ready := make(chan error, 1)
	go func() {
		line, err := bufio.NewReader(out).ReadString('\n')
		if err == nil && line != "ready\n" {
			err = fmt.Errorf("said %q", line)
		}
		ready <- err
	}()
	select {
	case err := <-ready:
		if err != nil {
			t.Fatalf("making a network namespace: %v (%s)", err, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("the namespace's process did not come up: %s", stderr.String())
	}
	if netnsOf(t, strconv.Itoa(cmd.Process.Pid)) == netnsOf(t, "self") {
		t.Fatal("the namespace's process is in this process's network namespace")
	}
	return cmd.Process.Pid
}

// netnsOf names the network namespace of a /proc entry ("self",
// "thread-self", a PID): net:[inode].
func netnsOf(t *testing.T, proc string) string {
	link, err := os.Readlink("/proc/" + proc + "/ns/net")
	if err != nil {
		t.Error(err)
	}
	return link
}

// inNamespace runs f on a thread inside pid's network namespace. It is the
// tests' own way in, written apart from the package's, so that the tests do
// not take the package's word for where a socket is.
func inNamespace(pid int, f func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		self, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			done <- err
			runtime.UnlockOSThread()
			return
		}
		defer self.Close()
		target, err := os.Open("/proc/" + strconv.Itoa(pid) + "/ns/net")
		if err != nil {
			done <- err
			runtime.UnlockOSThread()
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			done <- err
			runtime.UnlockOSThread()
			return
		}
		ferr := f()
		if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
			done <- err
			select {} // never unlocked, never ended (see socketIn)
		}
		runtime.UnlockOSThread()
		done <- ferr
	}()
	return <-done
}

// server answers every connection with its name, and counts them.
type server struct {
	net.Listener
	accepted atomic.Int64
}

func serve(t *testing.T, l net.Listener, name string) *server {
	s := &server{Listener: l}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			s.accepted.Add(1)
			_, _ = io.WriteString(c, name)
			c.Close()
		}
	}()
	return s
}

func (s *server) port() int { return s.Addr().(*net.TCPAddr).Port }

// listenInside listens on 127.0.0.1:port in pid's network namespace.
func listenInside(t *testing.T, pid, port int) net.Listener {
	t.Helper()
	var l net.Listener
	err := inNamespace(pid, func() (err error) {
		l, err = net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		return err
	})
	if err != nil {
		t.Fatalf("listening in the namespace: %v", err)
	}
	return l
}

func greeting(t *testing.T, c net.Conn) string {
	t.Helper()
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("reading the greeting: %v", err)
	}
	return string(b)
}

// A dial reaches the listener on the namespace's loopback, not the one on
// this host's loopback at the same port; and a port only the host listens
// on is refused: the connection is made inside.
func TestDialReachesTheNamespacesLoopback(t *testing.T) {
	requireRoot(t)
	pid := namespace(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	host := serve(t, l, "host")
	inside := serve(t, listenInside(t, pid, host.port()), "inside")
	l2, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hostOnly := serve(t, l2, "host only")

	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	c, err := Dialer{}.Dial(ctx, pid, host.port())
	if err != nil {
		t.Fatalf("dialing in the namespace: %v", err)
	}
	if got := c.RemoteAddr().String(); got != "127.0.0.1:"+strconv.Itoa(host.port()) {
		t.Errorf("connected to %s, want the namespace's 127.0.0.1:%d", got, host.port())
	}
	if got := greeting(t, c); got != "inside" {
		t.Fatalf("the dial reached %q, want the listener inside the namespace", got)
	}
	if c, err := (Dialer{}).Dial(ctx, pid, hostOnly.port()); err == nil {
		t.Fatalf("a port only the host listens on answered %q; want it refused in the namespace", greeting(t, c))
	} else if !errors.Is(err, unix.ECONNREFUSED) {
		t.Fatalf("dialing a port nothing in the namespace listens on: %v, want connection refused", err)
	}
	if n := host.accepted.Load() + hostOnly.accepted.Load(); n != 0 {
		t.Fatalf("the host's listeners accepted %d connections, want none", n)
	}
	if inside.accepted.Load() != 1 {
		t.Fatalf("the namespace's listener accepted %d connections, want 1", inside.accepted.Load())
	}
}

// However many dials run at once, every thread of the process is back in
// the process's own namespace after them: each dialing goroutine looks at
// its thread after each dial, and goroutines that keep making the runtime
// pick threads (a locked goroutine that sleeps hands its P to another
// thread) look at the threads in between.
func TestDialLeavesEveryThreadInItsOwnNamespace(t *testing.T) {
	requireRoot(t)
	pid := namespace(t)
	inside := serve(t, listenInside(t, pid, 0), "inside")
	own := netnsOf(t, "self")
	target := netnsOf(t, strconv.Itoa(pid))

	var wrong atomic.Int64
	look := func() {
		if got := netnsOf(t, "thread-self"); got != own {
			wrong.Add(1)
		}
	}
	stop := make(chan struct{})
	var lookers sync.WaitGroup
	for range 8 {
		lookers.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				runtime.LockOSThread()
				look()
				time.Sleep(time.Millisecond)
				look()
				runtime.UnlockOSThread()
			}
		})
	}
	const dialers, dials = 16, 40
	var wg sync.WaitGroup
	var failed atomic.Int64
	for range dialers {
		wg.Go(func() {
			for range dials {
				look()
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				c, err := Dialer{}.Dial(ctx, pid, inside.port())
				cancel()
				look()
				if err != nil {
					failed.Add(1)
					continue
				}
				b, _ := io.ReadAll(c)
				c.Close()
				if string(b) != "inside" {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	lookers.Wait()
	if n := failed.Load(); n != 0 {
		t.Fatalf("%d of %d dials did not reach the namespace", n, dialers*dials)
	}
	if n := wrong.Load(); n != 0 {
		t.Fatalf("%d looks found a thread in another network namespace than the process's %s (the target is %s)", n, own, target)
	}
	if got := netnsOf(t, "thread-self"); got != own {
		t.Fatalf("the test's thread is in %s after the dials, want %s", got, own)
	}
}

// A thread that could not return from the container's namespace runs
// nothing else, ever: the dial fails, and no goroutine finds itself on a
// thread in that namespace afterwards. (Had it been unlocked, the runtime
// would soon hand it to the goroutines below: they keep asking for threads.)
func TestThreadThatCannotReturnRunsNothingElse(t *testing.T) {
	requireRoot(t)
	pid := namespace(t)
	inside := serve(t, listenInside(t, pid, 0), "inside")
	target := netnsOf(t, strconv.Itoa(pid))

	var calls atomic.Int64
	setns = func(fd, nstype int) error {
		if calls.Add(1) == 2 { // the way back
			return unix.ENOMEM
		}
		return unix.Setns(fd, nstype)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	_, err := Dialer{}.Dial(ctx, pid, inside.port())
	setns = unix.Setns
	if err == nil || !strings.Contains(err.Error(), "returning to this thread's own network namespace") {
		t.Fatalf("a dial whose thread could not return: %v, want the error of the way back", err)
	}

	var found atomic.Int64
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			for range 50 {
				runtime.LockOSThread()
				if netnsOf(t, "thread-self") == target {
					found.Add(1)
				}
				time.Sleep(time.Millisecond)
				runtime.UnlockOSThread()
			}
		})
	}
	wg.Wait()
	if n := found.Load(); n != 0 {
		t.Fatalf("goroutines ran %d times on a thread left in the container's namespace", n)
	}
	// Dials go on working.
	c, err := Dialer{}.Dial(ctx, pid, inside.port())
	if err != nil {
		t.Fatal(err)
	}
	if got := greeting(t, c); got != "inside" {
		t.Fatalf("a later dial reached %q", got)
	}
}

// A connect that gets no answer (the listener's accept queue is full, so
// its SYNs are dropped) ends at the context's deadline, at its
// cancellation, or after dialTimeout when the context has neither.
func TestDialEndsAtItsDeadline(t *testing.T) {
	requireRoot(t)
	pid := namespace(t)
	var port int
	err := inNamespace(pid, func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		t.Cleanup(func() { unix.Close(fd) })
		if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
			return err
		}
		sa, err := unix.Getsockname(fd)
		if err != nil {
			return err
		}
		port = sa.(*unix.SockaddrInet4).Port
		return unix.Listen(fd, 0) // one connection fills it; nothing accepts
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	first, err := Dialer{}.Dial(ctx, pid, port)
	if err != nil {
		t.Fatalf("the first connection, which the queue takes: %v", err)
	}
	defer first.Close()

	short, cancelShort := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancelShort()
	began := time.Now()
	if c, err := (Dialer{}).Dial(short, pid, port); err == nil {
		c.Close()
		t.Fatal("a dial to a full queue connected")
	} else if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a dial past its deadline: %v, want the deadline exceeded", err)
	}
	if took := time.Since(began); took > 2*time.Second {
		t.Fatalf("a dial with a 300 ms deadline took %s", took)
	}

	cancelled, cancelNow := context.WithCancel(t.Context())
	time.AfterFunc(200*time.Millisecond, cancelNow)
	if _, err := (Dialer{}).Dial(cancelled, pid, port); !errors.Is(err, context.Canceled) {
		t.Fatalf("a cancelled dial: %v, want cancelled", err)
	}

	defer func(d time.Duration) { dialTimeout = d }(dialTimeout)
	dialTimeout = 300 * time.Millisecond
	began = time.Now()
	if _, err := (Dialer{}).Dial(context.Background(), pid, port); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a dial without a deadline of its own: %v, want dialTimeout's deadline exceeded", err)
	}
	if took := time.Since(began); took > 2*time.Second {
		t.Fatalf("a dial without a deadline took %s, want about dialTimeout", took)
	}
}

// A process that does not exist has no namespace to dial into (no root
// needed: the namespace's file is missing).
func TestDialToAProcessThatIsGone(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	if _, err := (Dialer{}).Dial(ctx, 1<<30, 8888); err == nil {
		t.Fatal("dialed into a process that does not exist")
	}
	if _, err := (Dialer{}).Dial(ctx, 0, 8888); err == nil {
		t.Fatal("dialed into process 0")
	}
}
