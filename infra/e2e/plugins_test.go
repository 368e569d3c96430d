package e2e

import (
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

// An allowed plugin is installed before Jupyter starts and imports in the
// kernel; one that cannot be installed fails the start with pip's reason;
// an unknown one is refused with the list of allowed ones.
func TestPlugins(t *testing.T) {
	env := newEnvironment(t, customerA)
	tok := token(customerA)
	code, started := start(t, tok, env, `{"plugins":["envjupyter-hello"]}`)
	if code != http.StatusAccepted {
		t.Fatalf("start with a plugin: %d %+v", code, started.Error)
	}
	in := waitStatus(t, tok, env, "running", 120*time.Second)
	got := runCode(t, accessBase(t, in.AccessURL), accessToken(t, in.AccessURL), "python3",
		"import envjupyter_hello; print(envjupyter_hello.GREETING)")
	if got != "hello from an envjupyter plugin" {
		t.Fatalf("the plugin in the kernel says %q", got)
	}
	stop(t, tok, env)
	waitStatus(t, tok, env, "stopped", 30*time.Second)

	code, b := start(t, tok, env, `{"plugins":["envjupyter-missing"]}`)
	if code != http.StatusAccepted {
		t.Fatalf("start with an uninstallable plugin: %d %+v", code, b.Error)
	}
	failed := waitStatus(t, tok, env, "failed", 120*time.Second)
	if !strings.HasPrefix(failed.StatusReason, "plugin_install_failed: ") || !strings.Contains(failed.StatusReason, "envjupyter-missing") {
		t.Fatalf("reason %q, want plugin_install_failed with pip's summary", failed.StatusReason)
	}
	t.Logf("failed as expected: %s", failed.StatusReason)

	code, b = start(t, tok, env, `{"plugins":["jupyterlab-nonexistent"]}`)
	if code != http.StatusBadRequest || b.Error == nil || b.Error.Code != "plugin_not_allowed" ||
		!slices.Equal(b.Error.Allowed, []string{"envjupyter-hello", "envjupyter-missing", "ipywidgets"}) {
		t.Fatalf("unknown plugin: %d %+v, want 400 plugin_not_allowed listing the allowed ones", code, b.Error)
	}
}
