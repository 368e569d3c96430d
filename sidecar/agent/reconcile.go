package agent

import (
	"context"
	"errors"
	"fmt"

	"github.com/envjupyter/envjupyter/shared/instance"
	"github.com/envjupyter/envjupyter/shared/message"
	"github.com/envjupyter/envjupyter/sidecar/container"
	"github.com/envjupyter/envjupyter/sidecar/firewall"
	"github.com/envjupyter/envjupyter/sidecar/jupyter"
)

// Reconcile runs once at start-up: it takes over the instances the state
// file names (a restart leaves them running), resumes starts that were cut
// short, and removes processes and rules tagged as ours that belong to no
// instance. Starts it resumes run in the background. A state file that
// cannot be read is rebuilt from the host's own rules and the processes
// they lead to.
func (a *Agent) Reconcile(ctx context.Context, resume func(message.Command)) error {
	if tmps, err := a.state.removeUnfinished(); err != nil {
		return err
	} else if len(tmps) > 0 {
		a.log.Warn("a save of the state file was cut short (the sidecar died during it); the last complete save stands", "removed", tmps)
	}
	saved, err := a.state.load()
	if errors.Is(err, errCorrupt) {
		a.log.Error("the state file is unreadable: rebuilding what runs from this host's rules and processes", "error", err)
		a.metrics.ReconcileActions.WithLabelValues("state_rebuilt").Inc()
		saved, err = a.rebuild(ctx)
	}
	if err != nil {
		return err
	}
	forwards, err := a.firewall.Forwards()
	if err != nil {
		return err
	}
	procs, err := jupyter.AllInstances(a.ProcDir)
	if err != nil {
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
		m := &managed{cmd: s.Command, running: true, status: instance.Running, rebuilt: s.Rebuilt}
		m.target = targetOf(a.Advertise, s.Command.HostPort)
		if _, forwarded := forwards[id]; !forwarded && len(procs[id]) == 0 {
			// Neither its rules nor its Jupyter are left: a stop removed
			// them and the crash came before the save that forgets it.
			// Adopting it would bring it back to life.
			log.Warn("a saved instance has nothing left on this host; not adopting it")
			a.metrics.ReconcileActions.WithLabelValues("already_gone").Inc()
			a.cleanup(ctx, log, s.Command)
			a.forget(id)
			delete(saved, id)
			continue
		}
		info, err := a.docker.Inspect(ctx, s.Command.ContainerID)
		if errors.Is(err, container.ErrGone) {
			a.metrics.ReconcileActions.WithLabelValues("container_gone").Inc()
			a.put(id, m)
			a.lose(ctx, log, m, instance.ReasonContainerGone)
			continue
		}
		if err != nil {
			return err
		}
		m.forward, m.pid = a.forwardOf(s.Command, info), info.PID
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
		log.Info("adopted a running instance", "rebuilt", s.Rebuilt)
		// The control plane checks the report: an instance it has ended,
		// or that is not this host's, is told to stop.
		a.send(ctx, log, m, "", nil)
	}
	return a.removeOrphans(saved)
}

// rebuild recovers the running instances from this host's own firewall
// rules, which name each forward's instance, environment and container, and
// the Jupyter each leads to, which gives the token. Only the rules are
// trusted for whom an instance serves: a process's environment is its
// container's to write. A forward that cannot be matched to a Jupyter
// running in the container it names is not kept (removeOrphans removes it)
// and is reported failed.
func (a *Agent) rebuild(ctx context.Context) (map[string]savedInstance, error) {
	forwards, err := a.firewall.Forwards()
	if err != nil {
		return nil, err
	}
	procs, err := jupyter.AllInstances(a.ProcDir)
	if err != nil {
		return nil, err
	}
	saved := map[string]savedInstance{}
	for id, fw := range forwards {
		log := a.log.With("instance_id", id, "environment_id", fw.EnvironmentID, "container_id", fw.ContainerID)
		cmd, reason, err := a.rebuildCommand(ctx, fw, procs[id])
		if err != nil {
			return nil, err
		}
		if cmd.InstanceID == "" {
			log.Warn("an instance cannot be rebuilt; removing it", "reason", reason)
			if reason != "" {
				if err := a.report(ctx, id, instance.Failed, "", reason, nil); err != nil {
					log.Warn("report not sent", "error", err)
				}
			}
			continue
		}
		log.Info("rebuilt an instance from its rules and its Jupyter")
		saved[id] = savedInstance{Command: cmd, Running: true, Rebuilt: true}
	}
	return saved, nil
}

// rebuildCommand returns the start command of the instance a forward serves,
// or an empty command and why there is none (a failure reason to report,
// or "" when the forward is too old to say whose it is).
func (a *Agent) rebuildCommand(ctx context.Context, fw firewall.Forward, procs []jupyter.Process) (message.Command, string, error) {
	if fw.EnvironmentID == "" || fw.ContainerID == "" || !instance.ValidEnvironmentID(fw.EnvironmentID) {
		return message.Command{}, "", nil
	}
	info, err := a.docker.Inspect(ctx, fw.ContainerID)
	if errors.Is(err, container.ErrGone) {
		return message.Command{}, instance.ReasonContainerGone, nil
	}
	if err != nil {
		return message.Command{}, "", err
	}
	if info.IP != fw.ContainerIP {
		return message.Command{}, instance.WithDetail(instance.ReasonContainerGone, "its container restarted"), nil
	}
	var inContainer []jupyter.Process
	for _, p := range procs {
		if jupyter.SameContainer(a.ProcDir, p.PID, info.PID) {
			inContainer = append(inContainer, p)
		}
	}
	main, ok := jupyter.Main(inContainer)
	token, _ := jupyter.EnvValue(a.ProcDir, main.PID, jupyter.TokenVar)
	if !ok || token == "" {
		return message.Command{}, instance.WithDetail(instance.ReasonJupyterDied, "not running when the sidecar restarted without its state file"), nil
	}
	cmd := message.Command{
		V: message.Version, Type: message.TypeStart, InstanceID: fw.InstanceID, EnvironmentID: fw.EnvironmentID,
		ContainerID: info.ID, HostPort: fw.HostPort, InternalPort: fw.ContainerPort, Token: token,
		BaseURL: instance.BasePath(fw.EnvironmentID),
	}
	if err := cmd.Validate(); err != nil {
		return message.Command{}, "", fmt.Errorf("rebuilding instance %s: %w", fw.InstanceID, err)
	}
	return cmd, "", nil
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
