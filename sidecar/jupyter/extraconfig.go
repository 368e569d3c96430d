package jupyter

import (
	_ "embed"
	"encoding/base64"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// ExtraConfigDir is a config directory of the sidecar's in the container,
// added to Jupyter's search path after the container's own directories. The
// files in it set no configuration value, so whatever the customer's own
// config sets still applies.
const ExtraConfigDir = "/var/lib/envjupyter/config"

// kernelNoDelay makes the kernel WebSocket send at once (TCP_NODELAY):
// Jupyter never sets it, so every small kernel message waits for the
// browser's delayed ACK, about 40 ms on each cell's round trip.
//
//go:embed kernel_nodelay.py
var kernelNoDelay []byte

//go:embed launch_lab.py
var labLauncher string

// LauncherMarker begins the launcher's program, so that its processes can
// be recognised by their command line.
const LauncherMarker = "# envjupyter-lab-launcher"

// launcherProgram is what the launcher's interpreter runs (`-c`): the
// config files it writes itself (see launch_lab.py), then its code. It
// holds no secret: it is on the command line.
var launcherProgram = func() string {
	var b strings.Builder
	b.WriteString(LauncherMarker + "\n_FILES = {")
	files := ConfigFiles()
	for _, path := range slices.Sorted(maps.Keys(files)) { // the same program at every start
		// Paths and base64 are plain ASCII: Go's quoting is Python's.
		fmt.Fprintf(&b, "%q: %q, ", path, base64.StdEncoding.EncodeToString(files[path]))
	}
	b.WriteString("}\n")
	b.WriteString(labLauncher)
	return b.String()
}()

// ConfigFiles are the files a launch needs in ExtraConfigDir, by path: the
// same code under the names ServerApp (jupyter-server, JupyterLab) and
// NotebookApp (notebook 6) read. The sidecar writes them into the
// container before a launch, unless the launcher does (Flavour.Launcher).
func ConfigFiles() map[string][]byte {
	return map[string][]byte{
		ExtraConfigDir + "/jupyter_server_config.py":   kernelNoDelay,
		ExtraConfigDir + "/jupyter_notebook_config.py": kernelNoDelay,
	}
}

// configPathEnv is JUPYTER_CONFIG_PATH for a launch: the container's own
// value first (its directories keep their priority), then ours.
func configPathEnv(containerConfigPath string) string {
	if containerConfigPath = strings.Trim(containerConfigPath, ":"); containerConfigPath == "" {
		return "JUPYTER_CONFIG_PATH=" + ExtraConfigDir
	}
	return "JUPYTER_CONFIG_PATH=" + containerConfigPath + ":" + ExtraConfigDir
}
