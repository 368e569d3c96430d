package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/envjupyter/envjupyter/shared/instance"
	"github.com/envjupyter/envjupyter/shared/message"
	"github.com/envjupyter/envjupyter/sidecar/container"
	"github.com/envjupyter/envjupyter/sidecar/jupyter"
)

// HostHeartbeat says the host is alive, with or without instances: the
// control plane refuses starts on a host silent for longer than the host
// silence, and the reaper fails its instances (host_lost).
func (a *Agent) HostHeartbeat(ctx context.Context) {
	if err := a.reports.Send(ctx, message.HostHeartbeat(a.HostID, time.Now())); err != nil {
		a.log.Warn("sending the host's heartbeat", "error", err)
	}
}

// CheckAll checks every running instance once.
func (a *Agent) CheckAll(ctx context.Context) {
	for _, m := range a.managedCopy() {
		if ctx.Err() != nil {
			return
		}
		a.check(ctx, m.cmd.InstanceID, m.cmd.EnvironmentID)
	}
}

// check looks at one running instance: liveness from its Jupyter's /api and
// activity from /api/status, both asked on its container's loopback
// (probeClient); a dead Jupyter is restarted within its budget,
// a silent one reported unhealthy. Reports go out on a change, and as a
// heartbeat when nothing changed for heartbeatEvery.
func (a *Agent) check(ctx context.Context, id, environmentID string) {
	unlock, ok := a.tryLockEnvironment(environmentID)
	if !ok {
		return // a command is at work on this environment and reports by itself
	}
	defer unlock()
	m := a.get(id)
	if m == nil || !m.running {
		return
	}
	log := a.log.With("instance_id", id, "environment_id", environmentID)
	client, base := a.probeClient(m), probeBase(m)
	if jupyter.Ready(ctx, client, base) {
		health, err := jupyter.Status(ctx, client, base, m.cmd.Token)
		var h *instance.Health
		if err == nil {
			h = &health
		}
		m.failures = 0
		if m.status != instance.Running || time.Since(m.lastReport) >= a.HeartbeatEvery {
			if m.status != instance.Running {
				log.Info("instance healthy again")
			}
			a.setStatus(m, instance.Running)
			a.send(ctx, log, m, "", h)
		}
		return
	}
	m.failures++
	a.metrics.HealthCheckFailures.Inc()
	procs, err := jupyter.Processes(a.ProcDir, id)
	if _, alive := jupyter.Main(procs); err == nil && !alive {
		a.revive(ctx, log, m)
		return
	}
	if m.failures >= a.UnhealthyAfter && m.status != instance.Unhealthy {
		a.setStatus(m, instance.Unhealthy)
		log.Warn("instance not responding", "failed_checks", m.failures)
		a.send(ctx, log, m, instance.WithDetail(instance.ReasonNotResponding, fmt.Sprintf("%d failed checks", m.failures)), nil)
	}
}

// revive restarts a Jupyter whose process is gone, with a growing pause
// between restarts and at most restartBudget of them per restartWindow; past
// that the instance has failed and is removed.
func (a *Agent) revive(ctx context.Context, log *slog.Logger, m *managed) {
	info, err := a.docker.Inspect(ctx, m.cmd.ContainerID)
	if errors.Is(err, container.ErrGone) {
		a.lose(ctx, log, m, instance.ReasonContainerGone)
		return
	}
	if err == nil && info.PID != m.pid {
		// The container restarted (its die event went unseen, as in a
		// break of Docker's event stream): the instance ended with the
		// Jupyter it ran, and the probes' way in (the first process's
		// network namespace) is gone. A Jupyter launched in the new one
		// would never be probed there.
		log.Warn("the instance's container restarted", "pid", m.pid, "new_pid", info.PID)
		a.lose(ctx, log, m, instance.ReasonContainerGone)
		return
	}
	recent := m.restarts[:0]
	for _, t := range m.restarts {
		if time.Since(t) < a.RestartWindow {
			recent = append(recent, t)
		}
	}
	m.restarts = recent
	if len(recent) >= a.RestartBudget || m.rebuilt {
		detail := fmt.Sprintf("died after %d restarts within %s", len(recent), a.RestartWindow)
		if m.rebuilt {
			// Its command came from what ran, without the password or
			// plugins: launched again from it, it would not be the same.
			detail = "died, and cannot be restarted: the sidecar lost its state file"
		}
		log.Error("jupyter died; giving up", "restarts", len(recent), "rebuilt", m.rebuilt)
		a.cleanup(ctx, log, m.cmd)
		a.forget(m.cmd.InstanceID)
		a.send(ctx, log, m, instance.WithDetail(instance.ReasonJupyterCrashed, detail), nil)
		return
	}
	if n := len(recent); n > 0 && time.Since(recent[n-1]) < time.Duration(1<<n)*time.Second {
		return // back off: 2s, 4s, 8s... after the previous restart
	}
	if m.status != instance.Unhealthy {
		a.setStatus(m, instance.Unhealthy)
		a.send(ctx, log, m, instance.WithDetail(instance.ReasonJupyterDied, "restarting"), nil)
	}
	if err == nil {
		_, err = a.exec(ctx, m.cmd, m.flavour, info)
	}
	m.restarts = append(m.restarts, time.Now())
	a.metrics.Restarts.Inc()
	if err != nil {
		log.Error("restarting jupyter", "error", err)
		return
	}
	log.Warn("jupyter died; restarted it", "restarts", len(m.restarts))
}

// lose ends an instance whose container is gone: nothing of it may stay.
func (a *Agent) lose(ctx context.Context, log *slog.Logger, m *managed, reason string) {
	log.Warn("instance lost", "reason", reason)
	a.cleanup(ctx, log, m.cmd)
	a.forget(m.cmd.InstanceID)
	a.setStatus(m, instance.Stopped)
	a.metrics.Stops.WithLabelValues(reason).Inc()
	a.send(ctx, log, m, reason, nil)
}

// send reports an instance's state; a forgotten instance is reported as
// failed unless it was stopped.
func (a *Agent) send(ctx context.Context, log *slog.Logger, m *managed, reason string, h *instance.Health) {
	status := m.status
	if a.get(m.cmd.InstanceID) == nil && status != instance.Stopped {
		status = instance.Failed
	}
	if err := a.report(ctx, m.cmd.InstanceID, status, "", reason, h); err != nil {
		log.Warn("report not sent; the next check sends it again", "status", status, "error", err)
		return
	}
	m.lastReport = time.Now()
}

// containerGone ends the instances of a container that stopped or went.
func (a *Agent) containerGone(ctx context.Context, containerID string) {
	a.forgetContainer(containerID)
	for _, m := range a.managedCopy() {
		if m.cmd.ContainerID != containerID {
			continue
		}
		func() {
			unlock, ok := a.tryLockEnvironment(m.cmd.EnvironmentID)
			if !ok {
				return // the command at work there finds the container gone; else the next health check does
			}
			defer unlock()
			cur := a.get(m.cmd.InstanceID)
			if cur == nil {
				return
			}
			log := a.log.With("instance_id", cur.cmd.InstanceID, "environment_id", cur.cmd.EnvironmentID, "container_id", containerID)
			if !cur.running {
				return // the start in progress notices by itself and fails
			}
			a.lose(ctx, log, cur, instance.ReasonContainerGone)
		}()
	}
}
