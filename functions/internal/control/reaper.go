package control

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/envjupyter/envjupyter/functions/store"
	"github.com/envjupyter/envjupyter/shared/instance"
)

// startGrace is added to the start timeout before the reaper gives up on a
// start: the host applies the same timeout and should report first.
const startGrace = 30 * time.Second

// Reaped counts what one pass of the reaper did.
type Reaped struct {
	Checked, StartTimeouts, HostsLost, StopTimeouts, Idle int
}

// Reap ends what hosts will not end by themselves: starts that never
// finished, instances whose host fell silent, stops never confirmed, and
// instances idle past the idle timeout. It runs on a schedule; each action is
// a conditional write, so overlapping runs are harmless.
func (s *Service) Reap(ctx context.Context) (Reaped, error) {
	ids, err := s.Store.ActiveInstanceIDs(ctx)
	if err != nil {
		return Reaped{}, err
	}
	var r Reaped
	var errs []error
	for _, id := range ids {
		in, err := s.Store.Instance(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		r.Checked++
		if err := s.reapOne(ctx, in, &r); err != nil && !errors.Is(err, store.ErrConflict) {
			errs = append(errs, err)
		}
	}
	return r, errors.Join(errs...)
}

func (s *Service) reapOne(ctx context.Context, in instance.Instance, r *Reaped) error {
	now := s.now()
	lastHeard := in.ReportedAt
	if lastHeard.IsZero() {
		lastHeard = in.CreatedAt
	}
	switch {
	case in.Status == instance.Starting && now.Sub(in.CreatedAt) > s.Config.StartTimeout+startGrace:
		r.StartTimeouts++
		return s.end(ctx, in, instance.Failed, "timeout", fmt.Sprintf("start_timeout: not running after %s", s.Config.StartTimeout))
	case (in.Status == instance.Running || in.Status == instance.Unhealthy) && s.Config.HostSilence > 0 && now.Sub(lastHeard) > s.Config.HostSilence:
		r.HostsLost++
		return s.end(ctx, in, instance.Failed, "timeout", fmt.Sprintf("host_lost: no report from the host for %s", now.Sub(lastHeard).Round(time.Second)))
	case in.Status == instance.Stopping && now.Sub(in.UpdatedAt) > s.Config.StopTimeout:
		r.StopTimeouts++
		return s.end(ctx, in, instance.Stopped, "timeout", "stop_timeout: "+in.StatusReason)
	case in.Status == instance.Running && s.Config.IdleTimeout > 0 && in.Health != nil &&
		!in.Health.LastActivity.IsZero() && now.Sub(in.Health.LastActivity) > s.Config.IdleTimeout:
		r.Idle++
		_, _, err := s.StopEnvironment(WithActor(ctx, Actor{Cause: "idle"}), in.EnvironmentID, "idle")
		return err
	}
	return nil
}

// end moves an instance to an end state (releasing its leases) and tells
// its host to stop it, in case it still runs there.
func (s *Service) end(ctx context.Context, in instance.Instance, to instance.Status, cause, reason string) error {
	prev := in.Version
	in.Status, in.StatusReason, in.StoppedAt, in.Stage = to, reason, s.now(), ""
	in.Audit = append(in.Audit, instance.AuditEntry{At: s.now(), Action: instance.ActionEnd, Cause: cause, Actor: "reaper", Detail: reason})
	if err := s.Store.Update(ctx, in, prev); err != nil {
		return err
	}
	s.log().WarnContext(ctx, "reaper ended an instance", "instance_id", in.ID, "environment_id", in.EnvironmentID, "status", to, "reason", reason)
	cmd := s.stopCommand(in, "reaped")
	if err := s.Commands.Send(ctx, in.HostID, cmd); err != nil {
		s.log().WarnContext(ctx, "could not tell the host to stop a reaped instance", "instance_id", in.ID, "error", err)
	}
	return nil
}
