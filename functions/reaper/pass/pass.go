// Package pass runs one reaper pass outside the Lambda, over a given store,
// clock and configuration: infra/bench measures the real Service.Reap with
// it (functions/internal is not importable from infra).
package pass

import (
	"context"
	"log/slog"
	"time"

	"github.com/envjupyter/envjupyter/functions/internal/control"
	"github.com/envjupyter/envjupyter/functions/store/dynamostore"
	"github.com/envjupyter/envjupyter/shared/config"
)

// Reaped counts what one pass did.
type Reaped = control.Reaped

// Run runs one pass at the time now says; commands to hosts go to send.
func Run(ctx context.Context, st *dynamostore.Store, cfg config.Config, now func() time.Time, send control.Commands) (Reaped, error) {
	svc := &control.Service{Store: st, Commands: send, Config: cfg, Log: slog.New(slog.DiscardHandler), Now: now}
	return svc.Reap(ctx)
}
