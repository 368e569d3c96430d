// Command envevents is the Lambda on the environment module's state-change
// events: an environment that stops takes its JupyterLab with it, and one
// created with auto-start gets JupyterLab when it is running.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambda"

	"github.com/envjupyter/envjupyter/functions/internal/lambdaenv"
)

func main() {
	svc, err := lambdaenv.Service(context.Background())
	if err != nil {
		fmt.Fprintln(os.Stderr, "envevents: starting:", err)
		os.Exit(1)
	}
	h := &handler{control: svc, log: svc.Log}
	lambda.Start(lambdaenv.Refreshing(svc, func(ctx context.Context, ev events.CloudWatchEvent) (struct{}, error) {
		return struct{}{}, h.handle(ctx, ev)
	}))
}
