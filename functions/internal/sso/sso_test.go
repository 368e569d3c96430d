package sso

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/go-jose/go-jose/v4"
	"golang.org/x/oauth2"

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

func handlerFor(key *rsa.PrivateKey, open Opener) *Handler {
	v := oidc.NewVerifier(issuer, &oidc.StaticKeySet{PublicKeys: []crypto.PublicKey{&key.PublicKey}}, &oidc.Config{ClientID: "envjupyter"})
	return NewWith(Config{Issuer: issuer, ClientID: "envjupyter", CustomerClaim: "org", CallbackURL: "https://console.test/sso/callback"},
		oauth2.Endpoint{AuthURL: issuer + "/auth", TokenURL: issuer + "/token"}, v, open, slog.New(slog.DiscardHandler))
}

func valid() map[string]any {
	return map[string]any{"iss": issuer, "aud": "envjupyter", "sub": "alice", "org": "cust-a", "nonce": "n1",
		"iat": time.Now().Unix(), "exp": time.Now().Add(5 * time.Minute).Unix()}
}

// The ID token is verified: signature, issuer, audience, expiry, nonce,
// and it must carry the customer claim.
func TestVerifyIDToken(t *testing.T) {
	s, other := newSigner(t), newSigner(t)
	h := handlerFor(s.key, nil)
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
// state that is also in a __Host- cookie; a callback whose state is not
// this browser's, or is used a second time, is refused before any call to
// the provider.
func TestStartAndStateChecks(t *testing.T) {
	s := newSigner(t)
	h := handlerFor(s.key, unusedOpener{t})
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
	if len(cookies) != 1 || cookies[0].Name != "__Host-ejsso" || !cookies[0].Secure || !cookies[0].HttpOnly || cookies[0].Path != "/" {
		t.Fatalf("state cookie %+v", cookies)
	}
	state := cookies[0].Value
	if !strings.Contains(loc, "state="+state) {
		t.Fatal("the cookie does not hold the state sent")
	}
	callback := func(cookie, state string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodGet, "/sso/callback?code=c1&state="+state, nil)
		if cookie != "" {
			r.AddCookie(&http.Cookie{Name: "__Host-ejsso", Value: cookie})
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		return rec
	}
	for _, tt := range []struct{ name, cookie, state, code string }{
		{"no cookie", "", state, "sso_state_mismatch"},
		{"other state", state, "other", "sso_state_mismatch"},
		{"both forged", "forged", "forged", "sso_state_unknown"},
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
