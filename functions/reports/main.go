// Command reports is the Lambda that reads the reports queue and applies
// what hosts observed to instance state.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambdacontext"

	"github.com/envjupyter/envjupyter/shared/awsconf"
	"github.com/envjupyter/envjupyter/shared/control"
	"github.com/envjupyter/envjupyter/shared/store"
)

func main() {
	clients, err := awsconf.Load(context.Background())
	if err != nil {
		fmt.Fprintln(os.Stderr, "reports: starting:", err)
		os.Exit(1)
	}
	log := lambdacontext.NewLogger()
	h := &handler{
		control: &control.Service{Store: store.New(clients.DynamoDB, store.TablesFromEnv()), Log: log},
		log:     log,
	}
	lambda.Start(h.handle)
}
