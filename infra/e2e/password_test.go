package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
)

// A password set at start opens the user interface through the proxy (on
// jupyter-server 2 through its PasswordIdentityProvider, on Notebook 6
// through NotebookApp.password); another is refused; the token still works
// for API clients; and the password is nowhere: not in DynamoDB, not in what
// crossed the queue, not in any log.
func TestPasswordLogin(t *testing.T) { onEachImage(t, testPasswordLogin) }

func testPasswordLogin(t *testing.T, img envImage) {
	env := newEnvironmentFrom(t, customerA, img)
	const secret = "Tr0ub4dor&3-e2e-secret"
	code, started := start(t, token(customerA), env, `{"password":"`+secret+`"}`)
	if code != http.StatusAccepted {
		t.Fatalf("start with a password: %d %+v", code, started.Error)
	}
	in := waitStatus(t, token(customerA), env, "running", 60*time.Second)
	base := accessBase(t, in.AccessURL)

	// The proxy marks Jupyter's cookies Secure; Go's cookie jar keeps those
	// from plain-HTTP requests, so the test carries the _xsrf cookie itself.
	login := func(pw string) (int, string, http.Header) {
		resp, err := noRedirect.Get(base + "login")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		xsrf := ""
		for _, ck := range resp.Cookies() {
			if ck.Name == "_xsrf" {
				xsrf = ck.Value
			}
		}
		req, _ := http.NewRequest(http.MethodPost, base+"login?next="+url.QueryEscape(accessPath(base)+img.ui),
			strings.NewReader(url.Values{"password": {pw}, "_xsrf": {xsrf}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Cookie", "_xsrf="+xsrf)
		resp, err = noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		cookies := []string{"_xsrf=" + xsrf}
		for _, ck := range resp.Cookies() {
			cookies = append(cookies, ck.Name+"="+ck.Value)
		}
		return resp.StatusCode, resp.Header.Get("Location"), http.Header{"Cookie": {strings.Join(cookies, "; ")}}
	}
	st, loc, session := login(secret)
	if st != http.StatusFound || !strings.HasSuffix(loc, accessPath(base)+img.ui) {
		t.Fatalf("login with the password: %d to %q, want a redirect to %s%s", st, loc, accessPath(base), img.ui)
	}
	// The login cookie opens the interface and its API.
	for _, path := range []string{img.ui, "api/status"} {
		if st, _ := jupyterWith(t, http.MethodGet, base+path, session, nil); st != http.StatusOK {
			t.Fatalf("GET %s%s with the login cookie: %d, want 200", base, path, st)
		}
	}
	if st, loc, _ := login("not-the-password"); st == http.StatusFound {
		t.Fatalf("login with another password redirected to %q, want it refused", loc)
	}
	if st, _ := jupyter(t, http.MethodGet, base+"api/status", accessToken(t, in.AccessURL), nil); st != http.StatusOK {
		t.Fatalf("token access with a password set: %d, want 200", st)
	}

	// Nowhere: every table, the sidecar's copy of the command it received
	// (the queue's message), and every log of the run.
	ctx := context.Background()
	for _, table := range []string{"EnvironmentsTable", "InstancesTable", "LeasesTable"} {
		name := stack.Opts.Name + "-" + table
		out, err := stack.AWS.DynamoDB.Scan(ctx, &dynamodb.ScanInput{TableName: &name})
		if err != nil {
			t.Fatal(err)
		}
		var items []map[string]any
		if err := attributevalue.UnmarshalListOfMaps(out.Items, &items); err != nil {
			t.Fatal(err)
		}
		raw, _ := json.Marshal(items)
		if strings.Contains(string(raw), secret) {
			t.Errorf("table %s holds the password", table)
		}
	}
	files, _ := filepath.Glob(filepath.Join(stack.Opts.WorkDir, "*", "*"))
	more, _ := filepath.Glob(filepath.Join(stack.Opts.WorkDir, "proxy", "logs", "*"))
	for _, f := range append(files, more...) {
		if st, err := os.Stat(f); err != nil || st.IsDir() || st.Size() > 50<<20 {
			continue
		}
		b, _ := os.ReadFile(f)
		if strings.Contains(string(b), secret) {
			t.Errorf("%s holds the password", f)
		}
	}
	state, err := os.ReadFile(filepath.Join(stack.Opts.WorkDir, "sidecar-state", "instances.json"))
	if err != nil || !strings.Contains(string(state), "argon2:$argon2id$") {
		t.Errorf("the sidecar's copy of the start command has no password hash (err %v)", err)
	}
	stop(t, token(customerA), env)
	waitStatus(t, token(customerA), env, "stopped", 30*time.Second)
}
