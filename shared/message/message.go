// Package message defines what travels on the queues: commands from the
// control plane to a host's sidecar, and reports from the sidecar back.
// Every message carries a version; decoders reject versions they do not know
// and fields they do not expect, so a malformed message is dropped, not guessed at.
package message

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/envjupyter/envjupyter/shared/instance"
	"github.com/envjupyter/envjupyter/shared/strictjson"
)

// Version is the message format version this code writes and reads.
const Version = 1

// Command types.
const (
	TypeStart = "start"
	TypeStop  = "stop"
)

// Command asks a host's sidecar to start or stop one instance.
type Command struct {
	V             int    `json:"v"`
	Type          string `json:"type"`
	InstanceID    string `json:"instance_id"`
	EnvironmentID string `json:"environment_id"`
	ContainerID   string `json:"container_id"`
	HostPort      int    `json:"host_port"`
	// Start only.
	InternalPort int    `json:"internal_port,omitempty"`
	Token        string `json:"token,omitempty"`
	BaseURL      string `json:"base_url,omitempty"`
	PasswordHash string `json:"password_hash,omitempty"`
	// Plugins are pip requirements, resolved from the allowed plugins.
	Plugins []string `json:"plugins,omitempty"`
	// Stop only: why it was asked for (user, environment_stopped, ...).
	Reason string    `json:"reason,omitempty"`
	SentAt time.Time `json:"sent_at"`
}

// MaxPlugins bounds the plugins of one start: each is a pip install in the
// customer's container, within one time budget.
const MaxPlugins = 20

// String describes the command without its secrets, for logs and errors.
func (c Command) String() string {
	return fmt.Sprintf("%s instance=%s environment=%s port=%d", c.Type, c.InstanceID, c.EnvironmentID, c.HostPort)
}

// Validate checks a command is complete and consistent.
func (c Command) Validate() error {
	if c.V != Version {
		return fmt.Errorf("%w: version %d", ErrInvalid, c.V)
	}
	if c.InstanceID == "" || !instance.ValidEnvironmentID(c.EnvironmentID) || c.ContainerID == "" {
		return fmt.Errorf("%w: %s command lacks instance, environment or container", ErrInvalid, c.Type)
	}
	if c.HostPort <= 0 || c.HostPort > 65535 {
		return fmt.Errorf("%w: host port %d", ErrInvalid, c.HostPort)
	}
	switch c.Type {
	case TypeStart:
		if c.Token == "" || c.BaseURL != instance.BasePath(c.EnvironmentID) || c.InternalPort <= 0 || c.InternalPort > 65535 {
			return fmt.Errorf("%w: start command lacks token, base URL or internal port", ErrInvalid)
		}
		if len(c.Plugins) > MaxPlugins {
			return fmt.Errorf("%w: %d plugins, at most %d", ErrInvalid, len(c.Plugins), MaxPlugins)
		}
		seen := map[string]bool{}
		for _, p := range c.Plugins {
			// Never an option: a requirement starting with "-" would be one to pip.
			if p == "" || len(p) > 200 || strings.HasPrefix(p, "-") || strings.ContainsAny(p, "\x00\n\r") || seen[p] {
				return fmt.Errorf("%w: plugin requirement %q", ErrInvalid, p)
			}
			seen[p] = true
		}
	case TypeStop:
	default:
		return fmt.Errorf("%w: command type %q", ErrInvalid, c.Type)
	}
	return nil
}

// Report tells the control plane what a host observed of one instance.
type Report struct {
	V          int              `json:"v"`
	InstanceID string           `json:"instance_id"`
	HostID     string           `json:"host_id"`
	Status     instance.Status  `json:"status"`
	Reason     string           `json:"reason,omitempty"`
	Stage      instance.Stage   `json:"stage,omitempty"`
	Health     *instance.Health `json:"health,omitempty"`
	At         time.Time        `json:"at"`
}

// ValidHostID reports whether id can be a host's id: the rule the sidecar
// applies to its ENVJUPYTER_HOST_ID (1 to 63 letters, digits or dashes, not
// starting with a dash). A host id becomes part of SSM parameter paths and
// of an SQS queue name, so anything else must name nothing: a host may write
// every parameter under <prefix>/hosts/<its id>/, so a report naming
// "<its id>/x" would otherwise be checked against a key it wrote itself at
// <prefix>/hosts/<its id>/x/report_key, and speak for a host that is not.
func ValidHostID(id string) bool { return instance.ValidEnvironmentID(id) }

// HostHeartbeat is the report a host sends every heartbeat period, with
// or without instances: it only says that the host is alive.
func HostHeartbeat(hostID string, at time.Time) Report {
	return Report{V: Version, HostID: hostID, At: at}
}

// HostOnly says whether the report is a host's heartbeat (no instance).
func (r Report) HostOnly() bool { return r.InstanceID == "" }

// Validate checks a report is complete.
func (r Report) Validate() error {
	if r.V != Version {
		return fmt.Errorf("%w: version %d", ErrInvalid, r.V)
	}
	if r.HostID == "" || r.At.IsZero() {
		return fmt.Errorf("%w: report lacks host or time", ErrInvalid)
	}
	if !ValidHostID(r.HostID) {
		return fmt.Errorf("%w: host id %q", ErrInvalid, r.HostID)
	}
	if r.InstanceID == "" {
		if r.Status != "" || r.Reason != "" || r.Stage != "" || r.Health != nil {
			return fmt.Errorf("%w: a host's heartbeat says nothing of an instance", ErrInvalid)
		}
		return nil
	}
	if !r.Status.Valid() {
		return fmt.Errorf("%w: status %q", ErrInvalid, r.Status)
	}
	return nil
}

// ErrInvalid marks a message that can never be processed.
var ErrInvalid = errors.New("invalid message")

// DecodeCommand parses and validates a command.
func DecodeCommand(body []byte) (Command, error) {
	var c Command
	if err := decodeStrict(body, &c); err != nil {
		return Command{}, err
	}
	return c, c.Validate()
}

// DecodeReport parses and validates a report.
func DecodeReport(body []byte) (Report, error) {
	var r Report
	if err := decodeStrict(body, &r); err != nil {
		return Report{}, err
	}
	return r, r.Validate()
}

// maxSize bounds a message; SQS itself allows 256 KiB.
const maxSize = 256 << 10

func decodeStrict(body []byte, v any) error {
	if len(body) > maxSize {
		return fmt.Errorf("%w: %d bytes", ErrInvalid, len(body))
	}
	if err := strictjson.Decode(body, v); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return nil
}

// Encode returns the JSON form of a command or report.
func Encode(v any) (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("encoding message: %w", err)
	}
	return string(b), nil
}
