// Package instance is the domain model of a JupyterLab instance: its states,
// the transitions between them, and the record kept for each one.
package instance

import (
	"fmt"
	"time"
)

// Status is the lifecycle state of an instance.
type Status string

// The lifecycle: starting → running → stopping → stopped; starting → failed;
// running ⇄ unhealthy; unhealthy → failed; any active state → stopped.
const (
	Starting  Status = "starting"
	Running   Status = "running"
	Unhealthy Status = "unhealthy"
	Stopping  Status = "stopping"
	Stopped   Status = "stopped"
	Failed    Status = "failed"
)

// Active reports whether an instance in this state holds its environment and
// its port. At most one active instance exists per environment.
func (s Status) Active() bool {
	switch s {
	case Starting, Running, Unhealthy, Stopping:
		return true
	}
	return false
}

// Terminal reports whether no transition leaves this state.
func (s Status) Terminal() bool { return s == Stopped || s == Failed }

// Valid reports whether s is one of the known states.
func (s Status) Valid() bool { return s.Active() || s.Terminal() }

// transitions lists, for each state, the states it may move to.
var transitions = map[Status][]Status{
	Starting:  {Running, Failed, Stopping, Stopped},
	Running:   {Unhealthy, Stopping, Stopped, Failed},
	Unhealthy: {Running, Stopping, Stopped, Failed},
	Stopping:  {Stopped, Failed},
}

// CanTransition reports whether an instance may move from one state to another.
// Staying in the same state is not a transition.
func CanTransition(from, to Status) bool {
	for _, s := range transitions[from] {
		if s == to {
			return true
		}
	}
	return false
}

// Stage is the step a starting instance has reached, for progress display.
type Stage string

// Stages of a start, in order.
const (
	StageQueued    Stage = "queued"
	StagePreparing Stage = "preparing"
	StagePlugins   Stage = "installing_plugins"
	StageLaunching Stage = "launching"
	StageWaiting   Stage = "waiting_for_health"
	StageRouting   Stage = "routing"
)

// InternalPort is the port Jupyter listens on inside the container.
const InternalPort = 8888

// Health is what the host last observed of a running instance.
type Health struct {
	CheckedAt    time.Time `json:"checked_at" dynamodbav:"checked_at"`
	LastActivity time.Time `json:"last_activity,omitzero" dynamodbav:"last_activity,omitempty"`
	Kernels      int       `json:"kernels" dynamodbav:"kernels"`
	Connections  int       `json:"connections" dynamodbav:"connections"`
}

// Config is what the customer asked for at start.
type Config struct {
	Plugins      []string `json:"plugins,omitempty" dynamodbav:"plugins,omitempty"`
	PasswordHash string   `json:"-" dynamodbav:"password_hash,omitempty"`
}

// Instance is one JupyterLab run in one environment. Each start makes a new
// instance; past ones stay as history until they expire.
type Instance struct {
	ID            string    `dynamodbav:"instance_id"`
	EnvironmentID string    `dynamodbav:"environment_id"`
	CustomerID    string    `dynamodbav:"customer_id"`
	HostID        string    `dynamodbav:"host_id"`
	ContainerID   string    `dynamodbav:"container_id"`
	AccessURL     string    `dynamodbav:"access_url"`
	AccessToken   string    `dynamodbav:"access_token"`
	ExternalPort  int       `dynamodbav:"external_port"`
	InternalPort  int       `dynamodbav:"internal_port"`
	Config        Config    `dynamodbav:"config"`
	Status        Status    `dynamodbav:"status"`
	StatusReason  string    `dynamodbav:"status_reason,omitempty"`
	Stage         Stage     `dynamodbav:"stage,omitempty"`
	Health        *Health   `dynamodbav:"health,omitempty"`
	CreatedAt     time.Time `dynamodbav:"created_at"`
	StartedAt     time.Time `dynamodbav:"started_at,omitempty"`
	StoppedAt     time.Time `dynamodbav:"stopped_at,omitempty"`
	UpdatedAt     time.Time `dynamodbav:"updated_at"`
	// ReportedAt is when the host observed what the last applied report
	// says; older reports arriving later are ignored.
	ReportedAt time.Time `dynamodbav:"reported_at,omitempty"`
	// Version increases with every write; writers condition on it.
	Version int64 `dynamodbav:"version"`
	// ExpiresAt (Unix seconds) lets DynamoDB's TTL remove old history.
	ExpiresAt int64 `dynamodbav:"expires_at,omitempty"`
	// DueAt (Unix seconds) is when the reaper looks at the instance next:
	// set when it enters a state, moved on by the reaper, never by a
	// heartbeat; 0 once it has ended, which takes it out of the reaper's
	// (sparse) index.
	DueAt int64 `dynamodbav:"due_at,omitempty"`
	// Audit records who or what started and stopped the instance.
	Audit []AuditEntry `dynamodbav:"audit,omitempty"`
}

// AuditEntry is one cause in an instance's history.
type AuditEntry struct {
	At     time.Time `json:"at" dynamodbav:"at"`
	Action string    `json:"action" dynamodbav:"action"` // start, stop (asked for), end (reached an end state)
	// Cause: customer, environment_event, idle, timeout, host_lost,
	// container_gone, host (what the host reported), operator.
	Cause  string `json:"cause" dynamodbav:"cause"`
	Actor  string `json:"actor,omitempty" dynamodbav:"actor,omitempty"` // the customer's subject, the event's id
	Detail string `json:"detail,omitempty" dynamodbav:"detail,omitempty"`
}

// Audit actions.
const (
	ActionStart = "start"
	ActionStop  = "stop"
	ActionEnd   = "end"
)

// BasePath is the URL path under which Jupyter serves an environment.
func BasePath(environmentID string) string { return fmt.Sprintf("/env-%s/", environmentID) }

// ValidEnvironmentID reports whether id is a well-formed environment id: 1 to
// 63 letters, digits and dashes, not starting with a dash. The proxy's route
// pattern accepts exactly these, so an id that passes here is routable.
func ValidEnvironmentID(id string) bool {
	if len(id) == 0 || len(id) > 63 || id[0] == '-' {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}
