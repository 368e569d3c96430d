package jupyter

import (
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fakeProc describes one process of a fake /proc.
type fakeProc struct {
	pid     int
	comm    string   // the command name in stat's parentheses
	ppid    int      // -1: no stat file
	environ []string // nil: no environ file
}

// makeProc writes a fake /proc in a temporary directory: a directory per pid
// with environ (NUL-terminated K=V entries) and stat, plus entries that are
// not processes.
func makeProc(t *testing.T, procs []fakeProc) string {
	t.Helper()
	dir := t.TempDir()
	for _, p := range procs {
		d := filepath.Join(dir, strconv.Itoa(p.pid))
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if p.environ != nil {
			var b strings.Builder
			for _, kv := range p.environ {
				b.WriteString(kv)
				b.WriteByte(0)
			}
			if err := os.WriteFile(filepath.Join(d, "environ"), []byte(b.String()), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if p.ppid >= 0 {
			stat := strconv.Itoa(p.pid) + " (" + p.comm + ") S " + strconv.Itoa(p.ppid) + " " + strconv.Itoa(p.pid) + " 1 0 -1 4194560 1234 0 0 0 17 4 0 0 20 0 1 0 123456 0 0\n"
			if err := os.WriteFile(filepath.Join(d, "stat"), []byte(stat), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Not processes.
	for _, name := range []string{"self", "sys", "net"} {
		if err := os.Mkdir(filepath.Join(dir, name), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "uptime"), []byte("1.0 1.0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

const marker = "ENVJUPYTER_INSTANCE_ID="

// standardProc is a host with two instances, ji-1 and ji-12, and some
// processes that must not be taken for them.
func standardProc(t *testing.T) string {
	return makeProc(t, []fakeProc{
		{pid: 1, comm: "systemd", ppid: 0, environ: []string{"HOME=/"}},
		// ji-1: Jupyter and a kernel (its name has spaces and parentheses).
		{pid: 310, comm: "jupyter-lab", ppid: 300, environ: []string{"PATH=/usr/bin", "JUPYTER_TOKEN=secret", marker + "ji-1"}},
		{pid: 320, comm: "python3 -m ipykernel (x) y", ppid: 310, environ: []string{marker + "ji-1", "PATH=/usr/bin"}},
		// The docker exec shim that started Jupyter: not tagged.
		{pid: 300, comm: "runc:[2:INIT]", ppid: 1, environ: []string{"PATH=/usr/bin"}},
		// ji-12: its id has ji-1 as a prefix.
		{pid: 410, comm: "jupyter-notebook", ppid: 1, environ: []string{marker + "ji-12", "JUPYTER_TOKEN=other"}},
		// The marker as the value or the suffix of another variable.
		{pid: 500, comm: "bash", ppid: 1, environ: []string{"X" + marker + "ji-1", "NOTE=" + marker + "ji-1"}},
		// A process we may not read (no environ file).
		{pid: 600, comm: "sshd", ppid: 1, environ: nil},
	})
}

func TestProcesses(t *testing.T) {
	dir := standardProc(t)
	tests := []struct {
		name     string
		instance string
		want     []Process
	}{
		{"jupyter and its kernel", "ji-1", []Process{{PID: 310, PPID: 300}, {PID: 320, PPID: 310}}},
		{"id with the other as a prefix", "ji-12", []Process{{PID: 410, PPID: 1}}},
		{"prefix of an id matches nothing", "ji", nil},
		{"unknown instance", "ji-2", nil},
		{"empty id matches nothing", "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Processes(dir, tt.instance)
			if err != nil {
				t.Fatalf("Processes: %v", err)
			}
			if len(got) != len(tt.want) || len(got) > 0 && !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Processes(%q) = %+v, want %+v", tt.instance, got, tt.want)
			}
		})
	}
}

func TestProcessesMissingDir(t *testing.T) {
	if _, err := Processes(filepath.Join(t.TempDir(), "nope"), "ji-1"); err == nil {
		t.Errorf("Processes of a missing dir: no error")
	}
	if _, err := AllInstances(filepath.Join(t.TempDir(), "nope")); err == nil {
		t.Errorf("AllInstances of a missing dir: no error")
	}
}

func TestProcessesParentEdgeCases(t *testing.T) {
	dir := makeProc(t, []fakeProc{
		{pid: 700, ppid: -1, environ: []string{marker + "ji-x"}}, // no stat
		{pid: 710, comm: ") S 999 (", ppid: 42, environ: []string{marker + "ji-x"}},
	})
	got, err := Processes(dir, "ji-x")
	if err != nil {
		t.Fatal(err)
	}
	want := []Process{{PID: 700, PPID: 0}, {PID: 710, PPID: 42}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Processes = %+v, want %+v", got, want)
	}
}

func TestAllInstances(t *testing.T) {
	got, err := AllInstances(standardProc(t))
	if err != nil {
		t.Fatalf("AllInstances: %v", err)
	}
	want := map[string][]Process{
		"ji-1":  {{PID: 310, PPID: 300}, {PID: 320, PPID: 310}},
		"ji-12": {{PID: 410, PPID: 1}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("AllInstances = %+v, want %+v", got, want)
	}
}

func TestAllInstancesEmpty(t *testing.T) {
	got, err := AllInstances(makeProc(t, []fakeProc{{pid: 1, comm: "init", ppid: 0, environ: []string{"HOME=/"}}}))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 0 {
		t.Errorf("AllInstances = %+v, want none", got)
	}
}

func TestMainPicksRoot(t *testing.T) {
	tests := []struct {
		name   string
		procs  []Process
		want   Process
		wantOK bool
	}{
		{"jupyter listed first", []Process{{310, 300}, {320, 310}}, Process{310, 300}, true},
		{"kernel listed first", []Process{{320, 310}, {330, 310}, {310, 300}}, Process{310, 300}, true},
		{"grandchild", []Process{{340, 320}, {320, 310}, {310, 1}}, Process{310, 1}, true},
		{"single", []Process{{410, 1}}, Process{410, 1}, true},
		{"unknown parent", []Process{{700, 0}}, Process{700, 0}, true},
		{"none", nil, Process{}, false},
		{"every parent tagged", []Process{{1, 2}, {2, 1}}, Process{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := Main(tt.procs)
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("Main = %+v, %v; want %+v, %v", got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func TestMainPicksRootOverFakeProc(t *testing.T) {
	procs, err := Processes(standardProc(t), "ji-1")
	if err != nil {
		t.Fatal(err)
	}
	got, ok := Main(procs)
	if !ok || got != (Process{PID: 310, PPID: 300}) {
		t.Errorf("Main = %+v, %v; want jupyter-lab {310 300}", got, ok)
	}
}

// Terminate ends every tagged process on the real /proc, also one that
// ignores SIGTERM and its children, and leaves an untagged process alone.
func TestTerminateEndsWhatIgnoresSIGTERM(t *testing.T) {
	id := "ji-terminate-" + strconv.Itoa(os.Getpid())
	// A shell that ignores SIGTERM with two children that do too.
	tagged := exec.Command("sh", "-c", `trap "" TERM; sleep 60 & sleep 60 & wait`)
	tagged.Env = append(os.Environ(), MarkerVar+"="+id)
	untagged := exec.Command("sleep", "60")
	for _, c := range []*exec.Cmd{tagged, untagged} {
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { _ = c.Wait() }() // reaped, so no zombie stays listed
	}
	t.Cleanup(func() { _ = untagged.Process.Kill() })
	for deadline := time.Now().Add(5 * time.Second); ; {
		if procs, _ := Processes("/proc", id); len(procs) == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the three tagged processes did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := Terminate("/proc", id, 200*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if procs, _ := Processes("/proc", id); len(procs) != 0 {
		t.Fatalf("%d tagged processes still run after Terminate", len(procs))
	}
	if err := unix.Kill(untagged.Process.Pid, 0); err != nil {
		t.Fatalf("the untagged process was signalled too: %v", err)
	}
}

// Processes that outlive their Jupyter (a terminal's orphan, a kernel it
// could not shut down) do not hold the stop for the whole grace.
func TestTerminateDoesNotWaitTheGraceForStrays(t *testing.T) {
	id := "ji-strays-" + strconv.Itoa(os.Getpid())
	// The root exits on SIGTERM; its child ignores SIGTERM.
	root := exec.Command("sh", "-c", `sh -c 'trap "" TERM; exec sleep 60' & wait`)
	root.Env = append(os.Environ(), MarkerVar+"="+id)
	if err := root.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = root.Wait() }()
	for deadline := time.Now().Add(5 * time.Second); ; {
		if procs, _ := Processes("/proc", id); len(procs) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the two tagged processes did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}
	began := time.Now()
	if err := Terminate("/proc", id, time.Minute); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(began); took > 30*time.Second {
		t.Fatalf("Terminate took %s: it waited the grace for a stray", took)
	}
	if procs, _ := Processes("/proc", id); len(procs) != 0 {
		t.Fatalf("%d tagged processes still run after Terminate", len(procs))
	}
}
