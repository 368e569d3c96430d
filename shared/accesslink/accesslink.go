// Package accesslink makes the short-lived access links of JupyterLab: a
// signed ticket the proxy exchanges once for a session cookie, so the
// browser never holds Jupyter's token. The proxy (infra/proxy/lua/route.lua)
// verifies tickets and sessions with the same format and keys.
//
// A ticket or a session is "v1.<kid>.<environment>.<instance>.<expiry>.<nonce>.<mac>":
// the mac is HMAC-SHA1 (the one HMAC nginx's Lua module has built in) over
// everything before it, base64url without padding, under the key kid names.
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

// Sign returns a ticket for the instance of the environment, valid until exp.
func Sign(k Key, environmentID, instanceID string, exp time.Time) string {
	nonce := make([]byte, 8)
	_, _ = rand.Read(nonce)
	payload := strings.Join([]string{"v1", k.ID, environmentID, instanceID, strconv.FormatInt(exp.Unix(), 10), hex.EncodeToString(nonce)}, ".")
	return payload + "." + mac(k.Secret, payload)
}

func mac(secret []byte, payload string) string {
	m := hmac.New(sha1.New, secret)
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
	parts := strings.Split(ticket, ".")
	if len(parts) != 7 || parts[0] != "v1" {
		return Claims{}, errors.New("malformed ticket")
	}
	payload := strings.Join(parts[:6], ".")
	for _, k := range keys {
		if k.ID != parts[1] {
			continue
		}
		if !hmac.Equal([]byte(mac(k.Secret, payload)), []byte(parts[6])) {
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
