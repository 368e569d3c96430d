package jupyter

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Process is a host process that belongs to an instance.
type Process struct {
	PID, PPID int
}

// Processes returns the host processes tagged with the instance's marker
// (Jupyter and the kernels it started, which inherit the marker). It reads
// /proc, so the sidecar finds them again after it restarts.
func Processes(procDir, instanceID string) ([]Process, error) {
	want := []byte(MarkerVar + "=" + instanceID + "\x00")
	entries, err := os.ReadDir(procDir)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", procDir, err)
	}
	var found []Process
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		env, err := os.ReadFile(filepath.Join(procDir, e.Name(), "environ"))
		if err != nil || !bytes.Contains(append([]byte{0}, env...), append([]byte{0}, want...)) {
			continue
		}
		found = append(found, Process{PID: pid, PPID: ParentPID(procDir, pid)})
	}
	return found, nil
}

// AllInstances returns the instance ids that have tagged processes.
func AllInstances(procDir string) (map[string][]Process, error) {
	prefix := []byte(MarkerVar + "=")
	entries, err := os.ReadDir(procDir)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", procDir, err)
	}
	found := map[string][]Process{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		env, err := os.ReadFile(filepath.Join(procDir, e.Name(), "environ"))
		if err != nil {
			continue
		}
		for _, kv := range bytes.Split(env, []byte{0}) {
			if id, ok := bytes.CutPrefix(kv, prefix); ok && len(id) > 0 {
				found[string(id)] = append(found[string(id)], Process{PID: pid, PPID: ParentPID(procDir, pid)})
			}
		}
	}
	return found, nil
}

// Stat is what this project reads of /proc/<pid>/stat.
type Stat struct {
	State        byte // R, S, D, Z (zombie), ...
	PPID         int
	UTime, STime uint64 // CPU time in clock ticks (USER_HZ)
}

// ReadStat reads /proc/<pid>/stat under procDir.
func ReadStat(procDir string, pid int) (Stat, error) {
	b, err := os.ReadFile(filepath.Join(procDir, strconv.Itoa(pid), "stat"))
	if err != nil {
		return Stat{}, err
	}
	// The command name in parentheses may hold spaces; fields follow the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return Stat{}, fmt.Errorf("unreadable stat of process %d", pid)
	}
	// After the command: state(0) ppid(1) ... utime(11) stime(12).
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 || len(f[0]) != 1 {
		return Stat{}, fmt.Errorf("short stat of process %d", pid)
	}
	st := Stat{State: f[0][0]}
	st.PPID, _ = strconv.Atoi(f[1])
	if len(f) >= 13 {
		st.UTime, _ = strconv.ParseUint(f[11], 10, 64)
		st.STime, _ = strconv.ParseUint(f[12], 10, 64)
	}
	return st, nil
}

// ParentPID returns the parent of a host process, read from procDir, or 0.
func ParentPID(procDir string, pid int) int {
	st, _ := ReadStat(procDir, pid)
	return st.PPID
}

// Main returns the instance's root process: the one whose parent is not
// itself tagged (kernels are children of Jupyter).
func Main(procs []Process) (Process, bool) {
	tagged := map[int]bool{}
	for _, p := range procs {
		tagged[p.PID] = true
	}
	for _, p := range procs {
		if !tagged[p.PPID] {
			return p, true
		}
	}
	return Process{}, false
}

// Terminate asks the instance's Jupyter to stop with SIGTERM and waits up
// to grace for every tagged process to go. Once Jupyter itself has ended
// (it shuts its kernels and terminals down first), what is left gets
// SIGTERM too and at most strayGrace more. Then it kills what is left,
// again until none is left (a process may fork while it is being killed:
// its child inherits the marker), for at most killFor.
func Terminate(procDir, instanceID string, grace time.Duration) error {
	procs, err := Processes(procDir, instanceID)
	if err != nil || len(procs) == 0 {
		return err
	}
	main, ok := Main(procs)
	if ok {
		signalTagged(procDir, main.PID, instanceID, unix.SIGTERM)
	}
	deadline, strays := time.Now().Add(grace), false
	for time.Now().Before(deadline) {
		time.Sleep(25 * time.Millisecond)
		if procs, err = Processes(procDir, instanceID); err != nil || len(procs) == 0 {
			return err
		}
		if !strays && !(ok && has(procs, main.PID)) {
			strays = true
			for _, p := range procs {
				signalTagged(procDir, p.PID, instanceID, unix.SIGTERM)
			}
			if end := time.Now().Add(strayGrace); end.Before(deadline) {
				deadline = end
			}
		}
	}
	for end := time.Now().Add(killFor); ; {
		for _, p := range procs {
			signalTagged(procDir, p.PID, instanceID, unix.SIGKILL)
		}
		time.Sleep(25 * time.Millisecond)
		if procs, err = Processes(procDir, instanceID); err != nil || len(procs) == 0 {
			return err
		}
		if time.Now().After(end) {
			return fmt.Errorf("instance %s: %d processes survived SIGKILL", instanceID, len(procs))
		}
	}
}

// strayGrace is how long processes that outlived their Jupyter get after
// their SIGTERM: Jupyter's own shutdown has ended, nothing waits for them.
const strayGrace = time.Second

func has(procs []Process, pid int) bool {
	for _, p := range procs {
		if p.PID == pid {
			return true
		}
	}
	return false
}

// killFor bounds the SIGKILL passes of Terminate: a process the kernel
// cannot kill (stuck in the kernel) must not hold a stop forever.
const killFor = 2 * time.Second

// signalTagged sends sig to pid only if it is still the instance's process:
// it takes a pidfd first, then checks the marker of the process the pidfd
// holds, so a PID reused by another process in between is never signalled.
func signalTagged(procDir string, pid int, instanceID string, sig unix.Signal) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return // gone already
	}
	defer unix.Close(fd)
	if v, ok := EnvValue(procDir, pid, MarkerVar); !ok || v != instanceID {
		return
	}
	_ = unix.PidfdSendSignal(fd, sig, nil, 0)
}

// Listening reports whether something in the network namespace of the host
// process pid listens on TCP port (IPv4 or IPv6), read from its
// /proc/<pid>/net/tcp tables.
func Listening(procDir string, pid, port int) (bool, error) {
	const listen = "0A"
	want := fmt.Sprintf(":%04X", port)
	for _, table := range []string{"tcp", "tcp6"} {
		b, err := os.ReadFile(filepath.Join(procDir, strconv.Itoa(pid), "net", table))
		if err != nil {
			if table == "tcp6" {
				continue // no IPv6 in the namespace
			}
			return false, fmt.Errorf("reading the container's sockets: %w", err)
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) > 3 && strings.HasSuffix(f[1], want) && f[3] == listen {
				return true, nil
			}
		}
	}
	return false, nil
}

// SameContainer reports whether host process pid runs in the PID namespace
// of containerPID, the container's first process: where it runs is the
// kernel's to say, whatever the process claims in its environment.
func SameContainer(procDir string, pid, containerPID int) bool {
	ns := func(p int) string {
		link, err := os.Readlink(filepath.Join(procDir, strconv.Itoa(p), "ns", "pid"))
		if err != nil {
			return ""
		}
		return link
	}
	want := ns(containerPID)
	return want != "" && ns(pid) == want
}

// EnvValue returns a variable of the environment host process pid started
// with.
func EnvValue(procDir string, pid int, name string) (string, bool) {
	env, err := os.ReadFile(filepath.Join(procDir, strconv.Itoa(pid), "environ"))
	if err != nil {
		return "", false
	}
	for _, kv := range bytes.Split(env, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte(name+"=")); ok {
			return string(v), true
		}
	}
	return "", false
}
