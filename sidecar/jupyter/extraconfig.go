package jupyter

import (
	_ "embed"
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

// LabLauncher is where the launcher of JupyterLab goes in the container
// (see launch_lab.py and Flavour.Launcher).
const LabLauncher = "/var/lib/envjupyter/launch_lab.py"

//go:embed launch_lab.py
var labLauncher []byte

// LaunchFiles are the files to write into the container before a launch, by
// path: in ExtraConfigDir the same code under the names ServerApp
// (jupyter-server, JupyterLab) and NotebookApp (notebook 6) read, and the
// launcher of JupyterLab.
func LaunchFiles() map[string][]byte {
	return map[string][]byte{
		ExtraConfigDir + "/jupyter_server_config.py":   kernelNoDelay,
		ExtraConfigDir + "/jupyter_notebook_config.py": kernelNoDelay,
		LabLauncher: labLauncher,
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
