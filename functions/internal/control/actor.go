package control

import (
	"context"
	"time"

	"github.com/envjupyter/envjupyter/shared/instance"
)

// Actor is who or what asks for a start or a stop, for the audit trail.
type Actor struct {
	Cause   string // customer, environment_event, idle, timeout, operator
	Subject string // the customer's subject, the event's id
}

type actorKey struct{}

// WithActor returns a context carrying the actor of the calls made with it.
func WithActor(ctx context.Context, a Actor) context.Context {
	return context.WithValue(ctx, actorKey{}, a)
}

func actorFrom(ctx context.Context) Actor {
	if a, ok := ctx.Value(actorKey{}).(Actor); ok {
		return a
	}
	return Actor{Cause: "operator"}
}

func (a Actor) entry(action string, at time.Time, detail string) instance.AuditEntry {
	return instance.AuditEntry{At: at, Action: action, Cause: a.Cause, Actor: a.Subject, Detail: detail}
}
