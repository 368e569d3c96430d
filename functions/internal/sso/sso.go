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
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/envjupyter/envjupyter/functions/internal/control"
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
}

// Paths the proxy forwards to the handler (console host only).
const (
	StartPath    = "/sso/start"
	CallbackPath = "/sso/callback"
	stateCookie  = "__Host-ejsso"
	flowTTL      = 10 * time.Minute // a sign-in must finish within this
	maxPending   = 10000            // sign-ins in flight; more are refused
	callTimeout  = 10 * time.Second // deadline of each call to the provider
)

// pending is a sign-in in flight, kept server side under its state.
type pending struct {
	env, nonce, verifier string
	expires              time.Time
}

// Handler serves StartPath and CallbackPath.
type Handler struct {
	oauth    oauth2.Config
	verifier *oidc.IDTokenVerifier
	claim    string
	open     Opener
	log      *slog.Logger
	now      func() time.Time

	mu      sync.Mutex
	pending map[string]pending
}

// New discovers the issuer (its metadata and keys) and returns the handler.
func New(ctx context.Context, c Config, open Opener, log *slog.Logger) (*Handler, error) {
	if c.Issuer == "" || c.ClientID == "" || c.CustomerClaim == "" || c.CallbackURL == "" {
		return nil, errors.New("sso: issuer, client id, customer claim and callback URL are required")
	}
	dctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	provider, err := oidc.NewProvider(dctx, c.Issuer)
	if err != nil {
		return nil, fmt.Errorf("sso: discovering %s: %w", c.Issuer, err)
	}
	return NewWith(c, provider.Endpoint(), provider.Verifier(&oidc.Config{ClientID: c.ClientID}), open, log), nil
}

// NewWith builds the handler from an endpoint and a verifier (tests give
// their own keys).
func NewWith(c Config, endpoint oauth2.Endpoint, v *oidc.IDTokenVerifier, open Opener, log *slog.Logger) *Handler {
	return &Handler{
		oauth: oauth2.Config{
			ClientID: c.ClientID, ClientSecret: c.ClientSecret, Endpoint: endpoint,
			RedirectURL: c.CallbackURL, Scopes: []string{oidc.ScopeOpenID},
		},
		verifier: v, claim: c.CustomerClaim, open: open, log: log, now: time.Now,
		pending: map[string]pending{},
	}
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

// start remembers a new sign-in and sends the browser to the provider.
func (h *Handler) start(w http.ResponseWriter, r *http.Request) {
	env := r.URL.Query().Get("env")
	if !instance.ValidEnvironmentID(env) {
		page(w, http.StatusBadRequest, "invalid_environment_id", "The environment id is not valid.")
		return
	}
	p := pending{env: env, nonce: random(), verifier: oauth2.GenerateVerifier(), expires: h.now().Add(flowTTL)}
	state := random()
	if !h.remember(state, p) {
		page(w, http.StatusServiceUnavailable, "sso_busy", "Too many sign-ins are in progress. Please retry shortly.")
		return
	}
	// The state also goes into a cookie of this browser: a callback another
	// browser's sign-in produced (login CSRF) does not match it.
	http.SetCookie(w, &http.Cookie{Name: stateCookie, Value: state, Path: "/", MaxAge: int(flowTTL.Seconds()),
		Secure: true, HttpOnly: true, SameSite: http.SameSiteLaxMode})
	http.Redirect(w, r, h.oauth.AuthCodeURL(state, oidc.Nonce(p.nonce), oauth2.S256ChallengeOption(p.verifier)), http.StatusFound)
}

func (h *Handler) remember(state string, p pending) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.pending) >= maxPending {
		now := h.now()
		for k, v := range h.pending {
			if now.After(v.expires) {
				delete(h.pending, k)
			}
		}
		if len(h.pending) >= maxPending {
			return false
		}
	}
	h.pending[state] = p
	return true
}

// take returns and forgets the sign-in of a state: each is used once.
func (h *Handler) take(state string) (pending, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	p, ok := h.pending[state]
	delete(h.pending, state)
	return p, ok && h.now().Before(p.expires)
}

// callback checks the provider's answer and, if the signed-in user's
// customer owns the environment, sends the browser to it.
func (h *Handler) callback(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{Name: stateCookie, Value: "", Path: "/", MaxAge: -1, Secure: true, HttpOnly: true, SameSite: http.SameSiteLaxMode})
	q := r.URL.Query()
	state := q.Get("state")
	c, err := r.Cookie(stateCookie)
	if err != nil || state == "" || subtle.ConstantTimeCompare([]byte(c.Value), []byte(state)) != 1 {
		page(w, http.StatusBadRequest, "sso_state_mismatch", "This sign-in was not started in this browser. Open JupyterLab again.")
		return
	}
	p, ok := h.take(state)
	if !ok {
		page(w, http.StatusBadRequest, "sso_state_unknown", "This sign-in has expired or was used already. Open JupyterLab again.")
		return
	}
	if q.Get("error") != "" || q.Get("code") == "" {
		page(w, http.StatusUnauthorized, "sso_refused", "The identity provider did not sign you in.")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), callTimeout)
	defer cancel()
	customer, why := h.customer(ctx, q.Get("code"), p)
	if why != "" {
		h.log.Info("sso sign-in refused", "environment", p.env, "reason", why)
		page(w, http.StatusUnauthorized, "sso_"+why, "The sign-in could not be verified. Open JupyterLab again.")
		return
	}
	in, found, err := h.open.Status(ctx, customer, p.env)
	switch {
	case errors.Is(err, control.ErrNotFound):
		h.log.Info("sso sign-in for another customer's environment", "environment", p.env)
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
func (h *Handler) customer(ctx context.Context, code string, p pending) (string, string) {
	tok, err := h.oauth.Exchange(ctx, code, oauth2.VerifierOption(p.verifier))
	if err != nil {
		return "", "code_refused"
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		return "", "no_id_token"
	}
	return h.verify(ctx, raw, p.nonce)
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
