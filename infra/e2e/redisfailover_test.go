package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/envjupyter/envjupyter/infra/devstack"
	"github.com/envjupyter/envjupyter/infra/kernel"
	"github.com/envjupyter/envjupyter/shared/accesslink"
	"github.com/envjupyter/envjupyter/sidecar/route"
)

// failoverBound is issue #15's acceptance bound: proxied requests work
// again within 10 s of the Redis primary's death, with no restart of ours.
const failoverBound = 10 * time.Second

// routeRefreshBound is the stack's ENVJUPYTER_ROUTE_TTL (6 s): the sidecar
// refreshes its routes every third of it, so within it at least two
// refreshes have run.
const routeRefreshBound = 6 * time.Second

// The Redis primary dies (SIGKILL) while instances run, a kernel WebSocket
// is open and a browser holds an access-link session: the sentinels promote
// the replica, the proxy and the sidecar find it by themselves, proxied
// requests work again within failoverBound, the open WebSocket never
// notices, every route of the running instances is on the new primary
// after the sidecar's next refresh (also one the new primary never
// received), the session still opens its
// environment, and a new access link opens once (its ticket is marked used
// on the new primary). The old primary then comes back as a replica, so
// the stack survives the next failover too.
func TestRedisPrimaryFailover(t *testing.T) {
	envA, a := running(t)
	stopAtEnd(t, customerA, envA)
	envB, b := running(t)
	stopAtEnd(t, customerA, envB)
	baseA, baseB := accessBase(t, a.AccessURL), accessBase(t, b.AccessURL)
	tokenA, tokenB := accessToken(t, a.AccessURL), accessToken(t, b.AccessURL)
	keepActive(t, baseA, tokenA)
	keepActive(t, baseB, tokenB)

	// A browser's session on B, from an access link.
	st, cookie, _ := follow(t, b.AccessLink)
	if st != http.StatusFound || cookie == "" {
		t.Fatalf("following B's access link: %d, cookie %q; want 302 with a session cookie", st, cookie)
	}
	session := http.Header{"Cookie": {cookie}}

	// A kernel WebSocket open on A.
	st, raw := jupyter(t, http.MethodPost, baseA+"api/kernels", tokenA, map[string]string{"name": "python3"})
	if st != http.StatusCreated {
		t.Fatalf("creating a kernel: %d %s", st, raw)
	}
	var created struct{ ID string }
	if err := json.Unmarshal(raw, &created); err != nil || created.ID == "" {
		t.Fatalf("creating a kernel: %s", raw)
	}
	conn, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(baseA, "http")+"api/kernels/"+created.ID+"/channels", tokenHeader(tokenA))
	if err != nil {
		t.Fatalf("kernel websocket: %v", err)
	}
	defer conn.Close()
	k := kernel.New(conn)
	if got, err := k.Execute("x = 20; x", 60*time.Second); err != nil || got != "20" {
		t.Fatalf("before the kill, x = 20 gives %q, %v", got, err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	routes := map[string]string{}
	admin := redisAs(t, devstack.RedisAdmin)
	for _, env := range []string{envA, envB} {
		for _, key := range []string{route.Key(env), "jupyter:token:" + env} {
			v, err := admin.Get(ctx, key).Result()
			if err != nil {
				t.Fatalf("before the kill, %s: %v", key, err)
			}
			routes[key] = v
		}
	}

	killed, err := stack.KillRedisPrimary(ctx)
	if err != nil {
		t.Fatal(err)
	}
	killedAt := time.Now()
	t.Logf("killed the Redis primary %s", killed)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := stack.RestartRedisNode(ctx, killed); err != nil {
			t.Errorf("restarting the old primary as a replica: %v", err)
		}
	})

	// The acceptance bound: a new proxied request works within 10 s of the kill.
	for {
		st, _ := jupyter(t, http.MethodGet, baseA+"api/status", tokenA, nil)
		if st == http.StatusOK {
			break
		}
		if time.Since(killedAt) > failoverBound {
			t.Fatalf("%s after the kill a proxied request still answers %d, want 200 within %s", time.Since(killedAt).Round(time.Millisecond), st, failoverBound)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("proxied requests work again %s after the kill", time.Since(killedAt).Round(time.Millisecond))
	if now := stack.RedisAddr(); now == killed {
		t.Fatalf("the sentinels still name %s the primary", killed)
	}

	if got, err := k.Execute("x + 1", 60*time.Second); err != nil || got != "21" {
		t.Fatalf("the kernel WebSocket opened before the kill: x + 1 gives %q, %v", got, err)
	}

	// No route is lost: after the sidecar's refreshes, every route and
	// token of the running instances is on the new primary, even those the
	// old primary took and never passed on (replication is asynchronous),
	// which A's stand for.
	primary := redisAs(t, devstack.RedisAdmin)
	if err := primary.Del(ctx, route.Key(envA), "jupyter:token:"+envA).Err(); err != nil {
		t.Fatal(err)
	}
	eventually(t, routeRefreshBound, func() error {
		for key, want := range routes {
			if got, err := primary.Get(ctx, key).Result(); err != nil || got != want {
				return fmt.Errorf("on the new primary %s is %q (%v), want %q", key, got, err, want)
			}
		}
		return nil
	})

	if st, _ := jupyterWith(t, http.MethodGet, baseB+"api/status", session, nil); st != http.StatusOK {
		t.Fatalf("B's access-link session after the failover: %d, want 200", st)
	}
	link := baseB + "_access?t=" + accesslink.Sign(stack.LinkKey, envB, b.InstanceID, time.Now().Add(time.Minute))
	if st, c, _ := follow(t, link); st != http.StatusFound || c == "" {
		t.Fatalf("a new access link after the failover: %d, cookie %q; want 302 with a session cookie", st, c)
	}
	if st, _, _ := follow(t, link); st != http.StatusForbidden {
		t.Fatalf("the same new link again: %d, want 403", st)
	}
}
