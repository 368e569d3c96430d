package devstack

import (
	"path/filepath"
	"strings"
	"testing"
)

// infra/redis/users.acl renders into lines Redis reads (no comments), with
// each user's password hash, and an unknown placeholder is an error.
func TestRenderACL(t *testing.T) {
	path := filepath.Join("..", "redis", "users.acl")
	acl, err := renderACL(path, map[string]string{"Admin": "#aa", "Proxy": "#bb", "Sidecar": "#cc"})
	if err != nil {
		t.Fatal(err)
	}
	users := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(acl), "\n") {
		f := strings.Fields(line)
		if len(f) < 3 || f[0] != "user" {
			t.Fatalf("not an ACL rule: %q", line)
		}
		users[f[1]] = line
	}
	for user, hash := range map[string]string{"default": "", RedisAdmin: "#aa", RedisProxy: "#bb", RedisSidecar: "#cc"} {
		if users[user] == "" || !strings.Contains(users[user], " "+hash) {
			t.Errorf("user %s: %q", user, users[user])
		}
	}
	if !strings.Contains(users["default"], " off ") {
		t.Errorf("the default user is not off: %q", users["default"])
	}
	if _, err := renderACL(path, map[string]string{"Admin": "#aa"}); err == nil {
		t.Error("rendered without the proxy's and the sidecar's passwords")
	}
}
