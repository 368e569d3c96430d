package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/envjupyter/envjupyter/sidecar/jupyter"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat
// (100 on Linux for every architecture this runs on).
const clockTicks = 100

// cpuSeconds is the user+system CPU time a process has used (all its
// threads), from /proc/<pid>/stat.
func cpuSeconds(pid int) (float64, error) {
	st, err := jupyter.ReadStat("/proc", pid)
	if err != nil {
		return 0, err
	}
	return float64(st.UTime+st.STime) / clockTicks, nil
}

// cpuOf sums cpuSeconds over pids; processes that have gone count 0.
func cpuOf(pids []int) float64 {
	t := 0.0
	for _, p := range pids {
		if c, err := cpuSeconds(p); err == nil {
			t += c
		}
	}
	return t
}

// rssMB is a process's resident set (VmRSS) in MiB.
func rssMB(pid int) (float64, error) {
	m, err := statusMB(pid, "VmRSS")
	return m["VmRSS"], err
}

// statusMB reads size fields (kB) of /proc/<pid>/status, in MiB.
func statusMB(pid int, fields ...string) (map[string]float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for _, line := range strings.Split(string(b), "\n") {
		for _, name := range fields {
			if rest, ok := strings.CutPrefix(line, name+":"); ok {
				if f := strings.Fields(rest); len(f) > 0 {
					kb, _ := strconv.ParseFloat(f[0], 64)
					out[name] = kb / 1024
				}
			}
		}
	}
	if len(out) != len(fields) {
		return out, fmt.Errorf("missing %v in the status of %d", fields, pid)
	}
	return out, nil
}

// proc is a process as found in /proc.
type proc struct {
	PID, PPID int
	Cmdline   string // NULs replaced by spaces
	Exe       string
}

// processes lists the host's processes.
func processes() []proc {
	entries, _ := os.ReadDir("/proc")
	var out []proc
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmd, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		exe, _ := os.Readlink(filepath.Join("/proc", e.Name(), "exe"))
		out = append(out, proc{PID: pid, PPID: jupyter.ParentPID("/proc", pid), Cmdline: strings.TrimSpace(string(bytes.ReplaceAll(cmd, []byte{0}, []byte{' '}))), Exe: exe})
	}
	return out
}

// nginxPIDs are the master and workers of the nginx whose command line
// names prefix (the stack's proxy directory).
func nginxPIDs(prefix string) []int {
	all := processes()
	var master int
	for _, p := range all {
		if strings.HasPrefix(p.Cmdline, "nginx: master") && strings.Contains(p.Cmdline, prefix) {
			master = p.PID
		}
	}
	if master == 0 {
		return nil
	}
	pids := []int{master}
	for _, p := range all {
		if p.PPID == master {
			pids = append(pids, p.PID)
		}
	}
	return pids
}

// pidsWhere returns the pids of processes matching f.
func pidsWhere(f func(p proc) bool) []int {
	var out []int
	for _, p := range processes() {
		if f(p) {
			out = append(out, p.PID)
		}
	}
	return out
}

// memAvailableMB is MemAvailable from /proc/meminfo, in MiB.
func memAvailableMB() float64 {
	b, _ := os.ReadFile("/proc/meminfo")
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "MemAvailable:"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				kb, _ := strconv.ParseFloat(f[0], 64)
				return kb / 1024
			}
		}
	}
	return 0
}

// diskFreeGB is the space available to root-less users under path, in GiB.
func diskFreeGB(path string) float64 {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return 0
	}
	return float64(st.Bavail) * float64(st.Bsize) / (1 << 30)
}
