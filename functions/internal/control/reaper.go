package control

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/envjupyter/envjupyter/functions/store"
	"github.com/envjupyter/envjupyter/shared/config"
	"github.com/envjupyter/envjupyter/shared/instance"
)

// startGrace is added to the start timeout before the reaper gives up on a
// start: the host applies the same timeout and should report first.
const startGrace = 30 * time.Second

// recheckEvery bounds how long the reaper leaves a running instance
// unlooked at: a lowered idle timeout, or an instance its host stopped
// reporting while still reporting others, takes effect within it. Each look
// is one read and one small write per running instance.
const recheckEvery = 30 * time.Minute

// forgetHostAfter is how long the reaper keeps the record of a silent host
// that has nothing left: starts on it are refused (host_unavailable) while
// the record says it is silent.
const forgetHostAfter = 7 * 24 * time.Hour

// reapParallel is how many instances a pass works on at once.
const reapParallel = 16

// passReserve is the time a pass keeps in hand before its deadline: it
// takes no new page of due instances after that, and the next pass goes on
// where it stopped (the index still holds them).
const passReserve = 10 * time.Second

// Reaped counts what one pass of the reaper did.
type Reaped struct {
	// Checked is the instances read; Due of them came from the index, the
	// others from silent hosts.
	Checked, Due int
	// SilentHosts is the hosts unheard of for host_silence_seconds.
	SilentHosts                                  int
	StartTimeouts, HostsLost, StopTimeouts, Idle int
	// Rearmed is the instances looked at and left for later.
	Rearmed int
	// Unfinished: the pass ran out of time with due instances left.
	Unfinished bool
}

// verdict is what the reaper does with an instance.
type verdict int

const (
	keep verdict = iota
	startTimedOut
	hostLost
	stopTimedOut
	idle
)

// judge says what the reaper does with an active instance at now, and, when
// that is nothing, when it must look again. It reads only the instance, so
// the reasons are checked on the record itself whatever brought the reaper
// to it. A running instance's host silence moves with every heartbeat; it is
// not in the next look (the host record finds a silent host), only in the
// recheck, so heartbeats never move an instance in the index.
func judge(in instance.Instance, c config.Config, now time.Time) (verdict, time.Time) {
	lastHeard := in.ReportedAt
	if lastHeard.IsZero() {
		lastHeard = in.CreatedAt
	}
	switch in.Status {
	case instance.Starting:
		return after(in.CreatedAt.Add(c.StartTimeout+startGrace), now, startTimedOut)
	case instance.Stopping:
		return after(in.UpdatedAt.Add(c.StopTimeout), now, stopTimedOut)
	case instance.Running, instance.Unhealthy:
		next := now.Add(recheckEvery)
		if c.HostSilence > 0 {
			d := lastHeard.Add(c.HostSilence)
			if now.After(d) {
				return hostLost, now
			}
			// An unhealthy instance sends no heartbeat: its silence is fixed.
			if in.Status == instance.Unhealthy {
				next = earliest(next, d)
			}
		}
		if in.Status == instance.Running && c.IdleTimeout > 0 {
			activity := time.Time{}
			if in.Health != nil {
				activity = in.Health.LastActivity
			}
			if activity.IsZero() {
				// No activity known yet: not idle, look again a timeout on.
				next = earliest(next, now.Add(c.IdleTimeout))
			} else if d := activity.Add(c.IdleTimeout); now.After(d) {
				return idle, now
			} else {
				next = earliest(next, d)
			}
		}
		return keep, next
	}
	return keep, time.Time{}
}

// after is v once deadline has passed, else keep until deadline.
func after(deadline, now time.Time, v verdict) (verdict, time.Time) {
	if now.After(deadline) {
		return v, now
	}
	return keep, deadline
}

func earliest(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// dueSeconds is t as a due_at: rounded up, so that an instance found due
// by the index is due by judge too.
func dueSeconds(t time.Time) int64 {
	s := t.Unix()
	if t.After(time.Unix(s, 0)) {
		s++
	}
	return s
}

// arm sets when the reaper first looks at an instance in its state: on a
// change of state, and for a record without one (written before the index
// existed). A report that changes no state keeps it, so heartbeats do not
// rewrite the index.
func (s *Service) arm(in *instance.Instance, prev instance.Status) {
	if in.Status.Terminal() {
		in.DueAt = 0
		return
	}
	if in.Status == prev && in.DueAt != 0 {
		return
	}
	now := s.now()
	if in.Status != prev {
		in.UpdatedAt = now // the store sets it too; the stop timeout counts from it
	}
	_, next := judge(*in, s.Config, now)
	in.DueAt = dueSeconds(next)
}

// Reap ends what hosts will not end by themselves: starts that never
// finished, instances whose host fell silent, stops never confirmed, and
// instances idle past the idle timeout. It reads the host records (one read
// per host) and the instances whose due_at has passed, not every instance;
// it works on reapParallel of them at once. Each action is a conditional
// write, so overlapping passes are harmless: the loser's write fails and
// changes nothing.
func (s *Service) Reap(ctx context.Context) (Reaped, error) {
	now := s.now()
	p := &pass{svc: s, now: now}
	if s.Config.HostSilence > 0 {
		hosts, err := s.Store.SilentHosts(ctx, now.Add(-s.Config.HostSilence))
		if err != nil {
			return Reaped{}, err
		}
		p.r.SilentHosts = len(hosts)
		for _, h := range hosts {
			if shortOfTime(ctx) {
				p.r.Unfinished = true
				return p.r, errors.Join(p.errs...)
			}
			ids, err := s.Store.HostInstanceIDs(ctx, h.ID)
			if err != nil {
				p.fail(err)
				continue
			}
			if len(ids) == 0 {
				// Nothing left of it: once it has been silent long enough
				// that it is surely gone, stop reading it every pass. Until
				// then its record makes starts there fail at once.
				if h.HeardAt.Before(now.Add(-forgetHostAfter)) {
					p.fail(s.Store.ForgetHost(ctx, h))
				}
				continue
			}
			p.work(ctx, ids, false)
		}
	}
	err := s.Store.DueInstances(ctx, now, func(ids []string) error {
		if shortOfTime(ctx) {
			p.r.Unfinished = true
			return errPassOver
		}
		p.work(ctx, ids, true)
		return ctx.Err()
	})
	if err != nil && !errors.Is(err, errPassOver) {
		p.fail(err)
	}
	return p.r, errors.Join(p.errs...)
}

var errPassOver = errors.New("the pass has no time left")

// shortOfTime says whether the pass must take no new work.
func shortOfTime(ctx context.Context) bool {
	deadline, ok := ctx.Deadline()
	return ok && time.Until(deadline) < passReserve
}

// pass is one run of the reaper: what it did and what failed.
type pass struct {
	svc  *Service
	now  time.Time
	mu   sync.Mutex
	r    Reaped
	errs []error
}

func (p *pass) fail(err error) {
	if err == nil || errors.Is(err, store.ErrConflict) {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.errs = append(p.errs, err)
}

func (p *pass) count(f func(r *Reaped)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f(&p.r)
}

// work looks at each instance of ids, reapParallel at a time.
func (p *pass) work(ctx context.Context, ids []string, fromIndex bool) {
	sem := make(chan struct{}, reapParallel)
	var wg sync.WaitGroup
	for _, id := range ids {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			p.fail(p.look(ctx, id, fromIndex))
		}()
	}
	wg.Wait()
}

// look reads one instance and acts on it, or re-arms it for later.
func (p *pass) look(ctx context.Context, id string, fromIndex bool) error {
	s := p.svc
	in, err := s.Store.Instance(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	p.count(func(r *Reaped) {
		r.Checked++
		if fromIndex {
			r.Due++
		}
	})
	if !in.Status.Active() {
		return nil
	}
	v, next := judge(in, s.Config, p.now)
	lastHeard := in.ReportedAt
	if lastHeard.IsZero() {
		lastHeard = in.CreatedAt
	}
	switch v {
	case startTimedOut:
		p.count(func(r *Reaped) { r.StartTimeouts++ })
		return s.end(ctx, in, instance.Failed, "timeout", instance.WithDetail(instance.ReasonStartTimeout, fmt.Sprintf("not running after %s", s.Config.StartTimeout)))
	case hostLost:
		p.count(func(r *Reaped) { r.HostsLost++ })
		return s.end(ctx, in, instance.Failed, "timeout", instance.WithDetail(instance.ReasonHostLost, fmt.Sprintf("no report from the host for %s", p.now.Sub(lastHeard).Round(time.Second))))
	case stopTimedOut:
		p.count(func(r *Reaped) { r.StopTimeouts++ })
		return s.end(ctx, in, instance.Stopped, "timeout", instance.WithDetail(instance.ReasonStopTimeout, in.StatusReason))
	case idle:
		p.count(func(r *Reaped) { r.Idle++ })
		_, _, err := s.StopEnvironment(WithActor(ctx, Actor{Cause: "idle"}), in.EnvironmentID, instance.ReasonIdle)
		return err
	}
	// Not due yet. Another pass (or the index, which lags its table) may
	// show it again: re-arm only a due_at that has passed.
	if in.DueAt > p.now.Unix() {
		return nil
	}
	p.count(func(r *Reaped) { r.Rearmed++ })
	return s.Store.Rearm(ctx, in.ID, in.Version, time.Unix(dueSeconds(next), 0))
}

// end moves an instance to an end state (releasing its leases) and tells
// its host to stop it, in case it still runs there.
func (s *Service) end(ctx context.Context, in instance.Instance, to instance.Status, cause, reason string) error {
	prev := in.Version
	in.Status, in.StatusReason, in.StoppedAt, in.Stage = to, reason, s.now(), ""
	in.DueAt = 0
	in.Audit = append(in.Audit, instance.AuditEntry{At: s.now(), Action: instance.ActionEnd, Cause: cause, Actor: "reaper", Detail: reason})
	if err := s.Store.Update(ctx, in, prev); err != nil {
		return err
	}
	s.log().WarnContext(ctx, "reaper ended an instance", "instance_id", in.ID, "environment_id", in.EnvironmentID, "status", to, "reason", reason)
	cmd := s.stopCommand(in, instance.ReasonReaped)
	if err := s.Commands.Send(ctx, in.HostID, cmd); err != nil {
		s.log().WarnContext(ctx, "could not tell the host to stop a reaped instance", "instance_id", in.ID, "error", err)
	}
	return nil
}

// hostAvailable refuses a start on a host the reaper counts as lost: silent
// for the host silence (sidecars report every heartbeat, with or without
// instances). A host without a record has not reported yet (it is new):
// its start goes ahead, and the start timeout bounds it.
func (s *Service) hostAvailable(ctx context.Context, hostID string) error {
	if s.Config.HostSilence <= 0 {
		return nil
	}
	heard, err := s.Store.HostLastHeard(ctx, hostID)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return unavailable(err)
	}
	if heard.Before(s.now().Add(-s.Config.HostSilence)) {
		return fmt.Errorf("%w: host %s silent since %s", ErrHostUnavailable, hostID, heard.Format(time.RFC3339))
	}
	return nil
}

// hostHeard records that a report of the host arrived, as the time the
// host says (never later than now). A function copy writes a host at most
// once per quarter of the silence: reports come every heartbeat from every
// instance, the silence is minutes.
func (s *Service) hostHeard(ctx context.Context, hostID string, at time.Time) error {
	if s.Config.HostSilence <= 0 || hostID == "" {
		return nil
	}
	now := s.now()
	if at.After(now) || at.IsZero() {
		at = now
	}
	s.heardMu.Lock()
	last, ok := s.heard[hostID]
	s.heardMu.Unlock()
	if ok && at.Sub(last) < s.Config.HostSilence/4 {
		return nil
	}
	if err := s.Store.HostHeard(ctx, hostID, at); err != nil {
		return err
	}
	s.heardMu.Lock()
	defer s.heardMu.Unlock()
	if s.heard == nil {
		s.heard = map[string]time.Time{}
	}
	if at.After(s.heard[hostID]) {
		s.heard[hostID] = at
	}
	return nil
}
