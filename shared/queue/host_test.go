package queue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/aws/aws-sdk-go-v2/service/ssm"

	"github.com/envjupyter/envjupyter/shared/config"
	"github.com/envjupyter/envjupyter/shared/message"
)

// fakeSQS hands out one batch, then ends the test's context; it records
// the queue it created and the receipts deleted.
type fakeSQS struct {
	mu      sync.Mutex
	batch   []sqstypes.Message
	created *sqs.CreateQueueInput
	deleted []string
	putBack []string
	done    context.CancelFunc
}

func (f *fakeSQS) CreateQueue(_ context.Context, in *sqs.CreateQueueInput, _ ...func(*sqs.Options)) (*sqs.CreateQueueOutput, error) {
	f.created = in
	return &sqs.CreateQueueOutput{QueueUrl: aws.String("http://sqs.local/000000000000/" + aws.ToString(in.QueueName))}, nil
}

func (f *fakeSQS) ReceiveMessage(ctx context.Context, _ *sqs.ReceiveMessageInput, _ ...func(*sqs.Options)) (*sqs.ReceiveMessageOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	batch := f.batch
	f.batch = nil
	if batch == nil {
		f.done()
		return nil, ctx.Err()
	}
	return &sqs.ReceiveMessageOutput{Messages: batch}, nil
}

func (f *fakeSQS) ChangeMessageVisibility(_ context.Context, in *sqs.ChangeMessageVisibilityInput, _ ...func(*sqs.Options)) (*sqs.ChangeMessageVisibilityOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.putBack = append(f.putBack, aws.ToString(in.ReceiptHandle))
	return &sqs.ChangeMessageVisibilityOutput{}, nil
}

func (f *fakeSQS) DeleteMessage(_ context.Context, in *sqs.DeleteMessageInput, _ ...func(*sqs.Options)) (*sqs.DeleteMessageOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.deleted = append(f.deleted, aws.ToString(in.ReceiptHandle))
	return &sqs.DeleteMessageOutput{}, nil
}

type fakeSSM struct{ put *ssm.PutParameterInput }

func (f *fakeSSM) PutParameter(_ context.Context, in *ssm.PutParameterInput, _ ...func(*ssm.Options)) (*ssm.PutParameterOutput, error) {
	f.put = in
	return &ssm.PutParameterOutput{}, nil
}

func commandMessage(t *testing.T, receipt, instanceID string) sqstypes.Message {
	body, err := message.Encode(message.Command{
		V: message.Version, Type: message.TypeStop, InstanceID: instanceID, EnvironmentID: "env-1",
		ContainerID: "c1", HostPort: 20001, Reason: "user", SentAt: time.Now().UTC(),
	})
	if err != nil {
		t.Fatal(err)
	}
	return sqstypes.Message{Body: aws.String(body), ReceiptHandle: aws.String(receipt)}
}

func TestRegisterHostPublishesTheQueue(t *testing.T) {
	s, p := &fakeSQS{}, &fakeSSM{}
	q, err := RegisterHost(context.Background(), s, p, DefaultHostPrefix, "host-1", 2*time.Minute, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if got := aws.ToString(s.created.QueueName); got != "envjupyter-commands-host-1" {
		t.Errorf("queue name = %q", got)
	}
	if got := s.created.Attributes[string(sqstypes.QueueAttributeNameVisibilityTimeout)]; got != "180" {
		t.Errorf("visibility = %s s, want the start timeout and a minute (180)", got)
	}
	if aws.ToString(p.put.Name) != config.HostQueueParameter("host-1") || aws.ToString(p.put.Value) != q.URL() {
		t.Errorf("published %s = %s, want %s = %s", aws.ToString(p.put.Name), aws.ToString(p.put.Value), config.HostQueueParameter("host-1"), q.URL())
	}
}

// A command is deleted once handled; one whose handling failed stays for
// redelivery; a malformed one is deleted, since it can never succeed.
func TestReceiveDeletesWhatIsDone(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	s := &fakeSQS{done: cancel, batch: []sqstypes.Message{
		commandMessage(t, "r-ok", "ji-ok"),
		commandMessage(t, "r-fails", "ji-fails"),
		{Body: aws.String(`{"v":1,"type":"start"`), ReceiptHandle: aws.String("r-malformed")},
	}}
	q, err := RegisterHost(ctx, s, &fakeSSM{}, DefaultHostPrefix, "host-1", time.Minute, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var handled []string
	q.Receive(ctx, func(ctx context.Context, cmd message.Command) error {
		mu.Lock()
		handled = append(handled, cmd.InstanceID)
		mu.Unlock()
		if ctx.Err() != nil {
			t.Error("the handler's context ends with the receive loop")
		}
		if cmd.InstanceID == "ji-fails" {
			return errors.New("report not sent")
		}
		return nil
	})
	slices.Sort(handled)
	slices.Sort(s.deleted)
	if !slices.Equal(handled, []string{"ji-fails", "ji-ok"}) {
		t.Errorf("handled = %q", handled)
	}
	if !slices.Equal(s.deleted, []string{"r-malformed", "r-ok"}) {
		t.Errorf("deleted = %q, want r-malformed and r-ok", s.deleted)
	}
}

// Commands of one environment beyond perEnvironment in flight go back to
// the queue for later rather than wait in the host's slots.
func TestBusyEnvironmentsCommandsComeBackLater(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	s := &fakeSQS{done: cancel}
	for i := range perEnvironment + 2 {
		s.batch = append(s.batch, commandMessage(t, fmt.Sprintf("r-%d", i), fmt.Sprintf("ji-%d", i)))
	}
	q, err := RegisterHost(ctx, s, &fakeSSM{}, DefaultHostPrefix, "host-1", time.Minute, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	var handled atomic.Int32
	done := make(chan struct{})
	go func() {
		q.Receive(ctx, func(context.Context, message.Command) error {
			handled.Add(1)
			<-release // the environment's work hangs until the test lets it go
			return nil
		})
		close(done)
	}()
	<-ctx.Done() // the whole batch was dealt out
	close(release)
	<-done
	slices.Sort(s.putBack)
	if want := []string{"r-2", "r-3"}; !slices.Equal(s.putBack, want) {
		t.Errorf("put back %q, want %q", s.putBack, want)
	}
	if n := handled.Load(); n != perEnvironment {
		t.Errorf("handled %d, want %d", n, perEnvironment)
	}
}
