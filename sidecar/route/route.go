// Package route writes the proxy's route table in Redis: the key
// jupyter:env:<environment id> holds "<host address>:<port>". Routes carry a
// TTL that the sidecar refreshes, so a dead host's routes expire by themselves.
package route

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Key returns the route key of an environment.
func Key(environmentID string) string { return "jupyter:env:" + environmentID }

// Table is the route table.
type Table struct {
	rdb *redis.Client
	ttl time.Duration
}

// Redis says where the route table is and who the sidecar is there: its
// ACL user (infra/redis/users.acl) may write only the keys of this package.
// With Sentinels, the table is on the primary those sentinels know as
// Master, found again after a failover (the sidecar signs in to the
// sentinels as the same user, infra/redis/sentinel.acl); without, on Addr.
type Redis struct {
	Addr, User, Password string
	Sentinels            []string
	Master               string
}

// New returns a route table in Redis, whose routes live ttl unless
// refreshed.
func New(r Redis, ttl time.Duration) *Table {
	if len(r.Sentinels) > 0 {
		return &Table{rdb: redis.NewFailoverClient(&redis.FailoverOptions{
			MasterName: r.Master, SentinelAddrs: r.Sentinels,
			SentinelUsername: r.User, SentinelPassword: r.Password,
			Username: r.User, Password: r.Password,
			DialTimeout: time.Second, ReadTimeout: time.Second, WriteTimeout: time.Second,
			DisableIdentity: true,
		}), ttl: ttl}
	}
	return &Table{rdb: redis.NewClient(&redis.Options{
		Addr: r.Addr, Username: r.User, Password: r.Password,
		DialTimeout: time.Second, ReadTimeout: time.Second, WriteTimeout: time.Second,
		// No CLIENT SETINFO on connect: the user may run only what it needs.
		DisableIdentity: true,
	}), ttl: ttl}
}

// Close releases the connection pool.
func (t *Table) Close() error { return t.rdb.Close() }

// tokenKey holds "<instance id> <token>" of an environment's instance: the
// proxy adds the token towards Jupyter for browser sessions (access links).
func tokenKey(environmentID string) string { return "jupyter:token:" + environmentID }

// LinkKeys is the hash of access-link keys (kid → base64 secret).
const LinkKeys = "jupyter:link-keys"

// Set points the environment's route at target (host:port) for the
// instance, refreshing the TTL of the route and of the instance's token.
func (t *Table) Set(ctx context.Context, environmentID, target, instanceID, token string) error {
	if target == "" || instanceID == "" || token == "" {
		return fmt.Errorf("writing route of environment %s: incomplete", environmentID)
	}
	_, err := t.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, Key(environmentID), target, t.ttl)
		p.Set(ctx, tokenKey(environmentID), instanceID+" "+token, t.ttl)
		return nil
	})
	if err != nil {
		return fmt.Errorf("writing route of environment %s: %w", environmentID, err)
	}
	return nil
}

// deleteIfOurs removes the route and the token only while they are still the
// instance's, so those written since by a newer instance survive.
var deleteIfOurs = redis.NewScript(`
if redis.call("GET", KEYS[1]) == ARGV[1] then redis.call("DEL", KEYS[1]) end
local v = redis.call("GET", KEYS[2])
if v and string.sub(v, 1, string.len(ARGV[2]) + 1) == ARGV[2] .. " " then redis.call("DEL", KEYS[2]) end
return 0`)

// Delete removes the environment's route if it points at target, and the
// instance's token.
func (t *Table) Delete(ctx context.Context, environmentID, target, instanceID string) error {
	err := deleteIfOurs.Run(ctx, t.rdb, []string{Key(environmentID), tokenKey(environmentID)}, target, instanceID).Err()
	if err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("deleting route of environment %s: %w", environmentID, err)
	}
	return nil
}

// PublishKeys makes the access-link keys (kid → base64 secret) the proxy
// accepts exactly these.
func (t *Table) PublishKeys(ctx context.Context, keys map[string]string) error {
	old, err := t.rdb.HKeys(ctx, LinkKeys).Result()
	if err != nil {
		return fmt.Errorf("reading link keys: %w", err)
	}
	_, err = t.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		for _, kid := range old {
			if _, keep := keys[kid]; !keep {
				p.HDel(ctx, LinkKeys, kid)
			}
		}
		for kid, secret := range keys {
			p.HSet(ctx, LinkKeys, kid, secret)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("publishing link keys: %w", err)
	}
	return nil
}
