package message

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
)

// SignatureAttribute is the SQS message attribute that carries a report's
// signature: HMAC-SHA256 of the body with the key of the host the report
// names. The reports function applies a report only if it verifies, so a
// host cannot speak for another (it can read neither another host's key nor
// the parameter it is kept in).
const SignatureAttribute = "envjupyter-signature"

// Sign returns the signature of body with key.
func Sign(key []byte, body string) string {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(body))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// Verify reports whether sig is body's signature with key.
func Verify(key []byte, body, sig string) bool {
	want, err := base64.StdEncoding.DecodeString(sig)
	if err != nil || len(key) == 0 {
		return false
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(body))
	return hmac.Equal(mac.Sum(nil), want)
}
