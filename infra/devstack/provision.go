package devstack

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/apigatewayv2"
	apitypes "github.com/aws/aws-sdk-go-v2/service/apigatewayv2/types"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/eventbridge"
	ebtypes "github.com/aws/aws-sdk-go-v2/service/eventbridge/types"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	lambdatypes "github.com/aws/aws-sdk-go-v2/service/lambda/types"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"
	"gopkg.in/yaml.v3"
)

// Function is a Lambda function of the template, as the local stack runs it.
type Function struct {
	LogicalID string
	Name      string
	CodeURI   string            // the package directory, e.g. functions/api/
	Env       map[string]string // resolved environment variables
	SQSEvents []SQSEvent
	// Schedules are the function's schedule expressions, e.g. rate(1 minute).
	Schedules []string
	Timeout   int
}

// SQSEvent is an SQS event source of a function.
type SQSEvent struct {
	QueueURL    string
	QueueARN    string
	BatchSize   int32
	ReportFails bool
}

// Provisioned is what provisioning made.
type Provisioned struct {
	Resolver  *Resolver
	Functions []Function
	APIID     string
}

const (
	region    = "us-east-1"
	accountID = "000000000000"
)

// Provision creates the template's tables, queues, parameters, functions and
// HTTP API in the emulator, and returns how to run the functions.
func Provision(ctx context.Context, aw AWS, t *Template, stackName string, params map[string]string) (*Provisioned, error) {
	r := &Resolver{
		Params: map[string]string{},
		Refs:   map[string]string{},
		Attrs:  map[string]map[string]string{},
		Pseudo: map[string]string{
			"AWS::Region": region, "AWS::AccountId": accountID, "AWS::Partition": "aws",
			"AWS::StackName": stackName, "AWS::URLSuffix": "amazonaws.com",
		},
	}
	for name, p := range t.Parameters {
		if p.Default != nil {
			r.Params[name] = fmt.Sprint(p.Default)
		}
	}
	for k, v := range params {
		if _, ok := t.Parameters[k]; !ok {
			return nil, fmt.Errorf("parameter %s is not in the template", k)
		}
		r.Params[k] = v
	}
	physical := func(id string) string { return stackName + "-" + id }
	arn := func(service, resource string) string {
		return fmt.Sprintf("arn:aws:%s:%s:%s:%s", service, region, accountID, resource)
	}

	for _, id := range t.OfType("AWS::DynamoDB::Table") {
		name := physical(id)
		if err := createTable(ctx, aw.DynamoDB, r, name, t.Resources[id].Properties); err != nil {
			return nil, fmt.Errorf("table %s: %w", id, err)
		}
		r.Refs[id] = name
		r.Attrs[id] = map[string]string{"Arn": arn("dynamodb", "table/"+name)}
	}

	// Queues without a redrive policy first: others point at them.
	queues := t.OfType("AWS::SQS::Queue")
	sort.SliceStable(queues, func(i, j int) bool {
		return get(&t.Resources[queues[i]].Properties, "RedrivePolicy") == nil && get(&t.Resources[queues[j]].Properties, "RedrivePolicy") != nil
	})
	for _, id := range queues {
		name := physical(id)
		attrs := map[string]string{}
		props := &t.Resources[id].Properties
		for _, k := range keys(props) {
			v, err := r.Value(get(props, k))
			if err != nil {
				return nil, fmt.Errorf("queue %s: %w", id, err)
			}
			if m, ok := v.(map[string]any); ok {
				b, _ := json.Marshal(m)
				attrs[k] = string(b)
			} else {
				attrs[k] = fmt.Sprint(v)
			}
		}
		out, err := aw.SQS.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: &name, Attributes: attrs})
		if err != nil {
			return nil, fmt.Errorf("queue %s: %w", id, err)
		}
		r.Refs[id] = aws.ToString(out.QueueUrl)
		r.Attrs[id] = map[string]string{"Arn": arn("sqs", name), "QueueName": name, "QueueUrl": aws.ToString(out.QueueUrl)}
	}

	p := &Provisioned{Resolver: r}
	for _, id := range t.OfType("AWS::Serverless::HttpApi") {
		api, err := aw.APIGateway.CreateApi(ctx, &apigatewayv2.CreateApiInput{Name: aws.String(physical(id)), ProtocolType: apitypes.ProtocolTypeHttp})
		if err != nil {
			return nil, fmt.Errorf("http api %s: %w", id, err)
		}
		r.Refs[id] = aws.ToString(api.ApiId)
		p.APIID = aws.ToString(api.ApiId)
		if _, err := aw.APIGateway.CreateStage(ctx, &apigatewayv2.CreateStageInput{ApiId: api.ApiId, StageName: aws.String("$default"), AutoDeploy: aws.Bool(true)}); err != nil {
			return nil, fmt.Errorf("http api %s stage: %w", id, err)
		}
	}

	globals := t.Globals.Function
	for _, id := range t.OfType("AWS::Serverless::Function") {
		props := &t.Resources[id].Properties
		fn := Function{LogicalID: id, Name: physical(id), Env: map[string]string{}, Timeout: 3}
		var err error
		if fn.CodeURI, err = r.String(get(props, "CodeUri")); err != nil {
			return nil, err
		}
		timeout := get(props, "Timeout")
		if timeout == nil {
			if g, ok := globals["Timeout"]; ok {
				timeout = &g
			}
		}
		if timeout != nil {
			_ = timeout.Decode(&fn.Timeout)
		}
		var envNodes []*yaml.Node
		if g, ok := globals["Environment"]; ok {
			envNodes = append(envNodes, get(&g, "Variables"))
		}
		envNodes = append(envNodes, get(get(props, "Environment"), "Variables"))
		for _, vars := range envNodes {
			for _, k := range keys(vars) {
				if fn.Env[k], err = r.String(get(vars, k)); err != nil {
					return nil, fmt.Errorf("function %s variable %s: %w", id, k, err)
				}
			}
		}
		_, err = aw.Lambda.CreateFunction(ctx, &lambda.CreateFunctionInput{
			FunctionName: &fn.Name, Role: aws.String(arn("iam", "role/"+fn.Name)),
			Runtime: lambdatypes.RuntimeProvidedal2023, Handler: aws.String("bootstrap"),
			Timeout: aws.Int32(int32(fn.Timeout)),
			Code:    &lambdatypes.FunctionCode{ZipFile: []byte("local")},
		})
		if err != nil {
			return nil, fmt.Errorf("function %s: %w", id, err)
		}
		r.Refs[id] = fn.Name
		r.Attrs[id] = map[string]string{"Arn": arn("lambda", "function:"+fn.Name)}
		p.Functions = append(p.Functions, fn)
	}

	for _, id := range t.OfType("AWS::SSM::Parameter") {
		props := &t.Resources[id].Properties
		name, err := r.String(get(props, "Name"))
		if err != nil {
			return nil, fmt.Errorf("parameter %s: %w", id, err)
		}
		value, err := r.String(get(props, "Value"))
		if err != nil {
			return nil, fmt.Errorf("parameter %s: %w", id, err)
		}
		typ, _ := r.String(get(props, "Type"))
		if _, err := aw.SSM.PutParameter(ctx, &ssm.PutParameterInput{
			Name: &name, Value: &value, Type: ssmtypes.ParameterType(typ), Overwrite: aws.Bool(true),
		}); err != nil {
			return nil, fmt.Errorf("parameter %s: %w", id, err)
		}
		r.Refs[id] = name
	}

	// Event sources: HTTP API routes and SQS queues.
	for i := range p.Functions {
		fn := &p.Functions[i]
		events := get(&t.Resources[fn.LogicalID].Properties, "Events")
		for _, ev := range keys(events) {
			node := get(events, ev)
			typ, _ := r.String(get(node, "Type"))
			props := get(node, "Properties")
			switch typ {
			case "HttpApi":
				if err := addRoute(ctx, aw.APIGateway, t, r, r.Attrs[fn.LogicalID]["Arn"], props); err != nil {
					return nil, fmt.Errorf("function %s event %s: %w", fn.LogicalID, ev, err)
				}
			case "SQS":
				queueARN, err := r.String(get(props, "Queue"))
				if err != nil {
					return nil, fmt.Errorf("function %s event %s: %w", fn.LogicalID, ev, err)
				}
				se := SQSEvent{QueueARN: queueARN, BatchSize: 10}
				for qid, attrs := range r.Attrs {
					if attrs["Arn"] == queueARN {
						se.QueueURL = r.Refs[qid]
					}
				}
				if b := get(props, "BatchSize"); b != nil {
					_ = b.Decode(&se.BatchSize)
				}
				types, _ := r.Value(get(props, "FunctionResponseTypes"))
				se.ReportFails = strings.Contains(fmt.Sprint(types), "ReportBatchItemFailures")
				fn.SQSEvents = append(fn.SQSEvents, se)
			case "EventBridgeRule":
				if err := addRule(ctx, aw, r, physical(fn.LogicalID+"-"+ev), r.Attrs[fn.LogicalID]["Arn"], props); err != nil {
					return nil, fmt.Errorf("function %s event %s: %w", fn.LogicalID, ev, err)
				}
			case "Schedule":
				expr, err := r.String(get(props, "Schedule"))
				if err != nil {
					return nil, fmt.Errorf("function %s event %s: %w", fn.LogicalID, ev, err)
				}
				fn.Schedules = append(fn.Schedules, expr)
			default:
				return nil, fmt.Errorf("function %s event %s: type %s is not run locally", fn.LogicalID, ev, typ)
			}
		}
	}
	return p, nil
}

// addRule routes matching events of the default bus to the function, as
// the rule SAM makes for an EventBridgeRule event; kumo delivers them.
func addRule(ctx context.Context, aw AWS, r *Resolver, name, fnARN string, props *yaml.Node) error {
	pattern, err := r.Value(get(props, "Pattern"))
	if err != nil {
		return err
	}
	b, err := json.Marshal(pattern)
	if err != nil {
		return err
	}
	if _, err := aw.Events.PutRule(ctx, &eventbridge.PutRuleInput{Name: &name, EventPattern: aws.String(string(b))}); err != nil {
		return fmt.Errorf("rule %s: %w", name, err)
	}
	_, err = aw.Events.PutTargets(ctx, &eventbridge.PutTargetsInput{Rule: &name, Targets: []ebtypes.Target{{Id: aws.String("function"), Arn: &fnARN}}})
	if err != nil {
		return fmt.Errorf("rule %s target: %w", name, err)
	}
	return nil
}

// ScheduleInterval turns a rate() expression into its period.
func ScheduleInterval(expr string) (time.Duration, error) {
	var n int
	var unit string
	if _, err := fmt.Sscanf(strings.TrimSuffix(strings.TrimPrefix(expr, "rate("), ")"), "%d %s", &n, &unit); err != nil || n <= 0 {
		return 0, fmt.Errorf("schedule %q: only rate(N unit) runs locally", expr)
	}
	switch strings.TrimSuffix(unit, "s") {
	case "minute":
		return time.Duration(n) * time.Minute, nil
	case "hour":
		return time.Duration(n) * time.Hour, nil
	case "day":
		return time.Duration(n) * 24 * time.Hour, nil
	}
	return 0, fmt.Errorf("schedule %q: unknown unit %q", expr, unit)
}

func createTable(ctx context.Context, db *dynamodb.Client, r *Resolver, name string, props yaml.Node) error {
	v, err := r.Value(&props)
	if err != nil {
		return err
	}
	m, _ := v.(map[string]any)
	ttl, _ := m["TimeToLiveSpecification"].(map[string]any)
	delete(m, "TimeToLiveSpecification")
	// The template's property names are the API's, so the JSON form decodes
	// straight into the SDK's input.
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	var in dynamodb.CreateTableInput
	if err := json.Unmarshal(b, &in); err != nil {
		return fmt.Errorf("decoding table properties: %w", err)
	}
	in.TableName = &name
	if _, err := db.CreateTable(ctx, &in); err != nil {
		return err
	}
	if ttl != nil && ttl["Enabled"] == true {
		attr := fmt.Sprint(ttl["AttributeName"])
		_, err := db.UpdateTimeToLive(ctx, &dynamodb.UpdateTimeToLiveInput{
			TableName:               &name,
			TimeToLiveSpecification: &ddbtypes.TimeToLiveSpecification{AttributeName: &attr, Enabled: aws.Bool(true)},
		})
		if err != nil {
			return fmt.Errorf("enabling TTL: %w", err)
		}
	}
	return nil
}

// authorizers caches the JWT authorizer made per API.
var authorizers = map[string]string{}

func addRoute(ctx context.Context, gw *apigatewayv2.Client, t *Template, r *Resolver, fnARN string, props *yaml.Node) error {
	apiID, err := r.String(get(props, "ApiId"))
	if err != nil {
		return err
	}
	method, _ := r.String(get(props, "Method"))
	path, _ := r.String(get(props, "Path"))
	integ, err := gw.CreateIntegration(ctx, &apigatewayv2.CreateIntegrationInput{
		ApiId: &apiID, IntegrationType: apitypes.IntegrationTypeAwsProxy,
		IntegrationUri: aws.String(fnARN), PayloadFormatVersion: aws.String("2.0"),
	})
	if err != nil {
		return fmt.Errorf("integration: %w", err)
	}
	in := &apigatewayv2.CreateRouteInput{
		ApiId: &apiID, RouteKey: aws.String(strings.ToUpper(method) + " " + path),
		Target: aws.String("integrations/" + aws.ToString(integ.IntegrationId)),
	}
	if authID, err := jwtAuthorizer(ctx, gw, t, r, apiID); err != nil {
		return err
	} else if authID != "" {
		in.AuthorizationType, in.AuthorizerId = apitypes.AuthorizationTypeJwt, &authID
	}
	if _, err := gw.CreateRoute(ctx, in); err != nil {
		return fmt.Errorf("route %s: %w", aws.ToString(in.RouteKey), err)
	}
	return nil
}

// jwtAuthorizer creates the API's default JWT authorizer once.
func jwtAuthorizer(ctx context.Context, gw *apigatewayv2.Client, t *Template, r *Resolver, apiID string) (string, error) {
	if id, ok := authorizers[apiID]; ok {
		return id, nil
	}
	var apiLogical string
	for id, ref := range r.Refs {
		if ref == apiID {
			apiLogical = id
		}
	}
	auth := get(&t.Resources[apiLogical].Properties, "Auth")
	def, _ := r.String(get(auth, "DefaultAuthorizer"))
	a := get(get(auth, "Authorizers"), def)
	if a == nil {
		authorizers[apiID] = ""
		return "", nil
	}
	jwt := get(a, "JwtConfiguration")
	issuer, err := r.String(get(jwt, "issuer"))
	if err != nil {
		return "", err
	}
	audience, err := r.Value(get(jwt, "audience"))
	if err != nil {
		return "", err
	}
	var aud []string
	for _, x := range audience.([]any) {
		aud = append(aud, fmt.Sprint(x))
	}
	source, _ := r.String(get(a, "IdentitySource"))
	out, err := gw.CreateAuthorizer(ctx, &apigatewayv2.CreateAuthorizerInput{
		ApiId: &apiID, Name: aws.String(def), AuthorizerType: apitypes.AuthorizerTypeJwt,
		IdentitySource:   []string{source},
		JwtConfiguration: &apitypes.JWTConfiguration{Issuer: &issuer, Audience: aud},
	})
	if err != nil {
		return "", fmt.Errorf("authorizer %s: %w", def, err)
	}
	authorizers[apiID] = aws.ToString(out.AuthorizerId)
	return authorizers[apiID], nil
}

// CreateTableLike creates a table named name with the definition (keys,
// indexes, TTL) of the template's table resource id: a benchmark fills its
// own copy without touching the tables the stack's functions use.
func (s *Stack) CreateTableLike(ctx context.Context, id, name string) error {
	res, ok := s.Template.Resources[id]
	if !ok {
		return fmt.Errorf("no resource %s in the template", id)
	}
	return createTable(ctx, s.AWS.DynamoDB, s.Resolver, name, res.Properties)
}
