package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/envjupyter/envjupyter/infra/kernel"
)

// instanceBody is the API's view of an instance (and of errors).
type instanceBody struct {
	InstanceID    string `json:"instance_id"`
	EnvironmentID string `json:"environment_id"`
	Status        string `json:"status"`
	StatusReason  string `json:"status_reason"`
	Stage         string `json:"stage"`
	AccessURL     string `json:"access_url"`
	AccessLink    string `json:"access_link"`
	StartedAt     string `json:"started_at"`
	StoppedAt     string `json:"stopped_at"`
	Error         *struct {
		Code    string   `json:"code"`
		Message string   `json:"message"`
		Allowed []string `json:"allowed"`
	} `json:"error"`
}

// api calls the HTTP API through the proxy, as a customer would.
func api(t *testing.T, method, path, token, body string) (int, instanceBody) {
	t.Helper()
	return apiWith(t, method, path, token, body, http.Header{})
}

// apiWith is api with more request headers.
func apiWith(t *testing.T, method, path, token, body string, hdr http.Header) (int, instanceBody) {
	t.Helper()
	req, err := http.NewRequest(method, stack.ProxyURL()+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header = hdr
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var b instanceBody
	if err := json.Unmarshal(raw, &b); err != nil {
		t.Fatalf("%s %s: %d, body is not JSON: %q", method, path, resp.StatusCode, raw)
	}
	return resp.StatusCode, b
}

func start(t *testing.T, token, env, body string) (int, instanceBody) {
	return api(t, http.MethodPost, "/api/environments/"+env+"/jupyter/start", token, body)
}

func stop(t *testing.T, token, env string) (int, instanceBody) {
	return api(t, http.MethodPost, "/api/environments/"+env+"/jupyter/stop", token, "")
}

func status(t *testing.T, token, env string) (int, instanceBody) {
	return api(t, http.MethodGet, "/api/environments/"+env+"/jupyter", token, "")
}

// waitStatus polls until the environment's instance reaches want.
func waitStatus(t *testing.T, token, env, want string, timeout time.Duration) instanceBody {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last instanceBody
	for time.Now().Before(deadline) {
		code, b := status(t, token, env)
		if code != http.StatusOK {
			t.Fatalf("status of %s: %d %+v", env, code, b.Error)
		}
		last = b
		if b.Status == want {
			return b
		}
		if want != "failed" && b.Status == "failed" {
			t.Fatalf("instance of %s failed: %s", env, b.StatusReason)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("instance of %s is %q (stage %q, reason %q) after %s, want %q", env, last.Status, last.Stage, last.StatusReason, timeout, want)
	return last
}

var envSeq atomic.Int64

// newEnvironment creates a running environment of its own for a test, from
// the default image (JupyterLab).
func newEnvironment(t *testing.T, customer string) string {
	t.Helper()
	return newEnvironmentFrom(t, customer, labImage)
}

// newEnvironmentFrom creates a running environment of the given image.
func newEnvironmentFrom(t *testing.T, customer string, img envImage) string {
	t.Helper()
	id := "e2e-" + strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-"))
	id = strings.ReplaceAll(id, "_", "-")
	if len(id) > 40 {
		id = id[:40]
	}
	id += fmt.Sprintf("-%d", envSeq.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := stack.CreateEnvironmentFrom(ctx, id, customer, img.ref); err != nil {
		t.Fatal(err)
	}
	return id
}

func token(customer string) string { return stack.Token(customer, time.Hour) }

// accessToken extracts the Jupyter token from an access URL.
func accessToken(t *testing.T, accessURL string) string {
	t.Helper()
	u, err := url.Parse(accessURL)
	if err != nil || u.Query().Get("token") == "" {
		t.Fatalf("access URL %q has no token", accessURL)
	}
	return u.Query().Get("token")
}

// accessBase is an access URL without its query: the environment's origin
// and its path /env-<id>/.
func accessBase(t *testing.T, accessURL string) string {
	t.Helper()
	u, err := url.Parse(accessURL)
	if err != nil {
		t.Fatal(err)
	}
	u.RawQuery = ""
	return u.String()
}

// accessPath is the path of a URL: /env-<id>/ of an access URL.
func accessPath(u string) string {
	parsed, _ := url.Parse(u)
	return parsed.Path
}

// jupyter calls Jupyter's REST API through the proxy with a token.
func jupyter(t *testing.T, method, path, jtoken string, body any) (int, []byte) {
	t.Helper()
	return jupyterWith(t, method, path, tokenHeader(jtoken), body)
}

func tokenHeader(jtoken string) http.Header {
	if jtoken == "" {
		return http.Header{}
	}
	return http.Header{"Authorization": {"token " + jtoken}}
}

// jupyterWith calls Jupyter's REST API through the proxy with the given
// headers (a token, or a session cookie); u is a URL (accessBase and a path).
func jupyterWith(t *testing.T, method, u string, hdr http.Header, body any) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, raw
}

// runCode starts a kernel of the given spec through the proxy and runs code
// in it over the proxied WebSocket; it returns the text/plain result.
func runCode(t *testing.T, base, jtoken, kernelSpec, code string) string {
	t.Helper()
	return runCodeWith(t, base, tokenHeader(jtoken), kernelSpec, code)
}

// runCodeWith is runCode authenticated by the given headers.
func runCodeWith(t *testing.T, base string, hdr http.Header, kernelSpec, code string) string {
	t.Helper()
	id, conn := openKernel(t, base, hdr, kernelSpec)
	defer jupyterWith(t, http.MethodDelete, base+"api/kernels/"+id, hdr, nil)
	defer conn.Close()
	got, err := kernel.New(conn).Execute(code, 60*time.Second)
	if err != nil {
		t.Fatalf("%s kernel: %v", kernelSpec, err)
	}
	return got
}

// openKernel starts a kernel of the given spec through the proxy and opens
// its channels WebSocket; it returns the kernel's id and the socket.
func openKernel(t *testing.T, base string, hdr http.Header, kernelSpec string) (string, *websocket.Conn) {
	t.Helper()
	st, raw := jupyterWith(t, http.MethodPost, base+"api/kernels", hdr, map[string]string{"name": kernelSpec})
	var created struct{ ID string }
	if st != http.StatusCreated || json.Unmarshal(raw, &created) != nil {
		t.Fatalf("creating a %s kernel: %d %s", kernelSpec, st, raw)
	}
	conn, resp, err := websocket.DefaultDialer.Dial(kernelSocketURL(base, created.ID), hdr)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("websocket to the %s kernel: %v (HTTP %d)", kernelSpec, err, status)
	}
	return created.ID, conn
}

// kernelSocketURL is the channels WebSocket of a kernel behind base.
func kernelSocketURL(base, kernelID string) string {
	return "ws" + strings.TrimPrefix(base, "http") + "api/kernels/" + kernelID + "/channels"
}

func randomID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// keepActive makes an authenticated Jupyter API call every few seconds
// until the test ends, so that the test stack's short idle timeout does
// not cull an instance a long test still uses without a kernel of its own.
func keepActive(t *testing.T, base, jtoken string) {
	t.Helper()
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		tick := time.NewTicker(3 * time.Second)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			req, err := http.NewRequest(http.MethodGet, base+"api/contents", nil)
			if err != nil {
				return
			}
			req.Header = tokenHeader(jtoken)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if resp, err := http.DefaultClient.Do(req.WithContext(ctx)); err == nil {
				resp.Body.Close()
			}
			cancel()
		}
	}()
	t.Cleanup(func() { close(done); <-stopped })
}
