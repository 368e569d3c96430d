package control

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/envjupyter/envjupyter/functions/store"
	"github.com/envjupyter/envjupyter/shared/config"
	"github.com/envjupyter/envjupyter/shared/instance"
	"github.com/envjupyter/envjupyter/shared/message"
)

// now is the service's clock, deliberately not in UTC: the service stores UTC.
var now = time.Date(2025, 6, 7, 17, 30, 0, 0, time.FixedZone("CEST", 2*3600))

var (
	idPattern    = regexp.MustCompile(`^ji-[0-9a-f]{24}$`)
	tokenPattern = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

func environments() []store.Environment {
	return []store.Environment{
		{ID: "e1", CustomerID: "c1", HostID: "h1", ContainerID: "ctr-1", Status: store.EnvironmentRunning},
		{ID: "e2", CustomerID: "c1", HostID: "h1", ContainerID: "ctr-2", Status: store.EnvironmentRunning},
		{ID: "e3", CustomerID: "c2", HostID: "h1", ContainerID: "ctr-3", Status: store.EnvironmentRunning},
		{ID: "e4", CustomerID: "c1", HostID: "h1", ContainerID: "ctr-4", Status: "stopped"},
		{ID: "e5", CustomerID: "c1", HostID: "h2", ContainerID: "ctr-5", Status: store.EnvironmentRunning},
		{ID: "e6", CustomerID: "c1", HostID: "h1", ContainerID: "ctr-6", Status: "starting"},
	}
}

func newService(ports config.PortRange) (*Service, *fakeStore, *fakeCommands) {
	st := newFakeStore(environments()...)
	cmds := &fakeCommands{}
	svc := &Service{
		Store:    st,
		Commands: cmds,
		Config: config.Config{
			PublicBaseURL: "https://jupyter.example.com",
			Ports:         ports,
			AllowedPlugins: map[string]string{
				"jupyterlab-lsp": "jupyterlab-lsp==5.1.0",
				"jupyterlab-git": "jupyterlab-git==0.50.1",
				"aa-theme":       "aa-theme==1.0",
				"zz-widgets":     "zz-widgets==2.0",
				"bb-tools":       "bb-tools==0.1",
			},
		},
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Now: func() time.Time { return now },
	}
	return svc, st, cmds
}

var wideRange = config.PortRange{First: 20000, Last: 20009}

// manyPlugins is n distinct plugin names.
func manyPlugins(n int) []string {
	list := make([]string, n)
	for i := range list {
		list[i] = fmt.Sprintf("p%d", i)
	}
	return list
}

// A plugin named twice is installed once, in the order first named.
func TestStartPluginsDistinct(t *testing.T) {
	svc, _, cmds := newService(wideRange)
	in, _, err := svc.Start(context.Background(), "c1", "e1", StartOptions{Plugins: []string{"jupyterlab-git", "aa-theme", "jupyterlab-git", "aa-theme"}})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	if want := []string{"jupyterlab-git", "aa-theme"}; !reflect.DeepEqual(in.Config.Plugins, want) {
		t.Errorf("stored plugins %q, want %q", in.Config.Plugins, want)
	}
	if sent := cmds.all(); len(sent) != 1 || len(sent[0].cmd.Plugins) != 2 {
		t.Errorf("commands %+v, want one start with two plugins", sent)
	}
}

func TestStartCreatesInstanceAndSendsCommand(t *testing.T) {
	svc, st, cmds := newService(wideRange)
	ctx := context.Background()

	in, created, err := svc.Start(ctx, "c1", "e1", StartOptions{Plugins: []string{"jupyterlab-git"}})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	if !created {
		t.Errorf("created = false, want true")
	}
	if !idPattern.MatchString(in.ID) {
		t.Errorf("ID = %q, want ji- and 24 hex digits", in.ID)
	}
	if !tokenPattern.MatchString(in.AccessToken) {
		t.Errorf("AccessToken = %q, want 64 hex digits", in.AccessToken)
	}
	if in.ExternalPort < wideRange.First || in.ExternalPort > wideRange.Last {
		t.Errorf("ExternalPort = %d, want within %+v", in.ExternalPort, wideRange)
	}
	want := instance.Instance{
		ID: in.ID, EnvironmentID: "e1", CustomerID: "c1", HostID: "h1", ContainerID: "ctr-1",
		AccessURL:    "https://env-e1.jupyter.example.com/env-e1/?token=" + in.AccessToken,
		AccessToken:  in.AccessToken,
		ExternalPort: in.ExternalPort, InternalPort: 8888,
		Config: instance.Config{Plugins: []string{"jupyterlab-git"}},
		Status: instance.Starting, Stage: instance.StageQueued,
		CreatedAt: now.UTC(), UpdatedAt: now.UTC(), Version: 1,
		DueAt: now.Add(startGrace).Unix(), // the reaper looks when the start has timed out
		Audit: []instance.AuditEntry{{At: now.UTC(), Action: instance.ActionStart, Cause: "operator"}},
	}
	if !reflect.DeepEqual(in, want) {
		t.Errorf("Start =\n %+v\nwant\n %+v", in, want)
	}
	if got := st.get(in.ID); !reflect.DeepEqual(got, want) {
		t.Errorf("stored =\n %+v\nwant\n %+v", got, want)
	}
	if id, ok := st.envLease("e1"); !ok || id != in.ID {
		t.Errorf("environment lease = %q, %v; want %q", id, ok, in.ID)
	}
	if id, ok := st.portLease("h1", in.ExternalPort); !ok || id != in.ID {
		t.Errorf("port lease = %q, %v; want %q", id, ok, in.ID)
	}
	wantCmd := message.Command{
		V: message.Version, Type: message.TypeStart, InstanceID: in.ID, EnvironmentID: "e1", ContainerID: "ctr-1",
		HostPort: in.ExternalPort, InternalPort: 8888, Token: in.AccessToken, BaseURL: "/env-e1/",
		Plugins: []string{"jupyterlab-git==0.50.1"}, SentAt: now.UTC(), // the pip requirement, not the name
	}
	sent := cmds.all()
	if len(sent) != 1 {
		t.Fatalf("sent %d commands, want 1", len(sent))
	}
	if sent[0].hostID != "h1" {
		t.Errorf("command sent to host %q, want h1", sent[0].hostID)
	}
	if !reflect.DeepEqual(sent[0].cmd, wantCmd) {
		t.Errorf("command =\n %+v\nwant\n %+v", sent[0].cmd, wantCmd)
	}
	if err := sent[0].cmd.Validate(); err != nil {
		t.Errorf("the sent command does not validate: %v", err)
	}
	if len(st.createCalls) != 1 || st.createCalls[0].stale != "" {
		t.Errorf("CreateInstance calls = %+v, want one with no stale instance", st.createCalls)
	}
}

func TestStartGivesEachInstanceItsOwnIDTokenAndPort(t *testing.T) {
	svc, _, _ := newService(wideRange)
	ctx := context.Background()
	a, _, err := svc.Start(ctx, "c1", "e1", StartOptions{})
	if err != nil {
		t.Fatalf("Start e1: %v", err)
	}
	b, _, err := svc.Start(ctx, "c1", "e2", StartOptions{})
	if err != nil {
		t.Fatalf("Start e2: %v", err)
	}
	if a.ID == b.ID || a.AccessToken == b.AccessToken || a.ExternalPort == b.ExternalPort {
		t.Errorf("two instances on one host share id, token or port: %+v / %+v", a, b)
	}
}

func TestStartErrors(t *testing.T) {
	storeDown := errors.New("dynamodb: throttled")
	tests := []struct {
		name       string
		customer   string
		env        string
		opts       StartOptions
		setup      func(*fakeStore)
		wantErr    error  // errors.Is
		wantCode   string // *InputError code, instead of wantErr
		wantAllow  []string
		wantStored int // instances in the store afterwards
	}{
		{name: "unknown environment", customer: "c1", env: "nope", wantErr: ErrNotFound},
		{name: "another customer's environment", customer: "c2", env: "e1", wantErr: ErrNotFound},
		{name: "another customer's stopped environment", customer: "c2", env: "e4", wantErr: ErrNotFound},
		{name: "environment stopped", customer: "c1", env: "e4", wantErr: ErrEnvironmentNotRunning},
		{name: "environment starting", customer: "c1", env: "e6", wantErr: ErrEnvironmentNotRunning},
		{
			name: "environment store down", customer: "c1", env: "e1", wantErr: ErrUnavailable,
			setup: func(s *fakeStore) { s.envErr = storeDown },
		},
		{
			name: "previous instance still stopping", customer: "c1", env: "e1", wantErr: ErrStopping, wantStored: 1,
			setup: func(s *fakeStore) {
				s.put(instance.Instance{ID: "ji-old", EnvironmentID: "e1", HostID: "h1", ExternalPort: 20000, Status: instance.Stopping, Version: 4}, true)
			},
		},
		{
			name: "unknown plugin", customer: "c1", env: "e1", opts: StartOptions{Plugins: []string{"jupyterlab-git", "bitcoin-miner"}},
			wantCode: "plugin_not_allowed", wantAllow: []string{"aa-theme", "bb-tools", "jupyterlab-git", "jupyterlab-lsp", "zz-widgets"},
		},
		{
			name: "plugin name differs in case", customer: "c1", env: "e1", opts: StartOptions{Plugins: []string{"JupyterLab-Git"}},
			wantCode: "plugin_not_allowed", wantAllow: []string{"aa-theme", "bb-tools", "jupyterlab-git", "jupyterlab-lsp", "zz-widgets"},
		},
		{
			name: "too many plugins", customer: "c1", env: "e1", opts: StartOptions{Plugins: manyPlugins(message.MaxPlugins + 1)},
			wantCode: "too_many_plugins",
		},
		{name: "password too short", customer: "c1", env: "e1", opts: StartOptions{Password: "hunter2"}, wantCode: "invalid_password"},
		{name: "password with a newline", customer: "c1", env: "e1", opts: StartOptions{Password: "hunter2\nhunter2"}, wantCode: "invalid_password"},
		{
			name: "create fails for another reason", customer: "c1", env: "e1", wantErr: ErrUnavailable,
			setup: func(s *fakeStore) { s.createErrs = []error{storeDown} },
		},
		{
			name: "endless port contention", customer: "c1", env: "e1", wantErr: ErrUnavailable,
			setup: func(s *fakeStore) {
				for range maxRetries {
					s.createErrs = append(s.createErrs, fmt.Errorf("leasing: %w", store.ErrPortTaken))
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svc, st, cmds := newService(wideRange)
			if tt.setup != nil {
				tt.setup(st)
			}
			in, created, err := svc.Start(context.Background(), tt.customer, tt.env, tt.opts)
			if tt.wantCode != "" {
				var ie *InputError
				if !errors.As(err, &ie) {
					t.Fatalf("Start error = %v, want *InputError", err)
				}
				if ie.Code != tt.wantCode {
					t.Errorf("code = %q, want %q", ie.Code, tt.wantCode)
				}
				if !reflect.DeepEqual(ie.Allowed, tt.wantAllow) {
					t.Errorf("Allowed = %q, want %q", ie.Allowed, tt.wantAllow)
				}
				if ie.Message == "" {
					t.Errorf("InputError has no message")
				}
			} else if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Start error = %v, want %v", err, tt.wantErr)
			}
			if created || !reflect.DeepEqual(in, instance.Instance{}) {
				t.Errorf("Start = %+v, %v with an error; want zero, false", in, created)
			}
			if n := len(cmds.all()); n != 0 {
				t.Errorf("sent %d commands, want none", n)
			}
			if n := st.instanceCount(); n != tt.wantStored {
				t.Errorf("store holds %d instances, want %d", n, tt.wantStored)
			}
		})
	}
}

func TestStartNotFoundHidesOwnership(t *testing.T) {
	// Another customer's environment and a missing one must be the same error.
	svc, _, _ := newService(wideRange)
	_, _, errOther := svc.Start(context.Background(), "c2", "e1", StartOptions{})
	_, _, errMissing := svc.Start(context.Background(), "c2", "missing", StartOptions{})
	if errOther != ErrNotFound || errMissing != ErrNotFound {
		t.Errorf("errors = %v / %v, want exactly ErrNotFound for both", errOther, errMissing)
	}
}

func TestStartTwiceReturnsTheSameInstance(t *testing.T) {
	tests := []struct {
		name   string
		status instance.Status // the first instance's status before the second start
	}{
		{"starting", instance.Starting},
		{"running", instance.Running},
		{"unhealthy", instance.Unhealthy},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svc, st, cmds := newService(wideRange)
			ctx := context.Background()
			first, created, err := svc.Start(ctx, "c1", "e1", StartOptions{})
			if err != nil || !created {
				t.Fatalf("first Start = %v, %v", created, err)
			}
			if tt.status != instance.Starting {
				moved := first
				moved.Status = tt.status
				if err := st.Update(ctx, moved, first.Version); err != nil {
					t.Fatal(err)
				}
			}
			want := st.get(first.ID)
			second, created, err := svc.Start(ctx, "c1", "e1", StartOptions{Plugins: []string{"jupyterlab-lsp"}})
			if err != nil {
				t.Fatalf("second Start: %v", err)
			}
			if created {
				t.Errorf("second Start created = true, want false")
			}
			if !reflect.DeepEqual(second, want) {
				t.Errorf("second Start =\n %+v\nwant\n %+v", second, want)
			}
			if n := len(cmds.all()); n != 1 {
				t.Errorf("sent %d commands, want 1", n)
			}
			if n := len(st.createCalls); n != 1 {
				t.Errorf("CreateInstance called %d times, want 1", n)
			}
		})
	}
}

func TestStartNoFreePort(t *testing.T) {
	svc, st, cmds := newService(config.PortRange{First: 20000, Last: 20001})
	ctx := context.Background()
	// Two other environments on h1 take both ports.
	a, _, err := svc.Start(ctx, "c1", "e2", StartOptions{})
	if err != nil {
		t.Fatalf("Start e2: %v", err)
	}
	b, _, err := svc.Start(ctx, "c2", "e3", StartOptions{})
	if err != nil {
		t.Fatalf("Start e3: %v", err)
	}
	if got := map[int]bool{a.ExternalPort: true, b.ExternalPort: true}; !reflect.DeepEqual(got, map[int]bool{20000: true, 20001: true}) {
		t.Fatalf("ports = %d, %d; want 20000 and 20001", a.ExternalPort, b.ExternalPort)
	}

	in, created, err := svc.Start(ctx, "c1", "e1", StartOptions{})
	if !errors.Is(err, ErrNoFreePort) {
		t.Fatalf("Start e1 error = %v, want ErrNoFreePort", err)
	}
	if created || in.ID != "" {
		t.Errorf("Start e1 = %+v, %v; want zero, false", in, created)
	}
	if _, ok := st.envLease("e1"); ok {
		t.Errorf("e1 holds an environment lease after ErrNoFreePort")
	}
	if n := st.instanceCount(); n != 2 {
		t.Errorf("store holds %d instances, want 2", n)
	}
	if n := len(cmds.all()); n != 2 {
		t.Errorf("sent %d commands, want 2", n)
	}

	// Ports are per host: e5 on h2 still starts.
	if _, created, err := svc.Start(ctx, "c1", "e5", StartOptions{}); err != nil || !created {
		t.Errorf("Start e5 on another host = %v, %v; want created", created, err)
	}
}

func TestStartCommandNotSent(t *testing.T) {
	svc, st, cmds := newService(wideRange)
	ctx := context.Background()
	cmds.err = errSendFailed

	in, created, err := svc.Start(ctx, "c1", "e1", StartOptions{})
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Start error = %v, want ErrUnavailable", err)
	}
	if !errors.Is(err, errSendFailed) {
		t.Errorf("Start error = %v, want it to wrap the send error", err)
	}
	if created || in.ID != "" {
		t.Errorf("Start = %+v, %v; want zero, false", in, created)
	}
	if len(st.createCalls) != 1 {
		t.Fatalf("CreateInstance called %d times, want 1", len(st.createCalls))
	}
	failed := st.get(st.createCalls[0].instanceID)
	if failed.Status != instance.Failed || failed.StatusReason != "command_not_sent" {
		t.Errorf("instance ended %q (%q), want failed (command_not_sent)", failed.Status, failed.StatusReason)
	}
	if !failed.StoppedAt.Equal(now) || failed.StoppedAt.Location() != time.UTC {
		t.Errorf("StoppedAt = %v, want %v in UTC", failed.StoppedAt, now.UTC())
	}
	if failed.Version != 2 {
		t.Errorf("Version = %d, want 2", failed.Version)
	}
	if _, ok := st.envLease("e1"); ok {
		t.Errorf("environment lease still held")
	}
	if _, ok := st.portLease("h1", failed.ExternalPort); ok {
		t.Errorf("port lease %d still held", failed.ExternalPort)
	}

	// The status shows the failure, and a retry once the queue is back works.
	got, ok, err := svc.Status(ctx, "c1", "e1")
	if err != nil || !ok || got.ID != failed.ID || got.Status != instance.Failed {
		t.Errorf("Status = %+v, %v, %v; want the failed instance", got, ok, err)
	}
	cmds.err = nil
	again, created, err := svc.Start(ctx, "c1", "e1", StartOptions{})
	if err != nil || !created {
		t.Fatalf("Start after the queue recovered = %v, %v", created, err)
	}
	if again.ID == failed.ID {
		t.Errorf("restart reused the failed instance id %s", again.ID)
	}
	if len(cmds.all()) != 1 {
		t.Errorf("sent %d commands, want 1", len(cmds.all()))
	}
}

func TestStartRetriesAfterLeaseRace(t *testing.T) {
	tests := []struct {
		name string
		err  error
	}{
		{"port taken", fmt.Errorf("leasing port: %w", store.ErrPortTaken)},
		{"environment busy but then free", fmt.Errorf("creating: %w", store.ErrEnvironmentBusy)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svc, st, cmds := newService(wideRange)
			st.createErrs = []error{tt.err}
			in, created, err := svc.Start(context.Background(), "c1", "e1", StartOptions{})
			if err != nil || !created {
				t.Fatalf("Start = %v, %v; want created", created, err)
			}
			if n := len(st.createCalls); n != 2 {
				t.Fatalf("CreateInstance called %d times, want 2", n)
			}
			if st.createCalls[0].instanceID == st.createCalls[1].instanceID {
				t.Errorf("retry reused instance id %s", in.ID)
			}
			if st.createCalls[1].instanceID != in.ID {
				t.Errorf("returned %s, want the instance of the second attempt %s", in.ID, st.createCalls[1].instanceID)
			}
			if n := st.instanceCount(); n != 1 {
				t.Errorf("store holds %d instances, want 1", n)
			}
			sent := cmds.all()
			if len(sent) != 1 || sent[0].cmd.InstanceID != in.ID {
				t.Errorf("sent %+v, want one start of %s", sent, in.ID)
			}
		})
	}
}

func TestStartLosesRaceToAnotherStart(t *testing.T) {
	// A concurrent start created an instance between our read and our write:
	// the retry finds it and returns it instead of creating a second one.
	svc, st, cmds := newService(wideRange)
	other := instance.Instance{ID: "ji-other", EnvironmentID: "e1", HostID: "h1", ExternalPort: 20005, Status: instance.Starting, Version: 1}
	racing := &racingStore{fakeStore: st, other: other}
	svc.Store = racing
	in, created, err := svc.Start(context.Background(), "c1", "e1", StartOptions{})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	if created || in.ID != "ji-other" {
		t.Errorf("Start = %s, %v; want ji-other, false", in.ID, created)
	}
	if n := len(cmds.all()); n != 0 {
		t.Errorf("sent %d commands, want 0", n)
	}
}

// racingStore puts another instance in place just before the first create.
type racingStore struct {
	*fakeStore
	other instance.Instance
	done  bool
}

func (r *racingStore) CreateInstance(ctx context.Context, in instance.Instance, opts store.CreateOptions) error {
	if !r.done {
		r.done = true
		r.fakeStore.put(r.other, true)
	}
	return r.fakeStore.CreateInstance(ctx, in, opts)
}

func TestStartTakesOverStaleLease(t *testing.T) {
	svc, st, _ := newService(wideRange)
	old := instance.Instance{ID: "ji-old", EnvironmentID: "e1", HostID: "h1", ExternalPort: 20000,
		Status: instance.Failed, StatusReason: "crash", Version: 7}
	st.put(old, true) // leases left behind by an ended instance

	in, created, err := svc.Start(context.Background(), "c1", "e1", StartOptions{})
	if err != nil || !created {
		t.Fatalf("Start = %v, %v; want created", created, err)
	}
	if len(st.createCalls) != 1 || st.createCalls[0].stale != "ji-old" {
		t.Errorf("CreateInstance calls = %+v, want one taking over ji-old", st.createCalls)
	}
	if in.ExternalPort == 20000 {
		t.Errorf("new instance got port 20000, still leased to ji-old")
	}
	if id, _ := st.envLease("e1"); id != in.ID {
		t.Errorf("environment lease held by %q, want %q", id, in.ID)
	}
}

func TestStartTakesOverOrphanLease(t *testing.T) {
	// An environment lease whose instance is gone reads as an ended instance.
	svc, st, _ := newService(wideRange)
	st.leaseOnly("e1", "ji-gone")
	in, created, err := svc.Start(context.Background(), "c1", "e1", StartOptions{})
	if err != nil || !created {
		t.Fatalf("Start = %v, %v; want created", created, err)
	}
	if len(st.createCalls) != 1 || st.createCalls[0].stale != "ji-gone" {
		t.Errorf("CreateInstance calls = %+v, want one taking over ji-gone", st.createCalls)
	}
	if id, _ := st.envLease("e1"); id != in.ID {
		t.Errorf("environment lease held by %q, want %q", id, in.ID)
	}
}

func TestStop(t *testing.T) {
	svc, st, cmds := newService(wideRange)
	ctx := context.Background()
	started, _, err := svc.Start(ctx, "c1", "e1", StartOptions{})
	if err != nil {
		t.Fatal(err)
	}

	in, ok, err := svc.Stop(ctx, "c1", "e1", "user")
	if err != nil || !ok {
		t.Fatalf("Stop = %v, %v; want true, nil", ok, err)
	}
	if in.ID != started.ID || in.Status != instance.Stopping || in.StatusReason != "user" || in.Version != 2 {
		t.Errorf("Stop = %s %q (%q) v%d; want %s stopping (user) v2", in.ID, in.Status, in.StatusReason, in.Version, started.ID)
	}
	if got := st.get(started.ID); got.Status != instance.Stopping || got.StatusReason != "user" || got.Version != 2 {
		t.Errorf("stored %q (%q) v%d, want stopping (user) v2", got.Status, got.StatusReason, got.Version)
	}
	if _, held := st.envLease("e1"); !held {
		t.Errorf("a stopping instance must keep its environment lease")
	}
	wantCmd := message.Command{
		V: message.Version, Type: message.TypeStop, InstanceID: started.ID, EnvironmentID: "e1",
		ContainerID: "ctr-1", HostPort: started.ExternalPort, Reason: "user", SentAt: now.UTC(),
	}
	sent := cmds.all()
	if len(sent) != 2 {
		t.Fatalf("sent %d commands, want start and stop", len(sent))
	}
	if sent[1].hostID != "h1" || !reflect.DeepEqual(sent[1].cmd, wantCmd) {
		t.Errorf("stop command to %q =\n %+v\nwant to h1\n %+v", sent[1].hostID, sent[1].cmd, wantCmd)
	}
	if err := sent[1].cmd.Validate(); err != nil {
		t.Errorf("stop command does not validate: %v", err)
	}
	if sent[1].cmd.Token != "" {
		t.Errorf("stop command carries the token")
	}

	// Stop again: no new write, the command is sent again.
	updates := st.updateCalls
	again, ok, err := svc.Stop(ctx, "c1", "e1", "user")
	if err != nil || !ok {
		t.Fatalf("second Stop = %v, %v; want true, nil", ok, err)
	}
	if again.Status != instance.Stopping || again.Version != 2 {
		t.Errorf("second Stop = %q v%d, want stopping v2", again.Status, again.Version)
	}
	if st.updateCalls != updates {
		t.Errorf("second Stop wrote the instance again")
	}
	if sent := cmds.all(); len(sent) != 3 || sent[2].cmd.Type != message.TypeStop || sent[2].cmd.InstanceID != started.ID {
		t.Errorf("second Stop sent %+v, want a third command: stop of %s", sent, started.ID)
	}

	// While stopping, a start is refused.
	if _, _, err := svc.Start(ctx, "c1", "e1", StartOptions{}); !errors.Is(err, ErrStopping) {
		t.Errorf("Start while stopping = %v, want ErrStopping", err)
	}
}

func TestStopNothingActive(t *testing.T) {
	tests := []struct {
		name  string
		setup func(*testing.T, *Service, *fakeStore)
	}{
		{name: "never started", setup: func(*testing.T, *Service, *fakeStore) {}},
		{name: "after it stopped", setup: func(t *testing.T, svc *Service, st *fakeStore) {
			in, _, err := svc.Start(context.Background(), "c1", "e1", StartOptions{})
			if err != nil {
				t.Fatal(err)
			}
			done := in
			done.Status = instance.Stopped
			if err := st.Update(context.Background(), done, in.Version); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svc, st, cmds := newService(wideRange)
			tt.setup(t, svc, st)
			before := len(cmds.all())
			in, ok, err := svc.Stop(context.Background(), "c1", "e1", "user")
			if err != nil || ok || !reflect.DeepEqual(in, instance.Instance{}) {
				t.Errorf("Stop = %+v, %v, %v; want zero, false, nil", in, ok, err)
			}
			if n := len(cmds.all()); n != before {
				t.Errorf("Stop sent %d commands, want none", n-before)
			}
		})
	}
}

func TestStopErrors(t *testing.T) {
	tests := []struct {
		name     string
		customer string
		env      string
		prepare  func(*fakeStore, *fakeCommands)
		wantErr  error
	}{
		{name: "unknown environment", customer: "c1", env: "nope", wantErr: ErrNotFound},
		{name: "another customer's environment", customer: "c2", env: "e1", wantErr: ErrNotFound},
		{name: "stop command not sent", customer: "c1", env: "e1", wantErr: ErrUnavailable,
			prepare: func(_ *fakeStore, c *fakeCommands) { c.err = errSendFailed }},
		{name: "store fails the update", customer: "c1", env: "e1", wantErr: ErrUnavailable,
			prepare: func(s *fakeStore, _ *fakeCommands) { s.updateErrs = []error{errors.New("dynamodb: throttled")} }},
		{name: "endless conflicts", customer: "c1", env: "e1", wantErr: ErrUnavailable,
			prepare: func(s *fakeStore, _ *fakeCommands) {
				for range maxRetries {
					s.updateErrs = append(s.updateErrs, fmt.Errorf("x: %w", store.ErrConflict))
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svc, st, cmds := newService(wideRange)
			started, _, err := svc.Start(context.Background(), "c1", "e1", StartOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if tt.prepare != nil {
				tt.prepare(st, cmds)
			}
			in, ok, err := svc.Stop(context.Background(), tt.customer, tt.env, "user")
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Stop error = %v, want %v", err, tt.wantErr)
			}
			if ok || in.ID != "" {
				t.Errorf("Stop = %+v, %v with an error; want zero, false", in, ok)
			}
			if tt.wantErr == ErrNotFound {
				if got := st.get(started.ID); got.Status != instance.Starting {
					t.Errorf("instance became %q after a refused stop", got.Status)
				}
			}
		})
	}
}

func TestStopRetriesOnConflict(t *testing.T) {
	svc, st, cmds := newService(wideRange)
	ctx := context.Background()
	started, _, err := svc.Start(ctx, "c1", "e1", StartOptions{})
	if err != nil {
		t.Fatal(err)
	}
	st.updateErrs = []error{fmt.Errorf("x: %w", store.ErrConflict)}
	in, ok, err := svc.Stop(ctx, "c1", "e1", "user")
	if err != nil || !ok || in.Status != instance.Stopping {
		t.Fatalf("Stop = %q, %v, %v; want stopping, true, nil", in.Status, ok, err)
	}
	if st.updateCalls != 2 {
		t.Errorf("Update called %d times, want 2", st.updateCalls)
	}
	if sent := cmds.all(); len(sent) != 2 || sent[1].cmd.InstanceID != started.ID {
		t.Errorf("sent %+v, want start and one stop", sent)
	}
}

func TestStatus(t *testing.T) {
	svc, _, _ := newService(wideRange)
	ctx := context.Background()

	in, ok, err := svc.Status(ctx, "c1", "e1")
	if err != nil || ok || !reflect.DeepEqual(in, instance.Instance{}) {
		t.Errorf("Status before any start = %+v, %v, %v; want zero, false, nil", in, ok, err)
	}
	for _, tc := range []struct{ customer, env string }{{"c2", "e1"}, {"c1", "nope"}} {
		if _, _, err := svc.Status(ctx, tc.customer, tc.env); !errors.Is(err, ErrNotFound) {
			t.Errorf("Status(%s, %s) error = %v, want ErrNotFound", tc.customer, tc.env, err)
		}
	}

	first, _, err := svc.Start(ctx, "c1", "e1", StartOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got, ok, err := svc.Status(ctx, "c1", "e1")
	if err != nil || !ok || !reflect.DeepEqual(got, first) {
		t.Errorf("Status = %+v, %v, %v; want %+v, true, nil", got, ok, err, first)
	}

	// The latest instance is shown, even when it is no longer active.
	if changed, err := svc.ApplyReport(ctx, message.Report{V: 1, InstanceID: first.ID, HostID: "h1", Status: instance.Failed, Reason: "no_jupyter", At: now.Add(time.Second)}); err != nil || !changed {
		t.Fatalf("ApplyReport failed = %v, %v", changed, err)
	}
	got, ok, err = svc.Status(ctx, "c1", "e1")
	if err != nil || !ok || got.ID != first.ID || got.Status != instance.Failed || got.StatusReason != "no_jupyter" {
		t.Errorf("Status = %s %q (%q), %v, %v; want %s failed (no_jupyter)", got.ID, got.Status, got.StatusReason, ok, err, first.ID)
	}
	second, _, err := svc.Start(ctx, "c1", "e1", StartOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got, _, _ := svc.Status(ctx, "c1", "e1"); got.ID != second.ID {
		t.Errorf("Status = %s, want the newest instance %s", got.ID, second.ID)
	}
}

func TestApplyReportThroughService(t *testing.T) {
	svc, st, _ := newService(wideRange)
	ctx := context.Background()
	in, _, err := svc.Start(ctx, "c1", "e1", StartOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t1, t2 := now.Add(time.Second).UTC(), now.Add(2*time.Second).UTC()
	rep := func(s instance.Status, at time.Time, host string) message.Report {
		return message.Report{V: 1, InstanceID: in.ID, HostID: host, Status: s, At: at}
	}

	steps := []struct {
		name        string
		r           message.Report
		wantChanged bool
		wantStatus  instance.Status
		wantVersion int64
	}{
		{"running", rep(instance.Running, t1, "h1"), true, instance.Running, 2},
		{"duplicate", rep(instance.Running, t1, "h1"), false, instance.Running, 2},
		{"older starting", rep(instance.Starting, now.UTC(), "h1"), false, instance.Running, 2},
		{"wrong host", rep(instance.Stopped, t2, "h2"), false, instance.Running, 2},
		{"unknown instance", message.Report{V: 1, InstanceID: "ji-nope", HostID: "h1", Status: instance.Running, At: t2}, false, instance.Running, 2},
		{"stopped", rep(instance.Stopped, t2, "h1"), true, instance.Stopped, 3},
		{"running after stopped", rep(instance.Running, t2.Add(time.Second), "h1"), false, instance.Stopped, 3},
	}
	for _, s := range steps {
		changed, err := svc.ApplyReport(ctx, s.r)
		if err != nil {
			t.Fatalf("%s: ApplyReport: %v", s.name, err)
		}
		if changed != s.wantChanged {
			t.Errorf("%s: changed = %v, want %v", s.name, changed, s.wantChanged)
		}
		got := st.get(in.ID)
		if got.Status != s.wantStatus || got.Version != s.wantVersion {
			t.Errorf("%s: stored %q v%d, want %q v%d", s.name, got.Status, got.Version, s.wantStatus, s.wantVersion)
		}
	}
	got := st.get(in.ID)
	if !got.StartedAt.Equal(t1) || !got.StoppedAt.Equal(t2) {
		t.Errorf("started_at %v, stopped_at %v; want %v, %v", got.StartedAt, got.StoppedAt, t1, t2)
	}
	if _, held := st.envLease("e1"); held {
		t.Errorf("environment lease held after stopped")
	}
	if _, held := st.portLease("h1", in.ExternalPort); held {
		t.Errorf("port lease held after stopped")
	}
	// The environment is free again.
	if next, created, err := svc.Start(ctx, "c1", "e1", StartOptions{}); err != nil || !created || next.ID == in.ID {
		t.Errorf("Start after stopped = %s, %v, %v; want a new instance", next.ID, created, err)
	}
}

func TestApplyReportRetriesAndErrors(t *testing.T) {
	storeDown := errors.New("dynamodb: throttled")
	conflict := fmt.Errorf("x: %w", store.ErrConflict)
	tests := []struct {
		name        string
		prepare     func(*fakeStore)
		wantChanged bool
		wantErr     error
		wantUpdates int
		wantStatus  instance.Status
	}{
		{name: "one conflict then applied", prepare: func(s *fakeStore) { s.updateErrs = []error{conflict} },
			wantChanged: true, wantUpdates: 2, wantStatus: instance.Running},
		{name: "endless conflicts", prepare: func(s *fakeStore) {
			for range maxRetries {
				s.updateErrs = append(s.updateErrs, conflict)
			}
		}, wantErr: store.ErrConflict, wantUpdates: maxRetries, wantStatus: instance.Starting},
		{name: "update fails", prepare: func(s *fakeStore) { s.updateErrs = []error{storeDown} },
			wantErr: storeDown, wantUpdates: 1, wantStatus: instance.Starting},
		{name: "read fails", prepare: func(s *fakeStore) { s.instanceErr = storeDown },
			wantErr: storeDown, wantUpdates: 0, wantStatus: instance.Starting},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svc, st, _ := newService(wideRange)
			in, _, err := svc.Start(context.Background(), "c1", "e1", StartOptions{})
			if err != nil {
				t.Fatal(err)
			}
			tt.prepare(st)
			changed, err := svc.ApplyReport(context.Background(), message.Report{V: 1, InstanceID: in.ID, HostID: "h1", Status: instance.Running, At: now.Add(time.Second)})
			if tt.wantErr == nil && err != nil || tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("ApplyReport error = %v, want %v", err, tt.wantErr)
			}
			if changed != tt.wantChanged {
				t.Errorf("changed = %v, want %v", changed, tt.wantChanged)
			}
			if st.updateCalls != tt.wantUpdates {
				t.Errorf("Update called %d times, want %d", st.updateCalls, tt.wantUpdates)
			}
			st.instanceErr = nil
			if got := st.get(in.ID); got.Status != tt.wantStatus {
				t.Errorf("stored status %q, want %q", got.Status, tt.wantStatus)
			}
		})
	}
}

func TestApplyReportStopsStrayInstance(t *testing.T) {
	later := now.Add(time.Minute)
	tests := []struct {
		name      string
		end       instance.Status // the instance's state when the report arrives
		r         func(id string) message.Report
		wantStray bool
	}{
		{"running reported after stopped", instance.Stopped,
			func(id string) message.Report {
				return message.Report{V: 1, InstanceID: id, HostID: "h1", Status: instance.Running, At: later}
			}, true},
		{"starting reported after failed", instance.Failed,
			func(id string) message.Report {
				return message.Report{V: 1, InstanceID: id, HostID: "h1", Status: instance.Starting, At: later}
			}, true},
		{"another host", instance.Stopped,
			func(id string) message.Report {
				return message.Report{V: 1, InstanceID: id, HostID: "h2", Status: instance.Running, At: later}
			}, false},
		{"an end state", instance.Stopped,
			func(id string) message.Report {
				return message.Report{V: 1, InstanceID: id, HostID: "h1", Status: instance.Stopped, At: later}
			}, false},
		{"instance still active", instance.Stopping,
			func(id string) message.Report {
				return message.Report{V: 1, InstanceID: id, HostID: "h1", Status: instance.Running, At: later}
			}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svc, st, cmds := newService(wideRange)
			ctx := context.Background()
			in, _, err := svc.Start(ctx, "c1", "e1", StartOptions{})
			if err != nil {
				t.Fatal(err)
			}
			ended := in
			ended.Status = tt.end
			if err := st.Update(ctx, ended, in.Version); err != nil {
				t.Fatal(err)
			}
			changed, err := svc.ApplyReport(ctx, tt.r(in.ID))
			if err != nil || changed {
				t.Fatalf("ApplyReport = %v, %v; want false, nil", changed, err)
			}
			if got := st.get(in.ID); got.Status != tt.end {
				t.Errorf("instance became %q, want it left %q", got.Status, tt.end)
			}
			sent := cmds.all()[1:] // after the start
			if !tt.wantStray {
				if len(sent) != 0 {
					t.Errorf("sent %+v, want nothing", sent)
				}
				return
			}
			want := message.Command{V: message.Version, Type: message.TypeStop, InstanceID: in.ID, EnvironmentID: "e1",
				ContainerID: "ctr-1", HostPort: in.ExternalPort, Reason: "stray", SentAt: now.UTC()}
			if len(sent) != 1 || sent[0].hostID != "h1" || !reflect.DeepEqual(sent[0].cmd, want) {
				t.Errorf("sent %+v, want one stop to h1: %+v", sent, want)
			}
		})
	}
}

// In the host origin mode an environment is served on env-<id>.<domain>,
// and host names ignore case: an id with capitals would share its origin
// (and cookies) with its lowercase twin, so it is refused and nothing is
// made; the path mode, one origin for all, takes it.
func TestHostModeRefusesIDsThatDifferOnlyInCase(t *testing.T) {
	for _, origin := range []string{config.OriginHost, config.OriginPath} {
		svc, st, cmds := newService(wideRange)
		svc.Config.EnvOrigin = origin
		st.environments["Team-A"] = store.Environment{ID: "Team-A", CustomerID: "c1", HostID: "h1", ContainerID: "ctr-7", Status: store.EnvironmentRunning}
		_, _, err := svc.Start(context.Background(), "c1", "Team-A", StartOptions{})
		var ie *InputError
		if origin == config.OriginHost {
			if !errors.As(err, &ie) || ie.Code != "invalid_environment_id" {
				t.Fatalf("host mode: Start(Team-A) = %v, want invalid_environment_id", err)
			}
			if len(cmds.sent) != 0 {
				t.Fatalf("host mode: a refused start sent %d commands", len(cmds.sent))
			}
		} else if err != nil {
			t.Fatalf("path mode: Start(Team-A) = %v, want it started", err)
		}
	}
}

// A host reporting on an instance that is on another host, running or
// ended, changes nothing, has nothing stopped, and is logged (naming the
// instance and both hosts) as the anomaly it is.
func TestReportFromAnotherHostIsIgnoredAndLogged(t *testing.T) {
	for _, end := range []instance.Status{instance.Starting, instance.Stopped} {
		t.Run(string(end), func(t *testing.T) {
			svc, st, cmds := newService(wideRange)
			var logs bytes.Buffer
			svc.Log = slog.New(slog.NewTextHandler(&logs, nil))
			ctx := context.Background()
			in, _, err := svc.Start(ctx, "c1", "e1", StartOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if end != in.Status {
				ended := in
				ended.Status = end
				if err := st.Update(ctx, ended, in.Version); err != nil {
					t.Fatal(err)
				}
			}
			before := st.get(in.ID)
			for _, s := range []instance.Status{instance.Running, instance.Failed} {
				changed, err := svc.ApplyReport(ctx, message.Report{V: 1, InstanceID: in.ID, HostID: "h2", Status: s, Reason: "forged", At: now.Add(time.Minute)})
				if err != nil || changed {
					t.Fatalf("ApplyReport(%s from h2) = %v, %v; want false, nil", s, changed, err)
				}
			}
			if got := st.get(in.ID); !reflect.DeepEqual(got, before) {
				t.Errorf("instance became %+v, want it left %+v", got, before)
			}
			if sent := cmds.all()[1:]; len(sent) != 0 {
				t.Errorf("sent %+v, want nothing after the start", sent)
			}
			if n := strings.Count(logs.String(), `msg="ignoring a report from a host the instance is not on" instance_id=`+in.ID+` host_id=h2 instance_host_id=h1`); n != 2 {
				t.Errorf("%d warnings, want 2; log:\n%s", n, logs.String())
			}
		})
	}
}
