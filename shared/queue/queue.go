// Package queue sends commands to hosts and reports to the control plane
// over SQS. Each Docker host has its own command queue, named after it (its
// sidecar also publishes the URL in SSM, for operators; the control plane
// finds the queue by name); there is one reports queue.
package queue

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/envjupyter/envjupyter/shared/message"
)

// SQSAPI is the part of the SQS client used to send.
type SQSAPI interface {
	SendMessage(ctx context.Context, in *sqs.SendMessageInput, opts ...func(*sqs.Options)) (*sqs.SendMessageOutput, error)
}

// CommandSQSAPI is the part of the SQS client the control plane uses to
// send commands: it finds a host's queue by name, then sends to it.
type CommandSQSAPI interface {
	SQSAPI
	GetQueueUrl(ctx context.Context, in *sqs.GetQueueUrlInput, opts ...func(*sqs.Options)) (*sqs.GetQueueUrlOutput, error)
}

// ErrInvalidHostID marks a host id that cannot be a host's: the control
// plane sends it nothing.
var ErrInvalidHostID = errors.New("invalid host id")

// Commands sends commands to hosts' queues.
type Commands struct {
	sqs    CommandSQSAPI
	prefix string

	mu   sync.Mutex
	urls map[string]string // host id → queue URL; queues outlive a Lambda container
}

// NewCommands returns a command sender to the queues named prefix + host id
// (the name RegisterHost gives a host's queue; DefaultHostPrefix unless the
// sidecars' ENVJUPYTER_QUEUE_PREFIX says otherwise).
func NewCommands(sqsClient CommandSQSAPI, prefix string) *Commands {
	return &Commands{sqs: sqsClient, prefix: prefix, urls: map[string]string{}}
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

// queueURL finds the host's queue by its name, in this account and region,
// as SQS itself answers. It never uses the URL the host published in SSM
// (config.HostQueueParameter): the host writes that parameter, so a host
// that is taken over could point it at another host's queue, and that host
// would act on commands meant for the first one's instances (ports are
// leased per host: the port a stop names may be another customer's there).
func (c *Commands) queueURL(ctx context.Context, hostID string) (string, error) {
	if !message.ValidHostID(hostID) {
		return "", fmt.Errorf("%w: %q", ErrInvalidHostID, hostID)
	}
	c.mu.Lock()
	url, ok := c.urls[hostID]
	c.mu.Unlock()
	if ok {
		return url, nil
	}
	out, err := c.sqs.GetQueueUrl(ctx, &sqs.GetQueueUrlInput{QueueName: aws.String(c.prefix + hostID)})
	if err != nil {
		return "", fmt.Errorf("finding the command queue of host %s: %w", hostID, err)
	}
	url = aws.ToString(out.QueueUrl)
	if url == "" {
		return "", fmt.Errorf("finding the command queue of host %s: SQS answered no URL", hostID)
	}
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
