package e2e

import (
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/envjupyter/envjupyter/functions/store"
	"github.com/envjupyter/envjupyter/infra/devstack"
)

// chromiumBin is Debian's Chromium; the browser test never downloads one.
const chromiumBin = "/usr/bin/chromium"

// consoleRoot is the root element of the built console (web/index.html);
// the placeholder page of web/static has none.
const consoleRoot = `id="envjupyter-console"`

// TC-02 in a real browser: the console page served by the stack starts
// JupyterLab 4 with the ipywidgets plugin and opens it through the proxy;
// its launcher shows Python 3 and R, a Python notebook runs print(1+1), a
// slider renders, a terminal runs echo ok, an R notebook runs 1+1; the page
// stops it and JupyterLab then shows that the environment is gone; and a
// start on a stopped environment shows the API's message. web/e2e/tc02.mjs
// drives Chromium with playwright-core and writes the screenshots to
// docs/screenshots.
func TestConsoleInBrowser(t *testing.T) {
	node, web := consoleInBrowser(t)
	root := stack.Opts.Root

	// The page acts as the demo customer (its dev-identity.json token).
	running := newEnvironment(t, devstack.DemoCustomer)
	stopped := store.Environment{
		ID: "e2e-browser-stopped-env", CustomerID: devstack.DemoCustomer, HostID: stack.Opts.HostID,
		ContainerID: "none", Status: "stopped",
	}
	if err := stack.Store.PutEnvironment(context.Background(), stopped); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Whatever the script reached, leave nothing running.
		if code, b := status(t, token(devstack.DemoCustomer), running); code == http.StatusOK && b.Status != "stopped" && b.Status != "not_started" && b.Status != "failed" {
			stop(t, token(devstack.DemoCustomer), running)
			waitStatus(t, token(devstack.DemoCustomer), running, "stopped", 30*time.Second)
		}
	})

	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, filepath.Join("e2e", "tc02.mjs"))
	cmd.Dir = web
	cmd.Env = append(os.Environ(),
		"CONSOLE_URL="+stack.ConsoleURL()+"/",
		"ENV_ID="+running,
		"STOPPED_ENV_ID="+stopped.ID,
		"SCREENSHOT_DIR="+filepath.Join(root, "docs", "screenshots"),
		"CHROMIUM="+chromiumBin,
	)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("web/e2e/tc02.mjs: %v\n%s", err, out)
	}
	t.Logf("web/e2e/tc02.mjs:\n%s", out)
}

// browserTools returns node, with web/'s playwright-core installed from its
// lock file; without node or Chromium the test skips, or fails in CI.
func browserTools(t *testing.T) string {
	t.Helper()
	node, nodeErr := exec.LookPath("node")
	_, chromiumErr := os.Stat(chromiumBin)
	if nodeErr != nil || chromiumErr != nil {
		missing := "node"
		if chromiumErr != nil {
			missing = chromiumBin
		}
		if os.Getenv("CI") != "" {
			t.Fatalf("the browser test cannot run in CI: %s is missing", missing)
		}
		t.Skipf("%s is missing (CI never skips this test)", missing)
	}
	web := filepath.Join(stack.Opts.Root, "web")
	if _, err := os.Stat(filepath.Join(web, "node_modules", "playwright-core")); err != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "npm", "ci", "--no-audit", "--no-fund")
		cmd.Dir = web
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("npm ci in web/: %v\n%s", err, out)
		}
	}
	return node
}

// consoleInBrowser checks what a browser test of the console needs (node and
// Chromium with playwright-core, and the built page served by the stack) and
// returns node's path and the web/ folder.
func consoleInBrowser(t *testing.T) (node, web string) {
	t.Helper()
	node = browserTools(t)
	// The stack copied web/dist when it started (TestMain starts it before
	// any test), so the page must have been built before `go test`.
	resp, err := http.Get(stack.ProxyURL() + "/")
	if err != nil {
		t.Fatalf("GET the console: %v", err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(page), consoleRoot) {
		t.Fatalf("the stack serves the placeholder console, not the built page (HTTP %d): build it before the tests with `make web` (cd web && npm ci && npm run build)", resp.StatusCode)
	}
	return node, filepath.Join(stack.Opts.Root, "web")
}
