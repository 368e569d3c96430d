// Command reports is the Lambda that reads the reports queue and applies
// what hosts observed to instance state.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/aws/aws-lambda-go/lambda"

	"github.com/envjupyter/envjupyter/functions/internal/lambdaenv"
)

func main() {
	svc, err := lambdaenv.Service(context.Background())
	if err != nil {
		fmt.Fprintln(os.Stderr, "reports: starting:", err)
		os.Exit(1)
	}
	lambda.Start(lambdaenv.Refreshing(svc, (&handler{control: svc, log: svc.Log}).handle))
}
