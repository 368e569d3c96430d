package e2e

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/envjupyter/envjupyter/infra/devstack"
)

// Every sample event in events/ runs through its function in the stack, the
// way `make invoke` (and `sam local invoke -e`) runs it, and gives the
// response events/README.md promises.
func TestSampleEvents(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if _, err := stack.CreateEnvironment(ctx, devstack.DemoEnvironment, devstack.DemoCustomer); err != nil {
		t.Fatal(err)
	}
	type apiResponse struct {
		StatusCode int    `json:"statusCode"`
		Body       string `json:"body"`
	}
	tests := []struct {
		fn, file string
		status   int    // API events: the HTTP status
		want     string // API events: status or error code in the body
	}{
		{"ApiFunction", "api/status.json", 200, "not_started"},
		{"ApiFunction", "api/start.json", 202, "starting"},
		{"ApiFunction", "api/start.json", 200, "starting|running"},
		{"ApiFunction", "api/status.json", 200, "starting|running"},
		{"ApiFunction", "api/stop.json", 202, "stopping"},
		{"ApiFunction", "api/start-with-plugins.json", 400, "plugin_not_allowed"},
		{"ApiFunction", "api/start-bad-body.json", 400, "invalid_body"},
		{"ApiFunction", "api/start-no-identity.json", 401, "unauthorized"},
		{"ApiFunction", "api/start-bad-environment-id.json", 400, "invalid_environment_id"},
		{"ReportsFunction", "reports/running.json", 0, ""},
		{"ReportsFunction", "reports/malformed.json", 0, ""},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			event, err := os.ReadFile(filepath.Join(stack.Opts.Root, "events", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			out, err := stack.Invoke(ctx, tc.fn, event)
			if err != nil {
				t.Fatal(err)
			}
			if tc.fn == "ReportsFunction" {
				var resp struct {
					Failures []any `json:"batchItemFailures"`
				}
				if err := json.Unmarshal(out, &resp); err != nil || len(resp.Failures) != 0 {
					t.Fatalf("response %s, want no batch item failures", out)
				}
				return
			}
			var resp apiResponse
			if err := json.Unmarshal(out, &resp); err != nil {
				t.Fatalf("response %s: %v", out, err)
			}
			var body struct {
				Status string `json:"status"`
				Error  struct {
					Code string `json:"code"`
				} `json:"error"`
			}
			_ = json.Unmarshal([]byte(resp.Body), &body)
			got := body.Status
			if body.Error.Code != "" {
				got = body.Error.Code
			}
			if resp.StatusCode != tc.status || !matches(got, tc.want) {
				t.Fatalf("%d %s, want %d %s", resp.StatusCode, resp.Body, tc.status, tc.want)
			}
		})
	}
	waitStatus(t, token(devstack.DemoCustomer), devstack.DemoEnvironment, "stopped", 30*time.Second)
}

// matches reports whether got is one of the |-separated alternatives.
func matches(got, alternatives string) bool {
	return slices.Contains(strings.Split(alternatives, "|"), got)
}
