package control

import (
	"context"

	"github.com/aws/aws-lambda-go/lambdacontext"

	"github.com/envjupyter/envjupyter/shared/awsconf"
	"github.com/envjupyter/envjupyter/shared/config"
	"github.com/envjupyter/envjupyter/shared/queue"
	"github.com/envjupyter/envjupyter/shared/store"
)

// FromEnvironment builds the control plane the way every function runs it:
// traced AWS clients, configuration from SSM, tables named by the template's
// environment variables, and a Lambda logger. Functions call it once, at cold
// start.
func FromEnvironment(ctx context.Context) (*Service, error) {
	clients, err := awsconf.Load(ctx)
	if err != nil {
		return nil, err
	}
	cfg, err := config.Load(ctx, clients.SSM)
	if err != nil {
		return nil, err
	}
	return &Service{
		Store:     store.New(clients.DynamoDB, store.TablesFromEnv()),
		Commands:  queue.NewCommands(clients.SQS, clients.SSM),
		Config:    cfg,
		Log:       lambdacontext.NewLogger(),
		refresher: config.NewRefresher(clients.SSM, config.RefreshEvery()),
	}, nil
}

// Refreshing wraps a function's handler so that, before an invocation,
// svc.Config is read again once it is older than config.RefreshEvery(): a
// changed parameter takes effect within that time, not only at a cold start.
// Lambda runs one invocation at a time per process, so replacing Config
// between invocations races with nothing; a failed read keeps the
// configuration in use.
func Refreshing[In, Out any](svc *Service, h func(context.Context, In) (Out, error)) func(context.Context, In) (Out, error) {
	return func(ctx context.Context, in In) (Out, error) {
		if svc.refresher != nil {
			cfg, fresh, err := svc.refresher.Refresh(ctx)
			switch {
			case err != nil:
				svc.log().WarnContext(ctx, "re-reading the configuration failed; keeping the one in use", "error", err)
			case fresh:
				svc.Config = cfg
			}
		}
		return h(ctx, in)
	}
}
