package agent

import (
	"context"
	"errors"

	"github.com/envjupyter/envjupyter/shared/instance"
	"github.com/envjupyter/envjupyter/shared/message"
	"github.com/envjupyter/envjupyter/sidecar/container"
	"github.com/envjupyter/envjupyter/sidecar/firewall"
	"github.com/envjupyter/envjupyter/sidecar/jupyter"
)

// Reconcile runs once at start-up: it takes over the instances the state
// file names (a restart leaves them running), resumes starts that were cut
// short, and removes processes and rules tagged as ours that belong to no
// instance. Starts it resumes run in the background.
func (a *Agent) Reconcile(ctx context.Context, resume func(message.Command)) error {
	saved, err := a.state.load()
	corrupt := errors.Is(err, errCorrupt)
	if corrupt {
		a.log.Error("the state file is unreadable: starting without it, and removing nothing found running", "error", err)
	} else if err != nil {
		return err
	}
	for _, s := range saved {
		a.claimPort(s.Command)
	}
	for id, s := range saved {
		log := a.log.With("instance_id", id, "environment_id", s.Command.EnvironmentID)
		if !s.Running {
			log.Info("resuming a start cut short by a restart")
			a.metrics.ReconcileActions.WithLabelValues("resume_start").Inc()
			resume(s.Command)
			continue
		}
		info, err := a.docker.Inspect(ctx, s.Command.ContainerID)
		m := &managed{cmd: s.Command, running: true, status: instance.Running}
		m.target = targetOf(a.Advertise, s.Command.HostPort)
		if errors.Is(err, container.ErrGone) {
			a.metrics.ReconcileActions.WithLabelValues("container_gone").Inc()
			a.put(id, m)
			a.lose(ctx, log, m, instance.ReasonContainerGone)
			continue
		}
		if err != nil {
			return err
		}
		m.forward = firewall.Forward{InstanceID: id, HostPort: s.Command.HostPort, ContainerIP: info.IP, ContainerPort: s.Command.InternalPort, Sources: a.Sources}
		if m.flavour, err = jupyter.Detect(ctx, a.finder(info), a.runner(s.Command.ContainerID)); err != nil {
			log.Warn("detecting jupyter of an adopted instance", "error", err)
		}
		if reason := a.forward(log, m, info); reason != "" {
			log.Error("restoring the forward of an adopted instance", "reason", reason)
		}
		if err := a.routes.Set(ctx, s.Command.EnvironmentID, m.target, id, s.Command.Token); err != nil {
			log.Warn("restoring the route of an adopted instance", "error", err)
		}
		a.put(id, m)
		a.metrics.ReconcileActions.WithLabelValues("adopt").Inc()
		log.Info("adopted a running instance")
		a.send(ctx, log, m, "", nil)
	}
	if corrupt {
		// Without the state, what runs cannot be told from an orphan: it
		// stays. The control plane stops what it has ended (it tells this
		// host when it hears of it, and fails what stops reporting).
		return nil
	}
	return a.removeOrphans(saved)
}

// removeOrphans ends processes and rules tagged as this sidecar's that no
// saved instance owns (its state was lost, or a stop raced a crash).
func (a *Agent) removeOrphans(saved map[string]savedInstance) error {
	procs, err := jupyter.AllInstances(a.ProcDir)
	if err != nil {
		return err
	}
	rules, err := a.firewall.Instances()
	if err != nil {
		return err
	}
	orphans := map[string]bool{}
	for id := range procs {
		orphans[id] = true
	}
	for id := range rules {
		orphans[id] = true
	}
	for id := range orphans {
		if _, ok := saved[id]; ok {
			continue
		}
		a.log.Warn("removing an orphan instance", "instance_id", id)
		a.metrics.ReconcileActions.WithLabelValues("remove_orphan").Inc()
		if err := jupyter.Terminate(a.ProcDir, id, a.StopGrace); err != nil {
			a.log.Error("stopping an orphan", "instance_id", id, "error", err)
		}
		if err := a.firewall.RemoveInstance(id); err != nil {
			a.log.Error("removing an orphan's rules", "instance_id", id, "error", err)
		}
	}
	return nil
}

// finder looks for executables on the container's PATH, for jupyter.Detect.
func (a *Agent) finder(info container.Info) jupyter.Finder {
	return func(ctx context.Context, name string) (bool, error) {
		ctx, cancel := context.WithTimeout(ctx, detectTimeout)
		defer cancel()
		return a.docker.HasExecutable(ctx, info.ID, info.Path, name)
	}
}

// runner runs commands in a container for jupyter.Detect.
func (a *Agent) runner(containerID string) jupyter.Runner {
	return func(ctx context.Context, argv []string) (string, int, error) {
		ctx, cancel := context.WithTimeout(ctx, detectTimeout)
		defer cancel()
		out, err := a.docker.Run(ctx, containerID, argv, nil)
		return out.Stdout + out.Stderr, out.ExitCode, err
	}
}
