package devstack

// The local stack's identity: an OpenID-style issuer with its own key pair
// and key set (TokenIssuer), and the front that verifies its tokens the way
// API Gateway's JWT authorizer does before a request reaches kumo (APIFront).
// kumo emulates the HTTP API and its JWT authorizer but does not verify
// signatures; without the front, any well-formed token would be accepted.
// Signing and verification are github.com/golang-jwt/jwt/v5 over the
// standard library's crypto/rsa; nothing here does cryptography by hand.

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Paths the issuer serves.
const (
	JWKSPath          = "/.well-known/jwks.json"
	OpenIDConfigPath  = "/.well-known/openid-configuration"
	issuerAlg         = "RS256" // API Gateway's JWT authorizers accept RSA algorithms only
	issuerKeyBits     = 2048
	frontLeeway       = 5 * time.Second
	jwksTTL           = 5 * time.Minute
	jwksRefetchMinGap = 10 * time.Second
	jwksMaxBytes      = 1 << 20
)

// TokenIssuer is a local OpenID-style issuer: an RSA key pair generated at
// start, the tokens it signs, and the public key set it publishes.
// (The type is not called Issuer: that name is the package's issuer constant.)
type TokenIssuer struct {
	url      string
	audience string
	key      *rsa.PrivateKey
	kid      string
	jwks     []byte
}

// NewIssuer generates the issuer's key pair. issuerURL is both the tokens'
// iss and where the issuer is served (its jwks_uri is issuerURL +
// JWKSPath), so it should be the address Handler is served at.
func NewIssuer(issuerURL, audience string) (*TokenIssuer, error) {
	if issuerURL == "" || audience == "" {
		return nil, errors.New("issuer: empty issuer URL or audience")
	}
	if u, err := url.Parse(issuerURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("issuer: %q is not an http(s) URL", issuerURL)
	}
	key, err := rsa.GenerateKey(rand.Reader, issuerKeyBits)
	if err != nil {
		return nil, fmt.Errorf("issuer: generating key: %w", err)
	}
	i := &TokenIssuer{url: issuerURL, audience: audience, key: key}
	n := base64.RawURLEncoding.EncodeToString(key.N.Bytes())
	e := base64.RawURLEncoding.EncodeToString(big.NewInt(int64(key.E)).Bytes())
	// kid: the key's RFC 7638 thumbprint (SHA-256 of its required members in
	// lexicographic order).
	sum := sha256.Sum256([]byte(`{"e":"` + e + `","kty":"RSA","n":"` + n + `"}`))
	i.kid = base64.RawURLEncoding.EncodeToString(sum[:])
	i.jwks, err = json.Marshal(jwkSet{Keys: []jwk{{Kty: "RSA", Use: "sig", Alg: issuerAlg, Kid: i.kid, N: n, E: e}}})
	if err != nil {
		return nil, err
	}
	return i, nil
}

// URL is the issuer identifier (the tokens' iss).
func (i *TokenIssuer) URL() string { return i.url }

// JWKSURL is where Handler serves the key set.
func (i *TokenIssuer) JWKSURL() string { return strings.TrimSuffix(i.url, "/") + JWKSPath }

// KeyID is the kid of the issuer's signing key.
func (i *TokenIssuer) KeyID() string { return i.kid }

// PublicKey is the issuer's verification key.
func (i *TokenIssuer) PublicKey() *rsa.PublicKey { return &i.key.PublicKey }

// Claims are the claims Token signs, for tests that need variants (expired,
// another audience, ...): edit them and Sign.
func (i *TokenIssuer) Claims(customer string, ttl time.Duration) jwt.MapClaims {
	now := time.Now()
	return jwt.MapClaims{
		"iss": i.url, "aud": i.audience, "sub": "user-" + customer, "customer_id": customer,
		"iat": now.Unix(), "exp": now.Add(ttl).Unix(),
	}
}

// Sign signs claims with the issuer's key (RS256, kid header).
func (i *TokenIssuer) Sign(claims jwt.Claims) (string, error) {
	t := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
	t.Header["kid"] = i.kid
	return t.SignedString(i.key)
}

// Token returns a bearer token for the customer, valid for ttl, with the
// claims the HTTP API's JWT authorizer checks and the handlers read.
func (i *TokenIssuer) Token(customer string, ttl time.Duration) string {
	s, err := i.Sign(i.Claims(customer, ttl))
	if err != nil {
		// RSA signing fails only on a broken key or random source.
		panic("issuer: signing a token: " + err.Error())
	}
	return s
}

// JWKS is the public key set (RFC 7517 JSON) Handler serves.
func (i *TokenIssuer) JWKS() []byte { return slices.Clone(i.jwks) }

// Handler serves GET JWKSPath and GET OpenIDConfigPath.
func (i *TokenIssuer) Handler() http.Handler {
	config, _ := json.Marshal(map[string]any{
		"issuer":                                i.url,
		"jwks_uri":                              i.JWKSURL(),
		"id_token_signing_alg_values_supported": []string{issuerAlg},
		"subject_types_supported":               []string{"public"},
		"response_types_supported":              []string{"id_token"},
	})
	mux := http.NewServeMux()
	serve := func(body []byte) http.HandlerFunc {
		return func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Cache-Control", "public, max-age=300")
			_, _ = w.Write(body)
		}
	}
	mux.Handle("GET "+JWKSPath, serve(i.jwks))
	mux.Handle("GET "+OpenIDConfigPath, serve(config))
	return mux
}

type jwkSet struct {
	Keys []jwk `json:"keys"`
}

type jwk struct {
	Kty string `json:"kty"`
	Use string `json:"use,omitempty"`
	Alg string `json:"alg,omitempty"`
	Kid string `json:"kid,omitempty"`
	N   string `json:"n,omitempty"`
	E   string `json:"e,omitempty"`
}

// APIFront stands between nginx and kumo's HTTP API and does what API
// Gateway's JWT authorizer does and kumo's does not: it verifies the
// token's signature against the issuer's published key set, its algorithm,
// kid, exp, nbf, iss and aud. A request without a valid token is answered
// 401 {"message":"Unauthorized"} (API Gateway's answer) and never reaches
// kumo; a valid one is forwarded unchanged (Authorization included: kumo's
// authorizer reads the claims from it) with kumo's execute-api Host.
type APIFront struct {
	issuer   string
	audience string
	keys     *jwksCache
	parser   *jwt.Parser
	proxy    *httputil.ReverseProxy
	// Log gets one line per refusal (the reason, never the token); nil: none.
	Log *slog.Logger
}

// NewAPIFront fetches the key set at jwksURL once (so a wrong URL fails
// here), then keeps it cached for a few minutes and fetches it again, at
// most every few seconds, when a token names a key it does not have.
// kumoURL is kumo's base URL (http://127.0.0.1:<port>), apiHost the Host it
// routes the HTTP API by (<apiId>.execute-api.localhost).
func NewAPIFront(jwksURL, issuer, audience, kumoURL, apiHost string) (*APIFront, error) {
	if issuer == "" || audience == "" || apiHost == "" {
		return nil, errors.New("api front: empty issuer, audience or API host")
	}
	target, err := url.Parse(kumoURL)
	if err != nil || target.Scheme != "http" || target.Host == "" {
		return nil, fmt.Errorf("api front: kumo URL %q is not http://host:port", kumoURL)
	}
	if u, err := url.Parse(jwksURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("api front: JWKS URL %q is not an http(s) URL", jwksURL)
	}
	f := &APIFront{
		issuer: issuer, audience: audience,
		keys: &jwksCache{url: jwksURL, client: &http.Client{Timeout: 5 * time.Second}},
		parser: jwt.NewParser(
			jwt.WithValidMethods([]string{issuerAlg}),
			jwt.WithIssuer(issuer),
			jwt.WithExpirationRequired(),
			jwt.WithLeeway(frontLeeway),
		),
	}
	if err := f.keys.refresh(time.Now()); err != nil {
		return nil, fmt.Errorf("api front: %w", err)
	}
	f.proxy = &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(target) // path and query kept: target has no path
			r.Out.Host = apiHost
			// Rewrite drops the X-Forwarded-* headers nginx set; keep them.
			for _, h := range []string{"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"} {
				if v, ok := r.In.Header[h]; ok {
					r.Out.Header[h] = v
				}
			}
		},
		FlushInterval: -1,
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
			if f.Log != nil {
				f.Log.Warn("api front: kumo unreachable", "error", err)
			}
			writeMessage(w, http.StatusBadGateway, "Bad Gateway")
		},
	}
	return f, nil
}

// tokenClaims are the claims the front checks beyond the parser's.
type tokenClaims struct {
	jwt.RegisteredClaims
	ClientID string `json:"client_id,omitempty"`
}

func (f *APIFront) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if err := f.verify(r.Header.Get("Authorization")); err != nil {
		if f.Log != nil {
			f.Log.Info("api front: unauthorized", "method", r.Method, "path", r.URL.Path, "reason", err.Error())
		}
		w.Header().Set("WWW-Authenticate", `Bearer scope="" error="invalid_token" error_description=`+
			fmt.Sprintf("%q", err.Error()))
		writeMessage(w, http.StatusUnauthorized, "Unauthorized")
		return
	}
	f.proxy.ServeHTTP(w, r)
}

// verify checks the identity source as API Gateway does: the token alone
// or prefixed with "Bearer ".
func (f *APIFront) verify(header string) error {
	raw := strings.TrimSpace(header)
	if len(raw) >= 7 && strings.EqualFold(raw[:7], "bearer ") {
		raw = strings.TrimSpace(raw[7:])
	}
	if raw == "" {
		return errors.New("no token")
	}
	var claims tokenClaims
	if _, err := f.parser.ParseWithClaims(raw, &claims, f.keyFor); err != nil {
		return err
	}
	// aud must name the audience; only when there is no aud, client_id must.
	if len(claims.Audience) > 0 {
		if !slices.Contains(claims.Audience, f.audience) {
			return errors.New("the token does not have a valid audience")
		}
	} else if claims.ClientID != f.audience {
		return errors.New("the token does not have a valid audience")
	}
	return nil
}

// keyFor is the parser's key function: the issuer's key named by the
// token's kid, for the algorithm that key is published for.
func (f *APIFront) keyFor(t *jwt.Token) (any, error) {
	kid, _ := t.Header["kid"].(string)
	if kid == "" {
		return nil, errors.New("the token has no kid")
	}
	k, err := f.keys.key(kid, time.Now())
	if err != nil {
		return nil, err
	}
	if k.alg != "" && k.alg != t.Method.Alg() {
		return nil, fmt.Errorf("key %s is not for %s", kid, t.Method.Alg())
	}
	return k.pub, nil
}

func writeMessage(w http.ResponseWriter, status int, message string) {
	body, _ := json.Marshal(map[string]string{"message": message})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", fmt.Sprint(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// jwksCache holds the issuer's RSA signing keys by kid, fetched over HTTP.
type jwksCache struct {
	url    string
	client *http.Client

	mu      sync.Mutex
	keys    map[string]publicKey
	fetched time.Time // last successful fetch
	tried   time.Time // last attempt
}

type publicKey struct {
	pub *rsa.PublicKey
	alg string
}

func (c *jwksCache) key(kid string, now time.Time) (publicKey, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if now.Sub(c.fetched) > jwksTTL && now.Sub(c.tried) >= jwksRefetchMinGap {
		_ = c.refreshLocked(now) // on failure the keys it had stay in use
	}
	if k, ok := c.keys[kid]; ok {
		return k, nil
	}
	// An unknown kid may be a rotated key: fetch again, not too often.
	if now.Sub(c.tried) >= jwksRefetchMinGap {
		if err := c.refreshLocked(now); err != nil {
			return publicKey{}, err
		}
		if k, ok := c.keys[kid]; ok {
			return k, nil
		}
	}
	return publicKey{}, fmt.Errorf("no key %q in the issuer's key set", kid)
}

func (c *jwksCache) refresh(now time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.refreshLocked(now)
}

func (c *jwksCache) refreshLocked(now time.Time) error {
	c.tried = now
	resp, err := c.client.Get(c.url)
	if err != nil {
		return fmt.Errorf("fetching the key set: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("fetching the key set: %s answered %s", c.url, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, jwksMaxBytes))
	if err != nil {
		return fmt.Errorf("fetching the key set: %w", err)
	}
	keys, err := parseJWKS(body)
	if err != nil {
		return err
	}
	c.keys, c.fetched = keys, now
	return nil
}

// parseJWKS reads the RSA signing keys of a key set; other keys are skipped.
func parseJWKS(body []byte) (map[string]publicKey, error) {
	var set jwkSet
	if err := json.Unmarshal(body, &set); err != nil {
		return nil, fmt.Errorf("decoding the key set: %w", err)
	}
	keys := map[string]publicKey{}
	for _, k := range set.Keys {
		if k.Kty != "RSA" || k.Kid == "" || (k.Use != "" && k.Use != "sig") {
			continue
		}
		n, err1 := base64.RawURLEncoding.DecodeString(k.N)
		e, err2 := base64.RawURLEncoding.DecodeString(k.E)
		if err1 != nil || err2 != nil || len(e) == 0 || len(e) > 4 {
			return nil, fmt.Errorf("key %q: bad modulus or exponent", k.Kid)
		}
		pub := &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}
		if pub.N.BitLen() < issuerKeyBits || pub.E < 3 || pub.E%2 == 0 {
			return nil, fmt.Errorf("key %q: weak or invalid RSA key", k.Kid)
		}
		keys[k.Kid] = publicKey{pub: pub, alg: k.Alg}
	}
	if len(keys) == 0 {
		return nil, errors.New("the key set has no RSA signing key")
	}
	return keys, nil
}
