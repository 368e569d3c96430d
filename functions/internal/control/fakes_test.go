package control

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/envjupyter/envjupyter/functions/store"
	"github.com/envjupyter/envjupyter/shared/instance"
	"github.com/envjupyter/envjupyter/shared/message"
)

// fakeLease is what the fake keeps of a lease.
type fakeLease struct{ instanceID string }

type portKey struct {
	host string
	port int
}

// fakeStore keeps environments, instances and leases in memory with the
// semantics of functions/store/dynamostore: creation takes both leases atomically or fails
// with ErrEnvironmentBusy / ErrPortTaken, updates are conditional on the
// version, and the update that makes an instance stopped or failed releases
// the leases it still holds.
type fakeStore struct {
	mu           sync.Mutex
	environments map[string]store.Environment
	instances    map[string]instance.Instance
	order        []string // instance ids, oldest first
	envLeases    map[string]fakeLease
	portLeases   map[portKey]fakeLease

	// Injected failures: envErr and instanceErr fail every call, the
	// slices are consumed one per call.
	envErr      error
	instanceErr error
	createErrs  []error
	updateErrs  []error
	// Calls seen.
	createCalls []createCall
	updateCalls int
	reads       int // Instance calls
	rearms      int
	heardCalls  int

	hosts map[string]time.Time // host id → heard at
}

type createCall struct {
	instanceID, stale string
	port              int
}

func newFakeStore(envs ...store.Environment) *fakeStore {
	f := &fakeStore{
		environments: map[string]store.Environment{},
		instances:    map[string]instance.Instance{},
		envLeases:    map[string]fakeLease{},
		portLeases:   map[portKey]fakeLease{},
		hosts:        map[string]time.Time{},
	}
	for _, e := range envs {
		f.environments[e.ID] = e
	}
	return f
}

func (f *fakeStore) Environment(_ context.Context, id string) (store.Environment, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.envErr != nil {
		return store.Environment{}, f.envErr
	}
	e, ok := f.environments[id]
	if !ok {
		return store.Environment{}, fmt.Errorf("reading environment %s: %w", id, store.ErrNotFound)
	}
	return e, nil
}

func (f *fakeStore) Instance(_ context.Context, id string) (instance.Instance, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reads++
	if f.instanceErr != nil {
		return instance.Instance{}, f.instanceErr
	}
	in, ok := f.instances[id]
	if !ok {
		return instance.Instance{}, fmt.Errorf("reading instance %s: %w", id, store.ErrNotFound)
	}
	return in, nil
}

func (f *fakeStore) ActiveInstance(ctx context.Context, environmentID string) (instance.Instance, error) {
	f.mu.Lock()
	l, ok := f.envLeases[environmentID]
	f.mu.Unlock()
	if !ok {
		return instance.Instance{}, fmt.Errorf("reading lease of environment %s: %w", environmentID, store.ErrNotFound)
	}
	in, err := f.Instance(ctx, l.instanceID)
	if errors.Is(err, store.ErrNotFound) {
		// Like the real store: a lease that outlived its instance reads as
		// an ended instance, so the next start takes the lease over.
		return instance.Instance{ID: l.instanceID, EnvironmentID: environmentID, Status: instance.Stopped}, nil
	}
	return in, err
}

func (f *fakeStore) LatestInstance(_ context.Context, environmentID string) (instance.Instance, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := len(f.order) - 1; i >= 0; i-- {
		if in := f.instances[f.order[i]]; in.EnvironmentID == environmentID {
			return in, nil
		}
	}
	return instance.Instance{}, fmt.Errorf("instances of environment %s: %w", environmentID, store.ErrNotFound)
}

func (f *fakeStore) HeldPorts(_ context.Context, hostID string) (map[int]bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	held := map[int]bool{}
	for k := range f.portLeases {
		if k.host == hostID {
			held[k.port] = true
		}
	}
	return held, nil
}

func (f *fakeStore) CreateInstance(_ context.Context, in instance.Instance, opts store.CreateOptions) error {
	stale := opts.Stale
	f.mu.Lock()
	defer f.mu.Unlock()
	f.createCalls = append(f.createCalls, createCall{instanceID: in.ID, stale: stale, port: in.ExternalPort})
	if len(f.createErrs) > 0 {
		err := f.createErrs[0]
		f.createErrs = f.createErrs[1:]
		if err != nil {
			return err
		}
	}
	if l, ok := f.envLeases[in.EnvironmentID]; ok && (stale == "" || l.instanceID != stale) {
		return fmt.Errorf("creating instance in environment %s: %w", in.EnvironmentID, store.ErrEnvironmentBusy)
	}
	pk := portKey{in.HostID, in.ExternalPort}
	if _, ok := f.portLeases[pk]; ok {
		return fmt.Errorf("leasing port %d on host %s: %w", in.ExternalPort, in.HostID, store.ErrPortTaken)
	}
	if _, ok := f.instances[in.ID]; ok {
		return fmt.Errorf("creating instance %s: %w", in.ID, store.ErrConflict)
	}
	f.instances[in.ID] = in
	f.order = append(f.order, in.ID)
	f.envLeases[in.EnvironmentID] = fakeLease{in.ID}
	f.portLeases[pk] = fakeLease{in.ID}
	return nil
}

func (f *fakeStore) Update(_ context.Context, in instance.Instance, prev int64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.updateCalls++
	if len(f.updateErrs) > 0 {
		err := f.updateErrs[0]
		f.updateErrs = f.updateErrs[1:]
		if err != nil {
			return err
		}
	}
	cur, ok := f.instances[in.ID]
	if !ok || cur.Version != prev {
		return fmt.Errorf("updating instance %s to %s: %w", in.ID, in.Status, store.ErrConflict)
	}
	in.Version = prev + 1
	if in.Status.Terminal() {
		in.DueAt = 0 // as the real store: an ended instance leaves the index
	}
	f.instances[in.ID] = in
	if in.Status.Terminal() {
		if l, ok := f.envLeases[in.EnvironmentID]; ok && l.instanceID == in.ID {
			delete(f.envLeases, in.EnvironmentID)
		}
		pk := portKey{in.HostID, in.ExternalPort}
		if l, ok := f.portLeases[pk]; ok && l.instanceID == in.ID {
			delete(f.portLeases, pk)
		}
	}
	return nil
}

// leaseOnly leaves an environment lease without its instance.
func (f *fakeStore) leaseOnly(environmentID, instanceID string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.envLeases[environmentID] = fakeLease{instanceID}
}

// put stores an instance directly, with leases if it is active (as the real
// store would hold them), for setting up a scenario.
func (f *fakeStore) put(in instance.Instance, withLeases bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.instances[in.ID]; !ok {
		f.order = append(f.order, in.ID)
	}
	f.instances[in.ID] = in
	if withLeases {
		f.envLeases[in.EnvironmentID] = fakeLease{in.ID}
		f.portLeases[portKey{in.HostID, in.ExternalPort}] = fakeLease{in.ID}
	}
}

func (f *fakeStore) get(id string) instance.Instance {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.instances[id]
}

func (f *fakeStore) instanceCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.instances)
}

func (f *fakeStore) envLease(environmentID string) (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	l, ok := f.envLeases[environmentID]
	return l.instanceID, ok
}

func (f *fakeStore) portLease(hostID string, port int) (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	l, ok := f.portLeases[portKey{hostID, port}]
	return l.instanceID, ok
}

// fakeCommands records what is sent and fails while err is set.
type fakeCommands struct {
	mu   sync.Mutex
	err  error
	sent []sentCommand
}

type sentCommand struct {
	hostID string
	cmd    message.Command
}

func (f *fakeCommands) Send(_ context.Context, hostID string, cmd message.Command) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return f.err
	}
	f.sent = append(f.sent, sentCommand{hostID, cmd})
	return nil
}

func (f *fakeCommands) all() []sentCommand {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]sentCommand(nil), f.sent...)
}

var errSendFailed = errors.New("sqs: connection refused")

// DueInstances serves the ids of active instances due by now, in pages of
// two so that paging is exercised.
func (f *fakeStore) DueInstances(_ context.Context, now time.Time, page func(ids []string) error) error {
	f.mu.Lock()
	var due []string
	for id, in := range f.instances {
		if in.DueAt != 0 && in.DueAt <= now.Unix() {
			due = append(due, id)
		}
	}
	f.mu.Unlock()
	sort.Strings(due)
	for len(due) > 0 {
		n := min(2, len(due))
		if err := page(due[:n]); err != nil {
			return err
		}
		due = due[n:]
	}
	return nil
}

func (f *fakeStore) Rearm(_ context.Context, id string, version int64, due time.Time) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	in, ok := f.instances[id]
	if !ok || in.Version != version {
		return fmt.Errorf("re-arming instance %s: %w", id, store.ErrConflict)
	}
	f.rearms++
	in.DueAt = due.Unix()
	f.instances[id] = in
	return nil
}

func (f *fakeStore) HostHeard(_ context.Context, hostID string, at time.Time) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.heardCalls++
	if at.After(f.hosts[hostID]) {
		f.hosts[hostID] = at
	}
	return nil
}

func (f *fakeStore) SilentHosts(_ context.Context, before time.Time) ([]store.Host, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []store.Host
	for id, at := range f.hosts {
		if at.Before(before) {
			out = append(out, store.Host{ID: id, HeardAt: at})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

func (f *fakeStore) HostInstanceIDs(_ context.Context, hostID string) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var ids []string
	for k, l := range f.portLeases {
		if k.host == hostID {
			ids = append(ids, l.instanceID)
		}
	}
	sort.Strings(ids)
	return ids, nil
}

func (f *fakeStore) HostLastHeard(_ context.Context, hostID string) (time.Time, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	at, ok := f.hosts[hostID]
	if !ok {
		return time.Time{}, store.ErrNotFound
	}
	return at, nil
}

func (f *fakeStore) ForgetHost(_ context.Context, h store.Host) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if at, ok := f.hosts[h.ID]; ok && at.Equal(h.HeardAt) {
		delete(f.hosts, h.ID)
	}
	return nil
}

func (f *fakeStore) counts() (reads, rearms, heard int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.reads, f.rearms, f.heardCalls
}
