// Package awsconf builds the AWS SDK configuration shared by the functions and
// the sidecar: the same code talks to AWS in production and to the local
// emulator, where only AWS_ENDPOINT_URL differs. Every client built from it is
// traced with X-Ray.
package awsconf

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	"github.com/aws/aws-xray-sdk-go/instrumentation/awsv2"
	"github.com/aws/aws-xray-sdk-go/xray"
	"github.com/aws/aws-xray-sdk-go/xraylog"
)

// Clients are the AWS clients both sides use. Each side builds the others
// it needs from Config (the control plane's DynamoDB client: store.NewClient),
// so the sidecar links no DynamoDB client.
type Clients struct {
	Config aws.Config
	SQS    *sqs.Client
	SSM    *ssm.Client
}

// Load reads the standard AWS configuration (region, credentials,
// AWS_ENDPOINT_URL) and builds instrumented clients.
func Load(ctx context.Context) (*Clients, error) {
	QuietXRay()
	cfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		return nil, fmt.Errorf("loading AWS configuration: %w", err)
	}
	awsv2.AWSV2Instrumentor(&cfg.APIOptions)
	if err := recordCalls(&cfg); err != nil {
		return nil, err
	}
	return &Clients{Config: cfg, SQS: sqs.NewFromConfig(cfg), SSM: ssm.NewFromConfig(cfg)}, nil
}

// QuietXRay keeps X-Ray from logging an error for every call that has no
// segment, which is every call when no daemon or Lambda facade is present.
// Set AWS_XRAY_CONTEXT_MISSING=LOG_ERROR to see them again.
func QuietXRay() {
	if os.Getenv("AWS_XRAY_CONTEXT_MISSING") == "" {
		_ = xray.Configure(xray.Config{ContextMissingStrategy: ignoreMissing{}})
	}
	if os.Getenv("AWS_XRAY_DEBUG") == "" {
		xray.SetLogger(xraylog.NewDefaultLogger(io.Discard, xraylog.LogLevelError))
	}
}

type ignoreMissing struct{}

func (ignoreMissing) ContextMissing(any) {}
