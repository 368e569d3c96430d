package devstack

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/template"
	"time"

	"github.com/redis/go-redis/v9"
)

// The Redis users of infra/redis/users.acl.
const (
	RedisAdmin   = "admin"   // everything: operators, and the tests' own reads and writes
	RedisProxy   = "proxy"   // the nginx proxies: read the routes, mark tickets used
	RedisSidecar = "sidecar" // the sidecars: write routes, tokens and link keys
)

// redisDir holds the ACL file and each user's password file (0600, in a
// 0700 directory): clients read their password from there, never from a
// command line.
func (s *Stack) redisDir() string { return filepath.Join(s.Opts.WorkDir, "redis") }

// RedisPasswordFile is where the user's password of this stack is.
func (s *Stack) RedisPasswordFile(user string) string {
	return filepath.Join(s.redisDir(), user+".password")
}

// RedisAddr is the stack's Redis.
func (s *Stack) RedisAddr() string { return "127.0.0.1:" + strconv.Itoa(s.Opts.RedisPort) }

// Redis returns a client of the stack's Redis signed in as user. The caller
// closes it.
func (s *Stack) Redis(user string) (*redis.Client, error) {
	password, err := os.ReadFile(s.RedisPasswordFile(user))
	if err != nil {
		return nil, fmt.Errorf("reading the password of Redis user %s: %w", user, err)
	}
	return redis.NewClient(&redis.Options{
		Addr: s.RedisAddr(), Username: user, Password: strings.TrimSpace(string(password)),
		DialTimeout: 2 * time.Second, ReadTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second,
		DisableIdentity: true, PoolSize: 32,
	}), nil
}

// startRedis gives every user of infra/redis/users.acl a new random
// password and starts redis-server with that ACL file: a connection
// without credentials can do nothing.
func (s *Stack) startRedis() error {
	dir := s.redisDir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return err
	}
	hashes := map[string]string{}
	for _, user := range []string{RedisAdmin, RedisProxy, RedisSidecar} {
		secret := make([]byte, 24)
		_, _ = rand.Read(secret)
		password := hex.EncodeToString(secret)
		if err := writePrivate(s.RedisPasswordFile(user), password+"\n"); err != nil {
			return err
		}
		sum := sha256.Sum256([]byte(password))
		hashes[strings.ToUpper(user[:1])+user[1:]] = "#" + hex.EncodeToString(sum[:])
	}
	acl, err := renderACL(filepath.Join(s.Opts.Root, "infra", "redis", "users.acl"), hashes)
	if err != nil {
		return err
	}
	aclFile := filepath.Join(dir, "users.acl")
	if err := writePrivate(aclFile, acl); err != nil {
		return err
	}
	p, err := s.spawn(s.LogDir(), "redis", nil, "redis-server", "--bind", "127.0.0.1", "--port", strconv.Itoa(s.Opts.RedisPort),
		"--save", "", "--appendonly", "no", "--protected-mode", "yes", "--aclfile", aclFile)
	if err != nil {
		return err
	}
	return waitTCP(s.RedisAddr(), p, 10*time.Second)
}

// renderACL fills the users' password hashes into the ACL file at path and
// drops its comments, which Redis does not read.
func renderACL(path string, hashes map[string]string) (string, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	t, err := template.New(filepath.Base(path)).Option("missingkey=error").Parse(string(src))
	if err != nil {
		return "", err
	}
	var b bytes.Buffer
	if err := t.Execute(&b, hashes); err != nil {
		return "", fmt.Errorf("rendering %s: %w", path, err)
	}
	var out strings.Builder
	for _, line := range strings.Split(b.String(), "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			out.WriteString(line + "\n")
		}
	}
	return out.String(), nil
}

// writePrivate writes a file only its owner may read.
func writePrivate(path, content string) error {
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		return err
	}
	return os.Chmod(path, 0o600) // an existing file keeps its mode in WriteFile
}
