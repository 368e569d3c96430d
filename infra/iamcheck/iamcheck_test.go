package iamcheck

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/envjupyter/envjupyter/infra/devstack"
	"github.com/envjupyter/envjupyter/shared/awsconf"
)

const arnPrefix = "arn:aws:dynamodb:us-east-1:000000000000:table/"

func TestWildcard(t *testing.T) {
	tests := []struct {
		pattern, s string
		want       bool
	}{
		{"dynamodb:GetItem", "dynamodb:GetItem", true},
		{"dynamodb:Get*", "dynamodb:GetItem", true},
		{"dynamodb:*Item", "dynamodb:Query", false},
		{"sqs:*", "sqs:SendMessage", true},
		{"arn:aws:sqs:*:*:q-?", "arn:aws:sqs:r:1:q-a", true},
		{"arn:aws:sqs:*:*:q-?", "arn:aws:sqs:r:1:q-ab", false},
		{"a*b*c", "aXXbYYc", true},
		{"a*b*c", "aXXbYY", false},
		{"", "", true},
		{"*", "", true},
	}
	for _, tt := range tests {
		if got := wildcard(tt.pattern, tt.s); got != tt.want {
			t.Errorf("wildcard(%q, %q) = %v, want %v", tt.pattern, tt.s, got, tt.want)
		}
	}
}

func TestAllowed(t *testing.T) {
	queue := "arn:aws:sqs:us-east-1:000000000000:envjupyter-commands-"
	host := Principal{
		Name: "host",
		Policy: Policy{
			{Effect: "Allow", Actions: []string{"sqs:ReceiveMessage"}, Resources: []string{queue + "${aws:PrincipalTag/envjupyter-host-id}"}},
			{Effect: "Allow", Actions: []string{"dynamodb:*"}, Resources: []string{arnPrefix + "t", arnPrefix + "t/index/*"}},
			{Effect: "Deny", Actions: []string{"dynamodb:DeleteItem"}, Resources: []string{"*"}},
		},
		Tags: map[string]string{"envjupyter-host-id": "h1"},
	}
	untagged := host
	untagged.Tags = nil
	wildTag := host
	wildTag.Tags = map[string]string{"envjupyter-host-id": "*"}
	tests := []struct {
		name             string
		p                Principal
		action, resource string
		want             bool
	}{
		{"own queue", host, "sqs:ReceiveMessage", queue + "h1", true},
		{"actions ignore case", host, "SQS:receivemessage", queue + "h1", true},
		{"another host's queue", host, "sqs:ReceiveMessage", queue + "h2", false},
		{"action not granted", host, "sqs:SendMessage", queue + "h1", false},
		{"no tag matches nothing", untagged, "sqs:ReceiveMessage", queue, false},
		{"a tag is no wildcard", wildTag, "sqs:ReceiveMessage", queue + "h2", false},
		{"table", host, "dynamodb:Query", arnPrefix + "t", true},
		{"index", host, "dynamodb:Query", arnPrefix + "t/index/by_x", true},
		{"other table", host, "dynamodb:Query", arnPrefix + "t2", false},
		{"explicit deny wins", host, "dynamodb:DeleteItem", arnPrefix + "t", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.p.Allowed(tt.action, tt.resource); got != tt.want {
				t.Errorf("Allowed(%s, %s) = %v, want %v", tt.action, tt.resource, got, tt.want)
			}
		})
	}
}

// templateResolver resolves template.yaml with the names the local stack
// gives its resources.
func templateResolver(t *testing.T) (*devstack.Template, *devstack.Resolver) {
	t.Helper()
	tpl, err := devstack.LoadTemplate(filepath.Join("..", "..", "template.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	r := &devstack.Resolver{
		Params: map[string]string{}, Refs: map[string]string{}, Attrs: map[string]map[string]string{},
		Pseudo: map[string]string{"AWS::Region": "us-east-1", "AWS::AccountId": "000000000000", "AWS::Partition": "aws"},
	}
	for name, p := range tpl.Parameters {
		r.Params[name] = yamlScalar(p.Default)
	}
	for _, id := range tpl.OfType("AWS::DynamoDB::Table") {
		r.Refs[id] = "ejtest-" + id
		r.Attrs[id] = map[string]string{"Arn": arnPrefix + "ejtest-" + id}
	}
	for _, id := range tpl.OfType("AWS::SQS::Queue") {
		r.Refs[id] = "http://127.0.0.1/000000000000/ejtest-" + id
		r.Attrs[id] = map[string]string{"Arn": "arn:aws:sqs:us-east-1:000000000000:ejtest-" + id}
	}
	return tpl, r
}

func yamlScalar(v any) string {
	if v == nil {
		return ""
	}
	b, _ := yaml.Marshal(v)
	return string(b[:len(b)-1])
}

// Calls every function makes when it starts or ends an instance.
var leaseCalls = []awsconf.Call{
	{Operation: "dynamodb:TransactWriteItems", Action: "dynamodb:UpdateItem", Resource: arnPrefix + "ejtest-LeasesTable"},
	{Operation: "dynamodb:TransactWriteItems", Action: "dynamodb:DeleteItem", Resource: arnPrefix + "ejtest-LeasesTable"},
	{Operation: "dynamodb:TransactWriteItems", Action: "dynamodb:PutItem", Resource: arnPrefix + "ejtest-InstancesTable"},
}

func TestTemplatePolicies(t *testing.T) {
	tpl, r := templateResolver(t)
	for _, fn := range []string{"ApiFunction", "ReportsFunction", "EnvEventsFunction", "ReaperFunction"} {
		p, err := FromTemplate(tpl, r, fn)
		if err != nil {
			t.Fatal(err)
		}
		if denied := Denied(Principal{Name: fn, Policy: p}, leaseCalls); len(denied) > 0 {
			t.Errorf("%s may not %+v", fn, denied)
		}
	}
	param := "arn:aws:ssm:us-east-1:000000000000:parameter/envjupyter/"
	for _, tt := range []struct {
		fn   string
		want bool
	}{{"ReportsFunction", true}, {"ApiFunction", false}, {"ReaperFunction", false}, {"EnvEventsFunction", false}} {
		p, err := FromTemplate(tpl, r, tt.fn)
		if err != nil {
			t.Fatal(err)
		}
		if got := (Principal{Policy: p}).Allowed("ssm:GetParameter", param+"hosts/h1/report_key"); got != tt.want {
			t.Errorf("%s may read a host's report key: %v, want %v", tt.fn, got, tt.want)
		}
	}
	sidecar, err := FromTemplate(tpl, r, "SidecarPolicy")
	if err != nil {
		t.Fatal(err)
	}
	host := Principal{Name: "SidecarPolicy", Policy: sidecar, Tags: map[string]string{devstack.HostIDTag: "h1"}}
	queue := "arn:aws:sqs:us-east-1:000000000000:envjupyter-commands-"
	tests := []struct {
		action, resource string
		want             bool
	}{
		{"sqs:ReceiveMessage", queue + "h1", true},
		{"sqs:ReceiveMessage", queue + "h2", false},
		{"sqs:CreateQueue", queue + "h2", false},
		{"ssm:PutParameter", param + "hosts/h1/command_queue_url", true},
		{"ssm:PutParameter", param + "hosts/h2/command_queue_url", false},
		{"ssm:PutParameter", param + "public_base_url", false},
		{"ssm:GetParametersByPath", param, true},
		{"ssm:GetParameter", param + "hosts/h2/command_queue_url", false},
		{"ssm:GetParameter", param + "hosts/h1/report_key", true},
		{"ssm:GetParameter", param + "hosts/h2/report_key", false},
		{"ssm:PutParameter", param + "hosts/h2/report_key", false},
		{"sqs:SendMessage", "arn:aws:sqs:us-east-1:000000000000:ejtest-ReportsQueue", true},
		{"sqs:SendMessage", queue + "h1", false},
		{"dynamodb:GetItem", arnPrefix + "ejtest-InstancesTable", false},
	}
	for _, tt := range tests {
		if got := host.Allowed(tt.action, tt.resource); got != tt.want {
			t.Errorf("host h1: Allowed(%s, %s) = %v, want %v", tt.action, tt.resource, got, tt.want)
		}
	}
}

// Removing an action from a policy makes the check fail on a call that
// needs it: the check is not vacuous.
func TestCheckFailsWhenAnActionIsRemoved(t *testing.T) {
	tpl, r := templateResolver(t)
	dir := t.TempDir()
	log := filepath.Join(dir, "api.jsonl")
	if err := os.WriteFile(log, []byte(`{"operation":"dynamodb:TransactWriteItems","action":"dynamodb:UpdateItem","resource":"`+arnPrefix+`ejtest-LeasesTable"}`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	logs := []devstack.CallLog{{Path: log, PolicyID: "ApiFunction"}}
	if n, err := Check(tpl, r, logs); err != nil || n != 1 {
		t.Fatalf("with the template as it is: %d calls checked, %v", n, err)
	}
	removed := removeAction(t, &tpl.Resources["ApiFunction"].Properties, "dynamodb:UpdateItem")
	if removed == 0 {
		t.Fatal("ApiFunction's policy has no dynamodb:UpdateItem to remove")
	}
	if _, err := Check(tpl, r, logs); !errors.Is(err, ErrDenied) {
		t.Fatalf("without dynamodb:UpdateItem: %v, want ErrDenied", err)
	}
}

// removeAction deletes an action from every Action list under n.
func removeAction(t *testing.T, n *yaml.Node, action string) int {
	t.Helper()
	removed := 0
	if n.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(n.Content); i += 2 {
			if v := n.Content[i+1]; n.Content[i].Value == "Action" && v.Kind == yaml.SequenceNode {
				before := len(v.Content)
				v.Content = slices.DeleteFunc(v.Content, func(c *yaml.Node) bool { return c.Value == action })
				removed += before - len(v.Content)
			}
		}
	}
	for _, c := range n.Content {
		removed += removeAction(t, c, action)
	}
	return removed
}
