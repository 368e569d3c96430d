// Package control is the control plane's logic: start, stop and status of an
// environment's JupyterLab, and applying what hosts report. The HTTP API and
// the event handlers call it; it writes instance state with conditional
// writes only, so concurrent and repeated calls are safe.
package control

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/envjupyter/envjupyter/functions/internal/emf"
	"github.com/envjupyter/envjupyter/functions/internal/password"
	"github.com/envjupyter/envjupyter/functions/store"
	"github.com/envjupyter/envjupyter/shared/accesslink"
	"github.com/envjupyter/envjupyter/shared/config"
	"github.com/envjupyter/envjupyter/shared/instance"
	"github.com/envjupyter/envjupyter/shared/message"
)

// Store is what the control plane needs of the tables.
type Store interface {
	Environment(ctx context.Context, id string) (store.Environment, error)
	Instance(ctx context.Context, id string) (instance.Instance, error)
	ActiveInstance(ctx context.Context, environmentID string) (instance.Instance, error)
	LatestInstance(ctx context.Context, environmentID string) (instance.Instance, error)
	HeldPorts(ctx context.Context, hostID string) (map[int]bool, error)
	CreateInstance(ctx context.Context, in instance.Instance, opts store.CreateOptions) error
	Update(ctx context.Context, in instance.Instance, prev int64) error

	// What the reaper reads and writes (see reaper.go).
	DueInstances(ctx context.Context, now time.Time, page func(ids []string) error) error
	Rearm(ctx context.Context, id string, version int64, due time.Time) error
	HostHeard(ctx context.Context, hostID string, at time.Time) error
	HostLastHeard(ctx context.Context, hostID string) (time.Time, error)
	SilentHosts(ctx context.Context, before time.Time) ([]store.Host, error)
	HostInstanceIDs(ctx context.Context, hostID string) ([]string, error)
	ForgetHost(ctx context.Context, h store.Host) error
}

// Commands sends commands to a host's sidecar.
type Commands interface {
	Send(ctx context.Context, hostID string, cmd message.Command) error
}

// Service is the control plane.
type Service struct {
	Store    Store
	Commands Commands
	Config   config.Config
	Metrics  *emf.Emitter // nil: no metrics
	Log      *slog.Logger
	Now      func() time.Time
	// Refresher re-reads Config while a function runs
	// (lambdaenv.Refreshing); nil: Config is never read again.
	Refresher *config.Refresher

	// heard is when this copy last recorded each host heard (hostHeard).
	heardMu sync.Mutex
	heard   map[string]time.Time
}

// StartOptions are what a customer may choose at start.
type StartOptions struct {
	Password string
	Plugins  []string
	// InternalPort is Jupyter's port inside the container (0: the default 8888).
	InternalPort int
}

// Internal ports a customer may choose: unprivileged, below the ephemeral range.
const (
	MinInternalPort = 1024
	MaxInternalPort = 32767
)

// AccessLink returns a short-lived, single-use link that opens the
// instance's JupyterLab in a browser session, or "" when links are not
// configured or the instance cannot be opened.
func (s *Service) AccessLink(in instance.Instance) string {
	if len(s.Config.LinkKeys) == 0 || !(in.Status == instance.Running || in.Status == instance.Unhealthy) {
		return ""
	}
	ticket := accesslink.Sign(s.Config.LinkKeys[0], in.EnvironmentID, in.ID, s.now().Add(s.Config.LinkTTL))
	return s.Config.EnvironmentURL(in.EnvironmentID) + "_access?t=" + ticket
}

// requirements maps plugin names to their pip requirements.
func (s *Service) requirements(plugins []string) []string {
	var reqs []string
	for _, p := range plugins {
		reqs = append(reqs, s.Config.AllowedPlugins[p])
	}
	return reqs
}

// hashOf hashes a chosen password; the password itself goes no further.
func hashOf(p string) string {
	if p == "" {
		return ""
	}
	return password.Hash(p)
}

// pluginName is the shape of a plugin name that may be echoed in an error.
var pluginName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// maxRetries bounds optimistic-locking retries.
const maxRetries = 8

func (s *Service) now() time.Time {
	if s.Now != nil {
		return s.Now().UTC()
	}
	return time.Now().UTC()
}

// environment returns the customer's environment, or ErrNotFound if it does
// not exist or belongs to someone else.
func (s *Service) environment(ctx context.Context, customerID, environmentID string) (store.Environment, error) {
	env, err := s.Store.Environment(ctx, environmentID)
	if errors.Is(err, store.ErrNotFound) || err == nil && env.CustomerID != customerID {
		return store.Environment{}, ErrNotFound
	}
	if err != nil {
		return store.Environment{}, unavailable(err)
	}
	return env, nil
}

// Start starts JupyterLab in the customer's environment, or returns the
// instance that is already starting or running there (created is then false).
func (s *Service) Start(ctx context.Context, customerID, environmentID string, opts StartOptions) (in instance.Instance, created bool, err error) {
	if opts, err = s.validate(opts); err != nil {
		return instance.Instance{}, false, err
	}
	env, err := s.environment(ctx, customerID, environmentID)
	if err != nil {
		return instance.Instance{}, false, err
	}
	return s.start(ctx, env, opts)
}

// StartEnvironment is Start on behalf of the platform (an environment event),
// for whichever customer owns the environment.
func (s *Service) StartEnvironment(ctx context.Context, environmentID string, opts StartOptions) (instance.Instance, bool, error) {
	opts, err := s.validate(opts)
	if err != nil {
		return instance.Instance{}, false, err
	}
	env, err := s.Store.Environment(ctx, environmentID)
	if errors.Is(err, store.ErrNotFound) {
		return instance.Instance{}, false, ErrNotFound
	}
	if err != nil {
		return instance.Instance{}, false, unavailable(err)
	}
	return s.start(ctx, env, opts)
}

func (s *Service) start(ctx context.Context, env store.Environment, opts StartOptions) (instance.Instance, bool, error) {
	// Host names are case-insensitive: env-ABC and env-abc would share a
	// browser origin (and the cookies on it), so that mode serves only
	// lowercase ids (the proxy refuses the others, too).
	if s.Config.EnvOrigin == config.OriginHost && env.ID != strings.ToLower(env.ID) {
		return instance.Instance{}, false, &InputError{Code: "invalid_environment_id",
			Message: "each environment is served on a host name of its own, and host names ignore case: an environment id must be lowercase"}
	}
	if env.Status != store.EnvironmentRunning {
		return instance.Instance{}, false, ErrEnvironmentNotRunning
	}
	if err := s.hostAvailable(ctx, env.HostID); err != nil {
		return instance.Instance{}, false, err
	}
	for range maxRetries {
		stale := ""
		current, err := s.Store.ActiveInstance(ctx, env.ID)
		switch {
		case errors.Is(err, store.ErrNotFound):
		case err != nil:
			return instance.Instance{}, false, unavailable(err)
		case current.Status == instance.Stopping:
			return instance.Instance{}, false, ErrStopping
		case current.Status.Active():
			return current, false, nil
		default:
			stale = current.ID // a lease left behind by an ended or vanished instance
		}
		in, err := s.create(ctx, env, opts, stale)
		switch {
		case errors.Is(err, store.ErrEnvironmentBusy), errors.Is(err, store.ErrPortTaken):
			continue // someone else started here, or took our port: look again
		case errors.Is(err, store.ErrCustomerLimit):
			return instance.Instance{}, false, ErrLimit
		case err != nil:
			return instance.Instance{}, false, err
		}
		return s.sendStart(ctx, in)
	}
	return instance.Instance{}, false, fmt.Errorf("%w: too much contention starting in environment %s", ErrUnavailable, env.ID)
}

// distinct returns list without repeats, in its order.
func distinct(list []string) []string {
	var out []string
	for _, v := range list {
		if !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	return out
}

func (s *Service) validate(opts StartOptions) (StartOptions, error) {
	if opts.Password != "" {
		if err := password.Validate(opts.Password); err != nil {
			return opts, &InputError{Code: "invalid_password", Message: err.Error()}
		}
	}
	if p := opts.InternalPort; p != 0 && (p < MinInternalPort || p > MaxInternalPort) {
		return opts, &InputError{Code: "invalid_internal_port", Message: fmt.Sprintf("internal_port must be from %d to %d", MinInternalPort, MaxInternalPort)}
	}
	// A plugin named twice is installed once; each is a pip install in the
	// customer's container within one time budget, so their number is bounded.
	opts.Plugins = distinct(opts.Plugins)
	if len(opts.Plugins) > message.MaxPlugins {
		return opts, &InputError{Code: "too_many_plugins", Message: fmt.Sprintf("at most %d plugins", message.MaxPlugins)}
	}
	for _, p := range opts.Plugins {
		if _, ok := s.Config.AllowedPlugins[p]; !ok {
			allowed := make([]string, 0, len(s.Config.AllowedPlugins))
			for name := range s.Config.AllowedPlugins {
				allowed = append(allowed, name)
			}
			sort.Strings(allowed)
			msg := "a plugin name is not allowed"
			if pluginName.MatchString(p) {
				msg = fmt.Sprintf("plugin %q is not allowed", p) // safe to echo
			}
			return opts, &InputError{Code: "plugin_not_allowed", Message: msg, Allowed: allowed}
		}
	}
	return opts, nil
}

// create writes a new starting instance on a free port of the host.
func (s *Service) create(ctx context.Context, env store.Environment, opts StartOptions, stale string) (instance.Instance, error) {
	held, err := s.Store.HeldPorts(ctx, env.HostID)
	if err != nil {
		return instance.Instance{}, unavailable(err)
	}
	port, ok := pickPort(s.Config.Ports, held)
	if !ok {
		return instance.Instance{}, ErrNoFreePort
	}
	token, id := randomHex(32), "ji-"+randomHex(12)
	now := s.now()
	port2 := opts.InternalPort
	if port2 == 0 {
		port2 = instance.InternalPort
	}
	in := instance.Instance{
		ID:            id,
		EnvironmentID: env.ID,
		CustomerID:    env.CustomerID,
		HostID:        env.HostID,
		ContainerID:   env.ContainerID,
		AccessToken:   token,
		AccessURL:     s.Config.EnvironmentURL(env.ID) + "?token=" + token,
		ExternalPort:  port,
		InternalPort:  port2,
		Config:        instance.Config{Plugins: opts.Plugins, PasswordHash: hashOf(opts.Password)},
		Status:        instance.Starting,
		Stage:         instance.StageQueued,
		CreatedAt:     now,
		UpdatedAt:     now,
		Version:       1,
		Audit:         []instance.AuditEntry{actorFrom(ctx).entry(instance.ActionStart, now, "")},
	}
	s.arm(&in, "")
	err = s.Store.CreateInstance(ctx, in, store.CreateOptions{Stale: stale, CustomerLimit: s.Config.MaxActivePerCustomer})
	if err != nil {
		if errors.Is(err, store.ErrEnvironmentBusy) || errors.Is(err, store.ErrPortTaken) || errors.Is(err, store.ErrCustomerLimit) {
			return instance.Instance{}, err
		}
		return instance.Instance{}, unavailable(err)
	}
	return in, nil
}

func (s *Service) sendStart(ctx context.Context, in instance.Instance) (instance.Instance, bool, error) {
	cmd := message.Command{
		V: message.Version, Type: message.TypeStart,
		InstanceID: in.ID, EnvironmentID: in.EnvironmentID, ContainerID: in.ContainerID,
		HostPort: in.ExternalPort, InternalPort: in.InternalPort, Token: in.AccessToken,
		BaseURL: instance.BasePath(in.EnvironmentID), Plugins: s.requirements(in.Config.Plugins),
		PasswordHash: in.Config.PasswordHash, SentAt: s.now(),
	}
	if err := s.Commands.Send(ctx, in.HostID, cmd); err != nil {
		// Nothing reached the host: end the instance so its leases go.
		failed := in
		failed.Status, failed.StatusReason, failed.StoppedAt = instance.Failed, instance.ReasonCommandNotSent, s.now()
		if uerr := s.Store.Update(ctx, failed, in.Version); uerr != nil {
			s.log().ErrorContext(ctx, "could not mark unsent start as failed", "instance_id", in.ID, "error", uerr)
		}
		return instance.Instance{}, false, unavailable(err)
	}
	s.log().InfoContext(ctx, "start sent", "instance_id", in.ID, "environment_id", in.EnvironmentID, "host_id", in.HostID, "port", in.ExternalPort)
	return in, true, nil
}

// Stop asks the environment's active JupyterLab to stop. It returns the
// instance and whether a stop is now under way; with nothing active it
// returns false and the zero instance (or an ended one whose lease remained).
func (s *Service) Stop(ctx context.Context, customerID, environmentID, reason string) (instance.Instance, bool, error) {
	if _, err := s.environment(ctx, customerID, environmentID); err != nil {
		return instance.Instance{}, false, err
	}
	return s.StopEnvironment(ctx, environmentID, reason)
}

// StopEnvironment is Stop on behalf of the platform (environment stopped,
// idle, timeout): whatever state the active instance is in, it stops.
func (s *Service) StopEnvironment(ctx context.Context, environmentID, reason string) (instance.Instance, bool, error) {
	for range maxRetries {
		in, err := s.Store.ActiveInstance(ctx, environmentID)
		if errors.Is(err, store.ErrNotFound) {
			return instance.Instance{}, false, nil
		}
		if err != nil {
			return instance.Instance{}, false, unavailable(err)
		}
		if !in.Status.Active() {
			return in, false, nil
		}
		if in.Status != instance.Stopping {
			prev, was := in.Version, in.Status
			in.Status, in.StatusReason = instance.Stopping, reason
			s.arm(&in, was)
			in.Audit = append(in.Audit, actorFrom(ctx).entry(instance.ActionStop, s.now(), reason))
			if err := s.Store.Update(ctx, in, prev); errors.Is(err, store.ErrConflict) {
				continue
			} else if err != nil {
				return instance.Instance{}, false, unavailable(err)
			}
			in.Version = prev + 1
		}
		// Sent again when already stopping: stop is idempotent on the host,
		// and a repeated request heals a lost command.
		if err := s.Commands.Send(ctx, in.HostID, s.stopCommand(in, reason)); err != nil {
			return instance.Instance{}, false, unavailable(err)
		}
		s.log().InfoContext(ctx, "stop sent", "instance_id", in.ID, "environment_id", in.EnvironmentID, "reason", reason)
		return in, true, nil
	}
	return instance.Instance{}, false, fmt.Errorf("%w: too much contention stopping in environment %s", ErrUnavailable, environmentID)
}

// stopCommand tells an instance's host to stop it; the host needs no
// memory of the start to carry it out.
func (s *Service) stopCommand(in instance.Instance, reason string) message.Command {
	return message.Command{
		V: message.Version, Type: message.TypeStop, InstanceID: in.ID, EnvironmentID: in.EnvironmentID,
		ContainerID: in.ContainerID, HostPort: in.ExternalPort, Reason: reason, SentAt: s.now(),
	}
}

// Status returns the environment's latest instance, or ErrNotFound-free
// (zero, false) when it never had one.
func (s *Service) Status(ctx context.Context, customerID, environmentID string) (instance.Instance, bool, error) {
	if _, err := s.environment(ctx, customerID, environmentID); err != nil {
		return instance.Instance{}, false, err
	}
	in, err := s.Store.LatestInstance(ctx, environmentID)
	if errors.Is(err, store.ErrNotFound) {
		return instance.Instance{}, false, nil
	}
	if err != nil {
		return instance.Instance{}, false, unavailable(err)
	}
	return in, true, nil
}

// ApplyReport applies a host's report to its instance if it is a valid
// transition (or fresher detail of the same state) from the right host;
// anything stale, duplicate or misdirected changes nothing. It reports
// whether the instance changed.
func (s *Service) ApplyReport(ctx context.Context, r message.Report) (bool, error) {
	// Any report the host signed says it is alive (the reaper reads this
	// rather than every instance's last report).
	if err := s.hostHeard(ctx, r.HostID, r.At); err != nil {
		return false, err
	}
	if r.HostOnly() {
		return false, nil // a host's heartbeat: it is alive, nothing more
	}
	for range maxRetries {
		in, err := s.Store.Instance(ctx, r.InstanceID)
		if errors.Is(err, store.ErrNotFound) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		if r.HostID != in.HostID {
			// An instance's commands go to its own host only, so no other
			// host knows of it: a report naming it is a bug or a forgery, and
			// changes nothing (not even a stray's stop). Logged, since it
			// should never happen.
			s.log().WarnContext(ctx, "ignoring a report from a host the instance is not on",
				"instance_id", in.ID, "host_id", r.HostID, "instance_host_id", in.HostID, "status", r.Status)
			return false, nil
		}
		next, ok := applyReport(in, r)
		if !ok {
			s.stopStray(ctx, in, r)
			return false, nil
		}
		s.arm(&next, in.Status)
		err = s.Store.Update(ctx, next, in.Version)
		if errors.Is(err, store.ErrConflict) {
			// Reports of one instance race each other in concurrent
			// invocations: wait a moment so the next read sees the winner.
			backoff(ctx)
			continue
		}
		if err != nil {
			return false, err
		}
		if next.Status != in.Status {
			s.log().InfoContext(ctx, "instance changed", "instance_id", in.ID, "environment_id", in.EnvironmentID,
				"from", in.Status, "to", next.Status, "reason", next.StatusReason)
			s.emitTransition(in, next)
		}
		return true, nil
	}
	return false, fmt.Errorf("applying report to instance %s: %w", r.InstanceID, store.ErrConflict)
}

// stopStray tells a host to stop an instance it says is alive when the
// control plane has already ended it: a stop that overtook its start, or a
// host that was presumed lost. Without this such a Jupyter would run forever.
func (s *Service) stopStray(ctx context.Context, in instance.Instance, r message.Report) {
	if !in.Status.Terminal() || r.HostID != in.HostID || !r.Status.Active() || s.Commands == nil {
		return
	}
	cmd := s.stopCommand(in, instance.ReasonStray)
	if err := s.Commands.Send(ctx, in.HostID, cmd); err != nil {
		s.log().ErrorContext(ctx, "could not stop a stray instance", "instance_id", in.ID, "error", err)
		return
	}
	s.log().WarnContext(ctx, "stopping a stray instance", "instance_id", in.ID, "environment_id", in.EnvironmentID, "reported", r.Status)
}

// applyReport returns the instance as the report would leave it, and false if
// the report must be ignored. It is pure so the rules can be tested alone.
func applyReport(in instance.Instance, r message.Report) (instance.Instance, bool) {
	same := r.Status == in.Status
	if r.HostID != in.HostID || in.Status.Terminal() || r.At.Before(in.ReportedAt) || same && r.At.Equal(in.ReportedAt) {
		return in, false
	}
	// A stopping instance only moves on to an end state: a late "running"
	// must not revive it.
	if !same && !instance.CanTransition(in.Status, r.Status) {
		return in, false
	}
	out := in
	out.ReportedAt = r.At
	if r.Health != nil {
		out.Health = r.Health
	}
	if r.Stage != "" && r.Status == instance.Starting {
		out.Stage = r.Stage
	}
	if same {
		return out, true
	}
	out.Status = r.Status
	if r.Reason != "" || r.Status == instance.Running {
		out.StatusReason = r.Reason
	}
	if r.Status == instance.Running && out.StartedAt.IsZero() {
		out.StartedAt = r.At
		out.Stage = ""
	}
	if r.Status.Terminal() {
		out.StoppedAt = r.At
		out.Stage = ""
		out.Audit = append(append([]instance.AuditEntry(nil), in.Audit...),
			instance.AuditEntry{At: r.At, Action: instance.ActionEnd, Cause: endCause(r.Reason), Actor: r.HostID, Detail: r.Reason})
	}
	return out, true
}

// endCause classifies what a host reports as the end of an instance.
func endCause(reason string) string {
	switch {
	case reason == instance.ReasonContainerGone:
		return "container_gone"
	case reason == instance.ReasonIdle:
		return "idle"
	}
	return "host"
}

// emitTransition records a state change as metrics: a count per new state,
// and how long the start or the stop took.
func (s *Service) emitTransition(from, to instance.Instance) {
	metrics := []emf.Metric{{Name: "Transitions", Value: 1, Unit: "Count"}}
	switch {
	case to.Status == instance.Running && from.Status == instance.Starting:
		metrics = append(metrics, emf.Metric{Name: "StartDuration", Value: float64(to.StartedAt.Sub(to.CreatedAt).Milliseconds()), Unit: "Milliseconds"})
	case to.Status == instance.Failed && from.Status == instance.Starting:
		metrics = append(metrics, emf.Metric{Name: "StartFailures", Value: 1, Unit: "Count"})
	case to.Status.Terminal() && from.Status == instance.Stopping:
		metrics = append(metrics, emf.Metric{Name: "StopDuration", Value: float64(to.StoppedAt.Sub(from.UpdatedAt).Milliseconds()), Unit: "Milliseconds"})
	}
	s.Metrics.Emit(map[string]string{"Status": string(to.Status)}, metrics...)
}

func (s *Service) log() *slog.Logger {
	if s.Log != nil {
		return s.Log
	}
	return slog.Default()
}

// pickPort returns a random free port of the range, so concurrent starts on
// one host rarely collide.
func pickPort(r config.PortRange, held map[int]bool) (int, bool) {
	free := make([]int, 0, r.Size())
	for p := r.First; p <= r.Last; p++ {
		if !held[p] {
			free = append(free, p)
		}
	}
	if len(free) == 0 {
		return 0, false
	}
	n, err := rand.Int(rand.Reader, big.NewInt(int64(len(free))))
	if err != nil {
		return free[0], true
	}
	return free[n.Int64()], true
}

// backoff sleeps a short random time before an optimistic retry.
func backoff(ctx context.Context) {
	n, _ := rand.Int(rand.Reader, big.NewInt(50))
	select {
	case <-ctx.Done():
	case <-time.After(time.Duration(10+n.Int64()) * time.Millisecond):
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on Linux
	return hex.EncodeToString(b)
}
