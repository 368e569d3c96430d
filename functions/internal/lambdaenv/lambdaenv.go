// Package lambdaenv builds the control plane the way every function runs it.
package lambdaenv

import (
	"context"
	"os"

	"github.com/aws/aws-lambda-go/lambdacontext"

	"github.com/envjupyter/envjupyter/functions/internal/control"
	"github.com/envjupyter/envjupyter/functions/internal/emf"
	"github.com/envjupyter/envjupyter/functions/store/dynamostore"
	"github.com/envjupyter/envjupyter/shared/awsconf"
	"github.com/envjupyter/envjupyter/shared/config"
	"github.com/envjupyter/envjupyter/shared/queue"
)

// Service builds the control plane: traced AWS clients, configuration from
// SSM, tables named by the template's environment variables, metrics on
// standard output (CloudWatch's embedded metric format) and a Lambda logger.
// Functions call it once, at cold start.
func Service(ctx context.Context) (*control.Service, error) {
	clients, err := awsconf.Load(ctx)
	if err != nil {
		return nil, err
	}
	cfg, err := config.Load(ctx, clients.SSM)
	if err != nil {
		return nil, err
	}
	st := dynamostore.New(dynamostore.NewClient(clients.Config), dynamostore.TablesFromEnv())
	st.PortCooldown = cfg.PortCooldown
	return &control.Service{
		Store:     st,
		Commands:  queue.NewCommands(clients.SQS, commandQueuePrefix()),
		Config:    cfg,
		Metrics:   emf.NewEmitter(os.Stdout),
		Log:       lambdacontext.NewLogger(),
		Refresher: config.NewRefresher(clients.SSM, config.RefreshEvery()),
	}, nil
}

// commandQueuePrefix begins the name of every host's command queue: the
// sidecars' ENVJUPYTER_QUEUE_PREFIX, which must then be set the same here;
// by default queue.DefaultHostPrefix, the name template.yaml's policies give
// the queues. The control plane finds a host's queue by this name, never by
// the URL the host itself published.
func commandQueuePrefix() string {
	if p := os.Getenv("ENVJUPYTER_QUEUE_PREFIX"); p != "" {
		return p
	}
	return queue.DefaultHostPrefix
}

// Refreshing wraps a function's handler so that, before an invocation,
// svc.Config is read again once it is older than config.RefreshEvery(): a
// changed parameter takes effect within that time, not only at a cold start
// (the reaper, called every minute, may never go cold). Lambda runs one
// invocation at a time per process, so replacing Config between invocations
// races with nothing; a failed read keeps the configuration in use.
func Refreshing[In, Out any](svc *control.Service, h func(context.Context, In) (Out, error)) func(context.Context, In) (Out, error) {
	return func(ctx context.Context, in In) (Out, error) {
		if svc.Refresher != nil {
			cfg, fresh, err := svc.Refresher.Refresh(ctx)
			switch {
			case err != nil && svc.Log != nil:
				svc.Log.WarnContext(ctx, "re-reading the configuration failed; keeping the one in use", "error", err)
			case fresh:
				svc.Config = cfg
			}
		}
		return h(ctx, in)
	}
}
