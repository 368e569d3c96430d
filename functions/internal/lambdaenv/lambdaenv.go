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
	return &control.Service{
		Store:    dynamostore.New(dynamostore.NewClient(clients.Config), dynamostore.TablesFromEnv()),
		Commands: queue.NewCommands(clients.SQS, clients.SSM),
		Config:   cfg,
		Metrics:  emf.NewEmitter(os.Stdout),
		Log:      lambdacontext.NewLogger(),
	}, nil
}
