package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/envjupyter/envjupyter/shared/config"
	"github.com/envjupyter/envjupyter/shared/instance"
	"github.com/envjupyter/envjupyter/shared/queue"
)

// settings are the sidecar's own, host-specific settings, from its
// environment (the systemd unit's EnvironmentFile). Product-wide settings
// come from SSM through shared/config.
type settings struct {
	HostID        string // ENVJUPYTER_HOST_ID (required): the environments table's host_id
	AdvertiseAddr string // ENVJUPYTER_ADVERTISE_ADDR (required): where the proxy reaches this host; never loopback
	RedisAddr     string // ENVJUPYTER_REDIS_ADDR: the route table, when there are no sentinels
	// RedisSentinels (ENVJUPYTER_REDIS_SENTINELS, host:port separated by
	// commas) know which Redis node is the primary now, which they know as
	// RedisMaster (ENVJUPYTER_REDIS_MASTER_NAME); with them, RedisAddr is
	// not used.
	RedisSentinels []string
	RedisMaster    string
	RedisUser      string        // ENVJUPYTER_REDIS_USER: this host's Redis user (infra/redis/users.acl)
	RedisPassword  string        // read from ENVJUPYTER_REDIS_PASSWORD_FILE, never from the environment itself
	ChainPrefix    string        // ENVJUPYTER_CHAIN_PREFIX: names of this sidecar's nftables table and iptables chain
	QueuePrefix    string        // ENVJUPYTER_QUEUE_PREFIX: command queue name, before the host id
	StatusAddr     string        // ENVJUPYTER_STATUS_ADDR: /healthz and /metrics, on localhost
	ProcDir        string        // ENVJUPYTER_PROC_DIR: the host's /proc
	StateDir       string        // ENVJUPYTER_STATE_DIR: what the sidecar runs, for its restarts
	RouteTTL       time.Duration // ENVJUPYTER_ROUTE_TTL: lifetime of a route not refreshed
	StopGrace      time.Duration // between SIGTERM and SIGKILL
	HealthEvery    time.Duration // ENVJUPYTER_HEALTH_EVERY: health check period
	Heartbeat      time.Duration // ENVJUPYTER_HEARTBEAT: report period of an unchanged instance
	RestartBudget  int           // ENVJUPYTER_RESTART_BUDGET: restarts of a dying Jupyter per 10 minutes
	// Sources may reach the forwarded ports: ENVJUPYTER_PROXY_CIDRS (the
	// proxies, comma-separated), plus the advertised address, from which a
	// proxy on this host connects and the sidecar checks health. Everything
	// else is dropped.
	Sources []netip.Prefix
	// PipEnv are PIP_* settings for plugin installs, ENVJUPYTER_PIP_ENV as
	// NAME=value pairs separated by commas (e.g. an index mirror). Nothing
	// else of the sidecar's environment reaches a container.
	PipEnv        []string
	PluginTimeout time.Duration // ENVJUPYTER_PLUGIN_TIMEOUT
	ConfigReload  time.Duration // ENVJUPYTER_CONFIG_RELOAD: how often rotated link keys are picked up
}

func loadSettings() (settings, error) {
	s := settings{
		HostID:        os.Getenv("ENVJUPYTER_HOST_ID"),
		AdvertiseAddr: os.Getenv("ENVJUPYTER_ADVERTISE_ADDR"),
		RedisAddr:     env("ENVJUPYTER_REDIS_ADDR", "127.0.0.1:6379"),
		RedisUser:     env("ENVJUPYTER_REDIS_USER", "sidecar"),
		RedisMaster:   env("ENVJUPYTER_REDIS_MASTER_NAME", "envjupyter"),
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
	if s.RedisSentinels, err = hostPorts("ENVJUPYTER_REDIS_SENTINELS", os.Getenv("ENVJUPYTER_REDIS_SENTINELS")); err != nil {
		return settings{}, err
	}
	if s.PipEnv, err = pipEnv(os.Getenv("ENVJUPYTER_PIP_ENV")); err != nil {
		return settings{}, err
	}
	if s.RedisPassword, err = secretFile(os.Getenv("ENVJUPYTER_REDIS_PASSWORD_FILE")); err != nil {
		return settings{}, fmt.Errorf("ENVJUPYTER_REDIS_PASSWORD_FILE: %w", err)
	}
	if len(s.ChainPrefix) > 20 {
		return settings{}, errors.New("ENVJUPYTER_CHAIN_PREFIX: at most 20 characters (iptables chain names are short)")
	}
	return s, nil
}

// hostPorts reads a list of host:port separated by commas.
func hostPorts(key, list string) ([]string, error) {
	var out []string
	for _, a := range strings.Split(list, ",") {
		if a = strings.TrimSpace(a); a == "" {
			continue
		}
		host, port, err := net.SplitHostPort(a)
		if n, perr := strconv.Atoi(port); err != nil || host == "" || perr != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("%s: %q is not a host:port", key, a)
		}
		out = append(out, a)
	}
	return out, nil
}

// pipEnv reads ENVJUPYTER_PIP_ENV. pip runs in the customer's container,
// where its environment is the customer's to read (they own python3 there),
// so a setting that carries credentials (a URL with user:password@) is
// refused; errors name the setting, never its value.
func pipEnv(list string) ([]string, error) {
	var out []string
	for _, kv := range strings.Split(list, ",") {
		if kv = strings.TrimSpace(kv); kv == "" {
			continue
		}
		name, value, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(name, "PIP_") || strings.ContainsAny(name, " \t") {
			return nil, fmt.Errorf("ENVJUPYTER_PIP_ENV: %q is not a PIP_NAME=value pair", name)
		}
		for _, word := range strings.Fields(value) {
			if u, err := url.Parse(word); err == nil && u.User != nil {
				return nil, fmt.Errorf("ENVJUPYTER_PIP_ENV: %s holds a URL with credentials, which every customer's container would see; use a mirror that needs none from inside the host's network", name)
			}
		}
		out = append(out, kv)
	}
	return out, nil
}

// secretFile reads a password from the file at path (none without a
// path). The file must be the owner's alone: others who can read it could
// sign in as this host. Errors never hold the file's content.
func secretFile(path string) (string, error) {
	if path == "" {
		return "", nil
	}
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return "", err
	}
	if info.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("%s may be read by others (mode %o): chmod 600 it", path, info.Mode().Perm())
	}
	b, err := io.ReadAll(io.LimitReader(f, 4096))
	if err != nil {
		return "", err
	}
	secret := strings.TrimSpace(string(b))
	if secret == "" {
		return "", fmt.Errorf("%s is empty", path)
	}
	return secret, nil
}

// gcPercent is the sidecar's GOGC unless its environment sets one.
const gcPercent = 50

// tuneGC has the runtime collect when the heap has grown by half, not
// doubled (Go's default), unless GOGC is set: the sidecar's live heap is a
// few MiB of SDK tables kept for its life plus small, short-lived
// allocations per command and check, so a lower goal keeps its resident
// memory near what is live at the cost of a GC cycle (milliseconds) every
// few MiB allocated. GOMEMLIMIT, if set, is the runtime's as usual.
func tuneGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
}

func env(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// sources returns who may reach the forwarded ports. The advertised address
// may not be loopback: traffic from 127.0.0.1 forwarded into a container
// needs route_localnet=1 on its bridge, and with it every container that has
// NET_RAW (a Docker default) reaches the host's loopback services (Redis,
// the status port): CVE-2020-8558. The sidecar never sets it.
func sources(cidrs, advertise string) ([]netip.Prefix, error) {
	a, err := netip.ParseAddr(advertise)
	if err != nil || !a.Is4() || a.IsLoopback() || a.IsUnspecified() {
		return nil, fmt.Errorf("ENVJUPYTER_ADVERTISE_ADDR: %q is not a non-loopback IPv4 address of this host (where the proxies reach it)", advertise)
	}
	list := []netip.Prefix{netip.PrefixFrom(a, a.BitLen())}
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

// fitsProduct checks the host's settings against the product's: a route
// must not outlive the cool-down of its port (port_cooldown_seconds), or a
// route whose deletion failed could lead to the next instance on the port.
func (s settings) fitsProduct(cfg config.Config) error {
	if s.RouteTTL >= cfg.PortCooldown {
		return fmt.Errorf("ENVJUPYTER_ROUTE_TTL (%s) must be shorter than the product's port_cooldown_seconds (%s): a route left behind would outlive its port's cool-down", s.RouteTTL, cfg.PortCooldown)
	}
	return nil
}
