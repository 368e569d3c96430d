// Package store is what the control plane keeps: environments as it reads
// them, the options of a new instance, and the errors its store returns.
// The DynamoDB adapter (store/dynamostore) implements the control plane's
// Store interface in these terms, so no caller sees DynamoDB's types.
package store

import (
	"errors"
	"time"
)

// Errors callers classify with errors.Is.
var (
	ErrNotFound        = errors.New("not found")
	ErrConflict        = errors.New("changed concurrently")
	ErrEnvironmentBusy = errors.New("environment already has an active instance")
	ErrPortTaken       = errors.New("port already leased")
	ErrCustomerLimit   = errors.New("customer has the most active instances allowed")
)

// Environment is what this product reads of an environment, which the
// environment module owns.
type Environment struct {
	ID          string `dynamodbav:"environment_id"`
	CustomerID  string `dynamodbav:"customer_id"`
	HostID      string `dynamodbav:"host_id"`
	ContainerID string `dynamodbav:"container_id"`
	Status      string `dynamodbav:"status"`
}

// EnvironmentRunning is the environment module's status of a running environment.
const EnvironmentRunning = "running"

// CreateOptions qualify CreateInstance.
type CreateOptions struct {
	// Stale is an ended instance whose environment lease may be taken over.
	Stale string
	// CustomerLimit is the most active instances the customer may have;
	// 0 means no limit.
	CustomerLimit int
}

// Host is what the control plane keeps of a Docker host: when it was last
// heard from (any report of it, at most once per a fraction of the silence).
type Host struct {
	ID      string
	HeardAt time.Time
}
