package devstack

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
)

// pollQueue does locally what Lambda's SQS event source mapping does: it
// receives batches, invokes the function with an SQS event, and deletes the
// messages that succeeded. Failed ones (all of a batch on a function error,
// or those named as batch item failures) become visible again after the
// queue's visibility timeout and, past maxReceiveCount, go to the DLQ.
func pollQueue(ctx context.Context, aw AWS, fn Function, ev SQSEvent, log *slog.Logger) {
	failing := false
	for ctx.Err() == nil {
		out, err := aw.SQS.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{
			QueueUrl: &ev.QueueURL, MaxNumberOfMessages: min(ev.BatchSize, 10), WaitTimeSeconds: 2,
			MessageSystemAttributeNames: []sqstypes.MessageSystemAttributeName{sqstypes.MessageSystemAttributeNameAll},
			MessageAttributeNames:       []string{"All"},
		})
		if err != nil {
			if ctx.Err() == nil && !failing {
				log.Error("event source: receiving", "function", fn.Name, "error", err)
			}
			failing = true
			sleepCtx(ctx, time.Second)
			continue
		}
		failing = false
		if len(out.Messages) == 0 {
			continue
		}
		failed, err := invokeBatch(ctx, aw, fn, ev, out.Messages)
		if err != nil {
			log.Error("event source: invoking", "function", fn.Name, "error", err)
			continue // nothing deleted: the whole batch comes again
		}
		for _, m := range out.Messages {
			if failed[aws.ToString(m.MessageId)] {
				continue
			}
			if _, err := aw.SQS.DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: &ev.QueueURL, ReceiptHandle: m.ReceiptHandle}); err != nil && ctx.Err() == nil {
				log.Error("event source: deleting", "function", fn.Name, "error", err)
			}
		}
	}
}

func invokeBatch(ctx context.Context, aw AWS, fn Function, ev SQSEvent, msgs []sqstypes.Message) (map[string]bool, error) {
	var event events.SQSEvent
	for _, m := range msgs {
		event.Records = append(event.Records, events.SQSMessage{
			MessageId:         aws.ToString(m.MessageId),
			ReceiptHandle:     aws.ToString(m.ReceiptHandle),
			Body:              aws.ToString(m.Body),
			Md5OfBody:         aws.ToString(m.MD5OfBody),
			Attributes:        m.Attributes,
			MessageAttributes: messageAttributes(m.MessageAttributes),
			EventSource:       "aws:sqs",
			EventSourceARN:    ev.QueueARN,
			AWSRegion:         region,
		})
	}
	payload, err := json.Marshal(event)
	if err != nil {
		return nil, err
	}
	out, err := aw.Lambda.Invoke(ctx, &lambda.InvokeInput{FunctionName: &fn.Name, Payload: payload})
	if err != nil {
		return nil, err
	}
	if out.FunctionError != nil {
		return nil, fmt.Errorf("function error %s: %s", aws.ToString(out.FunctionError), strings.TrimSpace(string(out.Payload)))
	}
	failed := map[string]bool{}
	if ev.ReportFails {
		var resp events.SQSEventResponse
		if err := json.Unmarshal(out.Payload, &resp); err != nil {
			return nil, fmt.Errorf("decoding batch response: %w", err)
		}
		for _, f := range resp.BatchItemFailures {
			failed[f.ItemIdentifier] = true
		}
	}
	return failed, nil
}

func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// messageAttributes converts message attributes to the event's form.
func messageAttributes(in map[string]sqstypes.MessageAttributeValue) map[string]events.SQSMessageAttribute {
	out := map[string]events.SQSMessageAttribute{}
	for k, v := range in {
		out[k] = events.SQSMessageAttribute{
			DataType: aws.ToString(v.DataType), StringValue: v.StringValue, BinaryValue: v.BinaryValue,
		}
	}
	return out
}
