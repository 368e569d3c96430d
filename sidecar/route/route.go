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

// New returns a route table in the Redis at addr, whose routes live ttl
// unless refreshed.
func New(addr string, ttl time.Duration) *Table {
	return &Table{rdb: redis.NewClient(&redis.Options{
		Addr: addr, DialTimeout: time.Second, ReadTimeout: time.Second, WriteTimeout: time.Second,
	}), ttl: ttl}
}

// Close releases the connection pool.
func (t *Table) Close() error { return t.rdb.Close() }

// Set points the environment's route at target (host:port), refreshing its TTL.
func (t *Table) Set(ctx context.Context, environmentID, target string) error {
	if target == "" {
		return fmt.Errorf("writing route of environment %s: no target", environmentID)
	}
	if err := t.rdb.Set(ctx, Key(environmentID), target, t.ttl).Err(); err != nil {
		return fmt.Errorf("writing route of environment %s: %w", environmentID, err)
	}
	return nil
}

// deleteIfTarget removes a key only while it still points where we think,
// so a route written since by a newer instance survives.
var deleteIfTarget = redis.NewScript(`
if redis.call("GET", KEYS[1]) == ARGV[1] then
  return redis.call("DEL", KEYS[1])
end
return 0`)

// Delete removes the environment's route if it points at target.
func (t *Table) Delete(ctx context.Context, environmentID, target string) error {
	if err := deleteIfTarget.Run(ctx, t.rdb, []string{Key(environmentID)}, target).Err(); err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("deleting route of environment %s: %w", environmentID, err)
	}
	return nil
}

// Get returns the environment's route target, or "" if there is none.
func (t *Table) Get(ctx context.Context, environmentID string) (string, error) {
	v, err := t.rdb.Get(ctx, Key(environmentID)).Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("reading route of environment %s: %w", environmentID, err)
	}
	return v, nil
}
