package queue

import (
	"context"
	"net/http"
	"net/url"
	"regexp"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/aws/aws-xray-sdk-go/header"
	"github.com/aws/aws-xray-sdk-go/xray"
)

// TraceAttribute is the message attribute that carries the sender's X-Ray
// trace header (Root=…;Parent=…;Sampled=…) from the API to the sidecar and
// from the sidecar to the reports function, so that X-Ray draws a start as
// one tree. SQS's own AWSTraceHeader system attribute would carry it on AWS,
// but the local emulator (kumo v0.33.1) neither keeps MessageSystemAttributes
// on SendMessage nor returns AWSTraceHeader, so the local stack could never
// show it working; a message attribute travels the same way on both.
const TraceAttribute = "envjupyter-trace"

// sendTraced sends in within a subsegment named name, the message carrying
// that subsegment's trace header: the receiver's segment becomes its child,
// with the sender's sampling decision. Untraced, it sends without a header.
func sendTraced(ctx context.Context, client SQSAPI, name, instanceID string, in *sqs.SendMessageInput) error {
	return xray.Capture(ctx, name, func(ctx context.Context) error {
		if seg := xray.GetSegment(ctx); seg != nil && seg.TraceID != "" {
			_ = seg.AddAnnotation("instance_id", instanceID)
			if in.MessageAttributes == nil {
				in.MessageAttributes = map[string]sqstypes.MessageAttributeValue{}
			}
			in.MessageAttributes[TraceAttribute] = sqstypes.MessageAttributeValue{
				DataType: aws.String("String"), StringValue: aws.String(seg.DownstreamHeader().String()),
			}
		}
		_, err := client.SendMessage(ctx, in)
		return err
	})
}

// traceIDPattern and segmentIDPattern are X-Ray's id formats: a header that
// does not follow them (a host may send anything) is ignored.
var (
	traceIDPattern   = regexp.MustCompile(`^1-[0-9a-f]{8}-[0-9a-f]{24}$`)
	segmentIDPattern = regexp.MustCompile(`^[0-9a-f]{16}$`)
)

// ContinueTrace runs fn, the work a received message asks for, in a segment
// named name that continues the sender's trace (traceHeader, see
// TraceAttribute): the same trace id, the sender's subsegment as parent, and
// the sender's sampling decision, so with Sampled=0 nothing is recorded.
// Without a usable header, fn runs in a subsegment of whatever segment ctx
// holds (a Lambda invocation's), or untraced.
func ContinueTrace(ctx context.Context, name, traceHeader string, fn func(context.Context) error) error {
	h := header.FromString(traceHeader)
	if !traceIDPattern.MatchString(h.TraceID) || h.ParentID != "" && !segmentIDPattern.MatchString(h.ParentID) {
		return xray.Capture(ctx, name, fn)
	}
	// A request, even an empty one, makes the SDK follow the header's
	// sampling decision rather than its own rules.
	ctx, seg := xray.NewSegmentFromHeader(ctx, name, &http.Request{URL: &url.URL{}, Header: http.Header{}}, h)
	err := fn(ctx)
	seg.Close(err)
	return err
}
