package awsconf

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path"
	"reflect"
	"strings"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/smithy-go/middleware"
)

// CallLogEnv names a file to which every AWS call is appended as JSON lines
// (one per IAM action and resource it needs). Only the local stack and its
// tests set it: they check each recorded call against the caller's policy in
// template.yaml (infra/iamcheck), since the emulator checks no IAM.
const CallLogEnv = "ENVJUPYTER_AWS_CALL_LOG"

// Call is one IAM authorization a request needs: a request may need several
// (a DynamoDB transaction needs one per item).
type Call struct {
	Operation string `json:"operation"` // the API call, e.g. dynamodb:TransactWriteItems
	Action    string `json:"action"`    // the IAM action checked, e.g. dynamodb:UpdateItem
	Resource  string `json:"resource"`  // the resource ARN, or * when the call names none
}

// recordCalls adds the recording middleware when CallLogEnv is set.
func recordCalls(cfg *aws.Config) error {
	name := os.Getenv(CallLogEnv)
	if name == "" {
		return nil
	}
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("opening the AWS call log: %w", err)
	}
	rec := &recorder{
		file:    f,
		region:  cfg.Region,
		account: os.Getenv("AWS_ACCOUNT_ID"),
	}
	cfg.APIOptions = append(cfg.APIOptions, func(s *middleware.Stack) error {
		return s.Initialize.Add(middleware.InitializeMiddlewareFunc("envjupyterRecordCall", rec.handle), middleware.After)
	})
	return nil
}

type recorder struct {
	mu      sync.Mutex
	file    *os.File
	region  string
	account string
}

func (r *recorder) handle(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (out middleware.InitializeOutput, md middleware.Metadata, err error) {
	service := strings.ToLower(awsmiddleware.GetServiceID(ctx))
	calls := r.calls(service, awsmiddleware.GetOperationName(ctx), in.Parameters)
	var b []byte
	for _, c := range calls {
		line, _ := json.Marshal(c)
		b = append(append(b, line...), '\n')
	}
	r.mu.Lock()
	_, werr := r.file.Write(b)
	r.mu.Unlock()
	if werr != nil {
		return out, md, fmt.Errorf("recording the AWS call: %w", werr)
	}
	return next.HandleInitialize(ctx, in)
}

// calls returns the authorizations a request needs, as IAM evaluates them.
func (r *recorder) calls(service, op string, params any) []Call {
	operation := service + ":" + op
	one := func(action, resource string) Call {
		return Call{Operation: operation, Action: service + ":" + action, Resource: resource}
	}
	if items := transactItems(params); items != nil {
		// A transaction is authorized item by item, by the item's action.
		var out []Call
		for _, it := range items {
			out = append(out, one(it.action, r.table(it.table)))
		}
		return out
	}
	// Batch calls of SQS are authorized as their single form.
	action := op
	if service == "sqs" {
		action = strings.TrimSuffix(op, "Batch")
	}
	var out []Call
	for _, res := range r.resources(service, params) {
		out = append(out, one(action, res))
	}
	if len(out) == 0 {
		out = append(out, one(action, "*"))
	}
	return out
}

// transactItemActions are the IAM actions of a DynamoDB transaction's items.
var transactItemActions = map[string]string{
	"Put": "PutItem", "Update": "UpdateItem", "Delete": "DeleteItem", "ConditionCheck": "ConditionCheckItem", "Get": "GetItem",
}

type transactItem struct{ action, table string }

// transactItems reads the items of a DynamoDB transaction (TransactWriteItems,
// TransactGetItems) by the SDK's field names, so that this package links no
// DynamoDB client (the sidecar must not); nil for any other call.
func transactItems(params any) []transactItem {
	v := reflect.Indirect(reflect.ValueOf(params))
	if v.Kind() != reflect.Struct {
		return nil
	}
	list := v.FieldByName("TransactItems")
	if !list.IsValid() || list.Kind() != reflect.Slice {
		return nil
	}
	out := []transactItem{}
	for i := range list.Len() {
		item := reflect.Indirect(list.Index(i))
		for field, action := range transactItemActions {
			op := item.FieldByName(field)
			if !op.IsValid() || op.Kind() != reflect.Pointer || op.IsNil() {
				continue
			}
			if name := op.Elem().FieldByName("TableName"); name.IsValid() && name.Kind() == reflect.Pointer && !name.IsNil() {
				out = append(out, transactItem{action: action, table: name.Elem().String()})
			}
		}
	}
	return out
}

// resources reads the resource names of a request's input by the field
// names the SDK uses for them.
func (r *recorder) resources(service string, params any) []string {
	v := reflect.Indirect(reflect.ValueOf(params))
	if v.Kind() != reflect.Struct {
		return nil
	}
	str := func(field string) string {
		f := v.FieldByName(field)
		if f.IsValid() && f.Kind() == reflect.Pointer && !f.IsNil() && f.Elem().Kind() == reflect.String {
			return f.Elem().String()
		}
		return ""
	}
	switch service {
	case "dynamodb":
		table := str("TableName")
		if table == "" {
			return nil
		}
		if index := str("IndexName"); index != "" {
			return []string{r.table(table) + "/index/" + index}
		}
		return []string{r.table(table)}
	case "sqs":
		name := str("QueueName")
		if u := str("QueueUrl"); u != "" {
			if parsed, err := url.Parse(u); err == nil {
				name = path.Base(parsed.Path)
			}
		}
		if name == "" {
			return nil
		}
		return []string{r.arn("sqs", name)}
	case "ssm":
		var names []string
		for _, field := range []string{"Name", "Path"} {
			if n := str(field); n != "" {
				names = append(names, n)
			}
		}
		if f := v.FieldByName("Names"); f.IsValid() {
			if list, ok := f.Interface().([]string); ok {
				names = append(names, list...)
			}
		}
		var out []string
		for _, n := range names {
			out = append(out, r.arn("ssm", "parameter/"+strings.TrimPrefix(n, "/")))
		}
		return out
	}
	return nil
}

func (r *recorder) table(name string) string { return r.arn("dynamodb", "table/"+name) }

func (r *recorder) arn(service, resource string) string {
	return "arn:aws:" + service + ":" + r.region + ":" + r.account + ":" + resource
}
