package main

import (
	"context"
	"errors"
	"log/slog"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/envjupyter/envjupyter/shared/message"
	"github.com/envjupyter/envjupyter/shared/queue"
)

// Applier applies a host's report to the instance it is about.
type Applier interface {
	ApplyReport(ctx context.Context, r message.Report) (bool, error)
}

// HostKeys returns the key a host signs its reports with; fresh asks for it
// again rather than from a cache.
type HostKeys interface {
	Key(ctx context.Context, hostID string, fresh bool) ([]byte, error)
}

type handler struct {
	control Applier
	keys    HostKeys
	log     *slog.Logger
}

// handle applies each report of the batch. A report that can never be
// applied (malformed) is logged and dropped; one that failed for a passing
// reason is returned as a batch item failure, so SQS delivers it again and,
// after maxReceiveCount, moves it to the dead-letter queue.
func (h *handler) handle(ctx context.Context, ev events.SQSEvent) (events.SQSEventResponse, error) {
	var resp events.SQSEventResponse
	for _, rec := range ev.Records {
		// In the trace of the host's command, beneath its report's send.
		err := queue.ContinueTrace(ctx, "report", aws.ToString(rec.MessageAttributes[queue.TraceAttribute].StringValue), func(ctx context.Context) error {
			return h.apply(ctx, rec)
		})
		if err != nil {
			resp.BatchItemFailures = append(resp.BatchItemFailures, events.SQSBatchItemFailure{ItemIdentifier: rec.MessageId})
		}
	}
	return resp, nil
}

func (h *handler) apply(ctx context.Context, rec events.SQSMessage) error {
	r, err := message.DecodeReport([]byte(rec.Body))
	if errors.Is(err, message.ErrInvalid) {
		h.log.WarnContext(ctx, "dropping malformed report", "message_id", rec.MessageId, "error", err)
		return nil
	}
	ok, err := h.fromItsHost(ctx, rec, r.HostID)
	if err != nil {
		h.log.ErrorContext(ctx, "report not checked; will retry", "message_id", rec.MessageId, "instance_id", r.InstanceID, "error", err)
		return err
	}
	if !ok {
		h.log.WarnContext(ctx, "dropping report: its sender may not speak for the host it names",
			"message_id", rec.MessageId, "instance_id", r.InstanceID, "host_id", r.HostID)
		return nil
	}
	applied, err := h.control.ApplyReport(ctx, r)
	if err != nil {
		h.log.ErrorContext(ctx, "report not applied; will retry", "message_id", rec.MessageId, "instance_id", r.InstanceID, "error", err)
		return err
	}
	h.log.DebugContext(ctx, "report", "instance_id", r.InstanceID, "status", r.Status, "applied", applied)
	return nil
}

// fromItsHost reports whether the report is signed with the key of the host
// it names: only that host can read its key (see SidecarPolicy), so another
// host, or anyone else who can send to the queue, cannot speak for it.
func (h *handler) fromItsHost(ctx context.Context, rec events.SQSMessage, hostID string) (bool, error) {
	sig := rec.MessageAttributes[message.SignatureAttribute].StringValue
	if sig == nil {
		return false, nil
	}
	for _, fresh := range []bool{false, true} {
		key, err := h.keys.Key(ctx, hostID, fresh)
		if errors.Is(err, queue.ErrUnknownHost) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		if message.Verify(key, rec.Body, *sig) {
			return true, nil
		}
	}
	return false, nil
}
