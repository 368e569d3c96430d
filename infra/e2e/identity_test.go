package e2e

import (
	"net/http"
	"testing"
	"time"

	"github.com/envjupyter/envjupyter/infra/devstack"
)

// Only a valid token of the stack's issuer reaches the API: no token, an
// expired one, another audience or issuer, or another key's signature → 401.
func TestIdentity(t *testing.T) {
	env := newEnvironment(t, customerA)
	otherKey, err := devstack.NewIssuer(stack.Identity.URL(), devstack.Audience)
	if err != nil {
		t.Fatal(err)
	}
	claims := func(edit func(map[string]any)) string {
		c := stack.Identity.Claims(customerA, time.Hour)
		edit(c)
		signed, err := stack.Identity.Sign(c)
		if err != nil {
			t.Fatal(err)
		}
		return signed
	}
	tests := []struct {
		name, token string
		status      int
	}{
		{"valid", token(customerA), http.StatusOK},
		{"no token", "", http.StatusUnauthorized},
		{"expired", stack.Identity.Token(customerA, -time.Minute), http.StatusUnauthorized},
		{"wrong audience", claims(func(c map[string]any) { c["aud"] = "someone-else" }), http.StatusUnauthorized},
		{"wrong issuer", claims(func(c map[string]any) { c["iss"] = "https://evil.example/" }), http.StatusUnauthorized},
		{"bad signature", otherKey.Token(customerA, time.Hour), http.StatusUnauthorized},
		{"garbage", "not.a.token", http.StatusUnauthorized},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, stack.ProxyURL()+"/api/environments/"+env+"/jupyter", nil)
			if tc.token != "" {
				req.Header.Set("Authorization", "Bearer "+tc.token)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Fatalf("%d, want %d", resp.StatusCode, tc.status)
			}
		})
	}
	// A start with a refused token changes nothing.
	req, _ := http.NewRequest(http.MethodPost, stack.ProxyURL()+"/api/environments/"+env+"/jupyter/start", nil)
	req.Header.Set("Authorization", "Bearer "+otherKey.Token(customerA, time.Hour))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if _, b := status(t, token(customerA), env); resp.StatusCode != 401 || b.Status != "not_started" {
		t.Fatalf("start with a forged token: %d, then status %s; want 401 and not_started", resp.StatusCode, b.Status)
	}
}
