// Package config reads the product's settings from SSM Parameter Store under a
// path prefix, with environment variables overriding for local use.
//
// Parameter names below the prefix, and the variables that override them:
//
//	public_base_url        ENVJUPYTER_PUBLIC_BASE_URL   e.g. https://jupyter.example.com (the Jupyter domain)
//	env_origin             ENVJUPYTER_ENV_ORIGIN        "host" (default): each environment on an origin of its own,
//	                       https://env-<id>.jupyter.example.com/env-<id>/; "path": all on one origin,
//	                       https://jupyter.example.com/env-<id>/. RISK: in "path" mode every environment's
//	                       code runs on one origin, so a page served by one environment acts in the browser
//	                       as any other environment the visitor is logged in to. Single-tenant only
//	                       (docs/SECURITY.md).
//	port_range             ENVJUPYTER_PORT_RANGE        e.g. 20000-20999
//	start_timeout_seconds  ENVJUPYTER_START_TIMEOUT     e.g. 120
//	idle_timeout_seconds   ENVJUPYTER_IDLE_TIMEOUT      0 disables idle culling
//	host_silence_seconds   ENVJUPYTER_HOST_SILENCE      a running instance unheard of this long is lost
//	stop_timeout_seconds   ENVJUPYTER_STOP_TIMEOUT      a stop unconfirmed this long is taken as done
//	port_cooldown_seconds  ENVJUPYTER_PORT_COOLDOWN     a freed host port is leased again only after this long
//	                       (longer than any route to it can live: ENVJUPYTER_ROUTE_TTL of the sidecars)
//	allowed_plugins        ENVJUPYTER_ALLOWED_PLUGINS   JSON object: name → pip requirement
//	max_active_per_customer ENVJUPYTER_MAX_ACTIVE_PER_CUSTOMER  0 means no limit
//	reports_queue_url      ENVJUPYTER_REPORTS_QUEUE_URL
//	link_keys              ENVJUPYTER_LINK_KEYS         SecureString: access-link keys "kid:base64,..." (first signs)
//	link_ttl_seconds       ENVJUPYTER_LINK_TTL          how long an access link may be used (once)
//	access_mode            ENVJUPYTER_ACCESS_MODE       access_url is the seed's ?token= URL ("token") or the link ("link")
//	hosts/<host id>/command_queue_url  (one per Docker host, written by its sidecar)
package config

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ssm"

	"github.com/envjupyter/envjupyter/shared/accesslink"
)

// Config is the product's configuration.
type Config struct {
	PublicBaseURL string
	Ports         PortRange
	StartTimeout  time.Duration
	IdleTimeout   time.Duration
	HostSilence   time.Duration
	StopTimeout   time.Duration
	// PortCooldown is how long a host port an instance held is leased to no
	// other: longer than a route to it can outlive the instance (a deletion
	// that failed or that a Redis failover lost lives until its TTL).
	PortCooldown   time.Duration
	AllowedPlugins map[string]string
	// MaxActivePerCustomer bounds a customer's active instances (0: no limit).
	MaxActivePerCustomer int
	ReportsQueueURL      string
	LinkKeys             []accesslink.Key
	LinkTTL              time.Duration
	AccessMode           string
	EnvOrigin            string
}

// Environment origins: what an environment's URL is.
const (
	OriginHost = "host" // https://env-<id>.<domain>/env-<id>/: one origin per environment
	OriginPath = "path" // https://<domain>/env-<id>/: one origin for all (single tenant only)
)

// EnvironmentURL is the base URL of an environment's JupyterLab, ending in
// /env-<id>/. Host names are case-insensitive: an id's letters are
// lowercased in the host (the proxy compares them so).
func (c Config) EnvironmentURL(environmentID string) string {
	base := "/env-" + environmentID + "/"
	if c.EnvOrigin == OriginPath {
		return c.PublicBaseURL + base
	}
	scheme, host, _ := strings.Cut(c.PublicBaseURL, "://")
	return scheme + "://env-" + strings.ToLower(environmentID) + "." + host + base
}

// Access modes: what access_url is.
const (
	AccessToken = "token"
	AccessLink  = "link"
)

// PortRange is the inclusive range of host ports handed to instances.
type PortRange struct{ First, Last int }

// Size is the number of ports in the range.
func (r PortRange) Size() int { return r.Last - r.First + 1 }

// ParsePortRange parses "first-last".
func ParsePortRange(s string) (PortRange, error) {
	a, b, ok := strings.Cut(strings.TrimSpace(s), "-")
	if strings.ContainsAny(a+b, "+ ") {
		return PortRange{}, fmt.Errorf("port range %q: want first-last within 1024-65535", s)
	}
	first, err1 := strconv.Atoi(a)
	last, err2 := strconv.Atoi(b)
	if !ok || err1 != nil || err2 != nil || first < 1024 || last > 65535 || first > last {
		return PortRange{}, fmt.Errorf("port range %q: want first-last within 1024-65535", s)
	}
	return PortRange{first, last}, nil
}

// Defaults are used for settings that neither SSM nor the environment give.
var Defaults = map[string]string{
	"port_range":              "20000-20999",
	"start_timeout_seconds":   "120",
	"idle_timeout_seconds":    "0",
	"host_silence_seconds":    "300",
	"stop_timeout_seconds":    "120",
	"port_cooldown_seconds":   "330",
	"allowed_plugins":         "{}",
	"max_active_per_customer": "0",
	"link_ttl_seconds":        "300",
	"access_mode":             AccessToken,
	"env_origin":              OriginHost,
}

var overrides = map[string]string{
	"public_base_url":         "ENVJUPYTER_PUBLIC_BASE_URL",
	"port_range":              "ENVJUPYTER_PORT_RANGE",
	"start_timeout_seconds":   "ENVJUPYTER_START_TIMEOUT",
	"idle_timeout_seconds":    "ENVJUPYTER_IDLE_TIMEOUT",
	"host_silence_seconds":    "ENVJUPYTER_HOST_SILENCE",
	"stop_timeout_seconds":    "ENVJUPYTER_STOP_TIMEOUT",
	"port_cooldown_seconds":   "ENVJUPYTER_PORT_COOLDOWN",
	"allowed_plugins":         "ENVJUPYTER_ALLOWED_PLUGINS",
	"max_active_per_customer": "ENVJUPYTER_MAX_ACTIVE_PER_CUSTOMER",
	"link_keys":               "ENVJUPYTER_LINK_KEYS",
	"link_ttl_seconds":        "ENVJUPYTER_LINK_TTL",
	"access_mode":             "ENVJUPYTER_ACCESS_MODE",
	"env_origin":              "ENVJUPYTER_ENV_ORIGIN",
	"reports_queue_url":       "ENVJUPYTER_REPORTS_QUEUE_URL",
}

// SSMAPI is the part of the SSM client that config uses.
type SSMAPI interface {
	GetParametersByPath(ctx context.Context, in *ssm.GetParametersByPathInput, opts ...func(*ssm.Options)) (*ssm.GetParametersByPathOutput, error)
	GetParameter(ctx context.Context, in *ssm.GetParameterInput, opts ...func(*ssm.Options)) (*ssm.GetParameterOutput, error)
}

// Prefix returns the SSM path prefix (ENVJUPYTER_SSM_PREFIX, default /envjupyter).
func Prefix() string {
	if p := os.Getenv("ENVJUPYTER_SSM_PREFIX"); p != "" {
		return strings.TrimSuffix(p, "/")
	}
	return "/envjupyter"
}

// Load reads the configuration once; callers keep it for their lifetime.
func Load(ctx context.Context, client SSMAPI) (Config, error) {
	values := map[string]string{}
	for k, v := range Defaults {
		values[k] = v
	}
	prefix := Prefix()
	in := &ssm.GetParametersByPathInput{Path: aws.String(prefix + "/"), WithDecryption: aws.Bool(true)}
	for {
		out, err := client.GetParametersByPath(ctx, in)
		if err != nil {
			return Config{}, fmt.Errorf("reading parameters under %s: %w", prefix, err)
		}
		for _, p := range out.Parameters {
			values[strings.TrimPrefix(aws.ToString(p.Name), prefix+"/")] = aws.ToString(p.Value)
		}
		if out.NextToken == nil {
			break
		}
		in.NextToken = out.NextToken
	}
	for k, env := range overrides {
		if v, ok := os.LookupEnv(env); ok {
			values[k] = v
		}
	}
	return parse(values)
}

func parse(v map[string]string) (Config, error) {
	var c Config
	var err error
	c.PublicBaseURL = strings.TrimSuffix(v["public_base_url"], "/")
	if u, err := url.Parse(c.PublicBaseURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.Path != "" || u.RawQuery != "" || u.User != nil {
		return Config{}, fmt.Errorf("public_base_url %q: want an http(s) URL without a path", c.PublicBaseURL)
	}
	if c.EnvOrigin = v["env_origin"]; c.EnvOrigin != OriginHost && c.EnvOrigin != OriginPath {
		return Config{}, fmt.Errorf("env_origin %q: want host or path", c.EnvOrigin)
	}
	if c.Ports, err = ParsePortRange(v["port_range"]); err != nil {
		return Config{}, err
	}
	if c.StartTimeout, err = seconds(v, "start_timeout_seconds"); err != nil {
		return Config{}, err
	}
	if c.IdleTimeout, err = seconds(v, "idle_timeout_seconds"); err != nil {
		return Config{}, err
	}
	if c.HostSilence, err = seconds(v, "host_silence_seconds"); err != nil {
		return Config{}, err
	}
	if c.StopTimeout, err = seconds(v, "stop_timeout_seconds"); err != nil {
		return Config{}, err
	}
	if c.PortCooldown, err = seconds(v, "port_cooldown_seconds"); err != nil {
		return Config{}, err
	}
	if err := json.Unmarshal([]byte(v["allowed_plugins"]), &c.AllowedPlugins); err != nil {
		return Config{}, fmt.Errorf("allowed_plugins: want a JSON object of name to pip requirement: %w", err)
	}
	if c.MaxActivePerCustomer, err = strconv.Atoi(v["max_active_per_customer"]); err != nil || c.MaxActivePerCustomer < 0 {
		return Config{}, fmt.Errorf("max_active_per_customer %q: want a whole number, 0 for no limit", v["max_active_per_customer"])
	}
	c.ReportsQueueURL = v["reports_queue_url"]
	if c.LinkKeys, err = accesslink.ParseKeys(v["link_keys"]); err != nil {
		return Config{}, err
	}
	if c.LinkTTL, err = seconds(v, "link_ttl_seconds"); err != nil {
		return Config{}, err
	}
	switch c.AccessMode = v["access_mode"]; c.AccessMode {
	case AccessToken:
	case AccessLink:
		if len(c.LinkKeys) == 0 {
			return Config{}, fmt.Errorf("access_mode link needs link_keys")
		}
	default:
		return Config{}, fmt.Errorf("access_mode %q: want token or link", c.AccessMode)
	}
	return c, nil
}

func seconds(v map[string]string, key string) (time.Duration, error) {
	n, err := strconv.Atoi(v[key])
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%s %q: want a whole number of seconds", key, v[key])
	}
	return time.Duration(n) * time.Second, nil
}

// HostQueueParameter is the SSM parameter that holds a host's command queue URL.
func HostQueueParameter(hostID string) string {
	return Prefix() + "/hosts/" + hostID + "/command_queue_url"
}

// HostReportKeyParameter is the SecureString parameter that holds the key a
// host signs its reports with. Only that host may write or read it (its
// role's policy), and the reports function reads it to check that a report
// naming the host comes from it.
func HostReportKeyParameter(hostID string) string {
	return Prefix() + "/hosts/" + hostID + "/report_key"
}
