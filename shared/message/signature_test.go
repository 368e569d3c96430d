package message

import "testing"

func TestSignature(t *testing.T) {
	key, other := []byte("host-1 key"), []byte("host-2 key")
	body := `{"v":1,"instance_id":"ji-1","host_id":"host-1","status":"running","at":"2026-01-01T00:00:00Z"}`
	sig := Sign(key, body)
	tests := []struct {
		name      string
		key       []byte
		body, sig string
		want      bool
	}{
		{"signed by the host", key, body, sig, true},
		{"signed with another host's key", key, body, Sign(other, body), false},
		{"checked with another key", other, body, sig, false},
		{"body changed", key, body + " ", sig, false},
		{"no signature", key, body, "", false},
		{"not base64", key, body, "!!", false},
		{"no key", nil, body, Sign(nil, body), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Verify(tt.key, tt.body, tt.sig); got != tt.want {
				t.Errorf("Verify = %v, want %v", got, tt.want)
			}
		})
	}
}
