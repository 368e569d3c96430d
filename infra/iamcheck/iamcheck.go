// Package iamcheck proves least privilege on the local stack, where the AWS
// emulator checks no IAM: it evaluates each AWS call the functions and the
// sidecar recorded (shared/awsconf, ENVJUPYTER_AWS_CALL_LOG) against the
// policy statements its principal has in template.yaml.
//
// The evaluator knows what the template uses: Allow and Deny statements with
// Action and Resource lists, * and ? wildcards, and the policy variable
// ${aws:PrincipalTag/<key>}. Anything else (NotAction, NotResource,
// Condition, managed policy names) is refused when the policy is loaded, so
// the check never passes by not understanding a statement.
package iamcheck

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/envjupyter/envjupyter/infra/devstack"
	"github.com/envjupyter/envjupyter/shared/awsconf"
)

// Statement is one policy statement, intrinsics resolved.
type Statement struct {
	Effect    string
	Actions   []string
	Resources []string
}

// Policy is the statements of one principal.
type Policy []Statement

// Principal is who makes calls: its policy and the tags its policy
// variables read.
type Principal struct {
	Name   string
	Policy Policy
	Tags   map[string]string
}

// Allowed reports whether the principal may do action on resource: an Allow
// statement matches and no Deny statement does.
func (p Principal) Allowed(action, resource string) bool {
	allowed := false
	for _, s := range p.Policy {
		if !s.matches(action, resource, p.Tags) {
			continue
		}
		if s.Effect == "Deny" {
			return false
		}
		allowed = true
	}
	return allowed
}

func (s Statement) matches(action, resource string, tags map[string]string) bool {
	actionOK := false
	for _, a := range s.Actions {
		// Actions compare without regard to case, as IAM does.
		if wildcard(strings.ToLower(a), strings.ToLower(action)) {
			actionOK = true
			break
		}
	}
	if !actionOK {
		return false
	}
	for _, r := range s.Resources {
		pattern, ok := substitute(r, tags)
		if ok && wildcard(pattern, resource) {
			return true
		}
	}
	return false
}

var policyVar = regexp.MustCompile(`\$\{([^}]*)\}`)

// substitute replaces the policy variables of a resource pattern; a
// variable without a value makes the pattern match nothing, as in IAM.
// Values are quoted so that a * in a tag is not a wildcard.
func substitute(pattern string, tags map[string]string) (string, bool) {
	ok := true
	out := policyVar.ReplaceAllStringFunc(pattern, func(m string) string {
		name := m[2 : len(m)-1]
		key, isTag := strings.CutPrefix(name, "aws:PrincipalTag/")
		v, has := tags[key]
		if !isTag || !has || strings.ContainsAny(v, "*?") {
			ok = false
		}
		return v
	})
	return out, ok
}

// wildcard matches s against a pattern where * is any run of characters
// and ? any one character.
func wildcard(pattern, s string) bool {
	for len(pattern) > 0 {
		switch pattern[0] {
		case '*':
			for i := len(s); i >= 0; i-- {
				if wildcard(pattern[1:], s[i:]) {
					return true
				}
			}
			return false
		case '?':
			if s == "" {
				return false
			}
		default:
			if s == "" || s[0] != pattern[0] {
				return false
			}
		}
		pattern, s = pattern[1:], s[1:]
	}
	return s == ""
}

// FromTemplate reads the policy of a principal of the template: a function's
// inline Policies, or an AWS::IAM::ManagedPolicy's document.
func FromTemplate(t *devstack.Template, r *devstack.Resolver, logicalID string) (Policy, error) {
	res, ok := t.Resources[logicalID]
	if !ok {
		return nil, fmt.Errorf("no resource %s in the template", logicalID)
	}
	var docs []any
	switch res.Type {
	case "AWS::Serverless::Function":
		v, err := r.Value(child(&res.Properties, "Policies"))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", logicalID, err)
		}
		docs, _ = v.([]any)
	case "AWS::IAM::ManagedPolicy":
		v, err := r.Value(child(&res.Properties, "PolicyDocument"))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", logicalID, err)
		}
		docs = []any{v}
	default:
		return nil, fmt.Errorf("%s is a %s, not a principal's policy", logicalID, res.Type)
	}
	var p Policy
	for _, d := range docs {
		doc, ok := d.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("%s: policy %v is not an inline statement list (policy templates and managed names are not evaluated)", logicalID, d)
		}
		stmts, _ := doc["Statement"].([]any)
		for _, s := range stmts {
			st, err := statement(s)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", logicalID, err)
			}
			p = append(p, st)
		}
	}
	return p, nil
}

// child returns the value at a key of a YAML mapping, or nil.
func child(n *yaml.Node, key string) *yaml.Node {
	for i := 0; n.Kind == yaml.MappingNode && i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

func statement(v any) (Statement, error) {
	m, ok := v.(map[string]any)
	if !ok {
		return Statement{}, fmt.Errorf("statement %v is not a mapping", v)
	}
	for k := range m {
		if k != "Effect" && k != "Action" && k != "Resource" && k != "Sid" {
			return Statement{}, fmt.Errorf("statement key %s is not evaluated by this check", k)
		}
	}
	s := Statement{Effect: fmt.Sprint(m["Effect"]), Actions: strings1(m["Action"]), Resources: strings1(m["Resource"])}
	if s.Effect != "Allow" && s.Effect != "Deny" {
		return Statement{}, fmt.Errorf("statement effect %q", s.Effect)
	}
	if len(s.Actions) == 0 || len(s.Resources) == 0 {
		return Statement{}, fmt.Errorf("statement %v lacks Action or Resource", m)
	}
	return s, nil
}

// strings1 reads a string or a list of strings.
func strings1(v any) []string {
	switch v := v.(type) {
	case string:
		return []string{v}
	case []any:
		var out []string
		for _, x := range v {
			out = append(out, fmt.Sprint(x))
		}
		return out
	}
	return nil
}

// ReadCalls reads a call log written by shared/awsconf.
func ReadCalls(path string) ([]awsconf.Call, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var calls []awsconf.Call
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var c awsconf.Call
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		calls = append(calls, c)
	}
	return calls, sc.Err()
}

// Denied returns the distinct calls the principal is not allowed to make.
func Denied(p Principal, calls []awsconf.Call) []awsconf.Call {
	seen := map[awsconf.Call]bool{}
	var out []awsconf.Call
	for _, c := range calls {
		if seen[c] {
			continue
		}
		seen[c] = true
		if !p.Allowed(c.Action, c.Resource) {
			out = append(out, c)
		}
	}
	return out
}

// ErrDenied is returned by Check when a recorded call is not allowed.
var ErrDenied = errors.New("calls not allowed by the template's policies")

// Check evaluates every call the stack's processes recorded against their
// principals' policies; it returns ErrDenied, naming each call not allowed,
// and how many calls it checked.
func Check(t *devstack.Template, r *devstack.Resolver, logs []devstack.CallLog) (int, error) {
	var denied []string
	checked := 0
	for _, l := range logs {
		calls, err := ReadCalls(l.Path)
		if errors.Is(err, os.ErrNotExist) {
			continue // the process made no AWS call
		}
		if err != nil {
			return checked, err
		}
		policy, err := FromTemplate(t, r, l.PolicyID)
		if err != nil {
			return checked, err
		}
		checked += len(calls)
		for _, c := range Denied(Principal{Name: l.PolicyID, Policy: policy, Tags: l.Tags}, calls) {
			denied = append(denied, fmt.Sprintf("%s (%s): %s on %s (in %s)", l.PolicyID, l.Path, c.Action, c.Resource, c.Operation))
		}
	}
	if len(denied) > 0 {
		return checked, fmt.Errorf("%w:\n  %s", ErrDenied, strings.Join(slices.Compact(denied), "\n  "))
	}
	return checked, nil
}
