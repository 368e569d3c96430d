package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/envjupyter/envjupyter/infra/devstack"
	"github.com/envjupyter/envjupyter/sidecar/route"
)

// signIn is what web/e2e/sso-signin.mjs saw.
type signIn struct {
	Status       int    `json:"status"`
	Error        string `json:"error"`
	FinalURL     string `json:"finalURL"`
	SawLoginPage bool   `json:"sawLoginPage"`
	Result       string `json:"result"`
	URLs         []string
	Cookies      []struct{ Name, Value, Domain string }
	Callback     string `json:"callback"`
}

// browserSignIn opens envURL in Chromium and signs in at the local
// provider's login page as login.
func browserSignIn(t *testing.T, envURL, login string) signIn {
	t.Helper()
	node := browserTools(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, filepath.Join("e2e", "sso-signin.mjs"))
	cmd.Dir = filepath.Join(stack.Opts.Root, "web")
	cmd.Env = append(os.Environ(), "CHROMIUM="+chromiumBin, "ENV_URL="+envURL, "ISSUER="+stack.SSOIssuer(), "LOGIN="+login)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	var got signIn
	if err != nil || json.Unmarshal(out, &got) != nil {
		t.Fatalf("web/e2e/sso-signin.mjs: %v\n%s", err, out)
	}
	return got
}

// upstreamRequests counts the requests the sso proxy sent to env's Jupyter.
func upstreamRequests(t *testing.T, env string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(stack.Opts.WorkDir, "proxy-sso", "logs", "access.log"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		if strings.Contains(line, " env="+env+" ") && !strings.Contains(line, "upstream=- ") {
			n++
		}
	}
	return n
}

// Access mode sso, end to end with a real OpenID Connect provider (infra/oidc)
// and Chromium: customer A's user signs in and runs code in A's JupyterLab
// with no token in any URL or usable cookie; customer B's user gets a 403
// and A's Jupyter never sees them; replayed codes and foreign states are
// refused; a session ends with its instance.
func TestSSOSignIn(t *testing.T) {
	envA := newEnvironment(t, devstack.SSOCustomerA)
	tokA := token(devstack.SSOCustomerA)
	if code, b := start(t, tokA, envA, ""); code != http.StatusAccepted {
		t.Fatalf("start: %d %+v", code, b.Error)
	}
	t.Cleanup(func() { stop(t, tokA, envA) })
	a := waitStatus(t, tokA, envA, "running", 60*time.Second)
	jtoken := accessToken(t, a.AccessURL)
	envURL := stack.SSOEnvURL(envA)

	// Without a session, Jupyter is not reached at all: no ?token= login.
	if st, _ := jupyterWith(t, http.MethodGet, envURL+"api/status?token="+jtoken, http.Header{"Accept": {"application/json"}}, nil); st != http.StatusUnauthorized {
		t.Fatalf("the Jupyter token through the sso proxy: %d, want 401", st)
	}

	alice := browserSignIn(t, envURL, devstack.SSOUserA)
	t.Logf("alice: status %d, %s, result %q, %d requests", alice.Status, alice.FinalURL, alice.Result, len(alice.URLs))
	if !alice.SawLoginPage || alice.Status != http.StatusOK || !strings.HasPrefix(alice.FinalURL, envURL) {
		t.Fatalf("alice did not reach A's JupyterLab: %+v", alice)
	}
	if alice.Result != "2" {
		t.Fatalf("1+1 in A's kernel from alice's page = %q", alice.Result)
	}
	for _, u := range alice.URLs {
		if strings.Contains(u, jtoken) || strings.Contains(u, "token=") {
			t.Errorf("a URL the browser opened holds a token: %s", u)
		}
	}
	backend, err := redisAs(t, devstack.RedisAdmin).Get(context.Background(), route.Key(envA)).Result()
	if err != nil {
		t.Fatal(err)
	}
	var session string
	for _, c := range alice.Cookies {
		if strings.Contains(c.Value, jtoken) {
			t.Errorf("cookie %s holds Jupyter's token", c.Name)
		}
		if c.Name == "__Host-ejsession-"+envA {
			session = c.Name + "=" + c.Value
		}
		// Each cookie, straight to Jupyter (no proxy in between), opens nothing.
		hdr := http.Header{"Cookie": {c.Name + "=" + c.Value}}
		if st, _ := jupyterWith(t, http.MethodGet, "http://"+backend+"/env-"+envA+"/api/contents", hdr, nil); st == http.StatusOK {
			t.Errorf("Jupyter accepts the browser's cookie %s", c.Name)
		}
	}
	if session == "" {
		t.Fatalf("no session cookie for %s among %+v", envA, alice.Cookies)
	}

	t.Run("another customer's user gets 403", func(t *testing.T) {
		before := upstreamRequests(t, envA)
		bob := browserSignIn(t, envURL, devstack.SSOUserB)
		if !bob.SawLoginPage || bob.Status != http.StatusForbidden || bob.Error != "sso_not_yours" {
			t.Fatalf("bob at A's environment: status %d %q at %s, want 403 sso_not_yours", bob.Status, bob.Error, bob.FinalURL)
		}
		if after := upstreamRequests(t, envA); after != before {
			t.Fatalf("A's Jupyter got %d requests during bob's attempt", after-before)
		}
	})

	t.Run("replayed code and foreign state", func(t *testing.T) {
		cb, err := url.Parse(alice.Callback)
		if err != nil || cb.Query().Get("code") == "" {
			t.Fatalf("alice's callback %q", alice.Callback)
		}
		state := cb.Query().Get("state")
		call := func(u, cookie string) (int, string) {
			req, _ := http.NewRequest(http.MethodGet, u, nil)
			if cookie != "" {
				req.Header.Set("Cookie", cookie)
			}
			resp, err := noRedirect.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			return resp.StatusCode, resp.Header.Get("X-Envjupyter-Error")
		}
		// The same callback again, with what the old service's cookie held (the
		// bare state; the browser's own was cleared by the first callback).
		if st, code := call(alice.Callback, "__Secure-ejsso="+state); st != http.StatusBadRequest || code != "sso_state_invalid" {
			t.Errorf("replayed callback with a cookie not sealed here: %d %s, want 400 sso_state_invalid", st, code)
		}
		// A callback whose state is not the browser's (login CSRF).
		if st, code := call(alice.Callback, ""); st != http.StatusBadRequest || code != "sso_state_mismatch" {
			t.Errorf("callback without the state cookie: %d %s, want 400 sso_state_mismatch", st, code)
		}
		// A fresh sign-in of this browser, finished with alice's used code: the provider refuses it.
		req, _ := http.NewRequest(http.MethodGet, stack.SSOProxyURL()+"/sso/start?env="+envA, nil)
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		auth, _ := url.Parse(resp.Header.Get("Location"))
		var fresh string
		for _, c := range resp.Cookies() {
			if c.Name == "__Secure-ejsso" && c.Path == "/sso/callback" {
				fresh = c.Value
			}
		}
		if resp.StatusCode != http.StatusFound || fresh == "" || auth.Query().Get("state") == "" || strings.Contains(fresh, auth.Query().Get("state")) {
			t.Fatalf("start: %d, state cookie %q, location %s", resp.StatusCode, fresh, auth)
		}
		q := cb.Query()
		q.Set("state", auth.Query().Get("state"))
		cb.RawQuery = q.Encode()
		if st, code := call(cb.String(), "__Secure-ejsso="+fresh); st != http.StatusUnauthorized || code != "sso_code_refused" {
			t.Errorf("replayed code with a fresh state: %d %s, want 401 sso_code_refused", st, code)
		}
	})

	t.Run("session ends with the instance", func(t *testing.T) {
		hdr := http.Header{"Cookie": {session}}
		if st, _ := jupyterWith(t, http.MethodGet, envURL+"api/status", hdr, nil); st != http.StatusOK {
			t.Fatalf("the session before the stop: %d", st)
		}
		stop(t, tokA, envA)
		waitStatus(t, tokA, envA, "stopped", 60*time.Second)
		if code, b := start(t, tokA, envA, ""); code != http.StatusAccepted {
			t.Fatalf("restart: %d %+v", code, b.Error)
		}
		next := waitStatus(t, tokA, envA, "running", 60*time.Second)
		if next.InstanceID == a.InstanceID {
			t.Fatalf("the restart kept instance %s", a.InstanceID)
		}
		// The next instance serves: its own token opens it through the open proxy.
		if st, _ := jupyter(t, http.MethodGet, accessBase(t, next.AccessURL)+"api/status", accessToken(t, next.AccessURL), nil); st != http.StatusOK {
			t.Fatalf("the next instance: %d", st)
		}
		before := upstreamRequests(t, envA)
		req, _ := http.NewRequest(http.MethodGet, envURL+"lab", nil)
		req.Header.Set("Cookie", session)
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusFound || loc != stack.SSOProxyURL()+"/sso/start?env="+envA {
			t.Fatalf("the old session on the next instance: %d to %q, want a new sign-in", resp.StatusCode, loc)
		}
		if st, _ := jupyterWith(t, http.MethodGet, envURL+"api/status", http.Header{"Cookie": {session}, "Accept": {"application/json"}}, nil); st != http.StatusUnauthorized {
			t.Fatalf("the old session's API call on the next instance: %d, want 401", st)
		}
		if after := upstreamRequests(t, envA); after != before {
			t.Fatalf("the new instance's Jupyter got %d requests from the old session", after-before)
		}
	})
}
