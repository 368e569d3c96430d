// Command sidecar runs on each Docker host: it carries out the start and stop
// commands of its host's queue (Jupyter in the environment's container, the
// port forward (nftables), the proxy route) and reports what it observes. This file
// only wires; the work is in sidecar/agent.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/envjupyter/envjupyter/shared/awsconf"
	"github.com/envjupyter/envjupyter/shared/config"
	"github.com/envjupyter/envjupyter/shared/message"
	"github.com/envjupyter/envjupyter/shared/queue"
	"github.com/envjupyter/envjupyter/sidecar/agent"
	"github.com/envjupyter/envjupyter/sidecar/container"
	"github.com/envjupyter/envjupyter/sidecar/firewall"
	"github.com/envjupyter/envjupyter/sidecar/netns"
	"github.com/envjupyter/envjupyter/sidecar/route"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	if err := run(ctx, log); err != nil {
		log.Error("sidecar stopped", "error", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, log *slog.Logger) error {
	s, err := loadSettings()
	if err != nil {
		return err
	}
	tuneGC()
	log = log.With("host_id", s.HostID)
	clients, err := awsconf.Load(ctx)
	if err != nil {
		return err
	}
	cfg, err := config.Load(ctx, clients.SSM)
	if err != nil {
		return err
	}
	if err := s.fitsProduct(cfg); err != nil {
		return err
	}
	if cfg.ReportsQueueURL == "" {
		return errors.New("no reports queue URL configured (reports_queue_url)")
	}
	docker, err := container.New()
	if err != nil {
		return err
	}
	fw, err := firewall.New(s.ChainPrefix)
	if err != nil {
		return err
	}
	if err := fw.Setup(); err != nil {
		return err
	}
	routes := route.New(route.Redis{
		Addr: s.RedisAddr, User: s.RedisUser, Password: s.RedisPassword, Sentinels: s.RedisSentinels, Master: s.RedisMaster,
	}, s.RouteTTL)
	defer routes.Close()
	commands, err := queue.RegisterHost(ctx, clients.SQS, clients.SSM, s.QueuePrefix, s.HostID, cfg.StartTimeout, log)
	if err != nil {
		return err
	}
	reportKey, err := queue.EnsureHostKey(ctx, clients.SSM, s.HostID)
	if err != nil {
		return err
	}
	a := agent.New(agent.Config{
		HostID: s.HostID, Advertise: s.AdvertiseAddr, Sources: s.Sources, PipEnv: s.PipEnv, ProcDir: s.ProcDir,
		StateFile: filepath.Join(s.StateDir, "instances.json"),
		// The probes go to each container's own loopback, never over the bridge.
		Dial: netns.Dialer{ProcDir: s.ProcDir}.Dial,
		Tuning: agent.Tuning{
			StartTimeout: cfg.StartTimeout, StopGrace: s.StopGrace, PluginTimeout: s.PluginTimeout,
			HealthEvery: s.HealthEvery, HeartbeatEvery: s.Heartbeat, UnhealthyAfter: 3,
			RestartBudget: s.RestartBudget, RestartWindow: 10 * time.Minute,
		},
	}, docker, fw, routes, queue.NewReports(clients.SQS, cfg.ReportsQueueURL, reportKey), log)
	a.SetLinkKeys(cfg.LinkKeys)

	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.Handle("GET /metrics", a.Metrics().Handler())
	srv := &http.Server{Addr: s.StatusAddr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("status server", "error", err)
		}
	}()
	defer srv.Close()

	var work sync.WaitGroup
	defer work.Wait()
	resume := func(cmd message.Command) {
		work.Go(func() {
			if err := a.Handle(context.WithoutCancel(ctx), cmd); err != nil {
				log.Error("resuming a start", "instance_id", cmd.InstanceID, "error", err)
			}
		})
	}
	if err := a.Reconcile(ctx, resume); err != nil {
		return fmt.Errorf("reconciling at start-up: %w", err)
	}
	a.RefreshRoutes(ctx) // publishes the link keys at once
	every(ctx, &work, s.RouteTTL/3, a.RefreshRoutes)
	// Access-link keys rotate in SSM; the proxy learns them from here.
	every(ctx, &work, s.ConfigReload, func(ctx context.Context) {
		if c, err := config.Load(ctx, clients.SSM); err == nil {
			a.SetLinkKeys(c.LinkKeys)
		} else {
			log.Warn("reloading configuration", "error", err)
		}
	})
	every(ctx, &work, s.HealthEvery, a.CheckAll)
	a.HostHeartbeat(ctx)
	every(ctx, &work, s.Heartbeat, a.HostHeartbeat)
	work.Go(func() { a.WatchContainers(ctx, docker.Client()) })
	log.Info("sidecar ready", "queue_url", commands.URL(), "advertise", s.AdvertiseAddr)
	commands.Receive(ctx, a.Handle)
	// Running Jupyters keep running: a restarted sidecar takes them over.
	log.Info("sidecar shutting down; instances keep running")
	return nil
}

// every runs f every period until ctx ends.
func every(ctx context.Context, wg *sync.WaitGroup, period time.Duration, f func(context.Context)) {
	wg.Go(func() {
		t := time.NewTicker(period)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				f(ctx)
			}
		}
	})
}
