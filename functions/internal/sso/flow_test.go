package sso

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/envjupyter/envjupyter/shared/accesslink"
	"github.com/envjupyter/envjupyter/shared/instance"
)

// recording is an Opener that remembers what it was asked.
type recording struct {
	owners
	asked []string // "customer env" per Status call
	links []string // environments an access link was made for
}

func (o *recording) Status(ctx context.Context, customer, env string) (instance.Instance, bool, error) {
	o.asked = append(o.asked, customer+" "+env)
	return o.owners.Status(ctx, customer, env)
}

func (o *recording) AccessLink(in instance.Instance) string {
	o.links = append(o.links, in.EnvironmentID)
	return o.owners.AccessLink(in)
}

func (p *fakeProvider) tokenCalls() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.calls
}

func serve(h *Handler, r *http.Request) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	return rec
}

// withCookies is the callback r with its flow cookie replaced by values (none
// for no cookie), in this order.
func withCookies(r *http.Request, values ...string) *http.Request {
	out := httptest.NewRequest(http.MethodGet, r.URL.String(), nil)
	for _, v := range values {
		out.AddCookie(&http.Cookie{Name: flowCookie, Value: v})
	}
	return out
}

func flowCookieIn(t *testing.T, r *http.Request) string {
	t.Helper()
	c, err := r.Cookie(flowCookie)
	if err != nil {
		t.Fatal(err)
	}
	return c.Value
}

func heapInUse() int64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}

// Issue 23: anonymous GET /sso/start requests cost the service nothing
// that stays. Twice the 10 000 sign-ins the in-memory version held (it
// answered 503 sso_busy to everyone after that, for 10 minutes) all get
// their redirect, the heap does not grow with them, and sign-ins started
// before and after the flood both finish.
func TestStartFloodHoldsNoState(t *testing.T) {
	s := newSigner(t)
	p := newFakeProvider(t, s)
	open := &recording{owners: owners{"abc": "cust-a"}}
	h := newHandler(t, s.key, p.server.URL, open)
	before := p.authorize(h, "abc", "cust-a", nil)

	start := func(i int) {
		rec := serve(h, httptest.NewRequest(http.MethodGet, "/sso/start?env=flood", nil))
		if rec.Code != http.StatusFound {
			t.Fatalf("anonymous start %d: %d %s, want 302", i, rec.Code, rec.Header().Get("X-Envjupyter-Error"))
		}
	}
	for i := range 200 { // first-use allocations (cipher, pools) are not per request
		start(i)
	}
	heap := heapInUse()
	const flood = 20000
	for i := range flood {
		start(i)
	}
	grown := heapInUse() - heap
	runtime.KeepAlive(h)
	// The in-memory version kept about 300 bytes a sign-in (6 MB here);
	// a 64-byte residue per request would already be 1.2 MB.
	t.Logf("heap after %d starts: %+d bytes", flood, grown)
	if grown > 1<<20 {
		t.Fatalf("the heap grew by %d bytes over %d anonymous starts: the service keeps state per request", grown, flood)
	}

	for name, r := range map[string]*http.Request{"started after the flood": p.authorize(h, "abc", "cust-a", nil), "started before it": before} {
		if rec := serve(h, r); rec.Code != http.StatusFound || rec.Header().Get("Location") != "https://env-abc.test/_access?t=x" {
			t.Fatalf("sign-in %s: %d %s, want the access link", name, rec.Code, rec.Header().Get("X-Envjupyter-Error"))
		}
	}
}

// A callback whose flow cookie is missing, tampered, not sealed by this
// service, expired, or of another state is refused with 400 and its own
// code, and changes nothing: no call to the provider or the control plane,
// no cookie set, and the browser's real sign-in still finishes afterwards,
// once.
func TestCallbackRefusesBadFlowCookies(t *testing.T) {
	s := newSigner(t)
	p := newFakeProvider(t, s)
	open := &recording{owners: owners{"abc": "cust-a"}}
	h := newHandler(t, s.key, p.server.URL, open)
	good := p.authorize(h, "abc", "cust-a", nil)
	cookie := flowCookieIn(t, good)
	state := good.URL.Query().Get("state")
	real, err := h.seal.open(cookie)
	if err != nil {
		t.Fatal(err)
	}

	// Sealed by another deployment: the same key id over another secret.
	other, _ := accesslink.ParseKeys("k1:" + base64.StdEncoding.EncodeToString([]byte(strings.Repeat("x", 32))))
	foreign, _ := newSealer(other)
	// Sealed by this service, but living longer than a flow may (a clock
	// that ran ahead).
	tooLong := real
	tooLong.Expires = time.Now().Add(time.Hour).Unix()
	// The flow's bytes, unsealed, in the cookie's format.
	plain, _ := json.Marshal(real)
	version, rest, _ := strings.Cut(cookie, ".")
	kid, body, _ := strings.Cut(rest, ".")
	flip := []byte(body)
	flip[len(flip)/2] ^= 'A' ^ 'B' // one ciphertext byte
	if flip[len(flip)/2] == body[len(body)/2] {
		t.Fatal("no change")
	}
	otherState := good.URL.Query()
	otherState.Set("state", random())
	noState := good.URL.Query()
	noState.Del("state")
	at := func(q url.Values) *http.Request {
		r := httptest.NewRequest(http.MethodGet, CallbackPath+"?"+q.Encode(), nil)
		r.AddCookie(&http.Cookie{Name: flowCookie, Value: cookie})
		return r
	}
	oldStyle := withCookies(good)
	oldStyle.AddCookie(&http.Cookie{Name: "__Host-ejsso", Value: state}) // what the in-memory version used

	for _, tt := range []struct {
		name string
		r    *http.Request
		at   time.Duration // after the start
		code string
	}{
		{"no cookie", withCookies(good), 0, "sso_state_mismatch"},
		{"the old state cookie only", oldStyle, 0, "sso_state_mismatch"},
		{"another state than the cookie's", at(otherState), 0, "sso_state_mismatch"},
		{"no state", at(noState), 0, "sso_state_mismatch"},
		{"a ciphertext byte changed", withCookies(good, version+"."+kid+"."+string(flip)), 0, "sso_state_invalid"},
		{"truncated", withCookies(good, cookie[:len(cookie)-3]), 0, "sso_state_invalid"},
		{"moved under the other key id", withCookies(good, version+".k0."+body), 0, "sso_state_invalid"},
		{"unknown key id", withCookies(good, version+".k9."+body), 0, "sso_state_invalid"},
		{"another format version", withCookies(good, "f2."+kid+"."+body), 0, "sso_state_invalid"},
		{"sealed by another deployment", withCookies(good, foreign.seal(real)), 0, "sso_state_invalid"},
		{"unsealed flow", withCookies(good, version+"."+kid+"."+base64.RawURLEncoding.EncodeToString(plain)), 0, "sso_state_invalid"},
		{"the bare state, as the old cookie held", withCookies(good, state), 0, "sso_state_invalid"},
		{"oversized", withCookies(good, cookie+strings.Repeat("A", maxSealed)), 0, "sso_state_invalid"},
		{"expired", good, flowTTL, "sso_state_expired"},
		{"expired long ago", good, 24 * time.Hour, "sso_state_expired"},
		{"expiry further ahead than a flow lives", withCookies(good, h.seal.seal(tooLong)), 0, "sso_state_expired"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h.now = func() time.Time { return time.Now().Add(tt.at) }
			defer func() { h.now = time.Now }()
			rec := serve(h, tt.r)
			if rec.Code != http.StatusBadRequest || rec.Header().Get("X-Envjupyter-Error") != tt.code {
				t.Errorf("%d %s, want 400 %s", rec.Code, rec.Header().Get("X-Envjupyter-Error"), tt.code)
			}
			if !strings.Contains(rec.Body.String(), "Open JupyterLab again") {
				t.Errorf("page %q does not say what to do", rec.Body.String())
			}
			if sc := rec.Header().Values("Set-Cookie"); len(sc) != 0 {
				t.Errorf("a refused callback set cookies %q", sc)
			}
		})
	}
	if n := p.tokenCalls(); n != 0 || len(open.asked) != 0 || len(open.links) != 0 {
		t.Fatalf("refused callbacks reached the provider %d times, asked %v, links %v", n, open.asked, open.links)
	}

	// One second before the expiry the same sign-in still finishes: the
	// refusals above did not use it up.
	h.now = func() time.Time { return time.Now().Add(flowTTL - 2*time.Second) }
	rec := serve(h, good)
	h.now = time.Now
	if rec.Code != http.StatusFound || rec.Header().Get("Location") != "https://env-abc.test/_access?t=x" {
		t.Fatalf("the real sign-in: %d %s", rec.Code, rec.Header().Get("X-Envjupyter-Error"))
	}
	cleared := rec.Result().Cookies()
	if len(cleared) != 1 || cleared[0].Name != flowCookie || cleared[0].MaxAge >= 0 || cleared[0].Path != CallbackPath || !cleared[0].Secure {
		t.Fatalf("the finished sign-in's cookie is not cleared: %+v", cleared)
	}
	// The same callback again, with a copy of the cookie: the provider has
	// redeemed the code, so no second access link is made.
	if rec := serve(h, good); rec.Code != http.StatusUnauthorized || rec.Header().Get("X-Envjupyter-Error") != "sso_code_refused" {
		t.Fatalf("replayed callback: %d %s, want 401 sso_code_refused", rec.Code, rec.Header().Get("X-Envjupyter-Error"))
	}
	if len(open.links) != 1 {
		t.Fatalf("access links made: %v, want one", open.links)
	}
}

// A flow cookie opens the environment it was started for and no other:
// the callback takes the environment from the sealed flow only, a callback
// of another environment's sign-in does not match the cookie, and a user
// who owns another environment is still asked about this one.
func TestFlowIsBoundToItsEnvironment(t *testing.T) {
	s := newSigner(t)
	p := newFakeProvider(t, s)
	open := &recording{owners: owners{"abc": "cust-a", "xyz": "cust-b"}}
	h := newHandler(t, s.key, p.server.URL, open)

	// abc's cookie with the state and code of a sign-in for xyz.
	forXYZ := p.authorize(h, "xyz", "cust-b", nil)
	forABC := p.authorize(h, "abc", "cust-a", nil)
	if rec := serve(h, withCookies(forXYZ, flowCookieIn(t, forABC))); rec.Code != http.StatusBadRequest || rec.Header().Get("X-Envjupyter-Error") != "sso_state_mismatch" {
		t.Errorf("abc's cookie finishing xyz's sign-in: %d %s, want 400 sso_state_mismatch", rec.Code, rec.Header().Get("X-Envjupyter-Error"))
	}
	if len(open.asked) != 0 || p.tokenCalls() != 0 {
		t.Fatalf("the mismatched callback went on: asked %v, %d token calls", open.asked, p.tokenCalls())
	}

	// xyz's owner signs in with abc's flow: asked about abc, refused.
	bob := p.authorize(h, "abc", "cust-b", nil)
	if rec := serve(h, bob); rec.Code != http.StatusForbidden || rec.Header().Get("X-Envjupyter-Error") != "sso_not_yours" {
		t.Errorf("cust-b with abc's flow: %d %s, want 403 sso_not_yours", rec.Code, rec.Header().Get("X-Envjupyter-Error"))
	}

	// An env in the callback's URL names nothing: abc's flow opens abc.
	q := forABC.URL.Query()
	q.Set("env", "xyz")
	r := httptest.NewRequest(http.MethodGet, CallbackPath+"?"+q.Encode(), nil)
	r.AddCookie(&http.Cookie{Name: flowCookie, Value: flowCookieIn(t, forABC)})
	if rec := serve(h, r); rec.Code != http.StatusFound || rec.Header().Get("Location") != "https://env-abc.test/_access?t=x" {
		t.Errorf("abc's flow with env=xyz in the URL: %d %q, want abc's link", rec.Code, rec.Header().Get("Location"))
	}
	if got := strings.Join(open.asked, ", "); got != "cust-b abc, cust-a abc" || strings.Join(open.links, ",") != "abc" {
		t.Fatalf("asked %q, links %v: want only abc", got, open.links)
	}
}

// A flow cookie tossed into the browser from a sibling host (the attacker's
// own start) neither hides the browser's own sign-in nor replaces it.
func TestTossedFlowCookie(t *testing.T) {
	s := newSigner(t)
	p := newFakeProvider(t, s)
	open := &recording{owners: owners{"abc": "cust-a", "xyz": "cust-b"}}
	h := newHandler(t, s.key, p.server.URL, open)
	attacker := flowCookieIn(t, p.authorize(h, "xyz", "cust-b", nil))
	victim := p.authorize(h, "abc", "cust-a", nil)
	if rec := serve(h, withCookies(victim, attacker, "garbage", flowCookieIn(t, victim))); rec.Code != http.StatusFound || rec.Header().Get("Location") != "https://env-abc.test/_access?t=x" {
		t.Fatalf("the victim's sign-in next to a tossed cookie: %d %s", rec.Code, rec.Header().Get("X-Envjupyter-Error"))
	}
	if strings.Join(open.asked, ",") != "cust-a abc" {
		t.Fatalf("asked %v", open.asked)
	}
}

// Without link keys there is nothing to seal sign-ins with (nor to sign
// the access links): the service does not start.
func TestNeedsLinkKeys(t *testing.T) {
	c := testConfig(t)
	c.Keys = nil
	if _, err := NewWith(c, oauth2.Endpoint{}, nil, nil, nil); err == nil || !strings.Contains(err.Error(), "link keys") {
		t.Fatalf("NewWith without link keys: %v", err)
	}
	if _, err := New(context.Background(), c, nil, nil); err == nil || !strings.Contains(err.Error(), "link keys") {
		t.Fatalf("New without link keys: %v (and it must not have called the issuer)", err)
	}
}
