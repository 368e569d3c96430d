// Command devstack runs the local stack (`devstack up`), invokes its
// functions on sample events (`devstack invoke FN EVENT`) and prints the
// traces it received (`devstack trace INSTANCE-OR-TRACE-ID`).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/envjupyter/envjupyter/infra/devstack"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "devstack:", err)
		os.Exit(1)
	}
}

func run() error {
	root := flag.String("root", ".", "repository root")
	hosts := flag.Int("hosts", 1, "Docker hosts: 1 (this machine's dockerd) or 2 (also host B, a network namespace with its own dockerd and sidecar)")
	image := flag.String("image", "lab", "the demo environment's image: lab (JupyterLab 4), notebook (Notebook 6) or an image name")
	flag.Parse()
	abs, err := filepath.Abs(*root)
	if err != nil {
		return err
	}
	opts := devstack.Defaults(abs)
	if *hosts < 1 || *hosts > 2 {
		return errors.New("-hosts: 1 or 2")
	}
	opts.Hosts = *hosts
	switch flag.Arg(0) {
	case "up":
		return up(opts, demoImage(*image))
	case "invoke":
		if flag.NArg() != 3 {
			return errors.New("usage: devstack invoke FN EVENT-FILE (FN is a folder of functions/)")
		}
		return invoke(opts, flag.Arg(1), flag.Arg(2))
	case "trace":
		if flag.NArg() != 2 {
			return errors.New("usage: devstack trace INSTANCE-ID|TRACE-ID")
		}
		return trace(opts, flag.Arg(1))
	default:
		return errors.New("usage: devstack [-root DIR] up | invoke FN EVENT-FILE | trace INSTANCE-ID|TRACE-ID")
	}
}

// demoImage resolves the -image flag.
func demoImage(name string) string {
	switch name {
	case "lab":
		return devstack.LabImage
	case "notebook":
		return devstack.NotebookImage
	}
	return name
}

func up(opts devstack.Options, image string) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	opts.Log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	s, err := devstack.Start(ctx, opts)
	if err != nil {
		return err
	}
	defer s.Stop()
	if _, err := s.CreateEnvironmentFrom(ctx, devstack.DemoEnvironment, devstack.DemoCustomer, image); err != nil {
		return err
	}
	if b := s.HostB(); b != nil {
		if _, err := s.CreateEnvironmentOn(ctx, b.ID, devstack.DemoEnvironmentB, devstack.DemoCustomer, devstack.EnvImage); err != nil {
			return err
		}
		fmt.Printf("\nHost B (%s, reached at %s) runs demo environment %q: start it as below with %s.\n",
			b.ID, b.Advertise, devstack.DemoEnvironmentB, devstack.DemoEnvironmentB)
	}
	token := s.Token(devstack.DemoCustomer, 24*time.Hour)
	fmt.Printf(`
envjupyter is up.

  Console:  %[6]s/  (Chromium resolves *.localhost to this machine)
  API:      %[1]s/api/  (the HTTP API, through the proxy; also %[6]s/api/)
  JupyterLab: each environment on a host of its own, %[7]s
            (curl: --connect-to ::127.0.0.1 or --resolve <host>:<port>:127.0.0.1)
  Logs:     %[2]s

Demo environment %[3]q of customer %[4]q is running (image %[8]s, no Jupyter yet).
Dev token (24 h):
  export TOKEN=%[5]s

Start JupyterLab, watch it, open the access_url it returns, then stop it:
  curl -s -X POST -H "Authorization: Bearer $TOKEN" %[1]s/api/environments/%[3]s/jupyter/start
  curl -s -H "Authorization: Bearer $TOKEN" %[1]s/api/environments/%[3]s/jupyter
  curl -s -X POST -H "Authorization: Bearer $TOKEN" %[1]s/api/environments/%[3]s/jupyter/stop

Where a start spent its time: its traces (the API call, the sidecar's
stages, the reports) as trees with durations, from the segments the stack's
X-Ray daemon stand-in (udp %[9]d) received:
  go run ./infra/devstack/cmd/devstack -root %[10]s trace <instance_id or trace id>

Ctrl-C stops everything and cleans up.
`, s.ProxyURL(), s.LogDir(), devstack.DemoEnvironment, devstack.DemoCustomer, token, s.ConsoleURL(), s.EnvURL(devstack.DemoEnvironment), image, opts.TracePort, opts.Root)
	if opts.SSOProxyPort != 0 {
		if err := printSSO(ctx, s); err != nil {
			return err
		}
	}
	<-ctx.Done()
	fmt.Println("stopping…")
	return nil
}

func invoke(opts devstack.Options, fn, eventFile string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	event, err := os.ReadFile(eventFile)
	if err != nil {
		return err
	}
	t, err := devstack.LoadTemplate(filepath.Join(opts.Root, "template.yaml"))
	if err != nil {
		return err
	}
	logical, err := t.FunctionByDir(fn)
	if err != nil {
		return err
	}
	aw, err := devstack.NewAWS(ctx, fmt.Sprintf("http://127.0.0.1:%d", opts.KumoPort))
	if err != nil {
		return err
	}
	out, err := devstack.InvokeFunction(ctx, aw, opts.Name+"-"+logical, event)
	if err != nil && !strings.Contains(err.Error(), "failed") {
		return fmt.Errorf("%w (is `make up` running?)", err)
	}
	fmt.Println(string(out))
	return err
}

// trace prints the traces of an instance (its start, its stop) or the
// trace of that id, as the running or last `devstack up` received them.
func trace(opts devstack.Options, key string) error {
	segs, err := devstack.ReadSegments(devstack.TraceFile(opts.WorkDir))
	if err != nil {
		return fmt.Errorf("%w (has `make up` run?)", err)
	}
	ids := devstack.FindTraces(segs, key)
	if len(ids) == 0 {
		return fmt.Errorf("%s: %w", key, devstack.ErrNoTrace)
	}
	for _, id := range ids {
		devstack.PrintTrace(os.Stdout, devstack.Trace(segs, id))
		fmt.Println()
	}
	return nil
}

// ssoDemoEnvironment belongs to the sign-in's first demo customer.
const ssoDemoEnvironment = "sso-demo"

// printSSO says how to open an environment with the local sign-in.
func printSSO(ctx context.Context, s *devstack.Stack) error {
	if _, err := s.CreateEnvironment(ctx, ssoDemoEnvironment, devstack.SSOCustomerA); err != nil {
		return err
	}
	fmt.Printf(`
Sign-in with OpenID Connect (access mode sso, docs/SSO.md): a second proxy on %[1]s,
provider %[2]s (its own dev login page takes any password).
Users: %[3]q of customer %[4]q, %[5]q of customer %[6]q. Environment %[7]q is %[4]s's:
  curl -s -X POST -H "Authorization: Bearer %[8]s" %[1]s/api/environments/%[7]s/jupyter/start
then open %[9]s in Chromium and sign in as %[3]s (as %[5]s: 403).
`, s.SSOProxyURL(), s.SSOIssuer(), devstack.SSOUserA, devstack.SSOCustomerA, devstack.SSOUserB, devstack.SSOCustomerB,
		ssoDemoEnvironment, s.Token(devstack.SSOCustomerA, 24*time.Hour), s.SSOEnvURL(ssoDemoEnvironment))
	return nil
}
