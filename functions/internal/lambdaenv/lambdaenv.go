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
		Store:    store.New(clients.DynamoDB, store.TablesFromEnv()),
		Commands: queue.NewCommands(clients.SQS, clients.SSM),
		Config:   cfg,
		Log:      lambdacontext.NewLogger(),
	}, nil
}
