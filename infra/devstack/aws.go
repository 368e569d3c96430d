package devstack

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/apigatewayv2"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/eventbridge"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
)

// AWS holds clients of the emulator.
type AWS struct {
	Endpoint   string
	DynamoDB   *dynamodb.Client
	SQS        *sqs.Client
	SSM        *ssm.Client
	Lambda     *lambda.Client
	APIGateway *apigatewayv2.Client
	Events     *eventbridge.Client
}

// Credentials the emulator accepts; also given to the local processes.
const (
	AccessKeyID     = "local"
	SecretAccessKey = "local"
)

// NewAWS returns clients of the emulator at endpoint.
func NewAWS(ctx context.Context, endpoint string) (AWS, error) {
	cfg, err := config.LoadDefaultConfig(ctx,
		config.WithRegion(region),
		config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(AccessKeyID, SecretAccessKey, "")),
		config.WithBaseEndpoint(endpoint),
	)
	if err != nil {
		return AWS{}, fmt.Errorf("configuring emulator clients: %w", err)
	}
	return AWS{
		Endpoint:   endpoint,
		DynamoDB:   dynamodb.NewFromConfig(cfg, func(o *dynamodb.Options) { o.DisableValidateResponseChecksum = true }),
		SQS:        sqs.NewFromConfig(cfg),
		SSM:        ssm.NewFromConfig(cfg),
		Lambda:     lambda.NewFromConfig(cfg),
		APIGateway: apigatewayv2.NewFromConfig(cfg),
		Events:     eventbridge.NewFromConfig(cfg),
	}, nil
}

// ProcessEnv is the AWS part of the environment of a local process.
func ProcessEnv(endpoint string) []string {
	return []string{
		"AWS_ENDPOINT_URL=" + endpoint,
		"AWS_REGION=" + region,
		"AWS_ACCESS_KEY_ID=" + AccessKeyID,
		"AWS_SECRET_ACCESS_KEY=" + SecretAccessKey,
		"AWS_EC2_METADATA_DISABLED=true",
		// Only for the ARNs of the recorded calls (see CallLogs).
		"AWS_ACCOUNT_ID=" + accountID,
	}
}
