// Package sso opens an environment's JupyterLab through the company's
// OpenID Connect provider (access mode sso). The proxy sends a browser that
// has no session for an environment to GET /sso/start?env=<id> on the
// console's host; the handler runs the authorization-code flow with PKCE
// (golang.org/x/oauth2) and verifies the ID token (github.com/coreos/go-oidc:
// signature, issuer, audience, expiry; the nonce here). If the token's
// customer claim owns the environment, the browser is sent on with a
// single-use access link, which the proxy exchanges for its usual session
// (infra/proxy/lua/session.lua): the link keys stay the only keys, and the
// session is bound to the environment's host and to its running instance.
//
// One callback URL (<console origin>/sso/callback) serves every
// environment, so the provider registers one redirect URI (docs/SSO.md).
//
// A sign-in in flight (state, nonce, PKCE verifier, environment, expiry)
// lives only in a cookie the service seals with a key derived from the
// link keys (flow.go): the service holds nothing per sign-in.
package sso

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"html"
	"log/slog"
	"net/http"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/envjupyter/envjupyter/functions/internal/control"
	"github.com/envjupyter/envjupyter/shared/accesslink"
	"github.com/envjupyter/envjupyter/shared/instance"
)

// Opener is what the handler needs of the control plane.
type Opener interface {
	Status(ctx context.Context, customerID, environmentID string) (instance.Instance, bool, error)
	AccessLink(in instance.Instance) string
}

// Config is a deployment's OpenID Connect client.
type Config struct {
	Issuer        string // e.g. https://login.microsoftonline.com/<tenant>/v2.0
	ClientID      string
	ClientSecret  string
	CustomerClaim string // the ID token claim holding the customer id
	CallbackURL   string // <console origin>/sso/callback, registered at the provider
	// Keys are the deployment's link keys (the link_keys setting, the
	// first signs). The sealing key of sign-ins in flight is derived from
	// them, so the service needs no secret of its own.
	Keys []accesslink.Key
}

func (c Config) check() error {
	if c.Issuer == "" || c.ClientID == "" || c.CustomerClaim == "" || c.CallbackURL == "" {
		return errors.New("sso: issuer, client id, customer claim and callback URL are required")
	}
	return nil
}

// Paths the proxy forwards to the handler (console host only).
const (
	StartPath    = "/sso/start"
	CallbackPath = "/sso/callback"
	// flowCookie holds the sealed sign-in in flight. It is sent only to the
	// callback (Path), which rules out __Host- (that needs Path=/); the
	// __Secure- prefix still makes browsers refuse it without Secure or
	// from plain HTTP. A cookie tossed in from an environment's host
	// (possible only if the Jupyter domain is not a public suffix,
	// docs/SECURITY.md) must be one this service sealed, so at most the
	// tosser's own sign-in: that opens the tosser's environment, as an
	// access link they forward would. It does not hide the browser's own
	// cookie either (flowOf reads every cookie of the name).
	flowCookie  = "__Secure-ejsso"
	flowTTL     = 10 * time.Minute // a sign-in must finish within this
	callTimeout = 10 * time.Second // deadline of each call to the provider
	// maxFlowCookies bounds the work of one callback: a browser has one
	// flow cookie of its own; a few more are tossed ones at worst.
	maxFlowCookies = 4
)

// Handler serves StartPath and CallbackPath.
type Handler struct {
	oauth    oauth2.Config
	verifier *oidc.IDTokenVerifier
	claim    string
	open     Opener
	log      *slog.Logger
	now      func() time.Time
	seal     sealer // immutable: the handler keeps no state per request
}

// New discovers the issuer (its metadata and keys) and returns the handler.
func New(ctx context.Context, c Config, open Opener, log *slog.Logger) (*Handler, error) {
	// Refuse a bad configuration before any call to the issuer.
	if err := c.check(); err != nil {
		return nil, err
	}
	if _, err := newSealer(c.Keys); err != nil {
		return nil, err
	}
	dctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	provider, err := oidc.NewProvider(dctx, c.Issuer)
	if err != nil {
		return nil, fmt.Errorf("sso: discovering %s: %w", c.Issuer, err)
	}
	return NewWith(c, provider.Endpoint(), provider.Verifier(&oidc.Config{ClientID: c.ClientID}), open, log)
}

// NewWith builds the handler from an endpoint and a verifier (tests give
// their own keys).
func NewWith(c Config, endpoint oauth2.Endpoint, v *oidc.IDTokenVerifier, open Opener, log *slog.Logger) (*Handler, error) {
	if err := c.check(); err != nil {
		return nil, err
	}
	seal, err := newSealer(c.Keys)
	if err != nil {
		return nil, err
	}
	return &Handler{
		oauth: oauth2.Config{
			ClientID: c.ClientID, ClientSecret: c.ClientSecret, Endpoint: endpoint,
			RedirectURL: c.CallbackURL, Scopes: []string{oidc.ScopeOpenID},
		},
		verifier: v, claim: c.CustomerClaim, open: open, log: log, now: time.Now, seal: seal,
	}, nil
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Referrer-Policy", "no-referrer")
	if r.Method != http.MethodGet {
		page(w, http.StatusMethodNotAllowed, "method_not_allowed", "Sign-in pages are opened, not posted to.")
		return
	}
	switch r.URL.Path {
	case StartPath:
		h.start(w, r)
	case CallbackPath:
		h.callback(w, r)
	default:
		page(w, http.StatusNotFound, "not_found", "No such sign-in page.")
	}
}

func random() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// start sends the browser to the provider with a new sign-in, which it
// keeps only in the browser's sealed flow cookie.
func (h *Handler) start(w http.ResponseWriter, r *http.Request) {
	env := r.URL.Query().Get("env")
	if !instance.ValidEnvironmentID(env) {
		page(w, http.StatusBadRequest, "invalid_environment_id", "The environment id is not valid.")
		return
	}
	f := flow{Env: env, State: random(), Nonce: random(), Verifier: oauth2.GenerateVerifier(), Expires: h.now().Add(flowTTL).Unix()}
	// The state is in the cookie of this browser: a callback another
	// browser's sign-in produced (login CSRF) does not match it.
	http.SetCookie(w, flowCookieOf(h.seal.seal(f), int(flowTTL/time.Second)))
	http.Redirect(w, r, h.oauth.AuthCodeURL(f.State, oidc.Nonce(f.Nonce), oauth2.S256ChallengeOption(f.Verifier)), http.StatusFound)
}

// flowCookieOf is the flow cookie with value; maxAge < 0 deletes it. Lax:
// the provider sends the browser back with a top-level GET, which carries
// Lax cookies; no cross-site subrequest does.
func flowCookieOf(value string, maxAge int) *http.Cookie {
	return &http.Cookie{Name: flowCookie, Value: value, Path: CallbackPath, MaxAge: maxAge,
		Secure: true, HttpOnly: true, SameSite: http.SameSiteLaxMode}
}

// flowOf returns the browser's sign-in the callback's state belongs to, or
// the error code and message to refuse it with. It changes nothing: a
// refused callback (a forged one in particular) leaves the browser's
// sign-in in progress intact.
func (h *Handler) flowOf(r *http.Request, state string) (flow, string, string) {
	const (
		mismatch = "This sign-in was not started in this browser. Open JupyterLab again."
		invalid  = "This sign-in cannot be read; it was not started here. Open JupyterLab again."
		expired  = "This sign-in has expired. Open JupyterLab again."
	)
	code, msg := "sso_state_mismatch", mismatch
	cookies := r.CookiesNamed(flowCookie)
	if state == "" || len(cookies) == 0 {
		return flow{}, code, msg
	}
	if len(cookies) > maxFlowCookies {
		cookies = cookies[:maxFlowCookies]
	}
	rank := 0 // the most telling refusal: invalid 1 < mismatch 2 < expired 3
	for _, c := range cookies {
		f, err := h.seal.open(c.Value)
		switch {
		case err != nil:
			if rank < 1 {
				rank, code, msg = 1, "sso_state_invalid", invalid
			}
		case subtle.ConstantTimeCompare([]byte(f.State), []byte(state)) != 1:
			if rank < 2 {
				rank, code, msg = 2, "sso_state_mismatch", mismatch
			}
		case !f.live(h.now()):
			rank, code, msg = 3, "sso_state_expired", expired
		default:
			return f, "", ""
		}
	}
	return flow{}, code, msg
}

// callback checks the provider's answer and, if the signed-in user's
// customer owns the environment, sends the browser to it.
func (h *Handler) callback(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f, code, msg := h.flowOf(r, q.Get("state"))
	if code != "" {
		page(w, http.StatusBadRequest, code, msg)
		return
	}
	// The flow is used now, whatever the outcome: the browser forgets it,
	// so going back to this URL does not try it again. A replay with a
	// copy of the cookie brings a code the provider has already redeemed
	// (codes are single-use, RFC 6749 section 4.1.2), bound by PKCE to
	// this flow's verifier: it opens nothing, and no memory here is needed
	// for that.
	http.SetCookie(w, flowCookieOf("", -1))
	if q.Get("error") != "" || q.Get("code") == "" {
		page(w, http.StatusUnauthorized, "sso_refused", "The identity provider did not sign you in.")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), callTimeout)
	defer cancel()
	customer, why := h.customer(ctx, q.Get("code"), f)
	if why != "" {
		h.log.Info("sso sign-in refused", "environment", f.Env, "reason", why)
		page(w, http.StatusUnauthorized, "sso_"+why, "The sign-in could not be verified. Open JupyterLab again.")
		return
	}
	// The environment is the flow's, sealed at start: nothing in the
	// callback's URL can name another one.
	in, found, err := h.open.Status(ctx, customer, f.Env)
	switch {
	case errors.Is(err, control.ErrNotFound):
		h.log.Info("sso sign-in for another customer's environment", "environment", f.Env)
		page(w, http.StatusForbidden, "sso_not_yours", "You are signed in, but this environment does not belong to your organisation.")
		return
	case err != nil:
		page(w, http.StatusServiceUnavailable, "unavailable", "The service is unavailable. Please retry shortly.")
		return
	}
	link := ""
	if found {
		link = h.open.AccessLink(in)
	}
	if link == "" {
		page(w, http.StatusConflict, "not_running", "This environment's JupyterLab is not running. Start it from the console.")
		return
	}
	http.Redirect(w, r, link, http.StatusFound)
}

// customer redeems the code (with the PKCE verifier) and returns the
// customer claim of the verified ID token, or why it was refused.
func (h *Handler) customer(ctx context.Context, code string, f flow) (string, string) {
	tok, err := h.oauth.Exchange(ctx, code, oauth2.VerifierOption(f.Verifier))
	if err != nil {
		return "", "code_refused"
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		return "", "no_id_token"
	}
	return h.verify(ctx, raw, f.Nonce)
}

// verify checks an ID token (signature, issuer, audience, expiry, nonce)
// and returns its customer claim, or why it was refused.
func (h *Handler) verify(ctx context.Context, raw, nonce string) (string, string) {
	idt, err := h.verifier.Verify(ctx, raw)
	if err != nil {
		return "", "invalid_id_token"
	}
	if subtle.ConstantTimeCompare([]byte(idt.Nonce), []byte(nonce)) != 1 {
		return "", "nonce_mismatch"
	}
	var claims map[string]any
	if err := idt.Claims(&claims); err != nil {
		return "", "invalid_id_token"
	}
	customer, _ := claims[h.claim].(string)
	if customer == "" {
		return "", "no_customer"
	}
	return customer, ""
}

// page writes a short error page; code also goes into X-Envjupyter-Error,
// as the proxy's pages do.
func page(w http.ResponseWriter, status int, code, message string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("X-Envjupyter-Error", code)
	w.WriteHeader(status)
	fmt.Fprintf(w, "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>%d %s</title></head>\n<body><h1>%s</h1>\n<p><small>%s</small></p></body></html>\n",
		status, http.StatusText(status), html.EscapeString(message), html.EscapeString(code))
}
