package e2e

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"

	"github.com/envjupyter/envjupyter/shared/accesslink"
)

// noRedirect is a client that shows redirects instead of following them.
var noRedirect = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// follow opens an access link; it returns the status, the session cookie
// (name=value) and the whole response as the browser receives it.
func follow(t *testing.T, link string) (int, string, string) {
	t.Helper()
	resp, err := noRedirect.Get(link)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var all strings.Builder
	for k, v := range resp.Header {
		all.WriteString(k + ": " + strings.Join(v, ",") + "\n")
	}
	all.Write(body)
	cookie := ""
	for _, c := range resp.Cookies() {
		if strings.HasPrefix(c.Name, "__Host-ejsession-") {
			if !c.HttpOnly || !c.Secure || c.Path != "/" || c.Domain != "" {
				t.Errorf("session cookie %+v: want a __Host- cookie: HttpOnly, Secure, Path=/ and no Domain", c)
			}
			cookie = c.Name + "=" + c.Value
		}
	}
	return resp.StatusCode, cookie, all.String()
}

// The short-lived link: works once, gives a session (HTTP, the user
// interface's page and kernel WebSocket through the proxy) without the token
// ever reaching the browser, whatever JupyterLab or the Notebook writes in
// their pages; expired, tampered, reused or misplaced tickets and cookies are
// refused.
func TestAccessLink(t *testing.T) { onEachImage(t, testAccessLink) }

func testAccessLink(t *testing.T, img envImage) {
	envA, a := runningOn(t, img)
	envB, b := runningOn(t, img)
	jtoken := accessToken(t, a.AccessURL)
	if a.AccessLink == "" || !strings.Contains(a.AccessLink, "/env-"+envA+"/_access?t=") {
		t.Fatalf("access_link %q, want a link to /env-%s/_access", a.AccessLink, envA)
	}
	baseA, baseB := accessBase(t, a.AccessURL), accessBase(t, b.AccessURL)

	status, cookie, seen := follow(t, a.AccessLink)
	if status != http.StatusFound || cookie == "" {
		t.Fatalf("following the link: %d, cookie %q; want 302 with a session cookie", status, cookie)
	}
	session := http.Header{"Cookie": {cookie}}
	if st, _ := jupyterWith(t, http.MethodGet, baseA+"api/status", session, nil); st != http.StatusOK {
		t.Fatalf("api/status with the session alone: %d, want 200", st)
	}
	st, page := jupyterWith(t, http.MethodGet, baseA+img.ui, session, nil)
	if st != http.StatusOK {
		t.Fatalf("the user interface (%s) with the session: %d, want 200", img.ui, st)
	}
	seen += string(page)
	if got := runCodeWith(t, baseA, session, "python3", "1+1"); got != "2" {
		t.Fatalf("1+1 over the session's WebSocket = %q", got)
	}
	if strings.Contains(seen, jtoken) {
		t.Fatal("the browser received Jupyter's token")
	}

	if st, _, _ := follow(t, a.AccessLink); st != http.StatusForbidden {
		t.Fatalf("the same link again: %d, want 403", st)
	}
	u, _ := url.Parse(a.AccessLink)
	ticket := u.Query().Get("t")
	expired := accesslink.Sign(stack.LinkKey, envA, a.InstanceID, time.Now().Add(-time.Second))
	forgedKey := accesslink.Key{ID: stack.LinkKey.ID, Secret: []byte(strings.Repeat("x", 32))}
	tests := []struct {
		name, link string
		status     int
	}{
		{"expired", baseA + "_access?t=" + expired, http.StatusUnauthorized},
		{"tampered", baseA + "_access?t=" + strings.Replace(ticket, envA, envB, 1), http.StatusForbidden},
		{"forged", baseA + "_access?t=" + accesslink.Sign(forgedKey, envA, a.InstanceID, time.Now().Add(time.Minute)), http.StatusForbidden},
		{"another environment's ticket", baseB + "_access?t=" + accesslink.Sign(stack.LinkKey, envA, a.InstanceID, time.Now().Add(time.Minute)), http.StatusForbidden},
		{"no ticket", baseA + "_access", http.StatusForbidden},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if st, c, _ := follow(t, tc.link); st != tc.status || c != "" {
				t.Fatalf("%d (cookie %q), want %d and no cookie", st, c, tc.status)
			}
		})
	}
	if st, _ := jupyterWith(t, http.MethodGet, baseB+"api/status", session, nil); st != http.StatusForbidden {
		t.Fatalf("environment A's session on B: %d, want 403", st)
	}
	_, value, _ := strings.Cut(cookie, "=")
	asB := http.Header{"Cookie": {"__Host-ejsession-" + envB + "=" + value}}
	if st, _ := jupyterWith(t, http.MethodGet, baseB+"api/status", asB, nil); st != http.StatusForbidden {
		t.Fatalf("environment A's session under B's name on B: %d, want 403", st)
	}
	tampered := http.Header{"Cookie": {cookie[:len(cookie)-3] + "abc"}}
	if st, _ := jupyterWith(t, http.MethodGet, baseA+"api/status", tampered, nil); st != http.StatusUnauthorized {
		t.Fatalf("a tampered session cookie: %d, want 401", st)
	}

	// After a stop, the session no longer opens anything.
	stop(t, token(customerA), envA)
	waitStatus(t, token(customerA), envA, "stopped", 30*time.Second)
	if st, _ := jupyterWith(t, http.MethodGet, baseA+"api/status", session, nil); st == http.StatusOK {
		t.Fatal("the session still works after the instance stopped")
	}
	stop(t, token(customerA), envB)
	waitStatus(t, token(customerA), envB, "stopped", 30*time.Second)
}

// putLinkKeys replaces the access-link keys in SSM, as an operator rotating
// them would.
func putLinkKeys(t *testing.T, keys ...accesslink.Key) {
	t.Helper()
	var parts []string
	for _, k := range keys {
		parts = append(parts, k.ID+":"+base64.StdEncoding.EncodeToString(k.Secret))
	}
	_, err := stack.AWS.SSM.PutParameter(context.Background(), &ssm.PutParameterInput{
		Name: aws.String("/envjupyter/link_keys"), Type: ssmtypes.ParameterTypeSecureString, Overwrite: aws.Bool(true),
		Value: aws.String(strings.Join(parts, ",")),
	})
	if err != nil {
		t.Fatal(err)
	}
}

// Keys rotate without downtime: during a rotation links signed with the old
// and the new key both work; once the old key is retired, its links do not.
func TestLinkKeyRotation(t *testing.T) {
	env, in := running(t)
	old := stack.LinkKey
	next := accesslink.Key{ID: "k2", Secret: []byte(strings.Repeat("n", 32))}
	t.Cleanup(func() { putLinkKeys(t, old) })
	link := func(k accesslink.Key) string {
		return stack.EnvURL(env) + "_access?t=" + accesslink.Sign(k, env, in.InstanceID, time.Now().Add(time.Minute))
	}
	putLinkKeys(t, next, old)
	eventually(t, 15*time.Second, func() error {
		if st, _, _ := follow(t, link(next)); st != http.StatusFound {
			return fmt.Errorf("a link of the new key: %d", st)
		}
		return nil
	})
	if st, _, _ := follow(t, link(old)); st != http.StatusFound {
		t.Fatalf("during the rotation, a link of the old key: %d, want 302", st)
	}
	putLinkKeys(t, next)
	eventually(t, 15*time.Second, func() error {
		if st, _, _ := follow(t, link(old)); st != http.StatusForbidden {
			return fmt.Errorf("a link of the retired key: %d, want 403", st)
		}
		return nil
	})
	if st, _, _ := follow(t, link(next)); st != http.StatusFound {
		t.Fatalf("after the rotation, a link of the new key: %d, want 302", st)
	}
	putLinkKeys(t, old)
	stop(t, token(customerA), env)
	waitStatus(t, token(customerA), env, "stopped", 30*time.Second)
}

// A proxy in the link mode (ENV_ACCESS=link, for deployments whose
// access_mode is link) opens an environment only through an access link and
// the session it starts: Jupyter's own token, as a query or a header, which
// anyone who once held a session could have copied from a kernel's
// environment, is refused from browsers. (A proxy in the open mode takes it:
// the control.)
func TestLinkModeProxyRefusesJupytersToken(t *testing.T) {
	env, in := running(t)
	stopAtEnd(t, customerA, env)
	port := stack.Opts.ProxyPort + 12
	linkProxyOnce.Do(func() { linkProxyErr = stack.StartProxy("nginx-link", port, "ENV_ACCESS=link") })
	if linkProxyErr != nil {
		t.Fatalf("the link-mode proxy: %v", linkProxyErr)
	}
	jtoken := accessToken(t, in.AccessURL)
	base := fmt.Sprintf("http://env-%s.localhost:%d/env-%s/", env, port, env)
	for _, hdr := range []http.Header{{}, tokenHeader(jtoken)} {
		u := base + "api/contents"
		if len(hdr) == 0 {
			u += "?token=" + jtoken
		}
		req, _ := http.NewRequest(http.MethodGet, u, nil)
		req.Header = hdr
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("X-Envjupyter-Error") != "session_required" {
			t.Fatalf("Jupyter's token (header %v) through the link-mode proxy: %d %s, want 401 session_required", len(hdr) > 0, resp.StatusCode, resp.Header.Get("X-Envjupyter-Error"))
		}
	}
	// The control: the same token through the open-mode proxy works.
	if st, _ := jupyter(t, http.MethodGet, accessBase(t, in.AccessURL)+"api/contents", jtoken, nil); st != http.StatusOK {
		t.Fatalf("the token through the open-mode proxy: %d, want 200", st)
	}
	// An access link opens it there, and its session works (once the
	// proxy has the stack's key again, if a test before rotated it).
	var cookie string
	eventually(t, 15*time.Second, func() error {
		var st int
		st, cookie, _ = follow(t, base+"_access?t="+accesslink.Sign(stack.LinkKey, env, in.InstanceID, time.Now().Add(time.Minute)))
		if st != http.StatusFound || cookie == "" {
			return fmt.Errorf("an access link through the link-mode proxy: %d, cookie %q; want 302 with a session", st, cookie)
		}
		return nil
	})
	if st, _ := jupyterWith(t, http.MethodGet, base+"api/contents", http.Header{"Cookie": {cookie}}, nil); st != http.StatusOK {
		t.Fatalf("the session through the link-mode proxy: %d, want 200", st)
	}
}

var (
	linkProxyOnce sync.Once
	linkProxyErr  error
)
