// Package password hashes a customer's Jupyter password the way Jupyter
// itself does (jupyter_server.auth.passwd, notebook.auth.passwd): argon2id
// with argon2-cffi's encoding, prefixed "argon2:". Only the hash travels and
// is stored; the password itself never leaves the API call.
package password

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"unicode/utf8"

	"golang.org/x/crypto/argon2"
)

// Jupyter's parameters: argon2.PasswordHasher(memory_cost=10240,
// time_cost=10, parallelism=8), a 16-byte salt and a 32-byte hash (newer
// argon2-cffi's default; verifiers read the length from the hash).
const (
	memoryKiB = 10240
	passes    = 10
	threads   = 8
	saltLen   = 16
	hashLen   = 32
)

// Limits on a password a customer may choose.
const (
	MinLength = 8
	MaxLength = 256
)

// Validate checks a password is acceptable.
func Validate(p string) error {
	n := utf8.RuneCountInString(p)
	if !utf8.ValidString(p) || n < MinLength || n > MaxLength {
		return fmt.Errorf("a password must be %d to %d characters of valid UTF-8", MinLength, MaxLength)
	}
	for _, r := range p {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("a password must not contain control characters")
		}
	}
	return nil
}

// Hash returns Jupyter's hashed form of p with a fresh salt.
func Hash(p string) string {
	salt := make([]byte, saltLen)
	_, _ = rand.Read(salt)
	return hashWithSalt(p, salt)
}

func hashWithSalt(p string, salt []byte) string {
	sum := argon2.IDKey([]byte(p), salt, passes, memoryKiB, threads, hashLen)
	enc := base64.RawStdEncoding
	return fmt.Sprintf("argon2:$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, memoryKiB, passes, threads, enc.EncodeToString(salt), enc.EncodeToString(sum))
}
