// Command reaper is the scheduled Lambda that ends what hosts will not:
// starts past their timeout, instances of silent hosts, unconfirmed stops,
// and idle instances.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-xray-sdk-go/xray"

	"github.com/envjupyter/envjupyter/functions/internal/control"
	"github.com/envjupyter/envjupyter/functions/internal/lambdaenv"
)

func main() {
	svc, err := lambdaenv.Service(context.Background())
	if err != nil {
		fmt.Fprintln(os.Stderr, "reaper: starting:", err)
		os.Exit(1)
	}
	lambda.Start(lambdaenv.Refreshing(svc, func(ctx context.Context, _ events.CloudWatchEvent) (control.Reaped, error) {
		var r control.Reaped
		err := xray.Capture(ctx, "reap", func(ctx context.Context) error {
			var err error
			r, err = svc.Reap(ctx)
			return err
		})
		svc.Log.InfoContext(ctx, "reaper pass", "checked", r.Checked, "due", r.Due, "silent_hosts", r.SilentHosts,
			"start_timeouts", r.StartTimeouts, "hosts_lost", r.HostsLost, "stop_timeouts", r.StopTimeouts, "idle", r.Idle,
			"rearmed", r.Rearmed, "unfinished", r.Unfinished)
		emitReaped(svc.Metrics, r)
		return r, err
	}))
}
