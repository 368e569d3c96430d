package devstack

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

const (
	testAudience = "envjupyter"
	testAPIHost  = "abc123.execute-api.localhost"
)

// issuerServer serves an issuer's Handler at the issuer's own URL and counts
// key set fetches. serve swaps the handler (key rotation).
type issuerServer struct {
	srv       *httptest.Server
	handler   atomic.Pointer[http.Handler]
	jwksFetch atomic.Int32
}

func startIssuer(t *testing.T) (*issuerServer, *TokenIssuer) {
	t.Helper()
	s := &issuerServer{srv: httptest.NewUnstartedServer(nil)}
	iss, err := NewIssuer("http://"+s.srv.Listener.Addr().String(), testAudience)
	if err != nil {
		t.Fatal(err)
	}
	s.serve(iss.Handler())
	s.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == JWKSPath {
			s.jwksFetch.Add(1)
		}
		(*s.handler.Load()).ServeHTTP(w, r)
	})
	s.srv.Start()
	t.Cleanup(s.srv.Close)
	return s, iss
}

func (s *issuerServer) serve(h http.Handler) { s.handler.Store(&h) }

// upstream stands in for kumo: it records what reaches it.
type upstream struct {
	srv  *httptest.Server
	mu   sync.Mutex
	reqs []seenRequest
}

type seenRequest struct {
	method, uri, host, auth, xff, body string
}

func startUpstream(t *testing.T) *upstream {
	t.Helper()
	u := &upstream{}
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		u.mu.Lock()
		u.reqs = append(u.reqs, seenRequest{r.Method, r.RequestURI, r.Host, r.Header.Get("Authorization"),
			r.Header.Get("X-Forwarded-For"), string(body)})
		u.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusAccepted)
		_, _ = io.WriteString(w, `{"status":"starting"}`)
	}))
	t.Cleanup(u.srv.Close)
	return u
}

func (u *upstream) seen() []seenRequest {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]seenRequest(nil), u.reqs...)
}

func newFront(t *testing.T, iss *TokenIssuer, kumoURL string) *APIFront {
	t.Helper()
	f, err := NewAPIFront(iss.JWKSURL(), iss.URL(), testAudience, kumoURL, testAPIHost)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func call(t *testing.T, h http.Handler, authorization string) *httptest.ResponseRecorder {
	t.Helper()
	r := httptest.NewRequest(http.MethodGet, "/api/environments/env-1/jupyter", nil)
	if authorization != "" {
		r.Header.Set("Authorization", authorization)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func sign(t *testing.T, method jwt.SigningMethod, key any, kid string, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, claims)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestIssuerServesDiscoveryAndKeys(t *testing.T) {
	s, iss := startIssuer(t)

	resp, err := http.Get(iss.URL() + OpenIDConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	var config struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&config); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if config.Issuer != iss.URL() || config.JWKSURI != iss.JWKSURL() || config.JWKSURI != s.srv.URL+JWKSPath {
		t.Fatalf("openid-configuration = %+v, want issuer %s, jwks_uri %s", config, iss.URL(), iss.JWKSURL())
	}

	resp, err = http.Get(config.JWKSURI)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" || string(body) != string(iss.JWKS()) {
		t.Fatalf("jwks: %d %q %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	var set jwkSet
	if err := json.Unmarshal(body, &set); err != nil {
		t.Fatal(err)
	}
	if len(set.Keys) != 1 {
		t.Fatalf("keys = %+v, want one", set.Keys)
	}
	k := set.Keys[0]
	if k.Kty != "RSA" || k.Alg != "RS256" || k.Use != "sig" || k.Kid != iss.KeyID() || k.Kid == "" {
		t.Fatalf("key = %+v", k)
	}
	if strings.Contains(string(body), `"d"`) || strings.Contains(string(body), `"p"`) {
		t.Fatalf("the key set leaks private members: %s", body)
	}
	keys, err := parseJWKS(body)
	if err != nil || !keys[iss.KeyID()].pub.Equal(iss.PublicKey()) {
		t.Fatalf("published key is not the issuer's: %v", err)
	}

	for _, c := range []struct {
		name, method, path string
		want               int
	}{
		{"post jwks", http.MethodPost, JWKSPath, http.StatusMethodNotAllowed},
		{"unknown path", http.MethodGet, "/.well-known/other", http.StatusNotFound},
	} {
		t.Run(c.name, func(t *testing.T) {
			req, _ := http.NewRequest(c.method, iss.URL()+c.path, nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != c.want {
				t.Fatalf("status %d, want %d", resp.StatusCode, c.want)
			}
		})
	}
}

func TestIssuerTokenClaims(t *testing.T) {
	_, iss := startIssuer(t)
	raw := iss.Token("cust-a", time.Hour)
	claims := jwt.MapClaims{}
	tok, err := jwt.ParseWithClaims(raw, claims, func(*jwt.Token) (any, error) { return iss.PublicKey(), nil },
		jwt.WithValidMethods([]string{"RS256"}), jwt.WithIssuer(iss.URL()), jwt.WithAudience(testAudience),
		jwt.WithExpirationRequired(), jwt.WithIssuedAt())
	if err != nil {
		t.Fatal(err)
	}
	if tok.Header["kid"] != iss.KeyID() || tok.Header["alg"] != "RS256" {
		t.Fatalf("header = %v", tok.Header)
	}
	if claims["sub"] != "user-cust-a" || claims["customer_id"] != "cust-a" || claims["aud"] != testAudience || claims["iss"] != iss.URL() {
		t.Fatalf("claims = %v", claims)
	}
	exp, _ := claims.GetExpirationTime()
	iat, _ := claims.GetIssuedAt()
	if d := exp.Sub(iat.Time); d != time.Hour {
		t.Fatalf("exp - iat = %v, want 1h", d)
	}
}

func TestIssuerRejectsBadConfig(t *testing.T) {
	for _, c := range []struct{ name, url, aud string }{
		{"empty url", "", "a"},
		{"empty audience", "http://127.0.0.1:1", ""},
		{"not a url", "auth.local", "a"},
		{"other scheme", "ftp://127.0.0.1:1", "a"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := NewIssuer(c.url, c.aud); err == nil {
				t.Fatal("no error")
			}
		})
	}
}

func TestAPIFrontAuthorization(t *testing.T) {
	_, iss := startIssuer(t)
	up := startUpstream(t)
	front := newFront(t, iss, up.srv.URL)

	// Another issuer at the same URL and audience: same claims, other key.
	other, err := NewIssuer(iss.URL(), testAudience)
	if err != nil {
		t.Fatal(err)
	}
	pemKey := func() []byte {
		der, err := x509.MarshalPKIXPublicKey(iss.PublicKey())
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	}()
	claims := func(edit func(jwt.MapClaims)) jwt.MapClaims {
		c := iss.Claims("cust-a", time.Hour)
		if edit != nil {
			edit(c)
		}
		return c
	}
	bearer := func(tok string) string { return "Bearer " + tok }
	now := time.Now()

	cases := []struct {
		name string
		auth func() string
		want int
	}{
		{"valid", func() string { return bearer(iss.Token("cust-a", time.Hour)) }, http.StatusAccepted},
		{"valid without Bearer prefix", func() string { return iss.Token("cust-a", time.Hour) }, http.StatusAccepted},
		{"valid lowercase bearer", func() string { return "bearer " + iss.Token("cust-a", time.Hour) }, http.StatusAccepted},
		{"valid aud list", func() string {
			return bearer(sign(t, jwt.SigningMethodRS256, iss.key, iss.KeyID(), claims(func(c jwt.MapClaims) { c["aud"] = []string{"x", testAudience} })))
		}, http.StatusAccepted},
		{"valid client_id without aud", func() string {
			return bearer(sign(t, jwt.SigningMethodRS256, iss.key, iss.KeyID(), claims(func(c jwt.MapClaims) { delete(c, "aud"); c["client_id"] = testAudience })))
		}, http.StatusAccepted},
		{"expired within leeway", func() string {
			return bearer(sign(t, jwt.SigningMethodRS256, iss.key, iss.KeyID(), claims(func(c jwt.MapClaims) { c["exp"] = now.Add(-time.Second).Unix() })))
		}, http.StatusAccepted},

		{"missing", func() string { return "" }, http.StatusUnauthorized},
		{"empty bearer", func() string { return "Bearer " }, http.StatusUnauthorized},
		{"other scheme", func() string { return "Basic " + base64.StdEncoding.EncodeToString([]byte("a:b")) }, http.StatusUnauthorized},
		{"malformed", func() string { return bearer("not-a-jwt") }, http.StatusUnauthorized},
		{"malformed three parts", func() string { return bearer("a.b.c") }, http.StatusUnauthorized},
		{"truncated signature", func() string {
			tok := iss.Token("cust-a", time.Hour)
			return bearer(tok[:len(tok)-10])
		}, http.StatusUnauthorized},
		{"expired", func() string { return bearer(iss.Token("cust-a", -time.Minute)) }, http.StatusUnauthorized},
		{"no exp", func() string {
			return bearer(sign(t, jwt.SigningMethodRS256, iss.key, iss.KeyID(), claims(func(c jwt.MapClaims) { delete(c, "exp") })))
		}, http.StatusUnauthorized},
		{"not yet valid", func() string {
			return bearer(sign(t, jwt.SigningMethodRS256, iss.key, iss.KeyID(), claims(func(c jwt.MapClaims) { c["nbf"] = now.Add(time.Minute).Unix() })))
		}, http.StatusUnauthorized},
		{"wrong audience", func() string {
			return bearer(sign(t, jwt.SigningMethodRS256, iss.key, iss.KeyID(), claims(func(c jwt.MapClaims) { c["aud"] = "other-api" })))
		}, http.StatusUnauthorized},
		{"no audience", func() string {
			return bearer(sign(t, jwt.SigningMethodRS256, iss.key, iss.KeyID(), claims(func(c jwt.MapClaims) { delete(c, "aud") })))
		}, http.StatusUnauthorized},
		{"wrong audience with matching client_id", func() string {
			return bearer(sign(t, jwt.SigningMethodRS256, iss.key, iss.KeyID(), claims(func(c jwt.MapClaims) { c["aud"] = "other-api"; c["client_id"] = testAudience })))
		}, http.StatusUnauthorized},
		{"wrong issuer", func() string {
			return bearer(sign(t, jwt.SigningMethodRS256, iss.key, iss.KeyID(), claims(func(c jwt.MapClaims) { c["iss"] = "https://evil.example/" })))
		}, http.StatusUnauthorized},
		{"issuer with extra slash", func() string {
			return bearer(sign(t, jwt.SigningMethodRS256, iss.key, iss.KeyID(), claims(func(c jwt.MapClaims) { c["iss"] = iss.URL() + "/" })))
		}, http.StatusUnauthorized},
		{"no issuer", func() string {
			return bearer(sign(t, jwt.SigningMethodRS256, iss.key, iss.KeyID(), claims(func(c jwt.MapClaims) { delete(c, "iss") })))
		}, http.StatusUnauthorized},
		{"signed by another key", func() string { return bearer(other.Token("cust-a", time.Hour)) }, http.StatusUnauthorized},
		{"signed by another key with the issuer's kid", func() string {
			return bearer(sign(t, jwt.SigningMethodRS256, other.key, iss.KeyID(), claims(nil)))
		}, http.StatusUnauthorized},
		{"tampered payload", func() string {
			parts := strings.Split(iss.Token("cust-a", time.Hour), ".")
			forged, _ := json.Marshal(claims(func(c jwt.MapClaims) { c["customer_id"] = "cust-b"; c["sub"] = "user-cust-b" }))
			parts[1] = base64.RawURLEncoding.EncodeToString(forged)
			return bearer(strings.Join(parts, "."))
		}, http.StatusUnauthorized},
		{"no kid", func() string { return bearer(sign(t, jwt.SigningMethodRS256, iss.key, "", claims(nil))) }, http.StatusUnauthorized},
		{"unknown kid", func() string { return bearer(sign(t, jwt.SigningMethodRS256, iss.key, "other-kid", claims(nil))) }, http.StatusUnauthorized},
		{"alg none", func() string {
			return bearer(sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, iss.KeyID(), claims(nil)))
		}, http.StatusUnauthorized},
		{"alg none with the issuer's signature", func() string {
			parts := strings.Split(iss.Token("cust-a", time.Hour), ".")
			parts[0] = base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","kid":"` + iss.KeyID() + `","typ":"JWT"}`))
			return bearer(strings.Join(parts, "."))
		}, http.StatusUnauthorized},
		{"HS256 signed with the public key PEM", func() string {
			return bearer(sign(t, jwt.SigningMethodHS256, pemKey, iss.KeyID(), claims(nil)))
		}, http.StatusUnauthorized},
		{"HS256 signed with the JWKS", func() string {
			return bearer(sign(t, jwt.SigningMethodHS256, iss.JWKS(), iss.KeyID(), claims(nil)))
		}, http.StatusUnauthorized},
		{"HS256 signed with the modulus", func() string {
			return bearer(sign(t, jwt.SigningMethodHS256, iss.PublicKey().N.Bytes(), iss.KeyID(), claims(nil)))
		}, http.StatusUnauthorized},
		{"RS512 by the issuer's key", func() string {
			return bearer(sign(t, jwt.SigningMethodRS512, iss.key, iss.KeyID(), claims(nil)))
		}, http.StatusUnauthorized},
		{"PS256 by the issuer's key", func() string {
			return bearer(sign(t, jwt.SigningMethodPS256, iss.key, iss.KeyID(), claims(nil)))
		}, http.StatusUnauthorized},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := len(up.seen())
			w := call(t, front, c.auth())
			reached := len(up.seen()) - before
			if w.Code != c.want {
				t.Fatalf("status %d, want %d (%s; www-authenticate %q)", w.Code, c.want, w.Body, w.Header().Get("WWW-Authenticate"))
			}
			if c.want != http.StatusUnauthorized {
				if reached != 1 {
					t.Fatalf("upstream reached %d times, want once", reached)
				}
				return
			}
			if reached != 0 {
				t.Fatalf("a refused request reached the upstream")
			}
			t.Logf("refused: %s", w.Header().Get("WWW-Authenticate"))
			if got := w.Body.String(); got != `{"message":"Unauthorized"}` {
				t.Fatalf("body %q", got)
			}
			if ct := w.Header().Get("Content-Type"); ct != "application/json" {
				t.Fatalf("content-type %q", ct)
			}
			if wa := w.Header().Get("WWW-Authenticate"); !strings.HasPrefix(wa, `Bearer scope="" error="invalid_token"`) {
				t.Fatalf("www-authenticate %q", wa)
			}
		})
	}
}

func TestAPIFrontForwardsUnchanged(t *testing.T) {
	_, iss := startIssuer(t)
	up := startUpstream(t)
	front := httptest.NewServer(newFront(t, iss, up.srv.URL))
	defer front.Close()

	tok := iss.Token("cust-a", time.Hour)
	req, _ := http.NewRequest(http.MethodPost, front.URL+"/api/environments/env-1/jupyter/start?wait=5&x=%2F",
		strings.NewReader(`{"plugins":["a"]}`))
	req.Host = "127.0.0.1:8080" // what nginx would not send, to show the front sets kumo's
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("X-Forwarded-For", "192.0.2.7")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted || string(body) != `{"status":"starting"}` {
		t.Fatalf("answer %d %s, want the upstream's", resp.StatusCode, body)
	}
	seen := up.seen()
	if len(seen) != 1 {
		t.Fatalf("upstream saw %d requests", len(seen))
	}
	want := seenRequest{
		method: http.MethodPost, uri: "/api/environments/env-1/jupyter/start?wait=5&x=%2F", host: testAPIHost,
		auth: "Bearer " + tok, xff: "192.0.2.7", body: `{"plugins":["a"]}`,
	}
	if seen[0] != want {
		t.Fatalf("upstream saw\n %+v\nwant\n %+v", seen[0], want)
	}
}

func TestAPIFrontKeySetCache(t *testing.T) {
	s, iss := startIssuer(t)
	up := startUpstream(t)
	front := newFront(t, iss, up.srv.URL)
	if n := s.jwksFetch.Load(); n != 1 {
		t.Fatalf("NewAPIFront fetched the key set %d times, want once", n)
	}
	setTimes := func(fetched, tried time.Time) {
		front.keys.mu.Lock()
		front.keys.fetched, front.keys.tried = fetched, tried
		front.keys.mu.Unlock()
	}

	// The issuer rotates to a new key (same URL).
	rotated, err := NewIssuer(iss.URL(), testAudience)
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name      string
		prepare   func()
		token     string
		want      int
		wantFetch int32
	}{
		{"cached keys serve valid tokens", nil, iss.Token("c", time.Hour), http.StatusAccepted, 1},
		{"again without fetching", nil, iss.Token("c", time.Hour), http.StatusAccepted, 1},
		{"unknown kid right after a fetch does not fetch", func() { s.serve(rotated.Handler()) }, rotated.Token("c", time.Hour), http.StatusUnauthorized, 1},
		{"unknown kid after the gap fetches the rotated set", func() { setTimes(time.Now().Add(-time.Minute), time.Now().Add(-time.Minute)) },
			rotated.Token("c", time.Hour), http.StatusAccepted, 2},
		{"the old key is gone", nil, iss.Token("c", time.Hour), http.StatusUnauthorized, 2},
		{"repeated unknown kids do not fetch", nil, iss.Token("c", time.Hour), http.StatusUnauthorized, 2},
		{"a stale set is fetched again", func() { setTimes(time.Now().Add(-time.Hour), time.Now().Add(-time.Minute)) },
			rotated.Token("c", time.Hour), http.StatusAccepted, 3},
		{"a failed refresh keeps the keys", func() {
			s.serve(http.NotFoundHandler())
			setTimes(time.Now().Add(-time.Hour), time.Now().Add(-time.Minute))
		}, rotated.Token("c", time.Hour), http.StatusAccepted, 4},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			if st.prepare != nil {
				st.prepare()
			}
			if w := call(t, front, "Bearer "+st.token); w.Code != st.want {
				t.Fatalf("status %d, want %d (%s)", w.Code, st.want, w.Header().Get("WWW-Authenticate"))
			}
			if n := s.jwksFetch.Load(); n != st.wantFetch {
				t.Fatalf("key set fetched %d times, want %d", n, st.wantFetch)
			}
		})
	}
}

func TestAPIFrontRejectsBadConfig(t *testing.T) {
	_, iss := startIssuer(t)
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()
	noRSA := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, `{"keys":[{"kty":"EC","kid":"a","crv":"P-256","x":"AA","y":"AA"}]}`)
	}))
	defer noRSA.Close()
	weak := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, `{"keys":[{"kty":"RSA","kid":"a","n":"AQAB","e":"AQAB"}]}`)
	}))
	defer weak.Close()

	for _, c := range []struct{ name, jwks, issuer, kumo, host string }{
		{"unreachable key set", closed.URL + JWKSPath, iss.URL(), "http://127.0.0.1:4566", testAPIHost},
		{"key set not found", iss.URL() + "/nope", iss.URL(), "http://127.0.0.1:4566", testAPIHost},
		{"no RSA key", noRSA.URL, iss.URL(), "http://127.0.0.1:4566", testAPIHost},
		{"weak RSA key", weak.URL, iss.URL(), "http://127.0.0.1:4566", testAPIHost},
		{"bad kumo URL", iss.JWKSURL(), iss.URL(), "127.0.0.1:4566", testAPIHost},
		{"empty issuer", iss.JWKSURL(), "", "http://127.0.0.1:4566", testAPIHost},
		{"empty API host", iss.JWKSURL(), iss.URL(), "http://127.0.0.1:4566", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := NewAPIFront(c.jwks, c.issuer, testAudience, c.kumo, c.host); err == nil {
				t.Fatal("no error")
			}
		})
	}
}

func TestAPIFrontKumoDown(t *testing.T) {
	_, iss := startIssuer(t)
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close()
	w := call(t, newFront(t, iss, down.URL), "Bearer "+iss.Token("c", time.Hour))
	if w.Code != http.StatusBadGateway || w.Body.String() != `{"message":"Bad Gateway"}` {
		t.Fatalf("answer %d %s", w.Code, w.Body)
	}
}
