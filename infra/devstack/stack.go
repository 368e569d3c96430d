// Package devstack runs the whole system on one machine: the AWS emulator
// (kumo) provisioned from template.yaml, the functions as their real
// bootstrap binaries behind kumo's Lambda runtime API and HTTP API, a local
// SQS event source, Redis, the nginx proxy, the sidecar, and demo
// environment containers. `make up` and the end-to-end tests both use it.
package devstack

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/eventbridge"
	ebtypes "github.com/aws/aws-sdk-go-v2/service/eventbridge/types"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"

	"github.com/envjupyter/envjupyter/functions/envevent"
	"github.com/envjupyter/envjupyter/functions/store"
	"github.com/envjupyter/envjupyter/functions/store/dynamostore"
	"github.com/envjupyter/envjupyter/shared/accesslink"
	"github.com/envjupyter/envjupyter/shared/awsconf"
	"github.com/envjupyter/envjupyter/sidecar/firewall"
)

// The environment images infra/image/build-env-image.sh builds: JupyterLab 4
// on Debian trixie, and the classic Notebook 6 on Debian bookworm.
const (
	LabImage      = "envjupyter/env-jupyter:trixie-2"
	NotebookImage = "envjupyter/env-jupyter:bookworm-2"
)

// EnvImage is the image environments are created from unless told otherwise.
const EnvImage = LabImage

// Options configure a stack. Two stacks on one machine (make up, and the
// tests) need different ports, port ranges and chain prefixes.
type Options struct {
	Root        string // repository root
	WorkDir     string // binaries, logs and state
	Name        string // stack name: prefixes resources and labels containers
	KumoBin     string
	KumoPort    int
	RedisPort   int // the first Redis node; its replica and the three sentinels take the next four ports
	ProxyPort   int
	StatusPort  int    // sidecar /healthz and /metrics
	HostID      string // the one Docker host: this machine
	ChainPrefix string
	PortRange   string
	// LambdaConcurrency is how many copies of each function run, as Lambda
	// would run concurrent invocations in separate environments.
	LambdaConcurrency int
	// Params override template parameters (tests shorten timeouts).
	Params map[string]string
	// ScheduleEvery, when set, replaces the period of scheduled functions.
	ScheduleEvery time.Duration
	// SidecarEnv adds to the sidecar's environment (tests shorten its loops).
	SidecarEnv []string
	// ProxyEnv adds to every proxy's settings (infra/proxy/run-local.sh;
	// tests shorten its timeouts).
	ProxyEnv []string
	// EnvOrigin is the env_origin setting: OriginHost ("", the default) or
	// OriginPath.
	EnvOrigin string
	// PathProxyPort, when set, starts a second proxy on the same route
	// table in the path mode (tests show what that mode allows).
	PathProxyPort int
	// SSOProxyPort, when set, also runs the local sign-in (sso.go): a proxy
	// in access mode sso on this port, the sso service on SSOPort and the
	// OpenID Connect provider on OIDCPort.
	SSOProxyPort, SSOPort, OIDCPort int
	// TracePort is the UDP port of the stack's X-Ray daemon stand-in (0:
	// any free port); the segments it receives go to TraceFile(WorkDir).
	TracePort int

	// Hosts is 1 (host A only, this machine's own dockerd; the default) or
	// 2: host B too, a network namespace with its own dockerd and sidecar
	// (hosts.go), its id HostBID, linked to this namespace by HostBLink (a
	// /30 no other stack uses).
	Hosts     int
	HostBID   string
	HostBLink netip.Prefix

	Log *slog.Logger
}

// Environment origins (the env_origin setting, shared/config).
const (
	OriginHost = "host"
	OriginPath = "path"
)

// JupyterDomain is the local Jupyter domain: environments are served on
// env-<id>.localhost and the console on console.localhost (Chromium
// resolves every *.localhost name to loopback; Go and curl are told to, see
// DialLoopback). "localhost" is a top-level name, so browsers let no page
// set a cookie for all of it: as in production, where the Jupyter domain
// must be a public suffix (docs/SECURITY.md), one environment's page cannot
// toss cookies onto another's host.
const JupyterDomain = "localhost"

// Defaults for `make up`.
func Defaults(root string) Options {
	return Options{
		Root: root, WorkDir: filepath.Join(root, ".stack"), Name: "envjupyter",
		KumoBin:  os.Getenv("KUMO_BIN"),
		KumoPort: 4566, RedisPort: 6390, ProxyPort: 8080, StatusPort: 9464,
		SSOProxyPort: 8090, SSOPort: 8092, OIDCPort: 8093, TracePort: 2000,
		HostID: "local-host-1", ChainPrefix: "EJUP", PortRange: "20000-20999",
		HostBID: "local-host-2", HostBLink: netip.MustParsePrefix("10.231.1.0/30"),
		LambdaConcurrency: 4,
		// The images' wheel directory stands in for a package index: the
		// JupyterLab image carries ipywidgets and its JupyterLab extension.
		Params:     map[string]string{"AllowedPlugins": `{"ipywidgets":"ipywidgets"}`},
		SidecarEnv: []string{PipWheelDirEnv},
		Log:        slog.Default(),
	}
}

// PipWheelDirEnv points the sidecar's plugin installs at the images' wheel
// directory (/opt/envjupyter/wheels) instead of a package index.
const PipWheelDirEnv = "ENVJUPYTER_PIP_ENV=PIP_NO_INDEX=1,PIP_FIND_LINKS=/opt/envjupyter/wheels"

// Demo identities of the local stack.
const (
	DemoCustomer    = "cust-demo"
	DemoEnvironment = "env-demo"
	Audience        = "envjupyter"
)

// Stack is a running local system.
type Stack struct {
	Opts      Options
	AWS       AWS
	Store     *dynamostore.Store
	Docker    *client.Client
	APIID     string
	Functions []Function
	// Template and Resolver are what the stack was provisioned from, for
	// checks against the template (infra/iamcheck).
	Template *Template
	Resolver *Resolver

	mu      sync.Mutex
	procs   []*process
	traces  *traceReceiver
	cancel  context.CancelFunc
	pollers sync.WaitGroup
	// Identity issues the customers' tokens; the API front checks them as
	// API Gateway's JWT authorizer does (kumo's checks no signature).
	Identity *TokenIssuer
	// LinkKey signs access links (tests sign their own, expired or forged).
	LinkKey    accesslink.Key
	frontURL   string
	consoleDir string // the console's files the proxies serve
	servers    []*http.Server
	sidecar    *process
	sidecarMu  sync.Mutex
	advertise  string
	redis      redisSet
	hostB      *HostB
}

// Start brings the stack up; on error it tears down what it started.
func Start(ctx context.Context, o Options) (_ *Stack, err error) {
	if o.KumoBin == "" {
		return nil, errors.New("no kumo binary: run infra/local/prepare.sh (it builds one) and set KUMO_BIN")
	}
	for _, dir := range []string{"bin", "logs", "proxy", "awscalls"} {
		if err := os.MkdirAll(filepath.Join(o.WorkDir, dir), 0o755); err != nil {
			return nil, err
		}
	}
	s := &Stack{Opts: o}
	runCtx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	defer func() {
		if err != nil {
			s.Stop()
		}
	}()
	log := o.Log
	logs := filepath.Join(o.WorkDir, "logs")
	if s.traces, err = startTraceReceiver(o.TracePort, TraceFile(o.WorkDir)); err != nil {
		return nil, err
	}
	issLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	if s.Identity, err = NewIssuer("http://"+issLn.Addr().String(), Audience); err != nil {
		issLn.Close()
		return nil, err
	}
	s.serve(issLn, s.Identity.Handler())

	t, err := LoadTemplate(filepath.Join(o.Root, "template.yaml"))
	if err != nil {
		return nil, err
	}
	if s.Docker, err = client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation()); err != nil {
		return nil, fmt.Errorf("connecting to docker: %w", err)
	}
	// What a previous run of this stack left (it was killed) goes first.
	s.removeLeftovers()
	log.Info("building functions and sidecar")
	if err := s.build(ctx, t); err != nil {
		return nil, err
	}

	log.Info("starting kumo", "port", o.KumoPort)
	kumo, err := s.spawn(logs, "kumo", []string{"KUMO_HOST=127.0.0.1", "KUMO_PORT=" + strconv.Itoa(o.KumoPort)}, o.KumoBin)
	if err != nil {
		return nil, err
	}
	if err := waitTCP(s.kumoAddr(), kumo, 20*time.Second); err != nil {
		return nil, err
	}
	log.Info("starting redis", "port", o.RedisPort)
	if err := s.startRedis(); err != nil {
		return nil, err
	}

	if s.AWS, err = NewAWS(ctx, "http://"+s.kumoAddr()); err != nil {
		return nil, err
	}
	log.Info("provisioning from template.yaml")
	params := map[string]string{
		"PublicBaseUrl":       "http://" + JupyterDomain + ":" + strconv.Itoa(o.ProxyPort),
		"EnvOrigin":           s.envOrigin(),
		"PortRange":           o.PortRange,
		"StartTimeoutSeconds": "60",
		"JwtIssuer":           s.Identity.URL(),
		"JwtAudience":         Audience,
	}
	for k, v := range o.Params {
		params[k] = v
	}
	prov, err := Provision(ctx, s.AWS, t, o.Name, params)
	if err != nil {
		return nil, err
	}
	s.APIID, s.Functions = prov.APIID, prov.Functions
	s.Template, s.Resolver = t, prov.Resolver
	s.Store = dynamostore.New(s.AWS.DynamoDB, dynamostore.Tables{
		Environments: prov.Resolver.Refs["EnvironmentsTable"],
		Instances:    prov.Resolver.Refs["InstancesTable"],
		Leases:       prov.Resolver.Refs["LeasesTable"],
	})

	// The access-link key: a SecureString an operator puts in production.
	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	s.LinkKey = accesslink.Key{ID: "k1", Secret: secret}
	if _, err := s.AWS.SSM.PutParameter(ctx, &ssm.PutParameterInput{
		Name: aws.String("/envjupyter/link_keys"), Type: ssmtypes.ParameterTypeSecureString, Overwrite: aws.Bool(true),
		Value: aws.String("k1:" + base64.StdEncoding.EncodeToString(secret)),
	}); err != nil {
		return nil, fmt.Errorf("putting the access-link key: %w", err)
	}

	tracer, err := newLambdaTracer("http://"+s.kumoAddr(), s.traces)
	if err != nil {
		return nil, err
	}
	runtimeLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s.serve(runtimeLn, tracer)
	for _, fn := range s.Functions {
		env := append(s.processEnv(),
			"AWS_LAMBDA_RUNTIME_API="+runtimeLn.Addr().String()+"/_runtime/"+fn.Name,
			"AWS_LAMBDA_FUNCTION_NAME="+fn.Name,
			"AWS_LAMBDA_FUNCTION_VERSION=$LATEST",
			"AWS_LAMBDA_FUNCTION_MEMORY_SIZE=256",
			"_HANDLER=bootstrap",
		)
		for k, v := range fn.Env {
			env = append(env, k+"="+v)
		}
		for i := range max(o.LambdaConcurrency, 1) {
			name := fmt.Sprintf("%s-%d", fn.LogicalID, i)
			env := append(env, awsconf.CallLogEnv+"="+s.callLog(name))
			if _, err := s.spawn(logs, name, env, s.bootstrap(fn)); err != nil {
				return nil, err
			}
		}
		for _, ev := range fn.SQSEvents {
			s.pollers.Add(1)
			go func() {
				defer s.pollers.Done()
				pollQueue(runCtx, s.AWS, fn, ev, log)
			}()
		}
		for _, expr := range fn.Schedules {
			every := o.ScheduleEvery
			if every == 0 {
				if every, err = ScheduleInterval(expr); err != nil {
					return nil, err
				}
			}
			s.pollers.Add(1)
			go func() {
				defer s.pollers.Done()
				s.schedule(runCtx, fn, every)
			}()
		}
	}

	front, err := NewAPIFront(s.Identity.JWKSURL(), s.Identity.URL(), Audience, "http://"+s.kumoAddr(), s.APIHost())
	if err != nil {
		return nil, err
	}
	front.Log = log
	frontLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s.frontURL = "http://" + frontLn.Addr().String()
	s.serve(frontLn, front)

	log.Info("starting the proxy", "port", o.ProxyPort)
	console, err := s.prepareConsole()
	if err != nil {
		return nil, err
	}
	s.consoleDir = console
	if err := s.startProxy("nginx", "proxy", o.ProxyPort, s.envOrigin(), console); err != nil {
		return nil, err
	}
	if o.PathProxyPort != 0 {
		if err := s.startProxy("nginx-path", "proxy-path", o.PathProxyPort, OriginPath, console); err != nil {
			return nil, err
		}
	}

	if o.SSOProxyPort != 0 {
		log.Info("starting the sign-in (sso)", "port", o.SSOProxyPort)
		if err := s.startSSO(ctx, console); err != nil {
			return nil, err
		}
	}

	// The proxy reaches this host, and the sidecar its Jupyters, at the
	// Docker bridge's own address: loopback would need route_localnet.
	if s.advertise, err = s.bridgeGateway(ctx); err != nil {
		return nil, err
	}
	s.disableLocalnet()
	log.Info("starting the sidecar", "host_id", o.HostID, "advertise", s.advertise)
	if err := s.StartSidecar(); err != nil {
		return nil, err
	}
	if o.Hosts > 1 {
		log.Info("starting host B")
		if err := s.startHostB(ctx); err != nil {
			return nil, err
		}
	}
	if err := s.waitFunctionsReady(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Stack) kumoAddr() string { return "127.0.0.1:" + strconv.Itoa(s.Opts.KumoPort) }

// processEnv is the environment of the stack's functions and sidecar: the
// emulator's AWS, and the X-Ray daemon stand-in their segments go to.
func (s *Stack) processEnv() []string {
	return append(ProcessEnv("http://"+s.kumoAddr()), "AWS_XRAY_DAEMON_ADDRESS="+s.traces.Addr())
}

// Segments returns what the stack's X-Ray daemon stand-in received.
func (s *Stack) Segments() ([]Segment, error) { return ReadSegments(TraceFile(s.Opts.WorkDir)) }

// startProxy runs an nginx proxy (infra/proxy) in the given origin mode,
// logging to <name>.log, its prefix directory dir under the work dir.
func (s *Stack) startProxy(name, dir string, port int, origin, console string, extraEnv ...string) error {
	env := append(append([]string{"API_HOST=" + s.APIID + ".execute-api.localhost", "ENV_ORIGIN=" + origin, "ENV_DOMAIN=" + JupyterDomain},
		s.proxyRedisEnv()...), append(extraEnv, s.Opts.ProxyEnv...)...)
	p, err := s.spawn(s.LogDir(), name, env, filepath.Join(s.Opts.Root, "infra", "proxy", "run-local.sh"),
		filepath.Join(s.Opts.WorkDir, dir), strconv.Itoa(port), strconv.Itoa(s.Opts.RedisPort), console, s.frontURL)
	if err != nil {
		return err
	}
	return waitTCP("127.0.0.1:"+strconv.Itoa(port), p, 20*time.Second)
}

// StartProxy runs one more proxy of the stack (host origin mode) on port,
// its settings (infra/proxy/run-local.sh's variables) after the stack's:
// tests run the proxy under another Jupyter domain or with another copy of
// its Lua (LUA_DIR). It stops with the stack.
func (s *Stack) StartProxy(name string, port int, settings ...string) error {
	return s.startProxy(name, name, port, OriginHost, s.consoleDir, settings...)
}

func (s *Stack) envOrigin() string {
	if s.Opts.EnvOrigin == "" {
		return OriginHost
	}
	return s.Opts.EnvOrigin
}

// ProxyURL is the base URL of the proxy by address: an origin no
// environment has, so it serves the console and the API.
func (s *Stack) ProxyURL() string { return "http://127.0.0.1:" + strconv.Itoa(s.Opts.ProxyPort) }

// ConsoleURL is the console's origin as a person opens it.
func (s *Stack) ConsoleURL() string {
	return "http://console.localhost:" + strconv.Itoa(s.Opts.ProxyPort)
}

// EnvURL is the base URL of an environment's JupyterLab (what access_url
// starts with).
func (s *Stack) EnvURL(environmentID string) string {
	if s.envOrigin() == OriginPath {
		return s.ProxyURL() + "/env-" + environmentID + "/"
	}
	return "http://env-" + strings.ToLower(environmentID) + "." + JupyterDomain + ":" + strconv.Itoa(s.Opts.ProxyPort) + "/env-" + environmentID + "/"
}

// PathProxyURL is the base URL of the second, path-mode proxy.
func (s *Stack) PathProxyURL() string {
	return "http://127.0.0.1:" + strconv.Itoa(s.Opts.PathProxyPort)
}

// DialLoopback dials as net.Dialer does, except that localhost and every
// name under .localhost go to 127.0.0.1 (RFC 6761; Chromium does the same,
// Go's resolver does not): clients of the local stack use it.
func DialLoopback(ctx context.Context, network, addr string) (net.Conn, error) {
	if host, port, err := net.SplitHostPort(addr); err == nil {
		if h := strings.ToLower(host); h == "localhost" || strings.HasSuffix(h, ".localhost") {
			addr = net.JoinHostPort("127.0.0.1", port)
		}
	}
	var d net.Dialer
	return d.DialContext(ctx, network, addr)
}

// APIHost is the Host header kumo routes the HTTP API by.
func (s *Stack) APIHost() string { return s.APIID + ".execute-api.localhost" }

// StatusURL is the sidecar's status server.
func (s *Stack) StatusURL() string { return "http://127.0.0.1:" + strconv.Itoa(s.Opts.StatusPort) }

// LogDir holds every process's log.
func (s *Stack) LogDir() string { return filepath.Join(s.Opts.WorkDir, "logs") }

func (s *Stack) spawn(logDir, name string, env []string, argv ...string) (*process, error) {
	p, err := startProcess(logDir, name, env, argv...)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.procs = append(s.procs, p)
	s.mu.Unlock()
	return p, nil
}

func (s *Stack) bootstrap(fn Function) string {
	return filepath.Join(s.Opts.WorkDir, "bin", fn.LogicalID, "bootstrap")
}

// build compiles each function as Lambda would run it (a static binary
// named bootstrap) and the sidecar.
func (s *Stack) build(ctx context.Context, t *Template) error {
	targets := map[string]string{filepath.Join(s.Opts.WorkDir, "bin", "sidecar"): "./sidecar",
		filepath.Join(s.Opts.WorkDir, "bin", "sso"): "./functions/sso"}
	for _, id := range t.OfType("AWS::Serverless::Function") {
		r := &Resolver{}
		uri, err := r.String(get(&t.Resources[id].Properties, "CodeUri"))
		if err != nil {
			return err
		}
		targets[filepath.Join(s.Opts.WorkDir, "bin", id, "bootstrap")] = "./" + strings.TrimSuffix(uri, "/")
	}
	for out, pkg := range targets {
		// Without the symbol table and DWARF, as `make sidecar` builds the
		// hosts' sidecar: the benchmark measures the sidecar's footprint on
		// this one.
		cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, pkg)
		cmd.Dir = s.Opts.Root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
		if b, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("building %s: %w\n%s", pkg, err, b)
		}
	}
	return nil
}

// AdvertiseAddr is where the proxy reaches this host's forwarded ports.
func (s *Stack) AdvertiseAddr() string { return s.advertise }

// bridgeGateway returns the host's address on Docker's default bridge.
func (s *Stack) bridgeGateway(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	n, err := s.Docker.NetworkInspect(ctx, "bridge", network.InspectOptions{})
	if err != nil {
		return "", fmt.Errorf("inspecting docker's bridge network: %w", err)
	}
	for _, c := range n.IPAM.Config {
		if a, err := netip.ParseAddr(c.Gateway); err == nil && a.Is4() {
			return a.String(), nil
		}
	}
	// Docker does not always record the gateway: it is this host's
	// address inside the bridge's subnet.
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return "", fmt.Errorf("listing this host's addresses: %w", err)
	}
	for _, c := range n.IPAM.Config {
		subnet, err := netip.ParsePrefix(c.Subnet)
		if err != nil || !subnet.Addr().Is4() {
			continue
		}
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(ipn.IP.To4()); ok && subnet.Contains(ip) {
					return ip.String(), nil
				}
			}
		}
	}
	return "", errors.New("this host has no address on docker's bridge network")
}

// disableLocalnet undoes route_localnet=1 on the bridge, which sidecars
// before #11 set (and Docker sets with userland-proxy=false): with it a
// container reaches the host's loopback services, and the end-to-end tests
// prove that the sidecar no longer needs it nor sets it.
func (s *Stack) disableLocalnet() {
	ifaces, _ := net.Interfaces()
	for _, iface := range ifaces {
		addrs, _ := iface.Addrs()
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.String() == s.advertise {
				path := filepath.Join("/proc/sys/net/ipv4/conf", iface.Name, "route_localnet")
				if b, err := os.ReadFile(path); err == nil && strings.TrimSpace(string(b)) != "0" {
					s.Opts.Log.Warn("route_localnet was on: turning it off", "interface", iface.Name)
					_ = os.WriteFile(path, []byte("0"), 0o644)
				}
			}
		}
	}
}

// StartSidecar starts (or restarts) the sidecar process.
func (s *Stack) StartSidecar() error {
	s.sidecarMu.Lock()
	defer s.sidecarMu.Unlock()
	env := append(s.processEnv(),
		"ENVJUPYTER_HOST_ID="+s.Opts.HostID,
		"ENVJUPYTER_ADVERTISE_ADDR="+s.advertise,
		"ENVJUPYTER_CHAIN_PREFIX="+s.Opts.ChainPrefix,
		"ENVJUPYTER_STATUS_ADDR=127.0.0.1:"+strconv.Itoa(s.Opts.StatusPort),
		"ENVJUPYTER_SSM_PREFIX=/envjupyter",
		"ENVJUPYTER_STATE_DIR="+filepath.Dir(s.SidecarStateFile()),
		awsconf.CallLogEnv+"="+s.callLog("sidecar-"+s.Opts.HostID),
	)
	env = append(append(env, s.sidecarRedisEnv()...), s.Opts.SidecarEnv...)
	p, err := s.spawn(s.LogDir(), "sidecar", env, filepath.Join(s.Opts.WorkDir, "bin", "sidecar"))
	if err != nil {
		return err
	}
	s.sidecar = p
	if err := waitTCP("127.0.0.1:"+strconv.Itoa(s.Opts.StatusPort), p, 30*time.Second); err != nil {
		return err
	}
	return s.waitHeard(s.Opts.HostID, p)
}

// CallLog is where a process of the stack records its AWS calls, and whose
// policy in the template they are checked against.
type CallLog struct {
	Path string
	// PolicyID is the template resource holding the principal's policy: the
	// function, or SidecarPolicy for a host.
	PolicyID string
	// Tags are the principal's tags (a host's role carries its host id).
	Tags map[string]string
}

func (s *Stack) callLog(process string) string {
	return filepath.Join(s.Opts.WorkDir, "awscalls", process+".jsonl")
}

// CallLogs lists the call log of every process the stack ran.
func (s *Stack) CallLogs() []CallLog {
	logs := []CallLog{{
		Path: s.callLog("sidecar-" + s.Opts.HostID), PolicyID: "SidecarPolicy",
		Tags: map[string]string{HostIDTag: s.Opts.HostID},
	}}
	logs = append(logs, s.hostBCallLogs()...)
	for _, fn := range s.Functions {
		for i := range max(s.Opts.LambdaConcurrency, 1) {
			logs = append(logs, CallLog{Path: s.callLog(fmt.Sprintf("%s-%d", fn.LogicalID, i)), PolicyID: fn.LogicalID})
		}
	}
	return logs
}

// HostIDTag is the principal tag of a host's role that names its host id;
// SidecarPolicy scopes a host to its own queue, parameters and reports by it.
const HostIDTag = "envjupyter-host-id"

// schedule invokes a scheduled function every period with the event
// EventBridge Scheduler sends, until ctx ends.
func (s *Stack) schedule(ctx context.Context, fn Function, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			event, _ := json.Marshal(map[string]any{
				"version": "0", "id": randomID(), "detail-type": "Scheduled Event", "source": "aws.events",
				"account": accountID, "time": now.UTC().Format(time.RFC3339), "region": region,
				"resources": []string{"arn:aws:events:" + region + ":" + accountID + ":rule/" + fn.Name}, "detail": map[string]any{},
			})
			if _, err := InvokeFunction(ctx, s.AWS, fn.Name, event); err != nil && ctx.Err() == nil {
				s.Opts.Log.Warn("scheduled invocation failed", "function", fn.Name, "error", err)
			}
		}
	}
}

func randomID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

// SidecarRunning reports whether the sidecar process is up.
func (s *Stack) SidecarRunning() bool {
	s.sidecarMu.Lock()
	defer s.sidecarMu.Unlock()
	return s.sidecar != nil && !s.sidecar.exited()
}

// SidecarPID is the sidecar's process id, or 0 when it is not running.
func (s *Stack) SidecarPID() int {
	s.sidecarMu.Lock()
	defer s.sidecarMu.Unlock()
	if s.sidecar == nil || s.sidecar.exited() {
		return 0
	}
	return s.sidecar.cmd.Process.Pid
}

// SidecarStateFile is where the sidecar keeps what it runs.
func (s *Stack) SidecarStateFile() string {
	return filepath.Join(s.Opts.WorkDir, "sidecar-state", "instances.json")
}

// KillSidecar kills the sidecar with SIGKILL, as a crash would.
func (s *Stack) KillSidecar() {
	s.sidecarMu.Lock()
	defer s.sidecarMu.Unlock()
	if s.sidecar != nil {
		s.sidecar.kill()
		s.sidecar = nil
	}
}

// EmitEnvironmentEvent puts an environment state-change event on the
// default bus, as the environment module does.
func (s *Stack) EmitEnvironmentEvent(ctx context.Context, d envevent.Detail) error {
	detail, err := json.Marshal(d)
	if err != nil {
		return err
	}
	out, err := s.AWS.Events.PutEvents(ctx, &eventbridge.PutEventsInput{Entries: []ebtypes.PutEventsRequestEntry{{
		Source: aws.String(envevent.Source), DetailType: aws.String(envevent.DetailType), Detail: aws.String(string(detail)),
	}}})
	if err != nil {
		return fmt.Errorf("putting the event: %w", err)
	}
	if out.FailedEntryCount > 0 {
		return fmt.Errorf("the bus refused the event: %s", aws.ToString(out.Entries[0].ErrorMessage))
	}
	return nil
}

// StopSidecar stops the sidecar with SIGTERM (running Jupyters stay).
func (s *Stack) StopSidecar() {
	s.sidecarMu.Lock()
	defer s.sidecarMu.Unlock()
	if s.sidecar != nil {
		s.sidecar.stop(15 * time.Second)
		s.sidecar = nil
	}
}

// waitFunctionsReady waits until every function's bootstrap polls kumo.
func (s *Stack) waitFunctionsReady(ctx context.Context) error {
	deadline := time.Now().Add(30 * time.Second)
	for _, fn := range s.Functions {
		for {
			// An empty ping event: the handlers answer it without side effects.
			out, err := s.Invoke(ctx, fn.LogicalID, []byte(`{}`))
			if err == nil && out != nil {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("function %s does not answer: %v", fn.LogicalID, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	return nil
}

// Stop ends every process, removes the stack's containers and firewall chains.
func (s *Stack) Stop() {
	if s.cancel != nil {
		s.cancel()
	}
	s.pollers.Wait()
	s.mu.Lock()
	procs, servers := s.procs, s.servers
	s.procs, s.servers = nil, nil
	s.mu.Unlock()
	for _, srv := range servers {
		_ = srv.Close()
	}
	if s.hostB != nil {
		s.hostB.stop() // before its dockerd and sidecar stop as processes of the stack
	}
	for i := len(procs) - 1; i >= 0; i-- {
		procs[i].stop(10 * time.Second)
	}
	if s.traces != nil {
		s.traces.Close()
		s.traces = nil
	}
	s.removeLeftovers()
}

// removeLeftovers removes the stack's containers (and with them their
// Jupyters) and its firewall chains.
func (s *Stack) removeLeftovers() {
	if s.Docker != nil {
		removeStackContainers(s.Docker, s.Opts.Name)
	}
	if fw, err := firewall.New(s.Opts.ChainPrefix); err == nil {
		if err := fw.Teardown(); err != nil {
			s.Opts.Log.Warn("removing firewall chains", "error", err)
		}
	}
	_ = os.RemoveAll(filepath.Join(s.Opts.WorkDir, "sidecar-state"))
	_ = os.RemoveAll(filepath.Join(s.Opts.WorkDir, "sidecar-state-b"))
	removeHostB(s.Opts)
}

// CreateEnvironment starts a container from the default environment image
// and records it as a running environment of the customer.
func (s *Stack) CreateEnvironment(ctx context.Context, id, customer string) (store.Environment, error) {
	return s.CreateEnvironmentFrom(ctx, id, customer, EnvImage)
}

// CreateEnvironmentFrom is CreateEnvironment with a container of the given image.
func (s *Stack) CreateEnvironmentFrom(ctx context.Context, id, customer, image string) (store.Environment, error) {
	return s.CreateEnvironmentOn(ctx, s.Opts.HostID, id, customer, image)
}

// CreateEnvironmentOn is CreateEnvironmentFrom on the given host (A's or
// B's id): the environments table places the environment there.
func (s *Stack) CreateEnvironmentOn(ctx context.Context, hostID, id, customer, image string) (store.Environment, error) {
	docker, err := s.dockerOf(hostID)
	if err != nil {
		return store.Environment{}, err
	}
	name := s.Opts.Name + "-" + id
	_ = docker.ContainerRemove(ctx, name, container.RemoveOptions{Force: true})
	created, err := docker.ContainerCreate(ctx, &container.Config{
		Image:  image,
		Labels: map[string]string{"envjupyter.stack": s.Opts.Name, "envjupyter.environment": id},
	}, &container.HostConfig{}, nil, nil, name)
	if err != nil {
		return store.Environment{}, fmt.Errorf("creating container for %s: %w", id, err)
	}
	if err := docker.ContainerStart(ctx, created.ID, container.StartOptions{}); err != nil {
		return store.Environment{}, fmt.Errorf("starting container for %s: %w", id, err)
	}
	env := store.Environment{ID: id, CustomerID: customer, HostID: hostID, ContainerID: created.ID, Status: store.EnvironmentRunning}
	return env, s.Store.PutEnvironment(ctx, env)
}

// prepareConsole copies the built console (web/dist, or a placeholder page
// when it is not built) next to a dev-identity.json that only the local stack
// serves: the demo customer's token and environments, so the page can call
// the API the way the platform's console would with its own session.
func (s *Stack) prepareConsole() (string, error) {
	src := filepath.Join(s.Opts.Root, "web", "dist")
	if _, err := os.Stat(filepath.Join(src, "index.html")); err != nil {
		src = filepath.Join(s.Opts.Root, "web", "static")
	}
	dst := filepath.Join(s.Opts.WorkDir, "console")
	if err := os.RemoveAll(dst); err != nil {
		return "", err
	}
	if err := os.CopyFS(dst, os.DirFS(src)); err != nil {
		return "", fmt.Errorf("copying the console: %w", err)
	}
	identity, _ := json.MarshalIndent(map[string]any{
		"customer_id":  DemoCustomer,
		"token":        s.Token(DemoCustomer, 24*time.Hour),
		"environments": s.demoEnvironments(),
	}, "", "  ")
	if err := os.WriteFile(filepath.Join(dst, "dev-identity.json"), identity, 0o644); err != nil {
		return "", err
	}
	// nginx workers (user nobody) read these files.
	err := filepath.WalkDir(dst, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		mode := os.FileMode(0o644)
		if d.IsDir() {
			mode = 0o755
		}
		return os.Chmod(path, mode)
	})
	return dst, err
}

// Token returns a bearer token for the customer, valid for ttl, signed by
// the stack's issuer.
func (s *Stack) Token(customer string, ttl time.Duration) string {
	return s.Identity.Token(customer, ttl)
}

// serve serves h on ln until the stack stops.
func (s *Stack) serve(ln net.Listener, h http.Handler) {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	s.mu.Lock()
	s.servers = append(s.servers, srv)
	s.mu.Unlock()
	go func() { _ = srv.Serve(ln) }()
}
