// Package jupyter knows how to launch the Jupyter an image has, and how to
// tell whether it is up.
package jupyter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/envjupyter/envjupyter/shared/instance"
)

// Flavour is a way to launch Jupyter: its executable and the traitlets
// application class its options belong to.
type Flavour struct {
	Name       string // lab, notebook or server
	Executable string
	App        string // ServerApp or NotebookApp
	Version    string // read for the notebook only (see Detect)
	// Launcher is the interpreter that runs the launcher (launch_lab.py)
	// in place of Executable, or "" to run Executable itself. Set for
	// JupyterLab when the container has python3: the launcher writes the
	// config files and runs the same JupyterLab without a third of its
	// boot, or execs Executable when it cannot tell that it would be the
	// same.
	Launcher string
}

// candidates are tried in order of preference: JupyterLab, then the classic
// notebook (which has a UI of its own), then a bare jupyter-server.
var candidates = []Flavour{
	{Name: "lab", Executable: "jupyter-lab", App: "ServerApp"},
	{Name: "notebook", Executable: "jupyter-notebook", App: "NotebookApp"},
	{Name: "server", Executable: "jupyter-server", App: "ServerApp"},
}

// ErrNoJupyter means the image has no Jupyter the sidecar can launch.
var ErrNoJupyter = errors.New("no Jupyter found in the container (looked for jupyter-lab, jupyter-notebook, jupyter-server)")

// Runner runs a command in the container to completion.
type Runner func(ctx context.Context, argv []string) (stdout string, exitCode int, err error)

// Finder tells whether the container has an executable of that name on its
// PATH, by looking at its files (through Docker): nothing runs.
type Finder func(ctx context.Context, name string) (bool, error)

// Detect finds the preferred Jupyter in the container. Which executables
// exist is read from the container's files; only the classic notebook is
// run (`--version`), since Notebook 6 and 7 take their options from
// different applications. JupyterLab and jupyter-server are not run before
// their launch: `jupyter-lab --version` costs as much as a third of
// JupyterLab's boot (it imports all of JupyterLab), on every new container,
// and runs the customer's code on the host's time.
func Detect(ctx context.Context, find Finder, run Runner) (Flavour, error) {
	for _, c := range candidates {
		ok, err := find(ctx, c.Executable)
		if err != nil {
			return Flavour{}, err
		}
		if !ok {
			continue
		}
		if c.Name == "lab" {
			if c.Launcher, err = launcherFor(ctx, find); err != nil {
				return Flavour{}, err
			}
		}
		if c.Name != "notebook" {
			return c, nil
		}
		out, code, err := run(ctx, []string{c.Executable, "--version"})
		if err != nil {
			return Flavour{}, err
		}
		if code != 0 {
			continue // present but broken: try the next
		}
		c.Version = lastVersion(out)
		// Notebook 7 is a jupyter-server application.
		if major(c.Version) >= 7 {
			c.App = "ServerApp"
		}
		return c, nil
	}
	return Flavour{}, ErrNoJupyter
}

// launcherFor returns the interpreter of the launcher (launch_lab.py) if the
// container has it on its PATH, or "".
func launcherFor(ctx context.Context, find Finder) (string, error) {
	const python = "python3"
	ok, err := find(ctx, python)
	if err != nil || !ok {
		return "", err
	}
	return python, nil
}

var versionPattern = regexp.MustCompile(`\d+\.\d+(\.\d+)?`)

func lastVersion(out string) string {
	all := versionPattern.FindAllString(out, -1)
	if len(all) == 0 {
		return ""
	}
	return all[len(all)-1]
}

func major(version string) int {
	n, _ := strconv.Atoi(strings.SplitN(version, ".", 2)[0])
	return n
}

// Options are the settings of one launch.
type Options struct {
	BasePath   string // /env-<id>/
	Port       int    // inside the container
	ConfigFile string // a config file in the container (the password), or ""
}

// Argv returns the command line that launches f. It carries no secret: the
// token travels in the JUPYTER_TOKEN environment variable.
func Argv(f Flavour, o Options) []string {
	app := "--" + f.App + "."
	argv := append(LaunchCommand(f),
		"--no-browser",
		"--allow-root",
		"--ip=0.0.0.0",
		"--port="+strconv.Itoa(o.Port),
		app+"port_retries=0",
		app+"base_url="+o.BasePath,
		// The proxy keeps the browser's Host header; origins are checked
		// against it, so no extra allow_origin is needed.
	)
	if o.ConfigFile != "" {
		argv = append(argv, "--config="+o.ConfigFile)
	}
	return argv
}

// LaunchCommand is what a launch of f runs, before its options: the
// executable, or the launcher's interpreter with the launcher's program.
func LaunchCommand(f Flavour) []string {
	if f.Launcher != "" {
		return []string{f.Launcher, "-c", launcherProgram}
	}
	return []string{f.Executable}
}

// PasswordConfig is a config file setting the hashed password, for the
// flavour's application (jupyter-server 2 reads it from its identity
// provider; 1.x and the notebook from the app).
func PasswordConfig(f Flavour, hash string) []byte {
	cfg := map[string]map[string]string{f.App: {"password": hash}}
	if f.App == "ServerApp" {
		cfg["PasswordIdentityProvider"] = map[string]string{"hashed_password": hash}
	}
	b, _ := json.Marshal(cfg)
	return b
}

// ConfigPath is where an instance's config file goes in its container.
func ConfigPath(instanceID string) string {
	return "/var/lib/envjupyter/" + instanceID + ".json"
}

// Env returns the environment of a launch: the token, a marker by which the
// sidecar recognises the processes of an instance after a restart, and the
// config search path with ExtraConfigDir after the container's own
// (containerConfigPath, its JUPYTER_CONFIG_PATH, may be empty).
func Env(instanceID, token, containerConfigPath string) []string {
	return []string{TokenVar + "=" + token, MarkerVar + "=" + instanceID, configPathEnv(containerConfigPath)}
}

// TokenVar is the environment variable that gives Jupyter its token.
const TokenVar = "JUPYTER_TOKEN"

// MarkerVar is the environment variable that tags an instance's processes.
const MarkerVar = "ENVJUPYTER_INSTANCE_ID"

// noRedirects returns a copy of client that never follows a redirect.
// Whatever answers in a customer's container is the customer's: a redirect
// from it would make the host fetch an address of the customer's choosing
// (the metadata service, internal services) and the status API would tell
// them what it said. A redirect is an answer like any other non-200.
func noRedirects(client *http.Client) *http.Client {
	c := *client
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &c
}

// Ready reports whether Jupyter answers GET <base>api with 200.
func Ready(ctx context.Context, client *http.Client, baseURL string) bool {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, baseURL+"api", nil)
	if err != nil {
		return false
	}
	resp, err := noRedirects(client).Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// DescribeExit turns a launch's exit code into a reason a person can read.
func DescribeExit(f Flavour, code int) string {
	return fmt.Sprintf("%s exited with code %d before it answered", f.Executable, code)
}

// Status reads Jupyter's /api/status with the token: last activity, kernels
// and connections. Jupyter does not count this call as activity, so polling
// it does not keep an idle server alive.
func Status(ctx context.Context, client *http.Client, baseURL, token string) (instance.Health, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, baseURL+"api/status", nil)
	if err != nil {
		return instance.Health{}, err
	}
	req.Header.Set("Authorization", "token "+token)
	resp, err := noRedirects(client).Do(req)
	if err != nil {
		return instance.Health{}, fmt.Errorf("reading jupyter status: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return instance.Health{}, fmt.Errorf("reading jupyter status: HTTP %d", resp.StatusCode)
	}
	var st struct {
		LastActivity time.Time `json:"last_activity"`
		Kernels      int       `json:"kernels"`
		Connections  int       `json:"connections"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&st); err != nil {
		return instance.Health{}, fmt.Errorf("decoding jupyter status: %w", err)
	}
	return instance.Health{CheckedAt: time.Now().UTC(), LastActivity: st.LastActivity.UTC(), Kernels: st.Kernels, Connections: st.Connections}, nil
}
