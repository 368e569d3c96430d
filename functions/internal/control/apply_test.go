package control

import (
	"reflect"
	"testing"
	"time"

	"github.com/envjupyter/envjupyter/shared/config"
	"github.com/envjupyter/envjupyter/shared/instance"
	"github.com/envjupyter/envjupyter/shared/message"
)

func TestApplyReport(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	t1, t2 := t0.Add(time.Second), t0.Add(2*time.Second)
	created := t0.Add(-time.Minute)
	started := t0.Add(-30 * time.Second)
	oldHealth := &instance.Health{CheckedAt: t0, Kernels: 1, Connections: 1}
	newHealth := &instance.Health{CheckedAt: t2, LastActivity: t1, Kernels: 3, Connections: 2}

	base := instance.Instance{
		ID: "ji-1", EnvironmentID: "e1", CustomerID: "c1", HostID: "h1", ContainerID: "ctr-1",
		ExternalPort: 20001, InternalPort: 8888, CreatedAt: created, Version: 3,
	}
	with := func(f func(*instance.Instance)) instance.Instance {
		in := base
		f(&in)
		return in
	}
	starting := with(func(in *instance.Instance) {
		in.Status, in.Stage, in.ReportedAt = instance.Starting, instance.StagePreparing, t0
	})
	running := with(func(in *instance.Instance) {
		in.Status, in.StartedAt, in.ReportedAt, in.Health = instance.Running, started, t0, oldHealth
	})
	unhealthy := with(func(in *instance.Instance) {
		in.Status, in.StatusReason, in.StartedAt, in.ReportedAt, in.Health = instance.Unhealthy, "health_check_failed", started, t0, oldHealth
	})
	stopping := with(func(in *instance.Instance) {
		in.Status, in.StatusReason, in.StartedAt, in.ReportedAt = instance.Stopping, "user", started, t0
	})
	stopped := with(func(in *instance.Instance) {
		in.Status, in.StatusReason, in.StartedAt, in.StoppedAt, in.ReportedAt = instance.Stopped, "user", started, t0, t0
	})
	failed := with(func(in *instance.Instance) {
		in.Status, in.StatusReason, in.StoppedAt, in.ReportedAt = instance.Failed, "no_jupyter", t0, t0
	})
	report := func(s instance.Status, at time.Time, f ...func(*message.Report)) message.Report {
		r := message.Report{V: 1, InstanceID: "ji-1", HostID: "h1", Status: s, At: at}
		for _, g := range f {
			g(&r)
		}
		return r
	}
	fromHost := func(h string) func(*message.Report) { return func(r *message.Report) { r.HostID = h } }
	reason := func(s string) func(*message.Report) { return func(r *message.Report) { r.Reason = s } }
	stage := func(s instance.Stage) func(*message.Report) { return func(r *message.Report) { r.Stage = s } }
	health := func(h *instance.Health) func(*message.Report) { return func(r *message.Report) { r.Health = h } }
	change := func(in instance.Instance, f func(*instance.Instance)) instance.Instance {
		f(&in)
		return in
	}

	tests := []struct {
		name   string
		in     instance.Instance
		r      message.Report
		wantOK bool
		want   instance.Instance // when wantOK
	}{
		// Ignored reports.
		{name: "wrong host", in: starting, r: report(instance.Running, t1, fromHost("h2"))},
		{name: "empty host", in: starting, r: report(instance.Running, t1, fromHost(""))},
		{name: "stopped ignores running", in: stopped, r: report(instance.Running, t1)},
		{name: "stopped ignores newer stopped", in: stopped, r: report(instance.Stopped, t1, reason("other"))},
		{name: "stopped ignores failed", in: stopped, r: report(instance.Failed, t1, reason("crash"))},
		{name: "failed ignores newer failed with health", in: failed, r: report(instance.Failed, t1, health(newHealth))},
		{name: "failed ignores starting", in: failed, r: report(instance.Starting, t1, stage(instance.StageLaunching))},
		{name: "older report with new status", in: starting, r: report(instance.Running, t0.Add(-time.Nanosecond))},
		{name: "older report with same status", in: running, r: report(instance.Running, t0.Add(-time.Second), health(newHealth))},
		{name: "duplicate starting", in: starting, r: report(instance.Starting, t0, stage(instance.StageLaunching))},
		{name: "duplicate running with health", in: running, r: report(instance.Running, t0, health(newHealth))},
		{name: "stopping ignores late running", in: stopping, r: report(instance.Running, t1, health(newHealth))},
		{name: "stopping ignores late unhealthy", in: stopping, r: report(instance.Unhealthy, t1, reason("health_check_failed"))},
		{name: "stopping ignores late starting", in: stopping, r: report(instance.Starting, t1, stage(instance.StageRouting))},
		{name: "running does not go back to starting", in: running, r: report(instance.Starting, t1, stage(instance.StageRouting))},
		{name: "starting does not become unhealthy", in: starting, r: report(instance.Unhealthy, t1)},

		// Same status, newer: refresh only.
		{
			name: "starting stage refresh", in: starting, r: report(instance.Starting, t1, stage(instance.StageLaunching)), wantOK: true,
			want: change(starting, func(in *instance.Instance) { in.Stage, in.ReportedAt = instance.StageLaunching, t1 }),
		},
		{
			name: "starting without stage keeps stage", in: starting, r: report(instance.Starting, t1), wantOK: true,
			want: change(starting, func(in *instance.Instance) { in.ReportedAt = t1 }),
		},
		{
			name: "never reported before", in: change(starting, func(in *instance.Instance) { in.ReportedAt = time.Time{}; in.Stage = instance.StageQueued }),
			r: report(instance.Starting, t1, stage(instance.StagePreparing)), wantOK: true,
			want: change(starting, func(in *instance.Instance) { in.Stage, in.ReportedAt = instance.StagePreparing, t1 }),
		},
		{
			name: "running health refresh ignores stage and reason", in: running,
			r: report(instance.Running, t2, health(newHealth), stage(instance.StageRouting), reason("ignored")), wantOK: true,
			want: change(running, func(in *instance.Instance) { in.Health, in.ReportedAt = newHealth, t2 }),
		},
		{
			name: "running refresh without health keeps health", in: running, r: report(instance.Running, t1), wantOK: true,
			want: change(running, func(in *instance.Instance) { in.ReportedAt = t1 }),
		},
		{
			name: "stopping refresh keeps reason", in: stopping, r: report(instance.Stopping, t1, reason("other")), wantOK: true,
			want: change(stopping, func(in *instance.Instance) { in.ReportedAt = t1 }),
		},

		// Transitions.
		{
			name: "starting to running", in: starting, r: report(instance.Running, t1, health(newHealth), stage(instance.StageRouting)), wantOK: true,
			want: change(starting, func(in *instance.Instance) {
				in.Status, in.StartedAt, in.Stage, in.Health, in.ReportedAt = instance.Running, t1, "", newHealth, t1
			}),
		},
		{
			name: "starting to running at the time of the last report", in: starting, r: report(instance.Running, t0), wantOK: true,
			want: change(starting, func(in *instance.Instance) {
				in.Status, in.StartedAt, in.Stage = instance.Running, t0, ""
			}),
		},
		{
			name: "running to unhealthy", in: running, r: report(instance.Unhealthy, t1, reason("health_check_failed")), wantOK: true,
			want: change(running, func(in *instance.Instance) {
				in.Status, in.StatusReason, in.ReportedAt = instance.Unhealthy, "health_check_failed", t1
			}),
		},
		{
			name: "unhealthy back to running keeps started_at and clears reason", in: unhealthy, r: report(instance.Running, t1, health(newHealth)), wantOK: true,
			want: change(unhealthy, func(in *instance.Instance) {
				in.Status, in.StatusReason, in.Health, in.ReportedAt = instance.Running, "", newHealth, t1
			}),
		},
		{
			name: "running to stopping", in: running, r: report(instance.Stopping, t1, reason("user")), wantOK: true,
			want: change(running, func(in *instance.Instance) {
				in.Status, in.StatusReason, in.ReportedAt = instance.Stopping, "user", t1
			}),
		},
		{
			name: "stopping to stopped", in: stopping, r: report(instance.Stopped, t2, reason("user")), wantOK: true,
			want: change(stopping, func(in *instance.Instance) {
				in.Status, in.StoppedAt, in.ReportedAt = instance.Stopped, t2, t2
			}),
		},
		{
			name: "stopped without reason keeps the stop reason", in: stopping, r: report(instance.Stopped, t2), wantOK: true,
			want: change(stopping, func(in *instance.Instance) {
				in.Status, in.StatusReason, in.StoppedAt, in.ReportedAt = instance.Stopped, "user", t2, t2
			}),
		},
		{
			name: "stopping to failed", in: stopping, r: report(instance.Failed, t1, reason("kill_failed")), wantOK: true,
			want: change(stopping, func(in *instance.Instance) {
				in.Status, in.StatusReason, in.StoppedAt, in.ReportedAt = instance.Failed, "kill_failed", t1, t1
			}),
		},
		{
			name: "starting to failed clears stage", in: starting, r: report(instance.Failed, t1, reason("no_jupyter"), stage(instance.StageLaunching)), wantOK: true,
			want: change(starting, func(in *instance.Instance) {
				in.Status, in.StatusReason, in.StoppedAt, in.Stage, in.ReportedAt = instance.Failed, "no_jupyter", t1, "", t1
			}),
		},
		{
			name: "starting to stopped", in: starting, r: report(instance.Stopped, t1, reason("environment_stopped")), wantOK: true,
			want: change(starting, func(in *instance.Instance) {
				in.Status, in.StatusReason, in.StoppedAt, in.Stage, in.ReportedAt = instance.Stopped, "environment_stopped", t1, "", t1
			}),
		},
		{
			name: "running to stopped", in: running, r: report(instance.Stopped, t1, reason("environment_stopped")), wantOK: true,
			want: change(running, func(in *instance.Instance) {
				in.Status, in.StatusReason, in.StoppedAt, in.ReportedAt = instance.Stopped, "environment_stopped", t1, t1
			}),
		},
		{
			name: "unhealthy to failed", in: unhealthy, r: report(instance.Failed, t1, reason("exited")), wantOK: true,
			want: change(unhealthy, func(in *instance.Instance) {
				in.Status, in.StatusReason, in.StoppedAt, in.ReportedAt = instance.Failed, "exited", t1, t1
			}),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := tt.in
			got, ok := applyReport(tt.in, tt.r)
			if ok != tt.wantOK {
				t.Fatalf("applyReport ok = %v, want %v (got %+v)", ok, tt.wantOK, got)
			}
			want := tt.want
			if !tt.wantOK {
				want = tt.in // an ignored report changes nothing
			} else if want.Status.Terminal() {
				// Reaching an end state is recorded in the audit trail.
				want.Audit = append(append([]instance.AuditEntry(nil), tt.in.Audit...), instance.AuditEntry{
					At: tt.r.At, Action: instance.ActionEnd, Cause: endCause(tt.r.Reason), Actor: tt.r.HostID, Detail: tt.r.Reason,
				})
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("applyReport =\n %+v\nwant\n %+v", got, want)
			}
			if !reflect.DeepEqual(tt.in, before) {
				t.Errorf("applyReport changed its input to %+v", tt.in)
			}
			if got.Version != tt.in.Version {
				t.Errorf("applyReport changed the version to %d; the store sets it", got.Version)
			}
		})
	}
}

func TestPickPort(t *testing.T) {
	tests := []struct {
		name   string
		r      config.PortRange
		held   map[int]bool
		wantOK bool
		free   []int
	}{
		{name: "nothing held", r: config.PortRange{First: 20000, Last: 20003}, held: nil, wantOK: true, free: []int{20000, 20001, 20002, 20003}},
		{name: "some held", r: config.PortRange{First: 20000, Last: 20004}, held: map[int]bool{20000: true, 20001: true, 20003: true}, wantOK: true, free: []int{20002, 20004}},
		{name: "one free at the end", r: config.PortRange{First: 20000, Last: 20002}, held: map[int]bool{20000: true, 20001: true}, wantOK: true, free: []int{20002}},
		{name: "ports outside the range held", r: config.PortRange{First: 20000, Last: 20001}, held: map[int]bool{19999: true, 20002: true, 20000: true}, wantOK: true, free: []int{20001}},
		{name: "single port range", r: config.PortRange{First: 30000, Last: 30000}, held: map[int]bool{}, wantOK: true, free: []int{30000}},
		{name: "all held", r: config.PortRange{First: 20000, Last: 20002}, held: map[int]bool{20000: true, 20001: true, 20002: true}},
		{name: "single port held", r: config.PortRange{First: 30000, Last: 30000}, held: map[int]bool{30000: true}},
		{name: "false entries are free", r: config.PortRange{First: 20000, Last: 20000}, held: map[int]bool{20000: false}, wantOK: true, free: []int{20000}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			seen := map[int]bool{}
			for range 300 {
				p, ok := pickPort(tt.r, tt.held)
				if ok != tt.wantOK {
					t.Fatalf("pickPort ok = %v, want %v (port %d)", ok, tt.wantOK, p)
				}
				if !ok {
					if p != 0 {
						t.Fatalf("pickPort = %d, false; want 0, false", p)
					}
					continue
				}
				if tt.held[p] || p < tt.r.First || p > tt.r.Last {
					t.Fatalf("pickPort = %d: held or outside %+v", p, tt.r)
				}
				seen[p] = true
			}
			// Over 300 draws every free port comes up (it is random, not first-fit).
			for _, p := range tt.free {
				if !seen[p] {
					t.Errorf("free port %d never picked in 300 draws (saw %v)", p, seen)
				}
			}
			if len(seen) != len(tt.free) {
				t.Errorf("picked %v, want exactly %v", seen, tt.free)
			}
		})
	}
}
