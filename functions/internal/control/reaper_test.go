package control

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/envjupyter/envjupyter/functions/store"
	"github.com/envjupyter/envjupyter/shared/config"
	"github.com/envjupyter/envjupyter/shared/instance"
	"github.com/envjupyter/envjupyter/shared/message"
)

// reaperConfig is the timing of the reaper's tests.
func reaperConfig() config.Config {
	return config.Config{StartTimeout: 2 * time.Minute, HostSilence: 5 * time.Minute, StopTimeout: 2 * time.Minute, IdleTimeout: time.Hour}
}

func ago(d time.Duration) time.Time { return now.Add(-d).UTC() }

func TestJudge(t *testing.T) {
	noIdle := reaperConfig()
	noIdle.IdleTimeout = 0
	tests := []struct {
		name     string
		cfg      config.Config
		in       instance.Instance
		want     verdict
		wantNext time.Time // when keep
	}{
		{"start within its timeout", reaperConfig(),
			instance.Instance{Status: instance.Starting, CreatedAt: ago(time.Minute)},
			keep, now.Add(time.Minute + startGrace)},
		{"start past timeout and grace", reaperConfig(),
			instance.Instance{Status: instance.Starting, CreatedAt: ago(2*time.Minute + startGrace + time.Second)},
			startTimedOut, time.Time{}},
		{"start past its timeout, within the grace", reaperConfig(),
			instance.Instance{Status: instance.Starting, CreatedAt: ago(2*time.Minute + time.Second)},
			keep, now.Add(startGrace - time.Second)},
		{"stop unconfirmed", reaperConfig(),
			instance.Instance{Status: instance.Stopping, UpdatedAt: ago(3 * time.Minute)},
			stopTimedOut, time.Time{}},
		{"stop under way", reaperConfig(),
			instance.Instance{Status: instance.Stopping, UpdatedAt: ago(30 * time.Second)},
			keep, now.Add(90 * time.Second)},
		{"running, silent past the silence", reaperConfig(),
			instance.Instance{Status: instance.Running, CreatedAt: ago(time.Hour), ReportedAt: ago(6 * time.Minute)},
			hostLost, time.Time{}},
		{"running, never reported, created long ago", reaperConfig(),
			instance.Instance{Status: instance.Running, CreatedAt: ago(time.Hour)},
			hostLost, time.Time{}},
		{"running, active: next look when it would be idle", reaperConfig(),
			instance.Instance{Status: instance.Running, ReportedAt: ago(time.Minute), Health: &instance.Health{LastActivity: ago(50 * time.Minute)}},
			keep, now.Add(10 * time.Minute)},
		{"running, recently active: the recheck comes first", reaperConfig(),
			instance.Instance{Status: instance.Running, ReportedAt: ago(time.Minute), Health: &instance.Health{LastActivity: ago(time.Minute)}},
			keep, now.Add(recheckEvery)},
		{"running, no activity known: a timeout on", func() config.Config { c := reaperConfig(); c.IdleTimeout = 10 * time.Minute; return c }(),
			instance.Instance{Status: instance.Running, ReportedAt: ago(time.Minute), CreatedAt: ago(time.Hour)},
			keep, now.Add(10 * time.Minute)},
		{"running, idle", reaperConfig(),
			instance.Instance{Status: instance.Running, ReportedAt: ago(time.Minute), Health: &instance.Health{LastActivity: ago(61 * time.Minute)}},
			idle, time.Time{}},
		{"running, idle culling off", noIdle,
			instance.Instance{Status: instance.Running, ReportedAt: ago(time.Minute), Health: &instance.Health{LastActivity: ago(5 * time.Hour)}},
			keep, now.Add(recheckEvery)},
		{"unhealthy: no heartbeat comes, the silence is its next look", reaperConfig(),
			instance.Instance{Status: instance.Unhealthy, ReportedAt: ago(2 * time.Minute)},
			keep, now.Add(3 * time.Minute)},
		{"unhealthy past the silence", reaperConfig(),
			instance.Instance{Status: instance.Unhealthy, ReportedAt: ago(6 * time.Minute)},
			hostLost, time.Time{}},
		{"unhealthy is never idle", reaperConfig(),
			instance.Instance{Status: instance.Unhealthy, ReportedAt: ago(time.Minute), Health: &instance.Health{LastActivity: ago(5 * time.Hour)}},
			keep, now.Add(4 * time.Minute)},
		{"silence off", func() config.Config { c := noIdle; c.HostSilence = 0; return c }(),
			instance.Instance{Status: instance.Unhealthy, ReportedAt: ago(5 * time.Hour)},
			keep, now.Add(recheckEvery)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, next := judge(tt.in, tt.cfg, now)
			if got != tt.want {
				t.Fatalf("verdict %d, want %d", got, tt.want)
			}
			if got == keep && !next.Equal(tt.wantNext) {
				t.Fatalf("next look %s, want %s", next, tt.wantNext)
			}
			if got == keep && next.Before(now) {
				t.Fatalf("next look %s is in the past: the instance would be due every pass", next)
			}
		})
	}
}

func TestReap(t *testing.T) {
	base := instance.Instance{
		ID: "ji-1", EnvironmentID: "e1", CustomerID: "c1", HostID: "h1", ContainerID: "ctr-1",
		ExternalPort: 20001, InternalPort: 8888, Version: 4,
		DueAt: now.Unix(), // the index says it is due
	}
	tests := []struct {
		name       string
		in         func(in *instance.Instance)
		wantStatus instance.Status
		wantReason string // prefix
		wantCmd    bool   // a stop goes to the host
		count      func(r Reaped) int
		wantDue    time.Time // re-armed to, when kept
	}{
		{"start past its timeout", func(in *instance.Instance) {
			in.Status, in.CreatedAt = instance.Starting, ago(3*time.Minute)
		}, instance.Failed, "start_timeout", true, func(r Reaped) int { return r.StartTimeouts }, time.Time{}},
		{"start within its timeout", func(in *instance.Instance) {
			in.Status, in.CreatedAt = instance.Starting, ago(time.Minute)
		}, instance.Starting, "", false, nil, now.Add(time.Minute + startGrace)},
		{"silent instance", func(in *instance.Instance) {
			in.Status, in.CreatedAt, in.ReportedAt = instance.Running, ago(time.Hour), ago(6*time.Minute)
		}, instance.Failed, "host_lost", true, func(r Reaped) int { return r.HostsLost }, time.Time{}},
		{"heard from recently", func(in *instance.Instance) {
			in.Status, in.CreatedAt, in.ReportedAt = instance.Running, ago(time.Hour), ago(time.Minute)
		}, instance.Running, "", false, nil, now.Add(recheckEvery)},
		{"stop never confirmed", func(in *instance.Instance) {
			in.Status, in.StatusReason, in.UpdatedAt, in.ReportedAt = instance.Stopping, "user", ago(3*time.Minute), ago(time.Minute)
		}, instance.Stopped, "stop_timeout", true, func(r Reaped) int { return r.StopTimeouts }, time.Time{}},
		{"idle", func(in *instance.Instance) {
			in.Status, in.ReportedAt = instance.Running, ago(time.Minute)
			in.Health = &instance.Health{LastActivity: ago(2 * time.Hour)}
		}, instance.Stopping, "idle", true, func(r Reaped) int { return r.Idle }, time.Time{}},
		{"active", func(in *instance.Instance) {
			in.Status, in.ReportedAt = instance.Running, ago(time.Minute)
			in.Health = &instance.Health{LastActivity: ago(10 * time.Minute)}
		}, instance.Running, "", false, nil, now.Add(recheckEvery)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svc, st, cmds := newService(wideRange)
			svc.Config = reaperConfig()
			in := base
			tt.in(&in)
			st.put(in, true)
			r, err := svc.Reap(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			got := st.get("ji-1")
			if got.Status != tt.wantStatus || !strings.HasPrefix(got.StatusReason, tt.wantReason) {
				t.Fatalf("instance %s (%q), want %s (%s...)", got.Status, got.StatusReason, tt.wantStatus, tt.wantReason)
			}
			// Reasons are the customer's to read: no host ids in them.
			if in.HostID != "" && strings.Contains(got.StatusReason, in.HostID) {
				t.Fatalf("reason %q names the host %s", got.StatusReason, in.HostID)
			}
			if sent := len(cmds.all()) > 0; sent != tt.wantCmd {
				t.Fatalf("stop sent to the host: %v, want %v", sent, tt.wantCmd)
			}
			if tt.count != nil && tt.count(r) != 1 {
				t.Fatalf("counts %+v", r)
			}
			if r.Checked != 1 || r.Due != 1 {
				t.Fatalf("counts %+v, want the one due instance checked", r)
			}
			switch {
			case got.Status.Terminal():
				if _, held := st.envLease("e1"); held {
					t.Fatal("the environment lease survived the end")
				}
				if a := got.Audit; len(a) == 0 || a[len(a)-1].Cause != "timeout" {
					t.Fatalf("audit %+v, want an end by timeout", a)
				}
				if got.DueAt != 0 {
					t.Fatalf("an ended instance is still due at %d", got.DueAt)
				}
			case !tt.wantDue.IsZero():
				if got.DueAt != tt.wantDue.Unix() || r.Rearmed != 1 {
					t.Fatalf("due at %d (rearmed %d), want %d", got.DueAt, r.Rearmed, tt.wantDue.Unix())
				}
				if got.Version != in.Version {
					t.Fatalf("re-arming changed the version %d → %d", in.Version, got.Version)
				}
			}
		})
	}
}

// The reaper reads the instances whose time has come, not the others.
func TestReapReadsOnlyDue(t *testing.T) {
	svc, st, cmds := newService(config.PortRange{First: 20000, Last: 29999})
	svc.Config = reaperConfig()
	const total, due = 1000, 7
	for i := range total {
		in := instance.Instance{
			ID: fmt.Sprintf("ji-%04d", i), EnvironmentID: fmt.Sprintf("env-%d", i), CustomerID: "c1", HostID: "h1",
			ExternalPort: 20000 + i, Status: instance.Starting, CreatedAt: ago(time.Minute), Version: 1,
			DueAt: now.Add(time.Minute + startGrace).Unix(),
		}
		if i < due {
			in.CreatedAt, in.DueAt = ago(time.Hour), ago(time.Hour).Add(2*time.Minute+startGrace).Unix()
		}
		st.put(in, true)
	}
	st.hosts["h1"] = now.UTC() // the host speaks
	r, err := svc.Reap(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	reads, rearms, _ := st.counts()
	if reads != due || r.Checked != due || r.StartTimeouts != due || rearms != 0 {
		t.Fatalf("%d reads, %d rearms, counts %+v; want exactly the %d due read and ended", reads, rearms, r, due)
	}
	if len(cmds.all()) != due {
		t.Fatalf("%d stops sent, want %d", len(cmds.all()), due)
	}
	// A second pass finds nothing due.
	if r, err := svc.Reap(context.Background()); err != nil || r.Checked != 0 {
		t.Fatalf("second pass: %+v, %v", r, err)
	}
}

// A silent host is found from its record: its instances fail with host_lost
// though none of them is due in the index; a host that has nothing left is
// forgotten once silent for a week (until then starts there are refused); a
// host that speaks is not touched.
func TestReapSilentHost(t *testing.T) {
	svc, st, cmds := newService(wideRange)
	svc.Config = reaperConfig()
	later := now.Add(time.Hour).Unix()
	for i, host := range []string{"lost", "lost", "alive"} {
		st.put(instance.Instance{
			ID: fmt.Sprintf("ji-%d", i), EnvironmentID: fmt.Sprintf("e%d", i), HostID: host, ExternalPort: 20000 + i,
			Status: instance.Running, CreatedAt: ago(time.Hour), ReportedAt: ago(10 * time.Minute), Version: 2, DueAt: later,
		}, true)
	}
	st.hosts["lost"] = ago(10 * time.Minute)
	st.hosts["alive"] = ago(time.Minute)
	st.hosts["gone"] = ago(8 * 24 * time.Hour) // nothing left on it
	r, err := svc.Reap(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if r.SilentHosts != 2 || r.HostsLost != 2 || r.Checked != 2 {
		t.Fatalf("counts %+v, want 2 silent hosts, the 2 instances of the lost one failed", r)
	}
	for _, id := range []string{"ji-0", "ji-1"} {
		if got := st.get(id); got.Status != instance.Failed || !strings.HasPrefix(got.StatusReason, instance.ReasonHostLost) {
			t.Fatalf("%s is %s (%s), want failed host_lost", id, got.Status, got.StatusReason)
		}
	}
	if got := st.get("ji-2"); got.Status != instance.Running {
		t.Fatalf("the instance of the host that speaks is %s", got.Status)
	}
	if _, ok := st.hosts["gone"]; ok {
		t.Fatal("the host with nothing left is still read every pass")
	}
	for _, c := range cmds.all() {
		if c.hostID != "lost" || c.cmd.Type != message.TypeStop {
			t.Fatalf("command %+v, want stops to the lost host only", c)
		}
	}
	// The next pass: the lost host has nothing left, but is kept, so that
	// starts there fail at once.
	if _, err := svc.Reap(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, ok := st.hosts["lost"]; !ok {
		t.Fatal("the lost host is forgotten minutes after its instances ended")
	}
	st.environments["e-on-lost"] = store.Environment{ID: "e-on-lost", CustomerID: "c1", HostID: "lost", Status: store.EnvironmentRunning}
	if _, _, err := svc.StartEnvironment(context.Background(), "e-on-lost", StartOptions{}); !errors.Is(err, ErrHostUnavailable) {
		t.Fatalf("start on the lost host: %v, want ErrHostUnavailable", err)
	}
}

// Two passes at once end each due instance once.
func TestReapOverlappingPasses(t *testing.T) {
	svc, st, cmds := newService(config.PortRange{First: 20000, Last: 20999})
	svc.Config = reaperConfig()
	const n = 50
	for i := range n {
		st.put(instance.Instance{
			ID: fmt.Sprintf("ji-%03d", i), EnvironmentID: fmt.Sprintf("e%d", i), HostID: "h1", ExternalPort: 20000 + i,
			Status: instance.Starting, CreatedAt: ago(time.Hour), Version: 1, DueAt: ago(time.Minute).Unix(),
		}, true)
	}
	var wg sync.WaitGroup
	results := make([]Reaped, 2)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			if results[i], err = svc.Reap(context.Background()); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if ended := results[0].StartTimeouts + results[1].StartTimeouts; ended < n {
		t.Fatalf("%d ended, want all %d", ended, n)
	}
	if len(cmds.all()) != n {
		t.Fatalf("%d stops sent for %d instances: an instance was ended twice", len(cmds.all()), n)
	}
	for i := range n {
		if got := st.get(fmt.Sprintf("ji-%03d", i)); got.Status != instance.Failed || len(got.Audit) != 1 {
			t.Fatalf("instance %d: %s with audit %+v, want failed once", i, got.Status, got.Audit)
		}
	}
}

// Every write of a state sets when the reaper looks next; a heartbeat keeps it.
func TestArmOnEveryState(t *testing.T) {
	svc, st, _ := newService(wideRange)
	svc.Config = reaperConfig()
	ctx := context.Background()
	in, _, err := svc.Start(ctx, "c1", "e1", StartOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if want := now.Add(2*time.Minute + startGrace).Unix(); st.get(in.ID).DueAt != want {
		t.Fatalf("starting: due at %d, want %d", st.get(in.ID).DueAt, want)
	}
	report := func(status instance.Status, at time.Time, activity time.Time) {
		t.Helper()
		r := message.Report{V: message.Version, InstanceID: in.ID, HostID: "h1", Status: status, At: at.UTC()}
		if !activity.IsZero() {
			r.Health = &instance.Health{CheckedAt: at.UTC(), LastActivity: activity.UTC()}
		}
		if _, err := svc.ApplyReport(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	report(instance.Running, now, now.Add(-50*time.Minute))
	if want := now.Add(10 * time.Minute).Unix(); st.get(in.ID).DueAt != want {
		t.Fatalf("running: due at %d, want %d (when it would be idle)", st.get(in.ID).DueAt, want)
	}
	report(instance.Running, now.Add(time.Second), now)
	if want := now.Add(10 * time.Minute).Unix(); st.get(in.ID).DueAt != want {
		t.Fatalf("after a heartbeat: due at %d, want it kept at %d", st.get(in.ID).DueAt, want)
	}
	if _, _, err := svc.Stop(ctx, "c1", "e1", "user"); err != nil {
		t.Fatal(err)
	}
	if want := now.Add(2 * time.Minute).Unix(); st.get(in.ID).DueAt != want {
		t.Fatalf("stopping: due at %d, want %d", st.get(in.ID).DueAt, want)
	}
	report(instance.Stopped, now.Add(2*time.Second), time.Time{})
	if st.get(in.ID).DueAt != 0 {
		t.Fatalf("stopped: still due at %d", st.get(in.ID).DueAt)
	}
}

// A function copy records a host heard at most once per quarter of the
// silence, whatever the number of reports.
func TestHostHeardOncePerInterval(t *testing.T) {
	svc, st, _ := newService(wideRange)
	svc.Config = reaperConfig() // silence 5 min: one write per 75 s
	ctx := context.Background()
	for i := range 100 {
		at := now.Add(time.Duration(i) * time.Second).UTC()
		if _, err := svc.ApplyReport(ctx, message.Report{V: message.Version, InstanceID: "ji-none", HostID: "h1", Status: instance.Running, At: at}); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, heard := st.counts(); heard != 1 {
		t.Fatalf("%d host writes for 100 reports within the interval, want 1", heard)
	}
	if !st.hosts["h1"].Equal(now.UTC()) {
		t.Fatalf("host heard at %s, want %s", st.hosts["h1"], now.UTC())
	}
}

// A pass short of time takes no new page: what is due stays due for the next.
func TestReapStopsBeforeItsDeadline(t *testing.T) {
	svc, st, _ := newService(wideRange)
	svc.Config = reaperConfig()
	st.put(instance.Instance{
		ID: "ji-1", EnvironmentID: "e1", HostID: "h1", ExternalPort: 20001,
		Status: instance.Starting, CreatedAt: ago(time.Hour), Version: 1, DueAt: ago(time.Minute).Unix(),
	}, true)
	ctx, cancel := context.WithTimeout(context.Background(), passReserve/2)
	defer cancel()
	r, err := svc.Reap(ctx)
	if err != nil || !r.Unfinished || r.Checked != 0 {
		t.Fatalf("counts %+v, %v; want an unfinished pass that read nothing", r, err)
	}
	if r, err := svc.Reap(context.Background()); err != nil || r.StartTimeouts != 1 {
		t.Fatalf("the next pass: %+v, %v; want the start ended", r, err)
	}
}
