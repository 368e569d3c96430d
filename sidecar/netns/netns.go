// Package netns opens TCP connections from inside another process's network
// namespace: the sidecar reaches a container's Jupyter on the container's own
// loopback, so nothing it sends crosses the Docker bridge, where a neighbour
// container with NET_RAW can answer ARP for the container's address and
// receive it (security issue 23).
package netns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// dialTimeout bounds a Dial whose context has no deadline of its own (a
// test shortens it).
var dialTimeout = 5 * time.Second

// Dialer connects to the loopback of host processes' network namespaces.
type Dialer struct {
	// ProcDir is the host's /proc, where a process's namespace is found
	// (/proc/<pid>/ns/net); "" means /proc.
	ProcDir string
}

// setns is unix.Setns; a test makes the way back fail.
var setns = unix.Setns

// selfNetns is the calling thread's own network namespace. It is always
// this process's /proc, whatever ProcDir says: it names this thread.
const selfNetns = "/proc/thread-self/ns/net"

// Dial connects to 127.0.0.1:port in the network namespace of host process
// pid (a container's first process), within ctx's deadline, or five seconds
// when ctx has none. The socket is made inside the namespace and keeps it
// for its whole life, so the connection goes over that namespace's
// loopback: it never leaves the container, and no other namespace can see
// or answer it.
//
// A PID is reused only after its process ended; a container's first process
// ending ends every process of its PID namespace, Jupyter included, so a
// probe that reached whatever took the PID afterwards carries the token of
// a Jupyter that no longer runs.
func (d Dialer) Dial(ctx context.Context, pid, port int) (net.Conn, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, dialTimeout)
		defer cancel()
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if pid <= 0 || port <= 0 || port > 65535 {
		return nil, fmt.Errorf("dialing port %d in the network namespace of process %d: no such process or port", port, pid)
	}
	procDir := d.ProcDir
	if procDir == "" {
		procDir = "/proc"
	}
	fd, err := socketIn(ctx, filepath.Join(procDir, strconv.Itoa(pid), "ns", "net"))
	if err != nil {
		return nil, fmt.Errorf("opening a socket in the network namespace of process %d: %w", pid, err)
	}
	conn, err := connect(ctx, fd, port)
	if err != nil {
		return nil, fmt.Errorf("connecting to 127.0.0.1:%d in the network namespace of process %d: %w", port, pid, err)
	}
	return conn, nil
}

// socketIn returns a TCP socket (non-blocking, close-on-exec) created in the
// network namespace at nsPath. The work is done on a goroutine of its own
// that holds its OS thread: setns(2) moves the thread, not the process, and
// no other goroutine may run on that thread until it is back in this
// process's namespace.
func socketIn(ctx context.Context, nsPath string) (int, error) {
	type result struct {
		fd  int
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		fd, back, err := socketInLocked(nsPath)
		done <- result{fd, err}
		if !back {
			// The thread is still in the other namespace. Unlocked, it
			// would run other goroutines there (their connections, the
			// sockets of their own, in a customer's container); ended
			// (a locked goroutine that returns ends its thread), it would
			// send the parent-death signal to any process started from
			// this thread before (infra/devstack/process.go). So it
			// stays: this goroutine holds it, asleep, for the life of the
			// process.
			select {}
		}
		runtime.UnlockOSThread()
	}()
	select {
	case r := <-done:
		return r.fd, r.err
	case <-ctx.Done():
		// The goroutine finishes by itself (a few system calls); what it
		// made nobody takes, so it closes.
		go func() {
			if r := <-done; r.err == nil {
				unix.Close(r.fd)
			}
		}()
		return -1, ctx.Err()
	}
}

// socketInLocked does socketIn's work on its locked thread; back is false if
// the thread could not return to its own namespace (and must not run
// anything else).
func socketInLocked(nsPath string) (fd int, back bool, err error) {
	self, err := unix.Open(selfNetns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, true, fmt.Errorf("opening this thread's network namespace: %w", err)
	}
	defer unix.Close(self)
	target, err := unix.Open(nsPath, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, true, fmt.Errorf("opening %s: %w", nsPath, err)
	}
	defer unix.Close(target)
	if err := setns(target, unix.CLONE_NEWNET); err != nil {
		return -1, true, fmt.Errorf("entering %s: %w", nsPath, err)
	}
	fd, err = unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	if err != nil {
		err = fmt.Errorf("creating a socket: %w", err)
	}
	if berr := setns(self, unix.CLONE_NEWNET); berr != nil {
		if err == nil {
			unix.Close(fd)
		}
		return -1, false, fmt.Errorf("returning to this thread's own network namespace: %w", berr)
	}
	return fd, true, err
}

// aLongTimeAgo is a deadline already past: it wakes a connect waiting for
// its socket when the context is cancelled.
var aLongTimeAgo = time.Unix(1, 0)

// connect connects socket fd (it takes it over) to 127.0.0.1:port within
// ctx's deadline. It may run on any thread: the socket keeps the namespace
// it was made in.
func connect(ctx context.Context, fd, port int) (net.Conn, error) {
	err := unix.Connect(fd, &unix.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}})
	pending := errors.Is(err, unix.EINPROGRESS) || errors.Is(err, unix.EINTR) || errors.Is(err, unix.EALREADY)
	if err != nil && !pending {
		unix.Close(fd)
		return nil, err
	}
	// A non-blocking descriptor makes a file the runtime's poller watches,
	// so waiting for the connection honours deadlines.
	f := os.NewFile(uintptr(fd), "tcp:127.0.0.1:"+strconv.Itoa(port))
	defer f.Close() // net.FileConn keeps a copy of its own
	if pending {
		if err := waitConnected(ctx, f); err != nil {
			return nil, err
		}
	}
	return net.FileConn(f)
}

// waitConnected waits until the connect under way on f is done, as Go's own
// dialer does: writable, then SO_ERROR says how it ended.
func waitConnected(ctx context.Context, f *os.File) error {
	deadline, _ := ctx.Deadline()
	if err := f.SetWriteDeadline(deadline); err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { _ = f.SetWriteDeadline(aLongTimeAgo) })
	defer stop()
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var connErr error
	err = rc.Write(func(s uintptr) bool {
		n, err := unix.GetsockoptInt(int(s), unix.SOL_SOCKET, unix.SO_ERROR)
		if err != nil {
			connErr = err
			return true
		}
		switch e := unix.Errno(n); e {
		case 0:
			// Writable without an error may still be a connect under
			// way; a peer says it is done.
			_, err := unix.Getpeername(int(s))
			return err == nil
		case unix.EINPROGRESS, unix.EALREADY, unix.EINTR:
			return false
		default:
			connErr = e
			return true
		}
	})
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return context.DeadlineExceeded
		}
		return err
	}
	return connErr
}
