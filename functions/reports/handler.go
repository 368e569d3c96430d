package main

import (
	"context"
	"errors"
	"log/slog"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-xray-sdk-go/xray"

	"github.com/envjupyter/envjupyter/shared/message"
)

// Applier applies a host's report to the instance it is about.
type Applier interface {
	ApplyReport(ctx context.Context, r message.Report) (bool, error)
}

type handler struct {
	control Applier
	log     *slog.Logger
}

// handle applies each report of the batch. A report that can never be
// applied (malformed) is logged and dropped; one that failed for a passing
// reason is returned as a batch item failure, so SQS delivers it again and,
// after maxReceiveCount, moves it to the dead-letter queue.
func (h *handler) handle(ctx context.Context, ev events.SQSEvent) (events.SQSEventResponse, error) {
	var resp events.SQSEventResponse
	for _, rec := range ev.Records {
		err := xray.Capture(ctx, "report", func(ctx context.Context) error {
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
	applied, err := h.control.ApplyReport(ctx, r)
	if err != nil {
		h.log.ErrorContext(ctx, "report not applied; will retry", "message_id", rec.MessageId, "instance_id", r.InstanceID, "error", err)
		return err
	}
	h.log.DebugContext(ctx, "report", "instance_id", r.InstanceID, "status", r.Status, "applied", applied)
	return nil
}
