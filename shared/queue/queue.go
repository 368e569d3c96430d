// Package queue sends commands to hosts and reports to the control plane
// over SQS. Each Docker host has its own command queue, whose URL its
// sidecar publishes in SSM; there is one reports queue.
package queue

import (
	"context"
	"fmt"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/aws/aws-sdk-go-v2/service/ssm"

	"github.com/envjupyter/envjupyter/shared/config"
	"github.com/envjupyter/envjupyter/shared/message"
)

// SQSAPI is the part of the SQS client used to send.
type SQSAPI interface {
	SendMessage(ctx context.Context, in *sqs.SendMessageInput, opts ...func(*sqs.Options)) (*sqs.SendMessageOutput, error)
}

// SSMAPI is the part of the SSM client used to find host queues.
type SSMAPI interface {
	GetParameter(ctx context.Context, in *ssm.GetParameterInput, opts ...func(*ssm.Options)) (*ssm.GetParameterOutput, error)
}

// Commands sends commands to hosts' queues.
type Commands struct {
	sqs SQSAPI
	ssm SSMAPI

	mu   sync.Mutex
	urls map[string]string // host id → queue URL; queues outlive a Lambda container
}

// NewCommands returns a command sender.
func NewCommands(sqsClient SQSAPI, ssmClient SSMAPI) *Commands {
	return &Commands{sqs: sqsClient, ssm: ssmClient, urls: map[string]string{}}
}

// Send puts a command on the host's queue.
func (c *Commands) Send(ctx context.Context, hostID string, cmd message.Command) error {
	url, err := c.queueURL(ctx, hostID)
	if err != nil {
		return err
	}
	body, err := message.Encode(cmd)
	if err != nil {
		return err
	}
	in := &sqs.SendMessageInput{QueueUrl: &url, MessageBody: &body}
	if err := sendTraced(ctx, c.sqs, "send "+cmd.Type+" command", cmd.InstanceID, in); err != nil {
		return fmt.Errorf("sending %s to host %s: %w", cmd, hostID, err)
	}
	return nil
}

func (c *Commands) queueURL(ctx context.Context, hostID string) (string, error) {
	c.mu.Lock()
	url, ok := c.urls[hostID]
	c.mu.Unlock()
	if ok {
		return url, nil
	}
	out, err := c.ssm.GetParameter(ctx, &ssm.GetParameterInput{Name: aws.String(config.HostQueueParameter(hostID))})
	if err != nil {
		return "", fmt.Errorf("finding the command queue of host %s: %w", hostID, err)
	}
	url = aws.ToString(out.Parameter.Value)
	c.mu.Lock()
	c.urls[hostID] = url
	c.mu.Unlock()
	return url, nil
}

// Reports sends reports to the reports queue, signed with the host's key.
type Reports struct {
	sqs SQSAPI
	url string
	key []byte
}

// NewReports returns a report sender for the queue at url that signs with
// key (see EnsureHostKey).
func NewReports(sqsClient SQSAPI, url string, key []byte) *Reports {
	return &Reports{sqs: sqsClient, url: url, key: key}
}

// Send puts a report on the reports queue.
func (r *Reports) Send(ctx context.Context, rep message.Report) error {
	body, err := message.Encode(rep)
	if err != nil {
		return err
	}
	in := &sqs.SendMessageInput{
		QueueUrl: &r.url, MessageBody: &body,
		MessageAttributes: map[string]sqstypes.MessageAttributeValue{
			message.SignatureAttribute: {DataType: aws.String("String"), StringValue: aws.String(message.Sign(r.key, body))},
		},
	}
	what := "send " + string(rep.Status) + " report"
	if rep.HostOnly() {
		what = "send host heartbeat"
	}
	if err := sendTraced(ctx, r.sqs, what, rep.InstanceID, in); err != nil {
		return fmt.Errorf("sending %s report of instance %s: %w", rep.Status, rep.InstanceID, err)
	}
	return nil
}
