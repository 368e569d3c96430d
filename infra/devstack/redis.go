package devstack

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/template"
	"time"

	"github.com/redis/go-redis/v9"
)

// The Redis users of infra/redis/users.acl (and, with the same passwords,
// of infra/redis/sentinel.acl).
const (
	RedisAdmin    = "admin"    // everything: operators, and the tests' own reads and writes
	RedisProxy    = "proxy"    // the nginx proxies: read the routes, mark tickets used
	RedisSidecar  = "sidecar"  // the sidecars: write routes, tokens and link keys
	RedisReplica  = "replica"  // a replica copying the primary
	RedisSentinel = "sentinel" // the sentinels: watch the nodes, promote a replica, talk to each other
)

var redisUsers = []string{RedisAdmin, RedisProxy, RedisSidecar, RedisReplica, RedisSentinel}

// RedisMaster is the name the sentinels know the primary by (their
// `sentinel monitor`), which the proxy and the sidecars ask them about.
const RedisMaster = "envjupyter"

// The stack's Redis has no single point of failure: two nodes (a primary
// and its replica) on RedisPort and RedisPort+1, and three sentinels on
// RedisPort+2 to +4 that promote the replica when the primary is gone
// (quorum 2). The proxy and the sidecar ask the sentinels where the
// primary is.
const (
	redisNodes      = 2
	redisSentinels  = 3
	sentinelQuorum  = 2
	sentinelPortGap = redisNodes // the first sentinel's port, after the nodes'
)

// Failover timings of the local stack, short so that a failover takes a
// few seconds (docs/DEPLOY.md gives production's).
const (
	sentinelDownAfter       = 1000 * time.Millisecond
	sentinelFailoverTimeout = 5 * time.Second
)

// redisSet are the stack's Redis processes by port.
type redisSet struct {
	mu    sync.Mutex
	nodes map[int]*process
}

// redisDir holds the ACL file, the nodes' and sentinels' configurations
// and each user's password file (0600, in a 0700 directory): clients read
// their password from there, never from a command line.
func (s *Stack) redisDir() string { return filepath.Join(s.Opts.WorkDir, "redis") }

// RedisPasswordFile is where the user's password of this stack is.
func (s *Stack) RedisPasswordFile(user string) string {
	return filepath.Join(s.redisDir(), user+".password")
}

func (s *Stack) redisNodePorts() []int {
	ports := make([]int, redisNodes)
	for i := range ports {
		ports[i] = s.Opts.RedisPort + i
	}
	return ports
}

// SentinelAddrs are the stack's sentinels.
func (s *Stack) SentinelAddrs() []string {
	addrs := make([]string, redisSentinels)
	for i := range addrs {
		addrs[i] = "127.0.0.1:" + strconv.Itoa(s.Opts.RedisPort+sentinelPortGap+i)
	}
	return addrs
}

// RedisAddr is the stack's Redis primary now, as the sentinels say (after
// a failover, the promoted replica); the first node when no sentinel
// answers.
func (s *Stack) RedisAddr() string {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if addr, err := s.redisPrimary(ctx); err == nil {
		return addr
	}
	return "127.0.0.1:" + strconv.Itoa(s.Opts.RedisPort)
}

// redisPrimary asks the sentinels, one after another, where the primary is.
func (s *Stack) redisPrimary(ctx context.Context) (string, error) {
	var errs []error
	for _, addr := range s.SentinelAddrs() {
		sc, err := s.sentinel(addr)
		if err != nil {
			return "", err
		}
		got, err := sc.GetMasterAddrByName(ctx, RedisMaster).Result()
		sc.Close()
		if err == nil && len(got) == 2 {
			return net.JoinHostPort(got[0], got[1]), nil
		}
		errs = append(errs, fmt.Errorf("sentinel %s: %v", addr, err))
	}
	return "", errors.Join(errs...)
}

// sentinel is a client of one sentinel, signed in as the admin.
func (s *Stack) sentinel(addr string) (*redis.SentinelClient, error) {
	password, err := s.redisPassword(RedisAdmin)
	if err != nil {
		return nil, err
	}
	return redis.NewSentinelClient(&redis.Options{
		Addr: addr, Username: RedisAdmin, Password: password,
		DialTimeout: time.Second, ReadTimeout: time.Second, WriteTimeout: time.Second, DisableIdentity: true,
	}), nil
}

func (s *Stack) redisPassword(user string) (string, error) {
	password, err := os.ReadFile(s.RedisPasswordFile(user))
	if err != nil {
		return "", fmt.Errorf("reading the password of Redis user %s: %w", user, err)
	}
	return strings.TrimSpace(string(password)), nil
}

// Redis returns a client of the stack's Redis primary, as it is when
// called (a client made after a failover reaches the new primary), signed
// in as user. The caller closes it.
func (s *Stack) Redis(user string) (*redis.Client, error) {
	password, err := s.redisPassword(user)
	if err != nil {
		return nil, err
	}
	return redis.NewClient(&redis.Options{
		Addr: s.RedisAddr(), Username: user, Password: password,
		DialTimeout: 2 * time.Second, ReadTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second,
		DisableIdentity: true, PoolSize: 32,
	}), nil
}

// proxyRedisEnv tells infra/proxy/run-local.sh where the route table is
// and who the proxy is there.
func (s *Stack) proxyRedisEnv() []string {
	return []string{"REDIS_USER=" + RedisProxy, "REDIS_PASSWORD_FILE=" + s.RedisPasswordFile(RedisProxy),
		"REDIS_SENTINELS=" + strings.Join(s.SentinelAddrs(), ","), "REDIS_MASTER_NAME=" + RedisMaster}
}

// sidecarRedisEnv tells the sidecar the same.
func (s *Stack) sidecarRedisEnv() []string {
	return []string{
		"ENVJUPYTER_REDIS_SENTINELS=" + strings.Join(s.SentinelAddrs(), ","),
		"ENVJUPYTER_REDIS_MASTER_NAME=" + RedisMaster,
		"ENVJUPYTER_REDIS_USER=" + RedisSidecar,
		"ENVJUPYTER_REDIS_PASSWORD_FILE=" + s.RedisPasswordFile(RedisSidecar),
	}
}

// startRedis gives every user of infra/redis/users.acl a new random
// password and starts the primary, its replica and the sentinels with
// those users: a connection without credentials can do nothing.
func (s *Stack) startRedis() error {
	dir := s.redisDir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return err
	}
	hashes := map[string]string{}
	for _, user := range redisUsers {
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
	if err := writePrivate(filepath.Join(dir, "users.acl"), acl); err != nil {
		return err
	}
	sentinelUsers, err := renderACL(filepath.Join(s.Opts.Root, "infra", "redis", "sentinel.acl"), hashes)
	if err != nil {
		return err
	}
	s.redis.nodes = map[int]*process{}
	ports := s.redisNodePorts()
	for i, port := range ports {
		primary := ""
		if i > 0 {
			primary = "127.0.0.1:" + strconv.Itoa(ports[0])
		}
		if err := s.startRedisNode(port, primary); err != nil {
			return err
		}
	}
	for _, addr := range s.SentinelAddrs() {
		if err := s.startSentinel(addr, ports[0], sentinelUsers); err != nil {
			return err
		}
	}
	return s.waitSentinels(20 * time.Second)
}

// startRedisNode starts the Redis node on port, a replica of primary
// (host:port) unless that is empty. Its configuration file holds the
// replication password, so it is the owner's alone.
func (s *Stack) startRedisNode(port int, primary string) error {
	password, err := s.redisPassword(RedisReplica)
	if err != nil {
		return err
	}
	conf := filepath.Join(s.redisDir(), "node-"+strconv.Itoa(port)+".conf")
	if err := writePrivate(conf, strings.Join([]string{
		"bind 127.0.0.1", "port " + strconv.Itoa(port), "protected-mode yes",
		// A replica's full sync goes through an RDB file: here, in the
		// stack's own 0700 directory, not wherever the stack was started.
		`save ""`, "appendonly no", "dir " + s.redisDir(), "dbfilename node-" + strconv.Itoa(port) + ".rdb",
		"aclfile " + filepath.Join(s.redisDir(), "users.acl"),
		// Every node may become a replica (again), so every node knows how
		// to sign in to a primary.
		"masteruser " + RedisReplica, "masterauth " + password,
	}, "\n")+"\n"); err != nil {
		return err
	}
	argv := []string{"redis-server", conf}
	if primary != "" {
		host, p, _ := net.SplitHostPort(primary)
		argv = append(argv, "--replicaof", host, p)
	}
	proc, err := s.spawn(s.LogDir(), "redis-"+strconv.Itoa(port), nil, argv...)
	if err != nil {
		return err
	}
	s.redis.mu.Lock()
	s.redis.nodes[port] = proc
	s.redis.mu.Unlock()
	return waitTCP("127.0.0.1:"+strconv.Itoa(port), proc, 10*time.Second)
}

// startSentinel starts a sentinel on addr watching the primary on
// primaryPort. Its configuration (which Sentinel rewrites as it learns the
// other sentinels, the replicas and failovers) holds the passwords it
// signs in with, so it is the owner's alone.
func (s *Stack) startSentinel(addr string, primaryPort int, users string) error {
	sentinelPassword, err := s.redisPassword(RedisSentinel)
	if err != nil {
		return err
	}
	_, port, _ := net.SplitHostPort(addr)
	conf := filepath.Join(s.redisDir(), "sentinel-"+port+".conf")
	m := RedisMaster
	if err := writePrivate(conf, strings.Join([]string{
		"bind 127.0.0.1", "port " + port, "dir " + s.redisDir(),
		fmt.Sprintf("sentinel monitor %s 127.0.0.1 %d %d", m, primaryPort, sentinelQuorum),
		fmt.Sprintf("sentinel down-after-milliseconds %s %d", m, sentinelDownAfter.Milliseconds()),
		fmt.Sprintf("sentinel failover-timeout %s %d", m, sentinelFailoverTimeout.Milliseconds()),
		"sentinel parallel-syncs " + m + " 1",
		"sentinel auth-user " + m + " " + RedisSentinel, "sentinel auth-pass " + m + " " + sentinelPassword,
		"sentinel sentinel-user " + RedisSentinel, "sentinel sentinel-pass " + sentinelPassword,
	}, "\n")+"\n"+users); err != nil {
		return err
	}
	proc, err := s.spawn(s.LogDir(), "sentinel-"+port, nil, "redis-sentinel", conf)
	if err != nil {
		return err
	}
	return waitTCP(addr, proc, 10*time.Second)
}

// waitSentinels waits until every sentinel knows the primary, a replica
// and the other sentinels: only then can they agree on a failover.
func (s *Stack) waitSentinels(timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for _, addr := range s.SentinelAddrs() {
		sc, err := s.sentinel(addr)
		if err != nil {
			return err
		}
		err = waitSentinel(ctx, sc)
		sc.Close()
		if err != nil {
			return fmt.Errorf("sentinel %s: %w", addr, err)
		}
	}
	return nil
}

func waitSentinel(ctx context.Context, sc *redis.SentinelClient) error {
	for {
		m, err := sc.Master(ctx, RedisMaster).Result()
		if err == nil && m["flags"] == "master" && m["num-other-sentinels"] == strconv.Itoa(redisSentinels-1) {
			replicas, err := sc.Replicas(ctx, RedisMaster).Result()
			if err == nil && upReplicas(replicas) >= redisNodes-1 {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("it does not see the primary, %d replica(s) and %d other sentinels: %v %v", redisNodes-1, redisSentinels-1, m, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// upReplicas counts the replicas a sentinel sees connected and in sync.
func upReplicas(replicas []map[string]string) int {
	n := 0
	for _, r := range replicas {
		if r["flags"] == "slave" && r["master-link-status"] == "ok" {
			n++
		}
	}
	return n
}

// KillRedisPrimary kills the Redis primary with SIGKILL, as a crash would,
// and returns its address; the sentinels then promote the replica.
func (s *Stack) KillRedisPrimary(ctx context.Context) (string, error) {
	addr, err := s.redisPrimary(ctx)
	if err != nil {
		return "", err
	}
	_, p, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(p)
	s.redis.mu.Lock()
	proc := s.redis.nodes[port]
	s.redis.mu.Unlock()
	if proc == nil || proc.exited() {
		return "", fmt.Errorf("the primary %s is not a running node of this stack", addr)
	}
	_ = syscall.Kill(proc.cmd.Process.Pid, syscall.SIGKILL)
	<-proc.done
	return addr, nil
}

// RestartRedisNode starts the node at addr again (after KillRedisPrimary),
// as a replica of the primary now, and waits until every sentinel sees it
// in sync: the stack can then survive another failover.
func (s *Stack) RestartRedisNode(ctx context.Context, addr string) error {
	primary, err := s.redisPrimary(ctx)
	if err != nil {
		return err
	}
	if primary == addr {
		return fmt.Errorf("%s is still the primary", addr)
	}
	_, p, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(p)
	if err := s.startRedisNode(port, primary); err != nil {
		return err
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(30 * time.Second)
	}
	return s.waitSentinels(time.Until(deadline))
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
