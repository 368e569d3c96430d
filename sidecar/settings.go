package main

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/envjupyter/envjupyter/shared/instance"
	"github.com/envjupyter/envjupyter/shared/queue"
)

// settings are the sidecar's own, host-specific settings, from its
// environment (the systemd unit's EnvironmentFile). Product-wide settings
// come from SSM through shared/config.
type settings struct {
	HostID        string        // ENVJUPYTER_HOST_ID (required): the environments table's host_id
	AdvertiseAddr string        // ENVJUPYTER_ADVERTISE_ADDR: where the proxy reaches this host
	RedisAddr     string        // ENVJUPYTER_REDIS_ADDR: the route table
	ChainPrefix   string        // ENVJUPYTER_CHAIN_PREFIX: names of this sidecar's iptables chains
	QueuePrefix   string        // ENVJUPYTER_QUEUE_PREFIX: command queue name, before the host id
	StatusAddr    string        // ENVJUPYTER_STATUS_ADDR: /healthz and /metrics, on localhost
	ProcDir       string        // ENVJUPYTER_PROC_DIR: the host's /proc
	StateDir      string        // ENVJUPYTER_STATE_DIR: what the sidecar runs, for its restarts
	RouteTTL      time.Duration // ENVJUPYTER_ROUTE_TTL: lifetime of a route not refreshed
	StopGrace     time.Duration // between SIGTERM and SIGKILL
	HealthEvery   time.Duration // ENVJUPYTER_HEALTH_EVERY: health check period
	Heartbeat     time.Duration // ENVJUPYTER_HEARTBEAT: report period of an unchanged instance
	RestartBudget int           // ENVJUPYTER_RESTART_BUDGET: restarts of a dying Jupyter per 10 minutes
	// Sources may reach the forwarded ports: ENVJUPYTER_PROXY_CIDRS (the
	// proxies, comma-separated), plus loopback and the advertised address,
	// from which the sidecar checks health. Everything else is dropped.
	Sources []netip.Prefix
	// PipEnv are PIP_* settings for plugin installs, ENVJUPYTER_PIP_ENV as
	// NAME=value pairs separated by commas (e.g. an index mirror).
	PipEnv        []string
	PluginTimeout time.Duration // ENVJUPYTER_PLUGIN_TIMEOUT
	ConfigReload  time.Duration // ENVJUPYTER_CONFIG_RELOAD: how often rotated link keys are picked up
}

func loadSettings() (settings, error) {
	s := settings{
		HostID:        os.Getenv("ENVJUPYTER_HOST_ID"),
		AdvertiseAddr: env("ENVJUPYTER_ADVERTISE_ADDR", "127.0.0.1"),
		RedisAddr:     env("ENVJUPYTER_REDIS_ADDR", "127.0.0.1:6379"),
		ChainPrefix:   env("ENVJUPYTER_CHAIN_PREFIX", "EJUP"),
		QueuePrefix:   env("ENVJUPYTER_QUEUE_PREFIX", queue.DefaultHostPrefix),
		StatusAddr:    env("ENVJUPYTER_STATUS_ADDR", "127.0.0.1:9464"),
		ProcDir:       env("ENVJUPYTER_PROC_DIR", "/proc"),
		StateDir:      env("ENVJUPYTER_STATE_DIR", "/var/lib/envjupyter"),
		StopGrace:     10 * time.Second,
	}
	var err error
	for _, d := range []struct {
		dst      *time.Duration
		key, def string
	}{
		{&s.RouteTTL, "ENVJUPYTER_ROUTE_TTL", "5m"},
		{&s.HealthEvery, "ENVJUPYTER_HEALTH_EVERY", "15s"},
		{&s.Heartbeat, "ENVJUPYTER_HEARTBEAT", "60s"},
		{&s.PluginTimeout, "ENVJUPYTER_PLUGIN_TIMEOUT", "5m"},
		{&s.ConfigReload, "ENVJUPYTER_CONFIG_RELOAD", "1m"},
	} {
		if *d.dst, err = time.ParseDuration(env(d.key, d.def)); err != nil || *d.dst < time.Second {
			return settings{}, fmt.Errorf("%s: want a duration of at least 1s", d.key)
		}
	}
	if s.RestartBudget, err = strconv.Atoi(env("ENVJUPYTER_RESTART_BUDGET", "3")); err != nil || s.RestartBudget < 0 {
		return settings{}, errors.New("ENVJUPYTER_RESTART_BUDGET: want a whole number")
	}
	if !instance.ValidEnvironmentID(s.HostID) {
		return settings{}, errors.New("ENVJUPYTER_HOST_ID: want 1 to 63 letters, digits or dashes")
	}
	if s.Sources, err = sources(os.Getenv("ENVJUPYTER_PROXY_CIDRS"), s.AdvertiseAddr); err != nil {
		return settings{}, err
	}
	for _, kv := range strings.Split(os.Getenv("ENVJUPYTER_PIP_ENV"), ",") {
		if kv = strings.TrimSpace(kv); kv == "" {
			continue
		}
		if !strings.HasPrefix(kv, "PIP_") || !strings.Contains(kv, "=") {
			return settings{}, fmt.Errorf("ENVJUPYTER_PIP_ENV: %q is not a PIP_NAME=value pair", kv)
		}
		s.PipEnv = append(s.PipEnv, kv)
	}
	if len(s.ChainPrefix) > 20 {
		return settings{}, errors.New("ENVJUPYTER_CHAIN_PREFIX: at most 20 characters (iptables chain names are short)")
	}
	return s, nil
}

func env(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func sources(cidrs, advertise string) ([]netip.Prefix, error) {
	list := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	if a, err := netip.ParseAddr(advertise); err == nil && !a.IsLoopback() {
		list = append(list, netip.PrefixFrom(a, a.BitLen()))
	}
	for _, c := range strings.Split(cidrs, ",") {
		if c = strings.TrimSpace(c); c == "" {
			continue
		}
		p, err := netip.ParsePrefix(c)
		if err != nil || !p.Addr().Is4() {
			return nil, fmt.Errorf("ENVJUPYTER_PROXY_CIDRS: %q is not an IPv4 CIDR", c)
		}
		list = append(list, p.Masked())
	}
	return list, nil
}
