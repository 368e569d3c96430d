package devstack

import (
	"path/filepath"
	"strings"
	"testing"
)

// infra/redis/users.acl and sentinel.acl render into lines Redis reads (no
// comments), with each user's password hash, and an unknown placeholder is
// an error.
func TestRenderACL(t *testing.T) {
	hashes := map[string]string{"Admin": "#aa", "Proxy": "#bb", "Sidecar": "#cc", "Replica": "#dd", "Sentinel": "#ee"}
	for file, want := range map[string]map[string]string{
		"users.acl":    {"default": "", RedisAdmin: "#aa", RedisProxy: "#bb", RedisSidecar: "#cc", RedisReplica: "#dd", RedisSentinel: "#ee"},
		"sentinel.acl": {"default": "", RedisAdmin: "#aa", RedisProxy: "#bb", RedisSidecar: "#cc", RedisSentinel: "#ee"},
	} {
		t.Run(file, func(t *testing.T) { testRenderACL(t, filepath.Join("..", "redis", file), hashes, want) })
	}
}

func testRenderACL(t *testing.T, path string, hashes, want map[string]string) {
	acl, err := renderACL(path, hashes)
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
	if len(users) != len(want) {
		t.Errorf("users %v, want %v", users, want)
	}
	for user, hash := range want {
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
