package accesslink

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func keys(t *testing.T, s string) []Key {
	t.Helper()
	k, err := ParseKeys(s)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

const (
	secretA = "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE=" // 32 × "A"
	secretB = "QkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkI=" // 32 × "B"
)

func TestSignVerify(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	current := keys(t, "k2:"+secretB+",k1:"+secretA)
	ticket := Sign(current[0], "env-1", "ji-1", now.Add(5*time.Minute))
	tests := []struct {
		name   string
		keys   []Key
		ticket string
		at     time.Time
		ok     bool
	}{
		{"valid", current, ticket, now, true},
		{"after rotation, the old key still verifies", keys(t, "k3:"+secretA+",k2:"+secretB), ticket, now, true},
		{"key retired", keys(t, "k1:"+secretA), ticket, now, false},
		{"expired", current, ticket, now.Add(5 * time.Minute), false},
		{"tampered environment", current, strings.Replace(ticket, "env-1", "env-2", 1), now, false},
		{"tampered expiry", current, strings.Replace(ticket, ".1800000300.", ".1900000300.", 1), now, false},
		{"truncated mac", current, ticket[:len(ticket)-2], now, false},
		{"garbage", current, "t1.a.b", now, false},
		{"same kid, other secret", keys(t, "k2:"+secretA), ticket, now, false},
		{"a session is no ticket", current, SignFor(Session, current[0], "env-1", "ji-1", now.Add(time.Minute)), now, false},
		{"a session relabelled as a ticket", current, "t1" + strings.TrimPrefix(SignFor(Session, current[0], "env-1", "ji-1", now.Add(time.Minute)), "s1"), now, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Verify(tt.keys, tt.ticket, tt.at)
			if (err == nil) != tt.ok {
				t.Fatalf("Verify = %+v, %v; want ok %v", c, err, tt.ok)
			}
			if tt.ok && (c.EnvironmentID != "env-1" || c.InstanceID != "ji-1") {
				t.Fatalf("claims %+v", c)
			}
		})
	}
}

// A known answer, so the proxy's Lua (ngx.hmac_sha1) can be checked against
// the same vector.
func TestMACKnownAnswer(t *testing.T) {
	got := mac(bytes.Repeat([]byte("A"), 32), "v1.k1.env-1.ji-1.1800000300.0011223344556677")
	if got != macVector {
		t.Fatalf("mac = %s, want %s", got, macVector)
	}
}

func TestParseKeys(t *testing.T) {
	for _, bad := range []string{"k1", "k1:notbase64!", "K1:" + secretA, "k1:QUJD", "toolongkeyid12345:" + secretA} {
		if _, err := ParseKeys(bad); err == nil {
			t.Errorf("ParseKeys(%q) accepted", bad)
		}
	}
}

// A ticket is no session, however its prefix reads.
func TestTicketIsNoSession(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	k := keys(t, "k1:"+secretA)
	ticket := Sign(k[0], "env-1", "ji-1", now.Add(time.Minute))
	for _, s := range []string{ticket, "s1" + strings.TrimPrefix(ticket, "t1")} {
		if _, err := VerifyFor(Session, k, s, now); err == nil {
			t.Errorf("%q verified as a session", s)
		}
	}
	if _, err := VerifyFor(Session, k, SignFor(Session, k[0], "env-1", "ji-1", now.Add(time.Minute)), now); err != nil {
		t.Fatal(err)
	}
}

// The derived keys, so the proxy's Lua can be checked against the same
// vector: HMAC-SHA1(HMAC-SHA1("A"*32, label), payload).
func TestDerivedKeyKnownAnswer(t *testing.T) {
	got := mac(Ticket.key(bytes.Repeat([]byte("A"), 32)), "t1.k1.env-1.ji-1.1800000300.0011223344556677")
	t.Logf("ticket vector %s", got)
	if got != ticketVector {
		t.Fatalf("mac = %s, want %s", got, ticketVector)
	}
}

// macVector was computed with Python's hmac module.
const macVector = "JzW-4jnAVN3wi4gMFRzovhZdNeE"

// ticketVector was computed with Python's hmac module.
const ticketVector = "yRi8P9Q3SVXHWUWy20l0yslFwCo"
