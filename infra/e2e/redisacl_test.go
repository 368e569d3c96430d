package e2e

import (
	"context"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/envjupyter/envjupyter/infra/devstack"
	"github.com/envjupyter/envjupyter/sidecar/route"
)

// redisAs is a client of the stack's Redis signed in as one of its users
// (infra/redis/users.acl), closed when the test ends.
func redisAs(t *testing.T, user string) *redis.Client {
	t.Helper()
	rdb, err := stack.Redis(user)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

// refused fails the test unless err is Redis's refusal with the given code
// (NOAUTH, NOPERM, WRONGPASS); what says it is tells what was tried.
func refused(t *testing.T, what string, err error, code string) {
	t.Helper()
	if err == nil || !strings.Contains(err.Error(), code) {
		t.Errorf("%s: %v, want %s", what, err, code)
	}
}

// Redis requires credentials, and each component's user may do only what
// that component does: the proxy reads the routes (it cannot write one),
// the sidecar writes the route table (and nothing beside it). The stack's
// proxy and sidecar sign in as those users.
func TestRedisUsers(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	admin := redisAs(t, devstack.RedisAdmin)
	env := "e2e-acl-" + randomID()[:8]
	other := "e2e-acl:" + randomID()[:8] // a key outside every pattern but the admin's
	if err := admin.Set(ctx, route.Key(env), "192.0.2.1:1", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	if err := admin.Set(ctx, other, "secret", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.Del(context.Background(), route.Key(env), other) })

	t.Run("without credentials", func(t *testing.T) {
		anon := redis.NewClient(&redis.Options{Addr: stack.RedisAddr(), DisableIdentity: true})
		defer anon.Close()
		refused(t, "GET of a route", anon.Get(ctx, route.Key(env)).Err(), "NOAUTH")
		refused(t, "SET of a route", anon.Set(ctx, route.Key(env), "198.51.100.1:80", 0).Err(), "NOAUTH")
		refused(t, "PING", anon.Ping(ctx).Err(), "NOAUTH")
		refused(t, "FLUSHALL", anon.FlushAll(ctx).Err(), "NOAUTH")
		for _, user := range []string{"default", devstack.RedisProxy, devstack.RedisAdmin} {
			wrong := redis.NewClient(&redis.Options{Addr: stack.RedisAddr(), Username: user, Password: "not-the-password", DisableIdentity: true})
			refused(t, "signing in as "+user+" with a wrong password", wrong.Ping(ctx).Err(), "WRONGPASS")
			wrong.Close()
		}
	})

	t.Run("the proxy's user reads routes and cannot write them", func(t *testing.T) {
		proxy := redisAs(t, devstack.RedisProxy)
		if v, err := proxy.Get(ctx, route.Key(env)).Result(); err != nil || v != "192.0.2.1:1" {
			t.Fatalf("the proxy reading a route: %q %v", v, err)
		}
		// Marking a ticket used is the proxy's one write.
		if err := proxy.SetNX(ctx, "jupyter:ticket-used:"+randomID(), "1", time.Minute).Err(); err != nil {
			t.Fatalf("the proxy marking a ticket used: %v", err)
		}
		refused(t, "proxy SET of a route", proxy.Set(ctx, route.Key(env), "198.51.100.1:80", 0).Err(), "NOPERM")
		refused(t, "proxy SET NX of a new route", proxy.SetNX(ctx, route.Key(env+"-new"), "198.51.100.1:80", time.Minute).Err(), "NOPERM")
		refused(t, "proxy DEL of a route", proxy.Del(ctx, route.Key(env)).Err(), "NOPERM")
		refused(t, "proxy EXPIRE of a route", proxy.Expire(ctx, route.Key(env), time.Second).Err(), "NOPERM")
		refused(t, "proxy SET of a token", proxy.Set(ctx, "jupyter:token:"+env, "i x", 0).Err(), "NOPERM")
		refused(t, "proxy HSET of a link key", proxy.HSet(ctx, route.LinkKeys, "evil", "c2VjcmV0").Err(), "NOPERM")
		refused(t, "proxy GET outside its keys", proxy.Get(ctx, other).Err(), "NOPERM")
		refused(t, "proxy GET of a used ticket (write-only)", proxy.Get(ctx, "jupyter:ticket-used:x").Err(), "NOPERM")
		refused(t, "proxy KEYS", proxy.Keys(ctx, "*").Err(), "NOPERM")
		refused(t, "proxy FLUSHALL", proxy.FlushAll(ctx).Err(), "NOPERM")
		refused(t, "proxy EVAL", proxy.Eval(ctx, "return 1", nil).Err(), "NOPERM")
		// Its workers hear which of its keys change, and nothing else.
		refused(t, "proxy SUBSCRIBE of the sentinels' channel", proxy.Do(ctx, "SUBSCRIBE", "__sentinel__:hello").Err(), "NOPERM")
		refused(t, "proxy PUBLISH of an invalidation", proxy.Publish(ctx, "__redis__:invalidate", route.Key(env)).Err(), "NOPERM")
		refused(t, "proxy CLIENT KILL", proxy.Do(ctx, "CLIENT", "KILL", "USER", devstack.RedisSidecar).Err(), "NOPERM")
		refused(t, "proxy CLIENT LIST", proxy.ClientList(ctx).Err(), "NOPERM")
	})

	t.Run("the sidecar's user writes only the route table", func(t *testing.T) {
		sidecar := redisAs(t, devstack.RedisSidecar)
		if err := sidecar.Set(ctx, route.Key(env), "192.0.2.2:2", time.Minute).Err(); err != nil {
			t.Fatalf("the sidecar writing a route: %v", err)
		}
		refused(t, "sidecar GET outside its keys", sidecar.Get(ctx, other).Err(), "NOPERM")
		refused(t, "sidecar SET outside its keys", sidecar.Set(ctx, other, "x", 0).Err(), "NOPERM")
		refused(t, "sidecar SET of a used ticket", sidecar.Set(ctx, "jupyter:ticket-used:x", "1", 0).Err(), "NOPERM")
		refused(t, "sidecar DEL outside its keys", sidecar.Del(ctx, other).Err(), "NOPERM")
		refused(t, "sidecar KEYS", sidecar.Keys(ctx, "*").Err(), "NOPERM")
		refused(t, "sidecar SCAN", sidecar.Scan(ctx, 0, "*", 10).Err(), "NOPERM")
		refused(t, "sidecar FLUSHALL", sidecar.FlushAll(ctx).Err(), "NOPERM")
		refused(t, "sidecar CONFIG SET", sidecar.ConfigSet(ctx, "save", "").Err(), "NOPERM")
		refused(t, "sidecar ACL SETUSER", sidecar.Do(ctx, "ACL", "SETUSER", "default", "on", "nopass", "+@all", "~*").Err(), "NOPERM")
		refused(t, "sidecar CLIENT KILL", sidecar.Do(ctx, "CLIENT", "KILL", "USER", devstack.RedisProxy).Err(), "NOPERM")
		// A script runs with the caller's rights.
		err := sidecar.Eval(ctx, `return redis.call("SET", KEYS[1], "x")`, []string{other}).Err()
		if err == nil || !strings.Contains(err.Error(), "access") {
			t.Errorf("sidecar script writing outside its keys: %v, want refused", err)
		}
		if v, _ := admin.Get(ctx, other).Result(); v != "secret" {
			t.Errorf("the key outside the sidecar's patterns now holds %q", v)
		}
	})

	t.Run("the stack's proxy and sidecar sign in as their users", func(t *testing.T) {
		// An unknown environment is a 404 only if the proxy read Redis.
		unknown := "e2e-acl-none-" + randomID()[:8]
		host := "env-" + unknown + "." + devstack.JupyterDomain + ":" + strconv.Itoa(stack.Opts.ProxyPort)
		if st := rawGet(t, "127.0.0.1:"+strconv.Itoa(stack.Opts.ProxyPort), host, "/env-"+unknown+"/"); st != http.StatusNotFound {
			t.Fatalf("the proxy on an unknown environment: %d, want 404 (502: it cannot read Redis)", st)
		}
		clients, err := admin.ClientList(ctx).Result()
		if err != nil {
			t.Fatal(err)
		}
		users := map[string]int{}
		for _, line := range strings.Split(clients, "\n") {
			for _, field := range strings.Fields(line) {
				if u, ok := strings.CutPrefix(field, "user="); ok {
					users[u]++
				}
			}
		}
		if users[devstack.RedisProxy] == 0 || users[devstack.RedisSidecar] == 0 || users["default"] != 0 {
			t.Errorf("connections by user: %v, want the proxy's and the sidecar's, none unauthenticated", users)
		}
	})
}

// A compromised host (the sidecar's user) or proxy may ask the sentinels
// where the primary is, but not move it: naming another primary would hand
// every host's routes, tokens and link keys to whoever runs it.
func TestSentinelUsersCannotMoveThePrimary(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	addr := stack.SentinelAddrs()[0]
	before := stack.RedisAddr()
	for _, user := range []string{devstack.RedisSidecar, devstack.RedisProxy} {
		password, err := os.ReadFile(stack.RedisPasswordFile(user))
		if err != nil {
			t.Fatal(err)
		}
		// A plain client: a sentinel speaks Redis's protocol.
		sc := redis.NewClient(&redis.Options{Addr: addr, Username: user, Password: strings.TrimSpace(string(password)),
			DialTimeout: 2 * time.Second, ReadTimeout: 2 * time.Second, DisableIdentity: true})
		t.Cleanup(func() { sc.Close() })
		if got, err := sc.Do(ctx, "sentinel", "get-master-addr-by-name", devstack.RedisMaster).StringSlice(); err != nil || len(got) != 2 {
			t.Fatalf("%s asking where the primary is: %v %v", user, got, err)
		}
		for what, args := range map[string][]any{
			"SENTINEL SET":      {"sentinel", "set", devstack.RedisMaster, "down-after-milliseconds", "1"},
			"SENTINEL FAILOVER": {"sentinel", "failover", devstack.RedisMaster},
			"SENTINEL REMOVE":   {"sentinel", "remove", devstack.RedisMaster},
			"SENTINEL MONITOR":  {"sentinel", "monitor", "evil", "127.0.0.1", "1", "1"},
			"SENTINEL RESET":    {"sentinel", "reset", "*"},
			"SENTINEL CONFIG":   {"sentinel", "config", "set", "resolve-hostnames", "yes"},
			"ACL SETUSER":       {"acl", "setuser", user, "+@all"},
		} {
			refused(t, user+" "+what, sc.Do(ctx, args...).Err(), "NOPERM")
		}
	}
	// Still the same primary, with the same settings.
	if after := stack.RedisAddr(); after != before {
		t.Fatalf("the primary moved from %s to %s", before, after)
	}
}
