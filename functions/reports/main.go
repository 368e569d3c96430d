// Command reports is the Lambda that reads the reports queue and applies
// what hosts observed to instance state.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/aws/aws-lambda-go/lambda"

	"github.com/envjupyter/envjupyter/functions/internal/lambdaenv"
	"github.com/envjupyter/envjupyter/shared/awsconf"
	"github.com/envjupyter/envjupyter/shared/queue"
)

func main() {
	svc, err := lambdaenv.Service(context.Background())
	if err != nil {
		fmt.Fprintln(os.Stderr, "reports: starting:", err)
		os.Exit(1)
	}
	clients, err := awsconf.Load(context.Background())
	if err != nil {
		fmt.Fprintln(os.Stderr, "reports: starting:", err)
		os.Exit(1)
	}
	lambda.Start((&handler{control: svc, keys: queue.NewHostKeys(clients.SSM), log: svc.Log}).handle)
}
