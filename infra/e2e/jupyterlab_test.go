package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// widgetsExtension is the JupyterLab extension of ipywidgets (Debian's build
// of @jupyter-widgets/jupyterlab-manager, repacked as a wheel in the image).
const widgetsExtension = "@jupyter-widgets/jupyterlab-manager"

// JupyterLab 4 on jupyter-server 2 through the proxy: its page and version,
// a terminal, and XSRF protection of cookie-authenticated writes.
func TestJupyterLab(t *testing.T) {
	env, in := running(t)
	base, jtoken := accessBase(t, in.AccessURL), accessToken(t, in.AccessURL)

	st, page := jupyter(t, http.MethodGet, base+"lab", jtoken, nil)
	if st != http.StatusOK {
		t.Fatalf("GET %slab: %d", base, st)
	}
	cfg := pageConfig(t, page)
	if v, _ := cfg["appVersion"].(string); !strings.HasPrefix(v, "4.") || cfg["baseUrl"] != accessPath(base) {
		t.Fatalf("page config: appVersion %v, baseUrl %v; want JupyterLab 4 at %s", cfg["appVersion"], cfg["baseUrl"], accessPath(base))
	}

	if got := terminalRun(t, base, jtoken, "echo ok"); got != "ok" {
		t.Fatalf("the terminal printed %q, want ok", got)
	}

	// A browser is authenticated by the cookie the token URL set; its
	// writes need the _xsrf cookie's value in a header, as JupyterLab sends
	// it. (The proxy marks the cookies Secure, which Go's cookie jar keeps
	// from plain HTTP: the test carries them itself.)
	resp, err := noRedirect.Get(base + "lab?token=" + url.QueryEscape(jtoken))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	xsrf, cookies := "", []string{}
	for _, c := range resp.Cookies() {
		if c.Name == "_xsrf" {
			xsrf = c.Value
		}
		cookies = append(cookies, c.Name+"="+c.Value)
	}
	if resp.StatusCode != http.StatusOK || xsrf == "" || len(cookies) < 2 {
		t.Fatalf("the token URL: %d, cookies %d, _xsrf %q; want 200, the login and _xsrf cookies", resp.StatusCode, len(cookies), xsrf)
	}
	create := func(hdr http.Header) int {
		hdr.Set("Cookie", strings.Join(cookies, "; "))
		st, _ := jupyterWith(t, http.MethodPost, base+"api/contents", hdr, map[string]string{"type": "notebook"})
		return st
	}
	if st := create(http.Header{}); st != http.StatusForbidden {
		t.Fatalf("a cookie-authenticated POST without the XSRF header: %d, want 403", st)
	}
	if st := create(http.Header{"X-Xsrftoken": {xsrf}}); st != http.StatusCreated {
		t.Fatalf("a cookie-authenticated POST with the XSRF header: %d, want 201", st)
	}

	stop(t, token(customerA), env)
	waitStatus(t, token(customerA), env, "stopped", 30*time.Second)
}

// The plugin path installs JupyterLab extensions: ipywidgets, allowed, comes
// with its extension from the wheel directory (a package index in
// production); JupyterLab lists it and serves its code, and widgets work in
// the kernel. The same environment's start before had neither.
func TestJupyterLabExtensionPlugin(t *testing.T) {
	env, before := running(t)
	base, jtoken := accessBase(t, before.AccessURL), accessToken(t, before.AccessURL)
	if _, ok := labExtension(t, base, jtoken, widgetsExtension); ok {
		t.Fatalf("%s is installed before the plugin was asked for", widgetsExtension)
	}
	stop(t, token(customerA), env)
	waitStatus(t, token(customerA), env, "stopped", 30*time.Second)

	code, started := start(t, token(customerA), env, `{"plugins":["ipywidgets"]}`)
	if code != http.StatusAccepted {
		t.Fatalf("start with ipywidgets: %d %+v", code, started.Error)
	}
	in := waitStatus(t, token(customerA), env, "running", 120*time.Second)
	base, jtoken = accessBase(t, in.AccessURL), accessToken(t, in.AccessURL)
	ext, ok := labExtension(t, base, jtoken, widgetsExtension)
	if !ok || ext["enabled"] != true {
		t.Fatalf("JupyterLab's extensions after the plugin: %s is %v, want it installed and enabled", widgetsExtension, ext)
	}
	// The page loads the extension's code from the path its page config names.
	_, page := jupyter(t, http.MethodGet, base+"lab", jtoken, nil)
	load := ""
	if feds, _ := pageConfig(t, page)["federated_extensions"].([]any); feds != nil {
		for _, f := range feds {
			if m, _ := f.(map[string]any); m["name"] == widgetsExtension {
				load, _ = m["load"].(string)
			}
		}
	}
	if load == "" {
		t.Fatalf("the page config does not load %s", widgetsExtension)
	}
	if st, js := jupyter(t, http.MethodGet, base+"lab/extensions/"+widgetsExtension+"/"+load, jtoken, nil); st != http.StatusOK || len(js) == 0 {
		t.Fatalf("GET the extension's %s: %d (%d bytes)", load, st, len(js))
	}
	if got := runCode(t, base, jtoken, "python3", "import ipywidgets\nipywidgets.IntSlider(value=7)"); got != "IntSlider(value=7)" {
		t.Fatalf("a slider in the kernel: %q", got)
	}
	stop(t, token(customerA), env)
	waitStatus(t, token(customerA), env, "stopped", 30*time.Second)
}

var pageConfigPattern = regexp.MustCompile(`(?s)<script id="jupyter-config-data" type="application/json">(.*?)</script>`)

// pageConfig reads the configuration JupyterLab writes into its page.
func pageConfig(t *testing.T, page []byte) map[string]any {
	t.Helper()
	m := pageConfigPattern.FindSubmatch(page)
	if m == nil {
		t.Fatalf("no jupyter-config-data in the page: %.300s", page)
	}
	var cfg map[string]any
	if err := json.Unmarshal(m[1], &cfg); err != nil {
		t.Fatalf("the page config is not JSON: %v", err)
	}
	return cfg
}

// labExtension returns what JupyterLab's extension manager says of an
// installed extension, and whether it is installed.
func labExtension(t *testing.T, base, jtoken, name string) (map[string]any, bool) {
	t.Helper()
	st, raw := jupyter(t, http.MethodGet, base+"lab/api/extensions", jtoken, nil)
	if st != http.StatusOK {
		t.Fatalf("GET %slab/api/extensions: %d %s", base, st, raw)
	}
	var list []map[string]any
	if err := json.Unmarshal(raw, &list); err != nil {
		t.Fatalf("lab/api/extensions: %v: %.300s", err, raw)
	}
	// The PyPI manager lists names as PyPI spells them (@a/b as a-b).
	listed := strings.NewReplacer("@", "", "/", "-").Replace(name)
	for _, e := range list {
		if (e["name"] == name || e["name"] == listed) && e["installed"] == true {
			return e, true
		}
	}
	return nil, false
}

// terminalRun opens a terminal through the proxy, runs one command line in
// it and returns the line the command printed.
func terminalRun(t *testing.T, base, jtoken, command string) string {
	t.Helper()
	st, raw := jupyter(t, http.MethodPost, base+"api/terminals", jtoken, nil)
	if st != http.StatusOK {
		t.Fatalf("creating a terminal: %d %s", st, raw)
	}
	var term struct{ Name string }
	_ = json.Unmarshal(raw, &term)
	defer jupyter(t, http.MethodDelete, base+"api/terminals/"+term.Name, jtoken, nil)

	wsURL := "ws" + strings.TrimPrefix(base, "http") + "terminals/websocket/" + term.Name
	conn, _, err := websocket.DefaultDialer.Dial(wsURL, tokenHeader(jtoken))
	if err != nil {
		t.Fatalf("the terminal's WebSocket: %v", err)
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	var out strings.Builder
	read := func() {
		for {
			var msg []any
			if err := conn.ReadJSON(&msg); err != nil {
				t.Fatalf("reading the terminal: %v (so far %q)", err, out.String())
			}
			if len(msg) == 2 && msg[0] == "stdout" {
				s, _ := msg[1].(string)
				out.WriteString(s)
				return
			}
		}
	}
	read() // the prompt: typed before it, the line would be echoed out of order
	// The marker tells the command's output from the shell echoing the line.
	const marker = "::envjupyter::"
	if err := conn.WriteJSON([]string{"stdin", fmt.Sprintf("%s; echo %s\r", command, marker)}); err != nil {
		t.Fatal(err)
	}
	for {
		read()
		lines := strings.Split(strings.ReplaceAll(out.String(), "\r", ""), "\n")
		for i, l := range lines {
			if l == marker && i > 0 {
				return lines[i-1]
			}
		}
	}
}
