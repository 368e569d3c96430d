// Command api is the Lambda behind the HTTP API: start, stop and status of an
// environment's JupyterLab.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambdacontext"

	"github.com/envjupyter/envjupyter/shared/awsconf"
	"github.com/envjupyter/envjupyter/shared/config"
	"github.com/envjupyter/envjupyter/shared/control"
	"github.com/envjupyter/envjupyter/shared/queue"
	"github.com/envjupyter/envjupyter/shared/store"
)

func main() {
	h, err := newHandler(context.Background())
	if err != nil {
		fmt.Fprintln(os.Stderr, "api: starting:", err)
		os.Exit(1)
	}
	lambda.Start(h.handle)
}

func newHandler(ctx context.Context) (*handler, error) {
	clients, err := awsconf.Load(ctx)
	if err != nil {
		return nil, err
	}
	cfg, err := config.Load(ctx, clients.SSM)
	if err != nil {
		return nil, err
	}
	log := lambdacontext.NewLogger()
	claim := os.Getenv("CUSTOMER_ID_CLAIM")
	if claim == "" {
		claim = "customer_id"
	}
	return &handler{
		control: &control.Service{
			Store:    store.New(clients.DynamoDB, store.TablesFromEnv()),
			Commands: queue.NewCommands(clients.SQS, clients.SSM),
			Config:   cfg,
			Log:      log,
		},
		customerClaim: claim,
		log:           log,
	}, nil
}
