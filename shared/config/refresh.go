package config

import (
	"context"
	"os"
	"strconv"
	"time"
)

// RefreshEnv names the environment variable that sets how long a function
// keeps the configuration it read before reading it again.
const RefreshEnv = "ENVJUPYTER_CONFIG_REFRESH_SECONDS"

// DefaultRefresh is how long a function keeps its configuration when
// RefreshEnv is unset: a changed parameter takes effect within a minute.
const DefaultRefresh = 60 * time.Second

// RefreshEvery is the configured refresh interval (RefreshEnv, or
// DefaultRefresh when it is unset or not a positive number of seconds).
func RefreshEvery() time.Duration {
	if n, err := strconv.Atoi(os.Getenv(RefreshEnv)); err == nil && n > 0 {
		return time.Duration(n) * time.Second
	}
	return DefaultRefresh
}

// Refresher re-reads the configuration once the copy in use is older than
// Every, so a warm function (the reaper runs every minute and never goes
// cold) does not keep a changed parameter out forever.
type Refresher struct {
	Client SSMAPI
	Every  time.Duration
	Now    func() time.Time
	loaded time.Time
}

// NewRefresher returns a refresher whose configuration was just loaded.
func NewRefresher(client SSMAPI, every time.Duration) *Refresher {
	r := &Refresher{Client: client, Every: every, Now: time.Now}
	r.loaded = r.Now()
	return r
}

// Refresh returns a freshly read configuration and true when the one in use
// is due; false when it is not due, or the read failed (the error says why;
// the caller keeps what it has and the next call tries again).
func (r *Refresher) Refresh(ctx context.Context) (Config, bool, error) {
	if r.Now().Sub(r.loaded) < r.Every {
		return Config{}, false, nil
	}
	cfg, err := Load(ctx, r.Client)
	if err != nil {
		return Config{}, false, err
	}
	r.loaded = r.Now()
	return cfg, true, nil
}
