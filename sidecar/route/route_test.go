package route

import "testing"

func TestKey(t *testing.T) {
	tests := []struct {
		name, environmentID, want string
	}{
		{"simple", "e1", "jupyter:env:e1"},
		{"uuid", "0b8e6c1c-3f1e-4c36-9b8e-6c1c3f1e4c36", "jupyter:env:0b8e6c1c-3f1e-4c36-9b8e-6c1c3f1e4c36"},
		{"case kept", "Env-A", "jupyter:env:Env-A"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Key(tt.environmentID); got != tt.want {
				t.Errorf("Key(%q) = %q, want %q", tt.environmentID, got, tt.want)
			}
		})
	}
}
