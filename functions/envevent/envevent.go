// Package envevent defines the environment module's state-change event, as
// it arrives on EventBridge: the source and detail type the rule matches, and
// the detail.
package envevent

// The event's source and detail type.
const (
	Source     = "envplatform.environments"
	DetailType = "Environment State Change"
)

// Detail is the detail of an environment state-change event.
type Detail struct {
	EnvironmentID string `json:"environment_id"`
	// Status is the environment's new state: running, stopping, stopped,
	// deleted (others are ignored).
	Status string `json:"status"`
	// AutoStartJupyter is set when the environment was created with
	// "start JupyterLab" ticked; it matters when Status is running.
	AutoStartJupyter bool            `json:"auto_start_jupyter,omitempty"`
	JupyterOptions   *JupyterOptions `json:"jupyter_options,omitempty"`
}

// JupyterOptions are the start options chosen at environment creation.
type JupyterOptions struct {
	Plugins []string `json:"plugins,omitempty"`
}
