package control

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/envjupyter/envjupyter/shared/instance"
)

// ActiveInstanceIDs lets the fake store serve the reaper.
func (f *fakeStore) ActiveInstanceIDs(context.Context) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var ids []string
	for _, l := range f.envLeases {
		ids = append(ids, l.instanceID)
	}
	return ids, nil
}

func TestReap(t *testing.T) {
	base := instance.Instance{
		ID: "ji-1", EnvironmentID: "e1", CustomerID: "c1", HostID: "h1", ContainerID: "ctr-1",
		ExternalPort: 20001, InternalPort: 8888, Version: 4,
	}
	at := func(d time.Duration) time.Time { return now.Add(-d).UTC() }
	tests := []struct {
		name       string
		in         func(in *instance.Instance)
		wantStatus instance.Status
		wantReason string // prefix
		wantCmd    bool   // a stop goes to the host
		count      func(r Reaped) int
	}{
		{"start past its timeout", func(in *instance.Instance) {
			in.Status, in.CreatedAt = instance.Starting, at(3*time.Minute)
		}, instance.Failed, "start_timeout", true, func(r Reaped) int { return r.StartTimeouts }},
		{"start within its timeout", func(in *instance.Instance) {
			in.Status, in.CreatedAt = instance.Starting, at(time.Minute)
		}, instance.Starting, "", false, nil},
		{"silent host", func(in *instance.Instance) {
			in.Status, in.CreatedAt, in.ReportedAt = instance.Running, at(time.Hour), at(6*time.Minute)
		}, instance.Failed, "host_lost", true, func(r Reaped) int { return r.HostsLost }},
		{"heard from recently", func(in *instance.Instance) {
			in.Status, in.CreatedAt, in.ReportedAt = instance.Running, at(time.Hour), at(time.Minute)
		}, instance.Running, "", false, nil},
		{"stop never confirmed", func(in *instance.Instance) {
			in.Status, in.StatusReason, in.UpdatedAt, in.ReportedAt = instance.Stopping, "user", at(3*time.Minute), at(time.Minute)
		}, instance.Stopped, "stop_timeout", true, func(r Reaped) int { return r.StopTimeouts }},
		{"idle", func(in *instance.Instance) {
			in.Status, in.ReportedAt = instance.Running, at(time.Minute)
			in.Health = &instance.Health{LastActivity: at(2 * time.Hour)}
		}, instance.Stopping, "idle", true, func(r Reaped) int { return r.Idle }},
		{"active", func(in *instance.Instance) {
			in.Status, in.ReportedAt = instance.Running, at(time.Minute)
			in.Health = &instance.Health{LastActivity: at(10 * time.Minute)}
		}, instance.Running, "", false, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svc, st, cmds := newService(wideRange)
			svc.Config.StartTimeout, svc.Config.HostSilence, svc.Config.StopTimeout, svc.Config.IdleTimeout =
				2*time.Minute, 5*time.Minute, 2*time.Minute, time.Hour
			in := base
			tt.in(&in)
			st.put(in, true)
			r, err := svc.Reap(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			got := st.get("ji-1")
			if got.Status != tt.wantStatus || len(got.StatusReason) < len(tt.wantReason) || got.StatusReason[:len(tt.wantReason)] != tt.wantReason {
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
			if got.Status.Terminal() {
				if _, held := st.envLease("e1"); held {
					t.Fatal("the environment lease survived the end")
				}
				if a := got.Audit; len(a) == 0 || a[len(a)-1].Cause != "timeout" {
					t.Fatalf("audit %+v, want an end by timeout", a)
				}
			}
		})
	}
}
