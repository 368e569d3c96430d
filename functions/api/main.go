// Command api is the Lambda behind the HTTP API: start, stop and status of an
// environment's JupyterLab.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/aws/aws-lambda-go/lambda"

	"github.com/envjupyter/envjupyter/functions/internal/lambdaenv"
	"github.com/envjupyter/envjupyter/shared/config"
)

func main() {
	svc, err := lambdaenv.Service(context.Background())
	if err != nil {
		fmt.Fprintln(os.Stderr, "api: starting:", err)
		os.Exit(1)
	}
	claim := os.Getenv("CUSTOMER_ID_CLAIM")
	if claim == "" {
		claim = "customer_id"
	}
	h := &handler{control: svc, settings: func() config.Config { return svc.Config }, customerClaim: claim, log: svc.Log}
	lambda.Start(lambdaenv.Refreshing(svc, h.handle))
}
