package awsconf

import (
	"slices"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
)

func TestRecordedCalls(t *testing.T) {
	r := &recorder{region: "r1", account: "123"}
	table := "arn:aws:dynamodb:r1:123:table/"
	tests := []struct {
		name    string
		service string
		op      string
		in      any
		want    []Call
	}{
		{
			name: "a transaction needs each item's action", service: "dynamodb", op: "TransactWriteItems",
			in: &dynamodb.TransactWriteItemsInput{TransactItems: []types.TransactWriteItem{
				{Put: &types.Put{TableName: aws.String("inst")}},
				{Update: &types.Update{TableName: aws.String("leases")}},
				{Delete: &types.Delete{TableName: aws.String("leases")}},
				{ConditionCheck: &types.ConditionCheck{TableName: aws.String("inst")}},
			}},
			want: []Call{
				{"dynamodb:TransactWriteItems", "dynamodb:PutItem", table + "inst"},
				{"dynamodb:TransactWriteItems", "dynamodb:UpdateItem", table + "leases"},
				{"dynamodb:TransactWriteItems", "dynamodb:DeleteItem", table + "leases"},
				{"dynamodb:TransactWriteItems", "dynamodb:ConditionCheckItem", table + "inst"},
			},
		},
		{
			name: "a query of an index is on the index", service: "dynamodb", op: "Query",
			in:   &dynamodb.QueryInput{TableName: aws.String("inst"), IndexName: aws.String("by_host")},
			want: []Call{{"dynamodb:Query", "dynamodb:Query", table + "inst/index/by_host"}},
		},
		{
			name: "a queue by its URL", service: "sqs", op: "DeleteMessageBatch",
			in:   &sqs.DeleteMessageBatchInput{QueueUrl: aws.String("https://sqs.r1.amazonaws.com/123/q-1")},
			want: []Call{{"sqs:DeleteMessageBatch", "sqs:DeleteMessage", "arn:aws:sqs:r1:123:q-1"}},
		},
		{
			name: "a parameter path", service: "ssm", op: "GetParametersByPath",
			in:   &ssm.GetParametersByPathInput{Path: aws.String("/p/")},
			want: []Call{{"ssm:GetParametersByPath", "ssm:GetParametersByPath", "arn:aws:ssm:r1:123:parameter/p/"}},
		},
		{
			name: "a call naming no resource needs *", service: "sqs", op: "ListQueues",
			in:   &sqs.ListQueuesInput{},
			want: []Call{{"sqs:ListQueues", "sqs:ListQueues", "*"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := r.calls(tt.service, tt.op, tt.in); !slices.Equal(got, tt.want) {
				t.Errorf("calls = %+v\nwant    %+v", got, tt.want)
			}
		})
	}
}
