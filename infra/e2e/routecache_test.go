package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/envjupyter/envjupyter/infra/devstack"
	"github.com/envjupyter/envjupyter/sidecar/route"
)

// The proxy's workers keep a copy of the routes they read
// (infra/proxy/lua/routecache.lua), and it is never behind Redis: the
// request after a route's change, deletion or expiry follows it; while the
// workers' subscriptions to Redis's invalidations are cut, no copy is used;
// they come back by themselves. And the copy is used: requests to an
// unchanged route do not each read Redis.
func TestProxyRouteCacheFollowsRedis(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	admin := redisAs(t, devstack.RedisAdmin)
	var backends []string
	for i := range 3 {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			fmt.Fprintf(w, "backend-%d", i)
		}))
		t.Cleanup(srv.Close)
		backends = append(backends, strings.TrimPrefix(srv.URL, "http://"))
	}
	env := "e2e-cache-" + randomID()[:8]
	t.Cleanup(func() { admin.Del(context.Background(), route.Key(env)) })
	setRoute := func(backend int, ttl time.Duration) {
		t.Helper()
		if err := admin.Set(ctx, route.Key(env), backends[backend], ttl).Err(); err != nil {
			t.Fatal(err)
		}
	}
	// Each request on its own connection, so that both workers answer.
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: devstack.DialLoopback, DisableKeepAlives: true}}
	answers := func(n int) map[string]int {
		t.Helper()
		got := map[string]int{}
		for range n {
			resp, err := client.Get(stack.EnvURL(env) + "api")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				got[string(body)]++
			} else {
				got[strconv.Itoa(resp.StatusCode)+" "+resp.Header.Get("X-Envjupyter-Error")]++
			}
		}
		return got
	}
	want := func(what string, got map[string]int, answer string, n int) {
		t.Helper()
		if len(got) != 1 || got[answer] != n {
			t.Fatalf("%s: answers %v, want %d × %q", what, got, n, answer)
		}
	}

	setRoute(0, time.Minute)
	want("a new route", answers(20), "backend-0", 20)
	gets := redisGets(t, admin)
	want("the same route again", answers(40), "backend-0", 40)
	if read := redisGets(t, admin) - gets; read >= 20 {
		t.Errorf("40 requests to an unchanged route read Redis %d times: the workers' copy is not used", read)
	}
	setRoute(1, time.Minute)
	want("the route changed", answers(20), "backend-1", 20)

	// Cut every subscription of the proxy's user (the workers of every
	// proxy of the stack): the copy must not answer for a write the workers
	// no longer hear of.
	subscribers := func() int { return len(subscriberAddrs(t, admin)) }
	listening := subscribers()
	if listening < 2 {
		t.Fatalf("%d subscribers of the proxy's user, want one per nginx worker (2 or more)", listening)
	}
	if err := admin.ClientKillByFilter(ctx, "TYPE", "pubsub", "USER", devstack.RedisProxy).Err(); err != nil {
		t.Fatal(err)
	}
	setRoute(2, time.Minute)
	want("the route changed while the subscriptions were cut", answers(20), "backend-2", 20)
	for deadline := time.Now().Add(10 * time.Second); subscribers() < listening; {
		if time.Now().After(deadline) {
			t.Fatalf("the proxy's workers did not subscribe again (%d of %d subscribers)", subscribers(), listening)
		}
		time.Sleep(50 * time.Millisecond)
	}
	want("after the workers subscribed again", answers(20), "backend-2", 20)
	setRoute(0, time.Minute)
	want("the route changed after they subscribed again", answers(20), "backend-0", 20)

	// A route that expires is not served from the copy after it.
	// (Waited for without touching the key: reading it would make Redis
	// expire it and send the invalidation.)
	setRoute(1, 1500*time.Millisecond)
	want("a route with a short life", answers(10), "backend-1", 10)
	time.Sleep(1700 * time.Millisecond)
	want("the route expired", answers(10), "404 unknown_environment", 10)

	setRoute(2, time.Minute)
	want("a route again", answers(10), "backend-2", 10)
	if err := admin.Del(ctx, route.Key(env)).Err(); err != nil {
		t.Fatal(err)
	}
	want("the route deleted", answers(10), "404 unknown_environment", 10)

	// A partition: Redis's packets to the subscriptions are dropped, so
	// the workers hear no invalidation and no pong, but their connections
	// look alive for 2 s. After 0.3 s without a word the copy must no
	// longer answer. (Conclusive only if the answers come before the
	// workers give up on the connection and subscribe again; tried again
	// if the machine was too slow for that.)
	for try := 1; ; try++ {
		setRoute(0, time.Minute)
		for deadline := time.Now().Add(10 * time.Second); subscribers() < listening; {
			if time.Now().After(deadline) {
				t.Fatalf("%d of %d subscribers", subscribers(), listening)
			}
			time.Sleep(50 * time.Millisecond)
		}
		want("before the partition", answers(20), "backend-0", 20)
		cut := subscriberAddrs(t, admin)
		dropTo(t, stack.RedisAddr(), cut)
		setRoute(1, time.Minute)
		time.Sleep(600 * time.Millisecond)
		got := answers(20)
		if still := subscriberAddrs(t, admin); !slices.Equal(still, cut) && try < 3 {
			t.Logf("try %d: the workers subscribed again before the answers came; again", try)
			continue
		}
		want("0.6 s into a partition of the subscriptions", got, "backend-1", 20)
		break
	}
}

// subscriberAddrs are the client addresses of the proxy's subscriptions.
func subscriberAddrs(t *testing.T, admin *redis.Client) []string {
	t.Helper()
	list, err := admin.ClientList(context.Background()).Result()
	if err != nil {
		t.Fatal(err)
	}
	var addrs []string
	for _, line := range strings.Split(list, "\n") {
		fields := map[string]string{}
		for _, f := range strings.Fields(line) {
			if k, v, ok := strings.Cut(f, "="); ok {
				fields[k] = v
			}
		}
		if fields["user"] == devstack.RedisProxy && strings.Contains(fields["flags"], "P") {
			addrs = append(addrs, fields["addr"])
		}
	}
	slices.Sort(addrs)
	return addrs
}

// dropTo drops, until the test ends, what Redis at redisAddr sends to the
// client addresses (all on loopback).
func dropTo(t *testing.T, redisAddr string, clients []string) {
	t.Helper()
	_, redisPort, _ := net.SplitHostPort(redisAddr)
	for _, c := range clients {
		_, port, _ := net.SplitHostPort(c)
		spec := []string{"OUTPUT", "-o", "lo", "-p", "tcp", "--sport", redisPort, "--dport", port, "-j", "DROP"}
		if out, err := exec.Command("iptables", append([]string{"-w", "-I"}, spec...)...).CombinedOutput(); err != nil {
			t.Fatalf("dropping Redis's packets to %s: %v\n%s", c, err, out)
		}
		t.Cleanup(func() { _ = exec.Command("iptables", append([]string{"-w", "-D"}, spec...)...).Run() })
	}
}

// redisGets is how many GETs the Redis primary has run.
func redisGets(t *testing.T, admin *redis.Client) int {
	t.Helper()
	info, err := admin.Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(info, "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_get:calls="); ok {
			n, _ := strconv.Atoi(rest[:strings.IndexByte(rest+",", ',')])
			return n
		}
	}
	return 0
}
