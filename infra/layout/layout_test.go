// Package layout holds the test of the repository's dependency rules: who
// may import whom (docs/ARCHITECTURE.md).
package layout

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/envjupyter/envjupyter/"

// deps lists the packages pattern depends on, itself included.
func deps(t *testing.T, pattern string) []string {
	t.Helper()
	cmd := exec.Command("go", "list", "-deps", pattern)
	cmd.Dir = "../.."
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -deps %s: %v", pattern, err)
	}
	return strings.Fields(string(out))
}

func TestDependencyRules(t *testing.T) {
	tests := []struct {
		side      string
		forbidden []string // import path prefixes
	}{
		// The sidecar speaks to the control plane only through the queues
		// and the wire in shared/: it links nothing of the control plane,
		// no Lambda runtime and no DynamoDB client.
		{"./sidecar/...", []string{module + "functions/", "github.com/aws/aws-lambda-go", "github.com/aws/aws-sdk-go-v2/service/dynamodb", "github.com/aws/aws-sdk-go-v2/feature/dynamodb"}},
		// The control plane links nothing of the sidecar.
		{"./functions/...", []string{module + "sidecar/"}},
		// The wire belongs to neither side.
		{"./shared/...", []string{module + "functions/", module + "sidecar/", "github.com/aws/aws-lambda-go", "github.com/aws/aws-sdk-go-v2/service/dynamodb"}},
	}
	for _, tt := range tests {
		t.Run(tt.side, func(t *testing.T) {
			list := deps(t, tt.side)
			if len(list) == 0 {
				t.Fatal("no packages listed")
			}
			for _, p := range list {
				for _, f := range tt.forbidden {
					if strings.HasPrefix(p, f) {
						t.Errorf("%s depends on %s", tt.side, p)
					}
				}
			}
		})
	}
}
