package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-xray-sdk-go/xray"

	"github.com/envjupyter/envjupyter/functions/envevent"
	"github.com/envjupyter/envjupyter/functions/internal/control"
	"github.com/envjupyter/envjupyter/shared/instance"
)

// Controller is the part of the control plane this function calls.
type Controller interface {
	StartEnvironment(ctx context.Context, environmentID string, opts control.StartOptions) (instance.Instance, bool, error)
	StopEnvironment(ctx context.Context, environmentID, reason string) (instance.Instance, bool, error)
}

type handler struct {
	control Controller
	log     *slog.Logger
}

// handle stops JupyterLab when its environment stops, and starts it when an
// environment created with auto-start becomes running. An error makes
// EventBridge retry the event, so only passing failures return one.
func (h *handler) handle(ctx context.Context, ev events.CloudWatchEvent) error {
	return xray.Capture(ctx, "environment event", func(ctx context.Context) error {
		return h.apply(ctx, ev)
	})
}

func (h *handler) apply(ctx context.Context, ev events.CloudWatchEvent) error {
	if ev.Source != envevent.Source || ev.DetailType != envevent.DetailType {
		h.log.WarnContext(ctx, "ignoring an event of another kind", "source", ev.Source, "detail_type", ev.DetailType)
		return nil
	}
	var d envevent.Detail
	if err := json.Unmarshal(ev.Detail, &d); err != nil || !instance.ValidEnvironmentID(d.EnvironmentID) {
		h.log.WarnContext(ctx, "dropping a malformed environment event", "event_id", ev.ID)
		return nil
	}
	log := h.log.With("environment_id", d.EnvironmentID, "environment_status", d.Status, "event_id", ev.ID)
	ctx = control.WithActor(ctx, control.Actor{Cause: "environment_event", Subject: ev.ID})
	switch d.Status {
	case "stopping", "stopped", "deleted":
		in, stopping, err := h.control.StopEnvironment(ctx, d.EnvironmentID, "environment_"+d.Status)
		if err != nil {
			return h.fail(ctx, log, "stop", err)
		}
		log.InfoContext(ctx, "environment event handled", "action", "stop", "instance_id", in.ID, "stopping", stopping)
	case "running":
		if !d.AutoStartJupyter {
			return nil
		}
		var opts control.StartOptions
		if d.JupyterOptions != nil {
			opts.Plugins = d.JupyterOptions.Plugins
		}
		in, created, err := h.control.StartEnvironment(ctx, d.EnvironmentID, opts)
		if err != nil {
			return h.fail(ctx, log, "start", err)
		}
		log.InfoContext(ctx, "environment event handled", "action", "start", "instance_id", in.ID, "created", created)
	}
	return nil
}

// fail decides whether an error is worth a retry.
func (h *handler) fail(ctx context.Context, log *slog.Logger, action string, err error) error {
	var input *control.InputError
	switch {
	case errors.Is(err, control.ErrUnavailable):
		log.ErrorContext(ctx, "environment event failed; EventBridge retries it", "action", action, "error", err)
		return fmt.Errorf("%s: %w", action, err)
	// What a retry cannot change within EventBridge's hour: the customer at
	// their limit stays there until they stop something themselves.
	case errors.As(err, &input), errors.Is(err, control.ErrNotFound),
		errors.Is(err, control.ErrEnvironmentNotRunning), errors.Is(err, control.ErrStopping), errors.Is(err, control.ErrNoFreePort),
		errors.Is(err, control.ErrLimit):
		log.WarnContext(ctx, "environment event not applied", "action", action, "error", err)
		return nil
	default:
		log.ErrorContext(ctx, "environment event failed", "action", action, "error", err)
		return err
	}
}
