package agent

import (
	"context"
	"errors"
	"time"

	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/client"

	"github.com/envjupyter/envjupyter/sidecar/container"
)

// WatchContainers ends the instances of containers that die or go, as soon
// as Docker says so, rather than at the next health check. After the event
// stream breaks (dockerd restarted), it checks every instance's container,
// since events in the gap are lost.
func (a *Agent) WatchContainers(ctx context.Context, cli *client.Client) {
	failing := false
	for ctx.Err() == nil {
		msgs, errs := cli.Events(ctx, events.ListOptions{Filters: filters.NewArgs(
			filters.Arg("type", string(events.ContainerEventType)),
			filters.Arg("event", string(events.ActionDie)),
			filters.Arg("event", string(events.ActionStop)),
			filters.Arg("event", string(events.ActionDestroy)),
		)})
		if failing {
			a.checkContainers(ctx)
		}
	stream:
		for {
			select {
			case <-ctx.Done():
				return
			case msg := <-msgs:
				failing = false
				go a.containerGone(ctx, msg.Actor.ID)
			case err := <-errs:
				if ctx.Err() == nil && !failing {
					a.log.Warn("docker event stream broke; reconnecting", "error", err)
				}
				failing = true
				break stream
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// checkContainers ends the instances whose container is not running.
func (a *Agent) checkContainers(ctx context.Context) {
	for _, m := range a.managedCopy() {
		if _, err := a.docker.Inspect(ctx, m.cmd.ContainerID); errors.Is(err, container.ErrGone) {
			a.containerGone(ctx, m.cmd.ContainerID)
		}
	}
}
