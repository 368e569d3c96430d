package sso

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/go-jose/go-jose/v4"
	"golang.org/x/oauth2"

	"github.com/envjupyter/envjupyter/functions/internal/control"
	"github.com/envjupyter/envjupyter/shared/accesslink"
	"github.com/envjupyter/envjupyter/shared/instance"
)

const issuer = "https://issuer.test"

type signer struct{ key *rsa.PrivateKey }

func newSigner(t *testing.T) signer {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return signer{k}
}

func (s signer) sign(t *testing.T, claims map[string]any) string {
	t.Helper()
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: s.key}, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(claims)
	obj, err := sig.Sign(body)
	if err != nil {
		t.Fatal(err)
	}
	out, err := obj.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// linkKeys are the deployment's link keys in the tests: k1 signs, k0 is
// the previous key of a rotation.
func linkKeys(t *testing.T) []accesslink.Key {
	t.Helper()
	k, err := accesslink.ParseKeys("k1:" + base64.StdEncoding.EncodeToString([]byte(strings.Repeat("1", 32))) +
		",k0:" + base64.StdEncoding.EncodeToString([]byte(strings.Repeat("0", 32))))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func testConfig(t *testing.T) Config {
	return Config{Issuer: issuer, ClientID: "envjupyter", CustomerClaim: "org", CallbackURL: "https://console.test/sso/callback", Keys: linkKeys(t)}
}

func newHandler(t *testing.T, key *rsa.PrivateKey, tokenURL string, open Opener) *Handler {
	t.Helper()
	v := oidc.NewVerifier(issuer, &oidc.StaticKeySet{PublicKeys: []crypto.PublicKey{&key.PublicKey}}, &oidc.Config{ClientID: "envjupyter"})
	h, err := NewWith(testConfig(t), oauth2.Endpoint{AuthURL: issuer + "/auth", TokenURL: tokenURL, AuthStyle: oauth2.AuthStyleInParams},
		v, open, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func handlerFor(t *testing.T, key *rsa.PrivateKey, open Opener) *Handler {
	return newHandler(t, key, issuer+"/token", open)
}

func valid() map[string]any {
	return map[string]any{"iss": issuer, "aud": "envjupyter", "sub": "alice", "org": "cust-a", "nonce": "n1",
		"iat": time.Now().Unix(), "exp": time.Now().Add(5 * time.Minute).Unix()}
}

// The ID token is verified: signature, issuer, audience, expiry, nonce,
// and it must carry the customer claim.
func TestVerifyIDToken(t *testing.T) {
	s, other := newSigner(t), newSigner(t)
	h := handlerFor(t, s.key, nil)
	with := func(k string, v any) map[string]any {
		c := valid()
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
		return c
	}
	good := s.sign(t, valid())
	parts := strings.Split(good, ".")
	// The same signature over a payload naming another customer.
	payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(strings.Replace(string(payload), "cust-a", "cust-b", 1))) + "." + parts[2]
	for _, tt := range []struct {
		name, token, nonce, want string
	}{
		{"valid", good, "n1", ""},
		{"expired", s.sign(t, with("exp", time.Now().Add(-time.Minute).Unix())), "n1", "invalid_id_token"},
		{"tampered payload", tampered, "n1", "invalid_id_token"},
		{"another key", other.sign(t, valid()), "n1", "invalid_id_token"},
		{"wrong audience", s.sign(t, with("aud", "someone-else")), "n1", "invalid_id_token"},
		{"wrong issuer", s.sign(t, with("iss", "https://evil.test")), "n1", "invalid_id_token"},
		{"wrong nonce", good, "n2", "nonce_mismatch"},
		{"no customer claim", s.sign(t, with("org", nil)), "n1", "no_customer"},
		{"customer claim not a string", s.sign(t, with("org", 7)), "n1", "no_customer"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			customer, why := h.verify(context.Background(), tt.token, tt.nonce)
			if why != tt.want || (why == "" && customer != "cust-a") {
				t.Fatalf("verify = %q, %q; want refusal %q", customer, why, tt.want)
			}
		})
	}
}

type unusedOpener struct{ t *testing.T }

func (o unusedOpener) Status(context.Context, string, string) (instance.Instance, bool, error) {
	o.t.Error("Status called")
	return instance.Instance{}, false, nil
}
func (o unusedOpener) AccessLink(instance.Instance) string { o.t.Error("AccessLink called"); return "" }

// start sends the browser to the provider with PKCE (S256), a nonce and a
// state that is also, sealed, in a __Secure- cookie sent only to the
// callback; a callback whose state is not this browser's is refused before
// any call to the provider.
func TestStartAndStateChecks(t *testing.T) {
	s := newSigner(t)
	h := handlerFor(t, s.key, unusedOpener{t})
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/sso/start?env=abc", nil))
	if rec.Code != http.StatusFound {
		t.Fatalf("start: %d", rec.Code)
	}
	loc := rec.Header().Get("Location")
	for _, want := range []string{issuer + "/auth?", "code_challenge_method=S256", "code_challenge=", "nonce=", "state=", "scope=openid"} {
		if !strings.Contains(loc, want) {
			t.Errorf("authorization URL %q lacks %q", loc, want)
		}
	}
	cookies := rec.Result().Cookies()
	if len(cookies) != 1 {
		t.Fatalf("cookies %+v", cookies)
	}
	c := cookies[0]
	if c.Name != "__Secure-ejsso" || !c.Secure || !c.HttpOnly || c.SameSite != http.SameSiteLaxMode ||
		c.Path != "/sso/callback" || c.Domain != "" || c.MaxAge != 600 {
		t.Fatalf("flow cookie %+v: want __Secure-, Secure, HttpOnly, SameSite=Lax, Path=/sso/callback, no Domain, Max-Age=600", c)
	}
	auth, _ := url.Parse(loc)
	state := auth.Query().Get("state")
	f, err := h.seal.open(c.Value)
	if err != nil || f.State != state || f.Nonce != auth.Query().Get("nonce") || f.Env != "abc" {
		t.Fatalf("the cookie does not hold the sign-in sent: %+v, %v", f, err)
	}
	// Sealed, not only signed: the browser does not see the PKCE verifier
	// (nor the state or nonce) in it.
	for _, secret := range []string{f.Verifier, f.State, f.Nonce} {
		if strings.Contains(c.Value, secret) {
			t.Errorf("the cookie shows %q", secret)
		}
	}
	callback := func(cookie, state string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodGet, "/sso/callback?code=c1&state="+state, nil)
		if cookie != "" {
			r.AddCookie(&http.Cookie{Name: "__Secure-ejsso", Value: cookie})
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		return rec
	}
	for _, tt := range []struct{ name, cookie, state, code string }{
		{"no cookie", "", state, "sso_state_mismatch"},
		{"other state", c.Value, "other", "sso_state_mismatch"},
		{"both forged", "forged", "forged", "sso_state_invalid"},
	} {
		rec := callback(tt.cookie, tt.state)
		if rec.Code != http.StatusBadRequest || rec.Header().Get("X-Envjupyter-Error") != tt.code {
			body, _ := io.ReadAll(rec.Body)
			t.Errorf("%s: %d %s %s; want 400 %s", tt.name, rec.Code, rec.Header().Get("X-Envjupyter-Error"), body, tt.code)
		}
	}
	for _, bad := range []string{"/sso/start", "/sso/start?env=-x", "/sso/start?env=a/b"} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, bad, nil))
		if rec.Code != http.StatusBadRequest {
			t.Errorf("%s: %d, want 400", bad, rec.Code)
		}
	}
}

// fakeProvider is a token endpoint: it redeems each code once, checks the
// PKCE verifier against the challenge the authorization URL carried, and
// returns an ID token for the code's user.
type fakeProvider struct {
	t      *testing.T
	s      signer
	mu     sync.Mutex                // the endpoint runs in the server's goroutine
	codes  map[string]map[string]any // code -> the ID token's claims
	chall  map[string]string         // code -> code_challenge
	calls  int                       // token requests
	server *httptest.Server
}

func newFakeProvider(t *testing.T, s signer) *fakeProvider {
	p := &fakeProvider{t: t, s: s, codes: map[string]map[string]any{}, chall: map[string]string{}}
	p.server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		code := r.PostForm.Get("code")
		p.mu.Lock()
		defer p.mu.Unlock()
		p.calls++
		claims, ok := p.codes[code]
		sum := sha256.Sum256([]byte(r.PostForm.Get("code_verifier")))
		if !ok || base64.RawURLEncoding.EncodeToString(sum[:]) != p.chall[code] {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			_, _ = io.WriteString(w, `{"error":"invalid_grant"}`)
			return
		}
		delete(p.codes, code)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"access_token": "at", "token_type": "Bearer", "id_token": p.s.sign(t, claims)})
	}))
	t.Cleanup(p.server.Close)
	return p
}

// authorize plays the provider's login for user of customer: it returns the
// callback request the browser would make, with the start's state cookie.
func (p *fakeProvider) authorize(h *Handler, env, customer string, tweak func(map[string]any)) *http.Request {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/sso/start?env="+env, nil))
	auth, _ := url.Parse(rec.Header().Get("Location"))
	q := auth.Query()
	code := random()
	claims := valid()
	claims["org"], claims["nonce"] = customer, q.Get("nonce")
	if tweak != nil {
		tweak(claims)
	}
	p.mu.Lock()
	p.codes[code], p.chall[code] = claims, q.Get("code_challenge")
	p.mu.Unlock()
	r := httptest.NewRequest(http.MethodGet, "/sso/callback?"+url.Values{"code": {code}, "state": {q.Get("state")}}.Encode(), nil)
	r.AddCookie(rec.Result().Cookies()[0])
	return r
}

type owners map[string]string // environment -> customer

func (o owners) Status(_ context.Context, customer, env string) (instance.Instance, bool, error) {
	if o[env] != customer {
		return instance.Instance{}, false, control.ErrNotFound
	}
	return instance.Instance{EnvironmentID: env, ID: "i1", Status: instance.Running}, true, nil
}
func (o owners) AccessLink(in instance.Instance) string {
	return "https://env-" + in.EnvironmentID + ".test/_access?t=x"
}

// The whole callback: the owner's user gets the access link; another
// customer's user 403; a code used twice, an ID token with another nonce or
// for another audience are refused.
func TestCallback(t *testing.T) {
	s := newSigner(t)
	p := newFakeProvider(t, s)
	h := newHandler(t, s.key, p.server.URL, owners{"abc": "cust-a"})
	serve := func(r *http.Request) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		return rec
	}
	ok := p.authorize(h, "abc", "cust-a", nil)
	if rec := serve(ok); rec.Code != http.StatusFound || rec.Header().Get("Location") != "https://env-abc.test/_access?t=x" {
		t.Fatalf("the owner's user: %d %q", rec.Code, rec.Header().Get("Location"))
	}
	// The same code again, behind a fresh start of the same browser.
	again := p.authorize(h, "abc", "cust-a", nil)
	q := again.URL.Query()
	q.Set("code", ok.URL.Query().Get("code"))
	again.URL.RawQuery = q.Encode()
	for _, tt := range []struct {
		name string
		r    *http.Request
		want int
		code string
	}{
		{"another customer's user", p.authorize(h, "abc", "cust-b", nil), http.StatusForbidden, "sso_not_yours"},
		{"replayed code", again, http.StatusUnauthorized, "sso_code_refused"},
		{"another nonce", p.authorize(h, "abc", "cust-a", func(c map[string]any) { c["nonce"] = "old" }), http.StatusUnauthorized, "sso_nonce_mismatch"},
		{"another audience", p.authorize(h, "abc", "cust-a", func(c map[string]any) { c["aud"] = "other-app" }), http.StatusUnauthorized, "sso_invalid_id_token"},
		{"expired", p.authorize(h, "abc", "cust-a", func(c map[string]any) { c["exp"] = time.Now().Add(-time.Minute).Unix() }), http.StatusUnauthorized, "sso_invalid_id_token"},
	} {
		if rec := serve(tt.r); rec.Code != tt.want || rec.Header().Get("X-Envjupyter-Error") != tt.code {
			t.Errorf("%s: %d %s, want %d %s", tt.name, rec.Code, rec.Header().Get("X-Envjupyter-Error"), tt.want, tt.code)
		}
	}
}
