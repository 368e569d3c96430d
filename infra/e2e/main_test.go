// Package e2e tests the whole system on its real parts: kumo, dockerd,
// iptables, Redis, nginx, the functions' bootstrap binaries and the sidecar,
// all started by infra/devstack exactly as `make up` starts them.
package e2e

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/envjupyter/envjupyter/infra/devstack"
	"github.com/envjupyter/envjupyter/infra/iamcheck"
)

// stack is shared by the tests of this package; each test uses
// environments of its own.
var stack *devstack.Stack

// Timings of the test stack.
const (
	idleTimeout   = 20 * time.Second
	restartBudget = 2
	customerLimit = 3 // active instances per customer
	portCooldown  = 10 * time.Second
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	flag.Parse()
	if testing.Short() {
		fmt.Println("e2e: skipped in -short mode")
		return 0
	}
	if missing := missingParts(); missing != "" {
		if os.Getenv("CI") != "" {
			fmt.Fprintln(os.Stderr, "e2e: cannot run in CI:", missing)
			return 1
		}
		fmt.Println("e2e: skipped:", missing, "(run `make test` as root; CI never skips)")
		return 0
	}
	// Environments live on env-<id>.localhost: the tests' clients
	// reach every *.localhost name on loopback, as Chromium does.
	http.DefaultTransport.(*http.Transport).DialContext = devstack.DialLoopback
	websocket.DefaultDialer.NetDialContext = devstack.DialLoopback
	root, _ := filepath.Abs("../..")
	work, err := os.MkdirTemp("", "envjupyter-e2e-")
	if err == nil {
		// nginx workers run as nobody and read the console and temp files here.
		err = os.Chmod(work, 0o755)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	opts := devstack.Options{
		Root: root, WorkDir: work, Name: "ejtest", KumoBin: os.Getenv("KUMO_BIN"),
		KumoPort: 14566, RedisPort: 16391, ProxyPort: 18081, StatusPort: 19464, PathProxyPort: 18082,
		SSOProxyPort: 18083, SSOPort: 18084, OIDCPort: 18085,
		HostID: "test-host-1", ChainPrefix: "EJTEST", PortRange: "21000-21499",
		// Two Docker hosts (TestTwoHosts, TestHostLost): B in a namespace of
		// its own, on a link only this stack uses.
		Hosts: 2, HostBID: "test-host-2", HostBLink: netip.MustParsePrefix(hostBLink),
		LambdaConcurrency: 4,
		// Short timings so that failures, idleness and recovery show in seconds.
		Params: map[string]string{
			"StartTimeoutSeconds": "60",
			"IdleTimeoutSeconds":  strconv.Itoa(int(idleTimeout.Seconds())),
			"HostSilenceSeconds":  "30",
			"StopTimeoutSeconds":  "30",
			// Longer than the sidecars' route TTL (6 s), as it must be.
			"PortCooldownSeconds":  strconv.Itoa(int(portCooldown.Seconds())),
			"MaxActivePerCustomer": strconv.Itoa(customerLimit),
			// The image's wheel directory stands in for PyPI (TestPlugins).
			"AllowedPlugins": `{"envjupyter-hello":"envjupyter-hello","envjupyter-missing":"envjupyter-missing==9.9","ipywidgets":"ipywidgets"}`,
			// Functions re-read SSM this often (TestConsoleOpensFreshLinks changes it).
			"ConfigRefreshSeconds": "2",
		},
		ScheduleEvery: 2 * time.Second,
		SidecarEnv: []string{
			"ENVJUPYTER_HEALTH_EVERY=1s",
			"ENVJUPYTER_HEARTBEAT=2s",
			"ENVJUPYTER_ROUTE_TTL=6s",
			"ENVJUPYTER_CONFIG_RELOAD=2s",
			"ENVJUPYTER_RESTART_BUDGET=" + strconv.Itoa(restartBudget),
			// A second proxy lives in a network namespace of its own (TestProxyCIDRs).
			"ENVJUPYTER_PROXY_CIDRS=" + remoteProxyCIDR,
			devstack.PipWheelDirEnv,
		},
		// An idle kernel socket is cut within a test (TestNotebookWorkloads).
		// A small proxy, so that a flood can fill it (TestHungEnvironmentDoesNotStarveOthers).
		ProxyEnv: []string{"ENV_SOCKET_IDLE_TIMEOUT=" + strconv.Itoa(int(socketIdleTimeout.Seconds())) + "s",
			"WORKER_CONNECTIONS=" + strconv.Itoa(proxyWorkerConnections), "ENV_CONN_LIMIT=" + strconv.Itoa(envConnLimit)},
		Log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	stack, err = devstack.Start(ctx, opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: starting the stack:", err)
		dumpLogs(filepath.Join(work, "logs"))
		return 1
	}
	code := m.Run()
	fmt.Printf("e2e: %d answers of the HTTP API checked against docs/openapi.yaml\n", apiAnswersChecked.Load())
	if code != 0 {
		dumpLogs(stack.LogDir())
	}
	stack.Stop()
	// Least privilege, proved: every AWS call each function and the sidecar
	// made during the run is allowed by its policy in template.yaml.
	if n, err := iamcheck.Check(stack.Template, stack.Resolver, stack.CallLogs()); err != nil || n == 0 {
		fmt.Fprintf(os.Stderr, "e2e: least privilege: %d calls recorded: %v\n", n, err)
		code = 1
	} else {
		fmt.Printf("e2e: least privilege: %d recorded AWS calls, each allowed by its principal's policy\n", n)
	}
	if code == 0 {
		_ = os.RemoveAll(work)
	}
	return code
}

// missingParts names what this machine lacks to run the real stack.
func missingParts() string {
	if os.Geteuid() != 0 {
		return "not root (iptables and dockerd need it)"
	}
	if os.Getenv("KUMO_BIN") == "" {
		return "KUMO_BIN is not set (infra/local/prepare.sh builds kumo)"
	}
	for _, bin := range []string{"docker", "iptables", "redis-server", "redis-sentinel", "nginx", "strace"} {
		if _, err := exec.LookPath(bin); err != nil {
			return bin + " is not installed"
		}
	}
	for _, img := range coreImages {
		if err := exec.Command("docker", "image", "inspect", img.ref).Run(); err != nil {
			return "docker or the environment image " + img.ref + " is not available"
		}
	}
	return ""
}

// dumpLogs prints the tail of every process log, so a CI failure explains itself.
func dumpLogs(dir string) {
	files, _ := filepath.Glob(filepath.Join(dir, "*.log"))
	for _, f := range files {
		b, _ := os.ReadFile(f)
		if len(b) > 4000 {
			b = b[len(b)-4000:]
		}
		fmt.Fprintf(os.Stderr, "\n===== %s (tail)\n%s\n", filepath.Base(f), b)
	}
}
