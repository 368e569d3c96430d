package devstack

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
)

// Invoke runs a function of the stack on an event, as `sam local invoke -e`
// would, and returns its response payload.
func (s *Stack) Invoke(ctx context.Context, logicalID string, event []byte) ([]byte, error) {
	return InvokeFunction(ctx, s.AWS, s.Opts.Name+"-"+logicalID, event)
}

// InvokeFunction invokes a function by name through the emulator's Lambda API.
func InvokeFunction(ctx context.Context, aw AWS, name string, event []byte) ([]byte, error) {
	out, err := aw.Lambda.Invoke(ctx, &lambda.InvokeInput{FunctionName: &name, Payload: event})
	if err != nil {
		return nil, fmt.Errorf("invoking %s: %w", name, err)
	}
	if out.FunctionError != nil {
		return out.Payload, fmt.Errorf("%s failed (%s): %s", name, aws.ToString(out.FunctionError), out.Payload)
	}
	return out.Payload, nil
}
