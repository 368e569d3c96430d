// Package accesslink makes the short-lived access links of JupyterLab: a
// signed ticket the proxy exchanges once for a session cookie, so the
// browser never holds Jupyter's token. The proxy (infra/proxy/lua/session.lua)
// verifies tickets and signs and verifies sessions.
//
// A ticket is "t1.<kid>.<environment>.<instance>.<expiry>.<nonce>.<mac>" and
// a session "s1.<same fields>". The mac is HMAC-SHA1 (the one HMAC nginx's
// Lua module has built in) over everything before it, base64url without
// padding, under a key derived for the purpose from the secret kid names:
// HMAC-SHA1(secret, "envjupyter ticket v1") or "... session v1". A ticket
// therefore never verifies as a session nor a session as a ticket, even
// with the prefix changed: each purpose has its own key.
package accesslink

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Key is a signing key; several are accepted during a rotation.
type Key struct {
	ID     string
	Secret []byte
}

// ParseKeys parses "kid:base64secret,kid:base64secret"; the first key signs.
func ParseKeys(s string) ([]Key, error) {
	var keys []Key
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		id, b64, ok := strings.Cut(part, ":")
		secret, err := base64.StdEncoding.DecodeString(b64)
		if !ok || err != nil || !validKeyID(id) || len(secret) < 32 {
			return nil, errors.New("link keys: want kid:base64 pairs, with kid of letters and digits and a secret of at least 32 bytes")
		}
		keys = append(keys, Key{ID: id, Secret: secret})
	}
	return keys, nil
}

func validKeyID(id string) bool {
	if id == "" || len(id) > 16 {
		return false
	}
	for _, c := range id {
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9') {
			return false
		}
	}
	return true
}

// Purpose is what a signed string is for: its prefix and key derivation.
type Purpose struct{ prefix, label string }

// The two purposes; the proxy (session.lua) uses the same prefixes and labels.
var (
	Ticket  = Purpose{"t1", "envjupyter ticket v1"}
	Session = Purpose{"s1", "envjupyter session v1"}
)

// Sign returns a ticket for the instance of the environment, valid until exp.
func Sign(k Key, environmentID, instanceID string, exp time.Time) string {
	return SignFor(Ticket, k, environmentID, instanceID, exp)
}

// SignFor signs for a purpose. Only the proxy issues sessions; tests sign
// them to show what the proxy refuses.
func SignFor(p Purpose, k Key, environmentID, instanceID string, exp time.Time) string {
	nonce := make([]byte, 8)
	_, _ = rand.Read(nonce)
	payload := strings.Join([]string{p.prefix, k.ID, environmentID, instanceID, strconv.FormatInt(exp.Unix(), 10), hex.EncodeToString(nonce)}, ".")
	return payload + "." + mac(p.key(k.Secret), payload)
}

func (p Purpose) key(secret []byte) []byte {
	m := hmac.New(sha1.New, secret)
	m.Write([]byte(p.label))
	return m.Sum(nil)
}

func mac(key []byte, payload string) string {
	m := hmac.New(sha1.New, key)
	m.Write([]byte(payload))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// Claims are what a valid ticket says.
type Claims struct {
	EnvironmentID, InstanceID, Nonce string
	Expires                          time.Time
}

// Verify checks a ticket against the keys at time now.
func Verify(keys []Key, ticket string, now time.Time) (Claims, error) {
	return VerifyFor(Ticket, keys, ticket, now)
}

// VerifyFor checks a signed string of the purpose against the keys at time now.
func VerifyFor(p Purpose, keys []Key, ticket string, now time.Time) (Claims, error) {
	parts := strings.Split(ticket, ".")
	if len(parts) != 7 || parts[0] != p.prefix {
		return Claims{}, errors.New("malformed ticket")
	}
	payload := strings.Join(parts[:6], ".")
	for _, k := range keys {
		if k.ID != parts[1] {
			continue
		}
		if !hmac.Equal([]byte(mac(p.key(k.Secret), payload)), []byte(parts[6])) {
			return Claims{}, errors.New("bad signature")
		}
		exp, err := strconv.ParseInt(parts[4], 10, 64)
		if err != nil {
			return Claims{}, errors.New("malformed ticket")
		}
		if now.Unix() >= exp {
			return Claims{}, fmt.Errorf("expired at %s", time.Unix(exp, 0).UTC())
		}
		return Claims{EnvironmentID: parts[2], InstanceID: parts[3], Nonce: parts[5], Expires: time.Unix(exp, 0)}, nil
	}
	return Claims{}, errors.New("unknown key")
}
