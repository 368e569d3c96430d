package instance

import "strings"

// Reason codes: why an instance is in its state. A status reason is a code,
// or "code: detail" with a detail for people (pip's last line, an exit
// status). This list is the codes' one definition: code that sets a reason
// uses these constants, the console has a label for each in both languages
// (web/src/i18n.js, checked by TestConsoleLabelsEveryReason) and
// docs/OPERATIONS.md explains each (TestOperationsExplainsEveryReason).
const (
	// Stops asked for.
	ReasonUser                = "user"                 // the customer stopped it
	ReasonIdle                = "idle"                 // idle past idle_timeout_seconds
	ReasonEnvironmentStopping = "environment_stopping" // its environment is stopping
	ReasonEnvironmentStopped  = "environment_stopped"  // its environment stopped
	ReasonEnvironmentDeleted  = "environment_deleted"  // its environment was deleted
	ReasonStopped             = "stopped"              // the host stopped it for a stop without a reason
	ReasonStray               = "stray"                // the host ran it after the control plane had ended it
	ReasonReaped              = "reaped"               // the reaper ended it and told the host to stop it

	// Ends the control plane decides.
	ReasonCommandNotSent = "command_not_sent" // the start command could not be queued for the host
	ReasonStartTimeout   = "start_timeout"    // not running within start_timeout_seconds
	ReasonHostLost       = "host_lost"        // its host stopped reporting (host_silence_seconds)
	ReasonStopTimeout    = "stop_timeout"     // the host did not confirm a stop within stop_timeout_seconds

	// What the host reports.
	ReasonStoppedBeforeStart    = "stopped_before_start"   // a stop overtook the start on the host
	ReasonContainerNotRunning   = "container_not_running"  // the environment's container is not running
	ReasonContainerGone         = "container_gone"         // the container stopped or was removed
	ReasonDockerError           = "docker_error"           // Docker failed on the host
	ReasonContainerUnresponsive = "container_unresponsive" // a probe in the container did not end in time
	ReasonNoJupyterInImage      = "no_jupyter_in_image"    // the environment's image has no Jupyter
	ReasonPortInUse             = "port_in_use"            // something in the container uses Jupyter's port
	ReasonPluginInstallFailed   = "plugin_install_failed"  // pip could not install a plugin
	ReasonLaunchFailed          = "launch_failed"          // docker exec of Jupyter failed
	ReasonFirewallError         = "firewall_error"         // the port forward could not be set up
	ReasonRouteError            = "route_error"            // the proxy route could not be written to Redis
	ReasonJupyterExited         = "jupyter_exited"         // Jupyter exited while starting
	ReasonSidecarStopping       = "sidecar_stopping"       // the sidecar was shut down during the start
	ReasonNotResponding         = "not_responding"         // Jupyter stopped answering health checks (unhealthy)
	ReasonJupyterDied           = "jupyter_died"           // Jupyter died and is being restarted
	ReasonJupyterCrashed        = "jupyter_crashed"        // Jupyter died more often than the restart budget allows
)

// Reasons lists every reason code.
var Reasons = []string{
	ReasonUser, ReasonIdle, ReasonEnvironmentStopping, ReasonEnvironmentStopped, ReasonEnvironmentDeleted,
	ReasonStopped, ReasonStray, ReasonReaped,
	ReasonCommandNotSent, ReasonStartTimeout, ReasonHostLost, ReasonStopTimeout,
	ReasonStoppedBeforeStart, ReasonContainerNotRunning, ReasonContainerGone, ReasonDockerError, ReasonContainerUnresponsive,
	ReasonNoJupyterInImage, ReasonPortInUse, ReasonPluginInstallFailed, ReasonLaunchFailed,
	ReasonFirewallError, ReasonRouteError, ReasonJupyterExited, ReasonSidecarStopping,
	ReasonNotResponding, ReasonJupyterDied, ReasonJupyterCrashed,
}

// EnvironmentReason is the reason of a stop caused by the environment's
// state (stopping, stopped, deleted).
func EnvironmentReason(environmentStatus string) string {
	return "environment_" + environmentStatus
}

// WithDetail is a reason with a detail for people: "code: detail".
func WithDetail(code, detail string) string {
	return code + ": " + detail
}

// ReasonCode is the code part of a status reason.
func ReasonCode(reason string) string {
	code, _, _ := strings.Cut(reason, ":")
	return code
}
