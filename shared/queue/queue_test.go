package queue

import (
	"context"
	"errors"
	neturl "net/url"
	"strings"
	"sync"
	"testing"
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

// account stands in for the control plane's AWS account: its queues by
// name (URLs shaped as kumo makes them), and the parameters hosts wrote.
// It answers SQS's and SSM's calls, so that a sender that looked at what a
// host published (GetParameter) would be seen doing so.
type account struct {
	mu        sync.Mutex
	queues    map[string]string // name → URL
	params    map[string]string // SSM, as the hosts wrote them
	lookups   []string          // queue names asked for
	delivered map[string]int    // queue URL → messages
}

func newAccount(hosts ...string) *account {
	a := &account{queues: map[string]string{}, params: map[string]string{}, delivered: map[string]int{}}
	for _, h := range hosts {
		url := queueURLOf(h)
		a.queues[DefaultHostPrefix+h] = url
		a.params[config.HostQueueParameter(h)] = url // as RegisterHost publishes it
	}
	return a
}

func queueURLOf(host string) string {
	return "http://localhost:4566/000000000000/" + DefaultHostPrefix + host
}

func (a *account) GetQueueUrl(_ context.Context, in *sqs.GetQueueUrlInput, _ ...func(*sqs.Options)) (*sqs.GetQueueUrlOutput, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	name := aws.ToString(in.QueueName)
	a.lookups = append(a.lookups, name)
	if in.QueueOwnerAWSAccountId != nil {
		return nil, errors.New("the sender asked for another account's queue")
	}
	url, ok := a.queues[name]
	if !ok {
		return nil, &sqstypes.QueueDoesNotExist{Message: aws.String("The specified queue does not exist.")}
	}
	return &sqs.GetQueueUrlOutput{QueueUrl: &url}, nil
}

// SendMessage delivers by the URL's account and name, as SQS (and kumo, which
// ignores the URL's host) does.
func (a *account) SendMessage(_ context.Context, in *sqs.SendMessageInput, _ ...func(*sqs.Options)) (*sqs.SendMessageOutput, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	u, err := neturl.Parse(aws.ToString(in.QueueUrl))
	if err != nil {
		return nil, err
	}
	for _, url := range a.queues {
		if q, _ := neturl.Parse(url); q.Path == u.Path {
			a.delivered[url]++
			return &sqs.SendMessageOutput{MessageId: aws.String("m")}, nil
		}
	}
	return nil, &sqstypes.QueueDoesNotExist{Message: aws.String("The specified queue does not exist.")}
}

func (a *account) GetParameter(_ context.Context, in *ssm.GetParameterInput, _ ...func(*ssm.Options)) (*ssm.GetParameterOutput, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	v, ok := a.params[aws.ToString(in.Name)]
	if !ok {
		return nil, &ssmtypes.ParameterNotFound{}
	}
	return &ssm.GetParameterOutput{Parameter: &ssmtypes.Parameter{Name: in.Name, Value: &v}}, nil
}

// inSegment returns a context within an X-Ray segment whose documents go to
// a recorder, so that sends are traced quietly.
func inSegment(t *testing.T) context.Context {
	t.Helper()
	ctx, _ := tracingContext(t)
	ctx, seg := xray.BeginSegment(ctx, "test")
	t.Cleanup(func() { seg.Close(nil) })
	return ctx
}

func stopCommand() message.Command {
	return message.Command{V: message.Version, Type: message.TypeStop, InstanceID: "ji-1", EnvironmentID: "env-1",
		ContainerID: "c1", HostPort: 20001, Reason: "user", SentAt: time.Now().UTC()}
}

// A host writes its own command_queue_url, so one that was taken over can
// point it anywhere: at another host's queue, or at a queue of its name in
// another account. The control plane's commands for that host still go to
// the host's own queue, found by name in the control plane's account, and
// to no other; a host with no queue gets nothing, whatever it published.
func TestCommandsGoOnlyToTheHostsOwnQueue(t *testing.T) {
	tests := []struct {
		name      string
		published string // what h1 wrote in its command_queue_url
	}{
		{"another host's queue", queueURLOf("h2")},
		{"another host's queue, another endpoint", "https://sqs.us-east-1.amazonaws.com/000000000000/" + DefaultHostPrefix + "h2"},
		{"its name in another account", "https://sqs.us-east-1.amazonaws.com/999999999999/" + DefaultHostPrefix + "h1"},
		{"its own queue", queueURLOf("h1")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newAccount("h1", "h2")
			a.params[config.HostQueueParameter("h1")] = tt.published
			c, ctx := NewCommands(a, DefaultHostPrefix), inSegment(t)
			for range 2 {
				if err := c.Send(ctx, "h1", stopCommand()); err != nil {
					t.Fatalf("send to h1: %v", err)
				}
			}
			if got := a.delivered[queueURLOf("h1")]; got != 2 {
				t.Errorf("h1's queue got %d commands, want 2; delivered: %v", got, a.delivered)
			}
			if got := a.delivered[queueURLOf("h2")]; got != 0 {
				t.Errorf("h2's queue got %d of h1's commands", got)
			}
			if len(a.lookups) != 1 || a.lookups[0] != DefaultHostPrefix+"h1" {
				t.Errorf("looked up %q, want h1's queue once (then cached)", a.lookups)
			}
		})
	}

	t.Run("a host without a queue", func(t *testing.T) {
		a, ctx := newAccount("h2"), inSegment(t)
		a.params[config.HostQueueParameter("h3")] = queueURLOf("h2")
		err := NewCommands(a, DefaultHostPrefix).Send(ctx, "h3", stopCommand())
		var missing *sqstypes.QueueDoesNotExist
		if !errors.As(err, &missing) || !strings.Contains(err.Error(), "command queue of host h3") {
			t.Errorf("send to h3 = %v, want QueueDoesNotExist naming h3", err)
		}
		if len(a.delivered) != 0 {
			t.Errorf("delivered %v, want nothing", a.delivered)
		}
	})

	t.Run("the sidecars' prefix", func(t *testing.T) {
		a, ctx := newAccount(), inSegment(t)
		a.queues["envjupyter-commands-staging-h1"] = "http://localhost:4566/000000000000/envjupyter-commands-staging-h1"
		a.queues[DefaultHostPrefix+"h1"] = queueURLOf("h1") // another stack's h1
		if err := NewCommands(a, "envjupyter-commands-staging-").Send(ctx, "h1", stopCommand()); err != nil {
			t.Fatal(err)
		}
		if a.delivered["http://localhost:4566/000000000000/envjupyter-commands-staging-h1"] != 1 || a.delivered[queueURLOf("h1")] != 0 {
			t.Errorf("delivered %v, want one on envjupyter-commands-staging-h1", a.delivered)
		}
	})
}

// A host id is part of a queue name (and of SSM paths): one that is not a
// valid id is refused before anything is looked up or sent.
func TestCommandsRefuseInvalidHostIDs(t *testing.T) {
	ctx := inSegment(t)
	for _, id := range []string{"", "h1/../h2", "h2/x", "-h2", "h 2", "h2\n", "h2_", "h2.fifo", strings.Repeat("h", 64)} {
		a := newAccount("h2")
		err := NewCommands(a, DefaultHostPrefix).Send(ctx, id, stopCommand())
		if !errors.Is(err, ErrInvalidHostID) {
			t.Errorf("send to %q = %v, want ErrInvalidHostID", id, err)
		}
		if len(a.lookups) != 0 || len(a.delivered) != 0 {
			t.Errorf("send to %q looked up %q and delivered %v, want nothing", id, a.lookups, a.delivered)
		}
	}
}
