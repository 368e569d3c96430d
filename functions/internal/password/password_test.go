package password

import (
	"regexp"
	"strings"
	"testing"
)

// The hash has Jupyter's format; an argon2-cffi verifier parses it.
func TestHashFormat(t *testing.T) {
	h := Hash("correct horse")
	re := regexp.MustCompile(`^argon2:\$argon2id\$v=19\$m=10240,t=10,p=8\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}$`)
	if !re.MatchString(h) {
		t.Fatalf("hash %q does not have Jupyter's format", h)
	}
	if strings.Contains(h, "correct horse") {
		t.Fatal("the hash contains the password")
	}
	if Hash("correct horse") == h {
		t.Fatal("two hashes of one password are equal: the salt is not random")
	}
}

// A known answer, computed with argon2-cffi (the library Jupyter uses):
// PasswordHasher(memory_cost=10240, time_cost=10, parallelism=8) with salt
// b"0123456789abcdef" and hash_len=32 (argon2.low_level.hash_secret).
func TestHashKnownAnswer(t *testing.T) {
	got := hashWithSalt("password123", []byte("0123456789abcdef"))
	want := "argon2:$argon2id$v=19$m=10240,t=10,p=8$MDEyMzQ1Njc4OWFiY2RlZg$sE0w+M2CfS3/QjDy/NzGjeDi3m70aLZmsLQPDDIo3xI"
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name, p string
		ok      bool
	}{
		{"good", "correct horse", true},
		{"short", "1234567", false},
		{"eight", "12345678", true},
		{"long", strings.Repeat("x", 257), false},
		{"max", strings.Repeat("x", 256), true},
		{"newline", "abc\ndefgh", false},
		{"NUL", "abcdefgh\x00", false},
		{"invalid UTF-8", "abcdefg\xff", false},
		{"unicode", "пароль-пароль", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := Validate(tt.p); (err == nil) != tt.ok {
				t.Fatalf("Validate(%q) = %v, want ok %v", tt.p, err, tt.ok)
			}
		})
	}
}
