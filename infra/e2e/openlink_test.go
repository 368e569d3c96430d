package e2e

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"

	"github.com/envjupyter/envjupyter/infra/devstack"
)

// configRefresh is how often the stack's functions re-read SSM
// (ConfigRefreshSeconds in TestMain).
const configRefresh = 2 * time.Second

// setParameter changes a product setting in SSM, as an operator would, and
// waits until every function copy has re-read its configuration: a copy
// reads again on its first call once its copy is older than configRefresh.
// The old value comes back when the test ends.
func setParameter(t *testing.T, name, value string) {
	t.Helper()
	ctx := context.Background()
	full := "/envjupyter/" + name
	old, err := stack.AWS.SSM.GetParameter(ctx, &ssm.GetParameterInput{Name: aws.String(full)})
	if err != nil {
		t.Fatal(err)
	}
	put := func(v string) {
		if _, err := stack.AWS.SSM.PutParameter(ctx, &ssm.PutParameterInput{
			Name: aws.String(full), Value: aws.String(v), Type: ssmtypes.ParameterTypeString, Overwrite: aws.Bool(true),
		}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(configRefresh + time.Second)
	}
	put(value)
	t.Cleanup(func() { put(aws.ToString(old.Parameter.Value)) })
}

// In link mode, the console's Open fetches a fresh single-use link every
// time: clicked twice, and again after the link's lifetime, it opens
// JupyterLab each time (web/e2e/open-link.mjs in Chromium, on the
// environment's own origin). The mode and the
// lifetime are changed in SSM while the stack runs, which also shows the
// functions pick up a changed parameter without a cold start.
func TestConsoleOpensFreshLinks(t *testing.T) {
	node, web := consoleInBrowser(t)
	const linkTTL = 8
	setParameter(t, "access_mode", "link")
	setParameter(t, "link_ttl_seconds", strconv.Itoa(linkTTL))

	tok := token(devstack.DemoCustomer)
	env := newEnvironment(t, devstack.DemoCustomer)
	if code, b := start(t, tok, env, ""); code != http.StatusAccepted {
		t.Fatalf("start: %d %+v", code, b.Error)
	}
	t.Cleanup(func() {
		stop(t, tok, env)
		waitStatus(t, tok, env, "stopped", 30*time.Second)
	})
	in := waitStatus(t, tok, env, "running", 90*time.Second)
	if !strings.Contains(in.AccessURL, "/_access?t=") || in.AccessURL != in.AccessLink {
		t.Fatalf("in link mode access_url is %q, want the access link", in.AccessURL)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, filepath.Join("e2e", "open-link.mjs"))
	cmd.Dir = web
	cmd.Env = append(os.Environ(),
		"CONSOLE_URL="+stack.ConsoleURL()+"/", "ENV_ID="+env, "LINK_TTL="+strconv.Itoa(linkTTL), "CHROMIUM="+chromiumBin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("web/e2e/open-link.mjs: %v\n%s", err, out)
	}
	t.Logf("web/e2e/open-link.mjs:\n%s", out)
}
