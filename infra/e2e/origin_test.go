package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/envjupyter/envjupyter/infra/devstack"
	"github.com/envjupyter/envjupyter/shared/accesslink"
	"github.com/envjupyter/envjupyter/sidecar/route"
)

// rawGet sends one GET with the request target exactly as given (no client
// cleans it) to the proxy at addr, with the Host header host; it returns
// the status code.
func rawGet(t *testing.T, addr, host, target string) int {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", target, host)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("GET %s: %v", target, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// countingBackend stands in for an environment's Jupyter: it records every
// request that reaches it. Its route is put in the proxy's table.
func countingBackend(t *testing.T, env string) *atomic.Int64 {
	t.Helper()
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		w.WriteHeader(http.StatusOK)
	}))
	rdb := redisAs(t, devstack.RedisAdmin)
	if err := rdb.Set(context.Background(), route.Key(env), strings.TrimPrefix(srv.URL, "http://"), 0).Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		rdb.Del(context.Background(), route.Key(env))
		srv.Close()
	})
	return &n
}

// Addresses the browser scopes to environment B but a decoding or
// normalising proxy would send elsewhere get 400 in both origin modes, and
// neither environment's backend sees them.
func TestPathHygiene(t *testing.T) {
	a, b := "e2e-hyg-a-"+randomID()[:8], "e2e-hyg-b-"+randomID()[:8]
	countA, countB := countingBackend(t, a), countingBackend(t, b)
	variants := []string{
		"/env-B/..%2Fenv-A/x", "/env-B/..%2fenv-A/x", "/env-B/%2E%2E%2Fenv-A/x", "/env-B/%2e%2e/env-A/x",
		"/env-B/..%5Cenv-A/x", "/env-B/..%5cenv-A/x", `/env-B/..\env-A/x`, "/env-B/..%252Fenv-A/x",
		"/env-B/%252E%252E%252Fenv-A/x", "/env-B/../env-A/x", "/env-B/./x", "/env-B/x/..%2F..%2Fenv-A/x",
	}
	hostPort := "127.0.0.1:" + strconv.Itoa(stack.Opts.ProxyPort)
	pathPort := "127.0.0.1:" + strconv.Itoa(stack.Opts.PathProxyPort)
	hostB := "env-" + b + ".localhost:" + strconv.Itoa(stack.Opts.ProxyPort)
	name := strings.NewReplacer("env-A", "env-"+a, "env-B", "env-"+b)
	for _, v := range variants {
		target := name.Replace(v)
		if st := rawGet(t, hostPort, hostB, target); st != http.StatusBadRequest {
			t.Errorf("host mode: %s answered %d, want 400", target, st)
		}
		if st := rawGet(t, pathPort, pathPort, target); st != http.StatusBadRequest {
			t.Errorf("path mode: %s answered %d, want 400", target, st)
		}
	}
	// The host names B, the path A.
	if st := rawGet(t, hostPort, hostB, "/env-"+a+"/x"); st != http.StatusBadRequest {
		t.Errorf("B's host with A's path answered %d, want 400", st)
	}
	// The same id in capitals: host names ignore case, so it would share
	// B's origin; the host mode serves lowercase ids only.
	if st := rawGet(t, hostPort, hostB, "/env-"+strings.ToUpper(b)+"/x"); st != http.StatusBadRequest {
		t.Errorf("B's id in capitals on B's host answered %d, want 400", st)
	}
	// An absolute-form request line naming A's host, with B's Host header:
	// nginx would route by the first, Jupyter and the origin checks see the
	// second.
	absoluteA := "http://env-" + a + ".localhost:" + strconv.Itoa(stack.Opts.ProxyPort) + "/env-" + a + "/x"
	if st := rawGet(t, hostPort, hostB, absoluteA); st != http.StatusBadRequest {
		t.Errorf("an absolute-form request for A with B's Host answered %d, want 400", st)
	}
	if n, m := countA.Load(), countB.Load(); n != 0 || m != 0 {
		t.Fatalf("the refused requests reached the backends: A %d, B %d times", n, m)
	}
	// The same backends do answer a clean address (the counters count).
	if st := rawGet(t, hostPort, hostB, "/env-"+b+"/x"); st != http.StatusOK {
		t.Fatalf("a clean request to B: %d, want 200", st)
	}
	if st := rawGet(t, pathPort, pathPort, "/env-"+a+"/x"); st != http.StatusOK {
		t.Fatalf("a clean request to A on the path proxy: %d, want 200", st)
	}
	if n, m := countA.Load(), countB.Load(); n != 1 || m != 1 {
		t.Fatalf("clean requests: A reached %d, B %d times; want 1 each", n, m)
	}
}

// A ticket is not a session, a session is not a ticket and is never
// renewed, and Jupyter's own login cookie dies with the instance it came
// from.
func TestTicketsAreNotCookies(t *testing.T) {
	env, in := running(t)
	base := accessBase(t, in.AccessURL)
	name := "__Host-ejsession-" + env
	u, _ := url.Parse(in.AccessLink)
	ticket := u.Query().Get("t")
	st, cookie, _ := follow(t, in.AccessLink)
	if st != http.StatusFound || cookie == "" {
		t.Fatalf("following the link: %d, cookie %q", st, cookie)
	}
	_, session, _ := strings.Cut(cookie, "=")
	asCookie := func(v string) http.Header { return http.Header{"Cookie": {name + "=" + v}} }
	if st, _ := jupyterWith(t, http.MethodGet, base+"api/status", asCookie(session), nil); st != http.StatusOK {
		t.Fatalf("the session: %d, want 200", st)
	}
	for _, tc := range []struct{ name, cookie string }{
		{"the used ticket as a session cookie", ticket},
		{"the ticket relabelled as a session", "s1" + strings.TrimPrefix(ticket, "t1")},
		{"a session signed with the ticket's key derivation", "s1" + strings.TrimPrefix(accesslink.Sign(stack.LinkKey, env, in.InstanceID, time.Now().Add(time.Hour)), "t1")},
	} {
		if st, _ := jupyterWith(t, http.MethodGet, base+"api/status", asCookie(tc.cookie), nil); st != http.StatusUnauthorized {
			t.Errorf("%s: %d, want 401", tc.name, st)
		}
	}
	for _, tc := range []struct{ name, ticket string }{
		{"the session as a ticket", session},
		{"the session relabelled as a ticket", "t1" + strings.TrimPrefix(session, "s1")},
	} {
		if st, c, _ := follow(t, base+"_access?t="+tc.ticket); st != http.StatusForbidden || c != "" {
			t.Errorf("%s: %d (cookie %q), want 403 and no cookie", tc.name, st, c)
		}
	}
	// Exchanging the cookie for a fresh one: no request with it sets another.
	req, _ := http.NewRequest(http.MethodGet, base+"_access", nil)
	req.Header.Set("Cookie", cookie)
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || len(resp.Cookies()) != 0 {
		t.Errorf("_access with a session and no ticket: %d, cookies %v; want 403 and none", resp.StatusCode, resp.Cookies())
	}

	// Jupyter's own login cookie, from the ?token= access URL: Secure,
	// bounded, bound to this instance.
	login := jupyterLoginCookie(t, in.AccessURL)
	if !login.Secure || login.MaxAge <= 0 || login.MaxAge > 12*3600 || !strings.HasPrefix(strings.Trim(login.Value, `"`), "ej1."+in.InstanceID+".") {
		t.Fatalf("Jupyter's login cookie %+v: want Secure, at most 12 h, bound to instance %s", login, in.InstanceID)
	}
	jcookie := http.Header{"Cookie": {login.Name + "=" + login.Value}}
	if st, _ := jupyterWith(t, http.MethodGet, base+"api/status", jcookie, nil); st != http.StatusOK {
		t.Fatalf("Jupyter's login cookie while its instance runs: %d, want 200", st)
	}
	stop(t, token(customerA), env)
	waitStatus(t, token(customerA), env, "stopped", 30*time.Second)
	if code, b := start(t, token(customerA), env, ""); code != http.StatusAccepted {
		t.Fatalf("start again: %d %+v", code, b.Error)
	}
	next := waitStatus(t, token(customerA), env, "running", 60*time.Second)
	if next.InstanceID == in.InstanceID {
		t.Fatal("the same instance runs again")
	}
	if st, _ := jupyterWith(t, http.MethodGet, base+"api/status", jcookie, nil); st != http.StatusForbidden {
		t.Errorf("Jupyter's login cookie of the ended instance: %d, want 403", st)
	}
	if st, _ := jupyterWith(t, http.MethodGet, base+"api/status", asCookie(session), nil); st != http.StatusUnauthorized {
		t.Errorf("the session of the ended instance: %d, want 401", st)
	}
	stop(t, token(customerA), env)
	waitStatus(t, token(customerA), env, "stopped", 30*time.Second)
}

// jupyterLoginCookie opens an access URL as a browser would (following
// redirects) and returns the login cookie Jupyter set.
func jupyterLoginCookie(t *testing.T, accessURL string) *http.Cookie {
	t.Helper()
	next := accessURL
	var hops []string
	for range 5 {
		resp, err := noRedirect.Get(next)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		hops = append(hops, fmt.Sprintf("%s %d %q %q", accessPath(next), resp.StatusCode, resp.Header["Set-Cookie"], resp.Header.Get("Location")))
		for _, c := range resp.Cookies() {
			if strings.HasPrefix(c.Name, "username-") {
				return c
			}
		}
		loc, err := resp.Location()
		if err != nil {
			break
		}
		next = loc.String()
	}
	t.Fatalf("opening %s set no Jupyter login cookie:\n%s", accessPath(accessURL), strings.Join(hops, "\n"))
	return nil
}

// attackPage is what the attacker's environment serves: it tries, with the
// visitor's browser, everything one customer's page could do to another's
// JupyterLab (?b= its base URL, ?k= one of its kernels).
const attackPage = `<!doctype html><html><body><pre id="out"></pre><script>
(async () => {
  const q = new URLSearchParams(location.search)
  const B = q.get('b'), K = q.get('k'), tag = q.get('tag')
  const results = {}
  // Each attempt has 20 s: one that hangs fails alone, with its name.
  const attempt = async (name, fn) => {
    window.__step = name
    const limit = new Promise((_, reject) => setTimeout(() => reject(new Error('no answer in 20 s')), 20000))
    try { await Promise.race([fn(), limit]); results[name] = { ok: true, detail: '' } } catch (e) { results[name] = { ok: false, detail: String(e) } }
    window.__results = results
  }
  await attempt('fetch_contents', async () => {
    const r = await fetch(B + 'api/contents', { credentials: 'include' })
    if (!r.ok) throw new Error('HTTP ' + r.status)
    await r.json()
  })
  await attempt('fetch_kernels', async () => {
    const r = await fetch(B + 'api/kernels', { credentials: 'include' })
    if (!r.ok) throw new Error('HTTP ' + r.status)
    await r.json()
  })
  let xsrf = ''
  await attempt('iframe_cookies', () => new Promise((resolve, reject) => {
    const f = document.createElement('iframe')
    f.onload = () => {
      try {
        const m = /(?:^|; )_xsrf=([^;]*)/.exec(f.contentDocument.cookie)
        if (!m) throw new Error('no _xsrf cookie readable')
        xsrf = decodeURIComponent(m[1])
        resolve()
      } catch (e) { reject(e) }
    }
    setTimeout(() => reject(new Error('timeout')), 20000)
    f.src = B
    document.body.appendChild(f)
  }))
  const headers = { 'Content-Type': 'application/json' }
  if (xsrf) headers['X-XSRFToken'] = xsrf
  await attempt('start_kernel', async () => {
    const r = await fetch(B + 'api/kernels', { method: 'POST', credentials: 'include', headers, body: JSON.stringify({ name: 'python3' }) })
    if (r.status !== 201) throw new Error('HTTP ' + r.status)
  })
  await attempt('start_session', async () => {
    const r = await fetch(B + 'api/sessions', { method: 'POST', credentials: 'include', headers,
      body: JSON.stringify({ path: 'pwned-' + tag + '.ipynb', type: 'notebook', name: '', kernel: { name: 'python3' } }) })
    if (r.status !== 201) throw new Error('HTTP ' + r.status)
  })
  await attempt('write_file', async () => {
    const r = await fetch(B + 'api/contents/pwned-' + tag + '.txt', { method: 'PUT', credentials: 'include', headers,
      body: JSON.stringify({ type: 'file', format: 'text', content: 'pwned' }) })
    if (r.status >= 300) throw new Error('HTTP ' + r.status)
  })
  await attempt('kernel_websocket', () => new Promise((resolve, reject) => {
    const ws = new WebSocket(B.replace(/^http/, 'ws') + 'api/kernels/' + K + '/channels')
    ws.onopen = () => {
      ws.send(JSON.stringify({ channel: 'shell', header: { msg_id: 'pwn-' + tag, username: 'x', session: 'pwn', msg_type: 'execute_request', version: '5.3', date: new Date().toISOString() },
        parent_header: {}, metadata: {}, buffers: [],
        content: { code: "open('pwned-ws-" + tag + ".txt', 'w').write('x')", silent: false, store_history: false, user_expressions: {}, allow_stdin: false, stop_on_error: true } }))
    }
    ws.onmessage = (m) => { if (String(m.data).includes('execute_reply')) { ws.close(); resolve() } }
    ws.onerror = () => reject(new Error('the WebSocket was refused'))
    setTimeout(() => reject(new Error('timeout')), 20000)
  }))
  // The attacker's own server sets cookies for the victim (the proxy confines them).
  await fetch('../ej-toss?' + new URLSearchParams({ p: new URL(B).pathname, e: B.split('/env-')[1].replace('/', '') }), { credentials: 'include' })
  // Cookies for the victim's path, and for every host under the parent domain.
  const parent = location.hostname.split('.').slice(1).join('.')
  document.cookie = 'ej_tossed_path=1; path=' + new URL(B).pathname
  document.cookie = '_xsrf=tossed; path=' + new URL(B).pathname
  if (parent) {
    document.cookie = 'ej_tossed_domain=1; domain=' + parent + '; path=/'
    document.cookie = '_xsrf=tossed; domain=' + parent + '; path=' + new URL(B).pathname
  }
  window.__results = results
  window.__done = true
  document.getElementById('out').textContent = JSON.stringify(results, null, 1)
})()
</script></body></html>`

// makeHostile does what a hostile customer can do in their own container:
// a Jupyter config file in their home that serves a directory of their
// files as static files (no sandboxing CSP), then a restart of JupyterLab
// so that it reads it. It returns the running instance.
func makeHostile(t *testing.T, customer, env string) instanceBody {
	t.Helper()
	ctr := stack.Opts.Name + "-" + env
	docker := func(args ...string) string {
		out, err := exec.Command("docker", args...).CombinedOutput()
		if err != nil {
			t.Fatalf("docker %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	configDir := docker("exec", ctr, "jupyter", "--config-dir")
	docker("exec", ctr, "mkdir", "-p", configDir, "/tmp/ej-attack")
	local := t.TempDir()
	files := map[string]string{
		"ej-attack.html":             attackPage,
		"ej_toss.py":                 tossExtension,
		"jupyter_server_config.py":   hostileConfig("ServerApp", "jpserver_extensions"),
		"jupyter_notebook_config.py": hostileConfig("NotebookApp", "nbserver_extensions"),
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(local, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		dest := "/tmp/ej-attack/" + name
		if strings.HasPrefix(name, "jupyter_") {
			dest = configDir + "/" + name
		}
		docker("cp", filepath.Join(local, name), ctr+":"+dest)
	}
	stop(t, token(customer), env)
	waitStatus(t, token(customer), env, "stopped", 30*time.Second)
	if code, b := start(t, token(customer), env, ""); code != http.StatusAccepted {
		t.Fatalf("restart of the attacker's JupyterLab: %d %+v", code, b.Error)
	}
	in := waitStatus(t, token(customer), env, "running", 60*time.Second)
	base := accessBase(t, in.AccessURL)
	st, page := jupyterWith(t, http.MethodGet, base+"static/ej-attack.html", nil, nil)
	if st != http.StatusOK || !strings.Contains(string(page), "window.__results") {
		t.Fatalf("the attacker's page: %d, want 200 and the page", st)
	}
	// The handler sets cookies beyond its environment; the proxy confines them.
	resp, err := http.Get(base + "ej-toss?" + url.Values{"p": {"/env-victim/"}, "e": {"victim"}}.Encode())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	set := resp.Header["Set-Cookie"]
	if resp.StatusCode != http.StatusOK || len(set) != 2 {
		t.Fatalf("the attacker's cookie handler: %d %q, want 200 and two of its three cookies", resp.StatusCode, set)
	}
	for _, c := range set {
		lower := strings.ToLower(c)
		if strings.Contains(lower, "; domain=") || strings.HasPrefix(c, "__") || !strings.Contains(c, "; Path="+accessPath(base)+";") || !strings.Contains(c, "; Secure") {
			t.Errorf("the proxy let through Set-Cookie %q: want no Domain, Path=%s, Secure, no __ prefix", c, accessPath(base))
		}
	}
	return in
}

// hostileConfig is a Jupyter config file (Python) of the attacker: serve
// /tmp/ej-attack as static files and load the ej_toss extension from there.
func hostileConfig(app, extensions string) string {
	return "import sys\nsys.path.insert(0, '/tmp/ej-attack')\n" +
		"c." + app + ".extra_static_paths = ['/tmp/ej-attack']\n" +
		"c." + app + "." + extensions + " = {'ej_toss': True}\n"
}

// tossExtension is the attacker's Jupyter server extension: a handler that
// sets cookies for the parent domain, for another environment's path, and
// under the proxy's own session name.
const tossExtension = `from tornado import web


class Toss(web.RequestHandler):
    def get(self):
        self.add_header('Set-Cookie', 'ej_srv_domain=1; Domain=localhost; Path=/')
        self.add_header('Set-Cookie', 'ej_srv_path=1; Path=' + self.get_argument('p'))
        self.add_header('Set-Cookie', '__Host-ejsession-' + self.get_argument('e') + '=forged; Path=/; Secure')
        self.write('ok')


def load_jupyter_server_extension(app):
    base = app.web_app.settings['base_url']
    app.web_app.add_handlers('.*$', [(base + 'ej-toss', Toss)])


_load_jupyter_server_extension = load_jupyter_server_extension
`

// jupyterState lists an environment's kernels, sessions and files.
func jupyterState(t *testing.T, base, jtoken string) []string {
	t.Helper()
	var state []string
	for _, what := range []string{"api/kernels", "api/sessions"} {
		st, raw := jupyter(t, http.MethodGet, base+what, jtoken, nil)
		var items []struct{ ID string }
		if st != http.StatusOK || json.Unmarshal(raw, &items) != nil {
			t.Fatalf("%s: %d %s", what, st, raw)
		}
		for _, it := range items {
			state = append(state, what+" "+it.ID)
		}
	}
	st, raw := jupyter(t, http.MethodGet, base+"api/contents", jtoken, nil)
	var dir struct{ Content []struct{ Name string } }
	if st != http.StatusOK || json.Unmarshal(raw, &dir) != nil {
		t.Fatalf("api/contents: %d %s", st, raw)
	}
	for _, f := range dir.Content {
		state = append(state, "file "+f.Name)
	}
	sort.Strings(state)
	return state
}

type attackOutcome struct {
	LoggedIn bool
	Results  map[string]struct {
		OK     bool
		Detail string
	}
}

// A customer's page cannot act as another customer in the browser when each
// environment has an origin of its own; on the single origin of the path
// mode the same page can (the documented risk of that mode, and the proof
// that this test sees an attack that works).
func TestCrossEnvironmentAttack(t *testing.T) {
	node, err := exec.LookPath("node")
	if _, cerr := os.Stat(chromiumBin); err != nil || cerr != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("the attack test needs node and " + chromiumBin)
		}
		t.Skip("node or " + chromiumBin + " is missing (CI never skips this test)")
	}
	const attacker, victim = "cust-attacker", "cust-victim"
	envA, envB := newEnvironment(t, attacker), newEnvironment(t, victim)
	for _, e := range []struct{ customer, env string }{{attacker, envA}, {victim, envB}} {
		if code, b := start(t, token(e.customer), e.env, ""); code != http.StatusAccepted {
			t.Fatalf("start %s: %d %+v", e.env, code, b.Error)
		}
	}
	t.Cleanup(func() {
		stop(t, token(attacker), envA)
		stop(t, token(victim), envB)
	})
	a := makeHostile(t, attacker, envA)
	b := waitStatus(t, token(victim), envB, "running", 60*time.Second)
	jtokenB := accessToken(t, b.AccessURL)
	hostBaseB := accessBase(t, b.AccessURL)
	// The cases take longer than the stack's idle timeout.
	keepActive(t, accessBase(t, a.AccessURL), accessToken(t, a.AccessURL))
	keepActive(t, hostBaseB, jtokenB)
	st, raw := jupyter(t, http.MethodPost, hostBaseB+"api/kernels", jtokenB, map[string]string{"name": "python3"})
	var kernel struct{ ID string }
	if st != http.StatusCreated || json.Unmarshal(raw, &kernel) != nil {
		t.Fatalf("B's kernel: %d %s", st, raw)
	}

	pathBase := func(env string) string { return stack.PathProxyURL() + "/env-" + env + "/" }
	siteBase, controlBase := sameSitePair(t)
	cases := []struct {
		name, mode, access string
	}{
		{"own origins, token", "host", "token"},
		{"own origins, link", "host", "link"},
		{"same site, token", "samesite", "token"},
		{"same site, link", "samesite", "link"},
		{"same site without the proxy's checks, link", "control", "link"},
		{"one origin, token", "path", "token"},
		{"one origin, link", "path", "link"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			baseA, baseB := accessBase(t, a.AccessURL), hostBaseB
			switch tc.mode {
			case "path":
				baseA, baseB = pathBase(envA), pathBase(envB)
			case "samesite":
				baseA, baseB = siteBase(envA), siteBase(envB)
			case "control":
				baseA, baseB = controlBase(envA), controlBase(envB)
			}
			login := baseB + "?token=" + jtokenB
			if tc.access == "link" {
				login = baseB + "_access?t=" + accesslink.Sign(stack.LinkKey, envB, b.InstanceID, time.Now().Add(2*time.Minute))
			}
			tag := strconv.Itoa(i)
			attackURL := baseA + "static/ej-attack.html?" + url.Values{"b": {baseB}, "k": {kernel.ID}, "tag": {tag}}.Encode()
			before := jupyterState(t, hostBaseB, jtokenB)

			ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, node, filepath.Join("e2e", "origin-attack.mjs"))
			cmd.Dir = filepath.Join(stack.Opts.Root, "web")
			cmd.Env = append(os.Environ(), "CHROMIUM="+chromiumBin, "LOGIN_URL="+login, "VICTIM_BASE="+baseB, "ATTACK_URL="+attackURL)
			cmd.Stderr = os.Stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("web/e2e/origin-attack.mjs: %v\n%s", err, out)
			}
			var got attackOutcome
			if err := json.Unmarshal(out, &got); err != nil || !got.LoggedIn || len(got.Results) < 9 {
				t.Fatalf("origin-attack.mjs printed %s (%v)", out, err)
			}
			after := jupyterState(t, hostBaseB, jtokenB)
			changed := strings.Join(before, "\n") != strings.Join(after, "\n")
			t.Logf("attempts: %+v", got.Results)
			if tc.mode == "control" {
				// Same site, and only Jupyter's own checks: the attack works.
				if !got.Results["kernel_websocket"].OK && !changed {
					t.Errorf("without the proxy's checks the same-site attack achieved nothing (%+v): the same-site cases prove nothing", got.Results)
				}
				cleanUp(t, hostBaseB, jtokenB, before, after)
				return
			}
			if tc.mode == "host" || tc.mode == "samesite" {
				for name, r := range got.Results {
					// On one site a script can toss cookies for the parent
					// domain (what the Public Suffix List entry prevents in
					// production); they reach nothing (B must stay as it was).
					if r.OK && !(tc.mode == "samesite" && name == "toss_cookies") {
						t.Errorf("attempt %s succeeded: %s", name, r.Detail)
					}
				}
				if changed {
					t.Errorf("B's environment changed:\nbefore %v\nafter  %v", before, after)
				}
				return
			}
			// One origin: the attack works, and B shows it; only the cookies
			// the attacker's server sets stay confined by the proxy.
			if r := got.Results["server_cookies"]; r.OK {
				t.Errorf("on one origin, the attacker's server set cookies for B: %s", r.Detail)
			}
			for _, name := range []string{"fetch_contents", "fetch_kernels", "iframe_cookies", "start_kernel"} {
				if !got.Results[name].OK {
					t.Errorf("on one origin, attempt %s failed: %s (the test cannot see a working attack)", name, got.Results[name].Detail)
				}
			}
			if !changed {
				t.Errorf("on one origin, B's environment shows nothing of the attack: %v", after)
			}
			cleanUp(t, hostBaseB, jtokenB, before, after)
		})
	}
}

// sameSitePair starts two more proxies whose environments are served on
// env-<id>.jupyter.envtest.localhost: hosts that share the registrable
// domain envtest.localhost, so that the browser counts two environments as
// one site (as on a production domain missing from the Public Suffix List)
// and its SameSite rules stop nothing; only the proxy's own checks and
// Jupyter's stand. The second runs a copy of the proxy's Lua without its
// origin checks, the control that shows the attack then works. Each returns
// an environment's base URL on it.
func sameSitePair(t *testing.T) (site, control func(env string) string) {
	t.Helper()
	const domain = "jupyter.envtest.localhost"
	sitePort, controlPort := stack.Opts.ProxyPort+10, stack.Opts.ProxyPort+11
	base := func(port int) func(string) string {
		return func(env string) string {
			return fmt.Sprintf("http://env-%s.%s:%d/env-%s/", env, domain, port, env)
		}
	}
	sameSiteOnce.Do(func() {
		lua := filepath.Join(stack.Opts.WorkDir, "lua-without-origin-checks")
		src := filepath.Join(stack.Opts.Root, "infra", "proxy", "lua")
		entries, err := os.ReadDir(src)
		if err == nil {
			err = os.MkdirAll(lua, 0o755)
		}
		for _, e := range entries {
			if err != nil {
				break
			}
			var b []byte
			if b, err = os.ReadFile(filepath.Join(src, e.Name())); err == nil {
				if e.Name() == "route.lua" {
					checks := "local function cross_origin()\n"
					if !strings.Contains(string(b), checks) {
						err = fmt.Errorf("route.lua has no %q to disable", checks)
						break
					}
					b = []byte(strings.Replace(string(b), checks, checks+"    do return false end -- the control run\n", 1))
				}
				err = os.WriteFile(filepath.Join(lua, e.Name()), b, 0o644)
			}
		}
		if err == nil {
			err = stack.StartProxy("nginx-samesite", sitePort, "ENV_DOMAIN="+domain)
		}
		if err == nil {
			err = stack.StartProxy("nginx-samesite-control", controlPort, "ENV_DOMAIN="+domain, "LUA_DIR="+lua)
		}
		sameSiteErr = err
	})
	if sameSiteErr != nil {
		t.Fatalf("the same-site proxies: %v", sameSiteErr)
	}
	return base(sitePort), base(controlPort)
}

var (
	sameSiteOnce sync.Once
	sameSiteErr  error
)

// cleanUp removes the kernels, sessions and files an attack left in an
// environment, so the next case starts from the same state.
func cleanUp(t *testing.T, base, jtoken string, before, after []string) {
	t.Helper()
	had := map[string]bool{}
	for _, s := range before {
		had[s] = true
	}
	for _, s := range after {
		if had[s] {
			continue
		}
		what, id, _ := strings.Cut(s, " ")
		switch what {
		case "api/kernels", "api/sessions":
			jupyter(t, http.MethodDelete, base+what+"/"+id, jtoken, nil)
		case "file":
			jupyter(t, http.MethodDelete, base+"api/contents/"+url.PathEscape(id), jtoken, nil)
		}
	}
}

// A customer's Jupyter cannot steer the proxy: an X-Accel-Redirect it
// answers with (here to the proxy's own /healthz; in the path mode it
// could name another environment) is not followed, and its X-Accel-*
// headers do not reach the browser.
func TestBackendCannotSteerTheProxy(t *testing.T) {
	env := "e2e-accel-" + randomID()[:8]
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Accel-Redirect", "/healthz")
		w.Header().Set("X-Accel-Limit-Rate", "1")
		_, _ = io.WriteString(w, "the backend's own answer")
	}))
	t.Cleanup(srv.Close)
	rdb := redisAs(t, devstack.RedisAdmin)
	if err := rdb.Set(context.Background(), route.Key(env), strings.TrimPrefix(srv.URL, "http://"), 0).Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.Del(context.Background(), route.Key(env)) })
	for _, base := range []string{
		"http://env-" + env + ".localhost:" + strconv.Itoa(stack.Opts.ProxyPort) + "/env-" + env + "/x",
		"http://127.0.0.1:" + strconv.Itoa(stack.Opts.PathProxyPort) + "/env-" + env + "/x",
	} {
		resp, err := http.Get(base)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != "the backend's own answer" || resp.Header.Get("X-Accel-Redirect") != "" {
			t.Fatalf("%s: %d %q (X-Accel-Redirect %q); want the backend's answer, not the redirect's", base, resp.StatusCode, body, resp.Header.Get("X-Accel-Redirect"))
		}
	}
}
