package queue

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"
	"github.com/aws/aws-xray-sdk-go/xray"

	"github.com/envjupyter/envjupyter/shared/config"
	"github.com/envjupyter/envjupyter/shared/message"
)

// DefaultHostPrefix begins every host's command queue name; the host id
// follows it.
const DefaultHostPrefix = "envjupyter-commands-"

// HostSQSAPI is the part of the SQS client a host uses for its queue.
type HostSQSAPI interface {
	CreateQueue(ctx context.Context, in *sqs.CreateQueueInput, opts ...func(*sqs.Options)) (*sqs.CreateQueueOutput, error)
	ReceiveMessage(ctx context.Context, in *sqs.ReceiveMessageInput, opts ...func(*sqs.Options)) (*sqs.ReceiveMessageOutput, error)
	DeleteMessage(ctx context.Context, in *sqs.DeleteMessageInput, opts ...func(*sqs.Options)) (*sqs.DeleteMessageOutput, error)
	ChangeMessageVisibility(ctx context.Context, in *sqs.ChangeMessageVisibilityInput, opts ...func(*sqs.Options)) (*sqs.ChangeMessageVisibilityOutput, error)
}

// HostSSMAPI is the part of the SSM client a host uses to publish its queue.
type HostSSMAPI interface {
	PutParameter(ctx context.Context, in *ssm.PutParameterInput, opts ...func(*ssm.Options)) (*ssm.PutParameterOutput, error)
}

// HostQueue is the receiving end of one host's commands.
type HostQueue struct {
	sqs        HostSQSAPI
	url        string
	visibility time.Duration
	log        *slog.Logger
}

// Visibility is how long a received command stays hidden: longer than the
// longest start, so it is not handed out twice while it runs.
func Visibility(startTimeout time.Duration) time.Duration { return startTimeout + time.Minute }

// RegisterHost makes sure the host's command queue exists and publishes its
// URL in SSM, where Commands.Send looks it up.
func RegisterHost(ctx context.Context, sqsClient HostSQSAPI, ssmClient HostSSMAPI, prefix, hostID string, startTimeout time.Duration, log *slog.Logger) (*HostQueue, error) {
	visibility := Visibility(startTimeout)
	out, err := sqsClient.CreateQueue(ctx, &sqs.CreateQueueInput{
		QueueName: aws.String(prefix + hostID),
		Attributes: map[string]string{
			string(sqstypes.QueueAttributeNameVisibilityTimeout):      fmt.Sprint(int(visibility.Seconds())),
			string(sqstypes.QueueAttributeNameMessageRetentionPeriod): "3600",
		},
	})
	if err != nil {
		return nil, fmt.Errorf("creating the command queue of host %s: %w", hostID, err)
	}
	_, err = ssmClient.PutParameter(ctx, &ssm.PutParameterInput{
		Name: aws.String(config.HostQueueParameter(hostID)), Value: out.QueueUrl,
		Type: ssmtypes.ParameterTypeString, Overwrite: aws.Bool(true),
	})
	if err != nil {
		return nil, fmt.Errorf("publishing the command queue of host %s: %w", hostID, err)
	}
	return &HostQueue{sqs: sqsClient, url: aws.ToString(out.QueueUrl), visibility: visibility, log: log}, nil
}

// URL is the queue's URL.
func (q *HostQueue) URL() string { return q.url }

// maxInFlight bounds the commands carried out at once.
const maxInFlight = 16

// perEnvironment bounds the commands of one environment in flight at once.
// The agent carries out an environment's commands one after another, so
// more would only wait, each holding one of the host's slots: copies of a
// stop redelivered behind a start its customer made slow would take them
// all. A command over the bound comes back after busyRetry instead.
const (
	perEnvironment = 2
	busyRetry      = 10 * time.Second
)

// Receive long-polls the queue until ctx ends, calling handle for each
// command, concurrently. A command is deleted once handle returns nil; on an
// error it stays, and SQS delivers it again after the visibility timeout.
// handle's context outlives ctx, so that a start half done when the host
// shuts down is finished or cleaned, not abandoned.
func (q *HostQueue) Receive(ctx context.Context, handle func(context.Context, message.Command) error) {
	var wg sync.WaitGroup
	defer wg.Wait()
	slots := make(chan struct{}, maxInFlight)
	var mu sync.Mutex
	inFlight := map[string]int{} // by environment
	failing := false
	for ctx.Err() == nil {
		out, err := q.sqs.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{
			QueueUrl: &q.url, MaxNumberOfMessages: 10, WaitTimeSeconds: 20,
			VisibilityTimeout:     int32(q.visibility.Seconds()),
			MessageAttributeNames: []string{TraceAttribute},
		})
		if err != nil {
			if ctx.Err() == nil {
				if !failing {
					q.log.Error("receiving commands; retrying", "error", err)
				}
				failing = true
				select {
				case <-ctx.Done():
				case <-time.After(2 * time.Second):
				}
			}
			continue
		}
		failing = false
		for _, m := range out.Messages {
			cmd, err := message.DecodeCommand([]byte(aws.ToString(m.Body)))
			if err != nil {
				q.log.Warn("dropping malformed command", "message_id", aws.ToString(m.MessageId), "error", err)
				q.delete(ctx, m)
				continue
			}
			mu.Lock()
			busy := inFlight[cmd.EnvironmentID] >= perEnvironment
			if !busy {
				inFlight[cmd.EnvironmentID]++
			}
			mu.Unlock()
			if busy {
				q.later(ctx, m)
				continue
			}
			select {
			case slots <- struct{}{}:
			case <-ctx.Done():
				return
			}
			wg.Add(1)
			go func() {
				defer func() {
					<-slots
					mu.Lock()
					if inFlight[cmd.EnvironmentID]--; inFlight[cmd.EnvironmentID] == 0 {
						delete(inFlight, cmd.EnvironmentID)
					}
					mu.Unlock()
					wg.Done()
				}()
				err := ContinueTrace(context.WithoutCancel(ctx), "sidecar "+cmd.Type, aws.ToString(m.MessageAttributes[TraceAttribute].StringValue), func(ctx context.Context) error {
					_ = xray.AddAnnotation(ctx, "instance_id", cmd.InstanceID)
					return handle(ctx, cmd)
				})
				if err != nil {
					q.log.Error("command not completed; it will be delivered again", "instance_id", cmd.InstanceID, "type", cmd.Type, "error", err)
					return
				}
				q.delete(context.WithoutCancel(ctx), m)
			}()
		}
	}
}

// later puts a command back on the queue, to come again after busyRetry.
func (q *HostQueue) later(ctx context.Context, m sqstypes.Message) {
	_, err := q.sqs.ChangeMessageVisibility(ctx, &sqs.ChangeMessageVisibilityInput{
		QueueUrl: &q.url, ReceiptHandle: m.ReceiptHandle, VisibilityTimeout: int32(busyRetry.Seconds()),
	})
	if err != nil {
		q.log.Warn("putting back a command of a busy environment; it comes again after the visibility timeout", "error", err)
	}
}

func (q *HostQueue) delete(ctx context.Context, m sqstypes.Message) {
	if _, err := q.sqs.DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: &q.url, ReceiptHandle: m.ReceiptHandle}); err != nil {
		q.log.Warn("deleting command; it will come again and be repeated harmlessly", "error", err)
	}
}
