package sso

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"time"

	"github.com/envjupyter/envjupyter/shared/accesslink"
	"github.com/envjupyter/envjupyter/shared/instance"
)

// flow is a sign-in in flight. It is kept in the browser, sealed in the
// flowCookie, and nowhere else: an anonymous GET /sso/start costs the
// service no memory, so no number of them can crowd out real sign-ins
// (issue 23), and any sso service holding the link keys can finish a
// sign-in another one started.
type flow struct {
	Env      string `json:"e"` // the environment the sign-in is for
	State    string `json:"s"` // OAuth state; the callback's must equal it
	Nonce    string `json:"n"` // the ID token's nonce must equal it
	Verifier string `json:"v"` // PKCE verifier of the authorization request
	Expires  int64  `json:"x"` // Unix seconds; refused from then on
}

// The sealed cookie is "<sealVersion>.<kid>.<base64url(nonce|ciphertext|tag)>".
const (
	sealVersion = "f1"
	// sealLabel derives the sealing key from a link key. HMAC-SHA256 under
	// a label of its own gives a key independent of the proxy's ticket and
	// session keys (HMAC-SHA1 under other labels, shared/accesslink), so no
	// sealed flow is a ticket or a session and knowing one key gives none
	// of the others; and no new secret has to be deployed or rotated.
	sealLabel = "envjupyter sso flow v1"
	// maxSealed bounds what is decoded and decrypted per cookie: a flow is
	// about 300 characters sealed.
	maxSealed = 1024
)

var errBadFlow = errors.New("sso: flow cookie not sealed by this service")

// sealer seals flows with the first key and opens them with any key whose
// id the cookie names, so a link key rotation keeps sign-ins in flight.
type sealer []sealKey

type sealKey struct {
	id   string
	aead cipher.AEAD
}

func newSealer(keys []accesslink.Key) (sealer, error) {
	if len(keys) == 0 {
		return nil, errors.New("sso: link keys are required (they seal sign-ins in flight and sign the access links)")
	}
	s := make(sealer, 0, len(keys))
	for _, k := range keys {
		m := hmac.New(sha256.New, k.Secret)
		m.Write([]byte(sealLabel))
		block, err := aes.NewCipher(m.Sum(nil)) // 32 bytes: AES-256
		if err != nil {
			return nil, err
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, err
		}
		s = append(s, sealKey{id: k.ID, aead: aead})
	}
	return s, nil
}

// aad binds a ciphertext to the cookie's name, format and key id: a
// ciphertext moved under another key id, version or cookie does not open.
func aad(prefix string) []byte { return []byte(flowCookie + "|" + prefix) }

// seal encrypts and authenticates f (AES-256-GCM, random 96-bit nonce).
// Encrypting, not only signing, keeps the PKCE verifier out of the
// browser's reach, as it was when the server held it.
func (s sealer) seal(f flow) string {
	body, _ := json.Marshal(f) // strings and an integer: cannot fail
	k := s[0]
	prefix := sealVersion + "." + k.id
	nonce := make([]byte, k.aead.NonceSize())
	_, _ = rand.Read(nonce)
	return prefix + "." + base64.RawURLEncoding.EncodeToString(k.aead.Seal(nonce, nonce, body, aad(prefix)))
}

// open returns the flow a cookie value sealed, or errBadFlow if this
// service did not seal it (tampered, truncated, another key, another
// format). Expiry and state are the caller's to check.
func (s sealer) open(v string) (flow, error) {
	if len(v) > maxSealed {
		return flow{}, errBadFlow
	}
	version, rest, _ := strings.Cut(v, ".")
	id, b64, ok := strings.Cut(rest, ".")
	if !ok || version != sealVersion {
		return flow{}, errBadFlow
	}
	for _, k := range s {
		if k.id != id {
			continue
		}
		raw, err := base64.RawURLEncoding.DecodeString(b64)
		if err != nil || len(raw) < k.aead.NonceSize()+k.aead.Overhead() {
			return flow{}, errBadFlow
		}
		n := k.aead.NonceSize()
		body, err := k.aead.Open(nil, raw[:n], raw[n:], aad(version+"."+id))
		if err != nil {
			return flow{}, errBadFlow
		}
		var f flow
		if json.Unmarshal(body, &f) != nil || f.State == "" || f.Nonce == "" || f.Verifier == "" || !instance.ValidEnvironmentID(f.Env) {
			return flow{}, errBadFlow
		}
		return f, nil
	}
	return flow{}, errBadFlow
}

// live reports whether f may still be used at now: before its expiry, and
// that expiry no further ahead than a flow lives (a clock that was ahead
// when it was sealed does not lengthen it).
func (f flow) live(now time.Time) bool {
	return now.Unix() < f.Expires && f.Expires-now.Unix() <= int64(flowTTL/time.Second)
}
