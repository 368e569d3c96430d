// Command sidecar runs on each Docker host: it carries out the start and stop
// commands of its host's queue (Jupyter in the environment's container, the
// iptables forward, the proxy route) and reports what it observes.
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

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"
	"github.com/aws/aws-xray-sdk-go/xray"

	"github.com/envjupyter/envjupyter/shared/awsconf"
	"github.com/envjupyter/envjupyter/shared/config"
	"github.com/envjupyter/envjupyter/shared/message"
	"github.com/envjupyter/envjupyter/shared/queue"
	"github.com/envjupyter/envjupyter/sidecar/container"
	"github.com/envjupyter/envjupyter/sidecar/firewall"
	"github.com/envjupyter/envjupyter/sidecar/metrics"
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
	settings, err := loadSettings()
	if err != nil {
		return err
	}
	log = log.With("host_id", settings.HostID)
	clients, err := awsconf.Load(ctx)
	if err != nil {
		return err
	}
	cfg, err := config.Load(ctx, clients.SSM)
	if err != nil {
		return err
	}
	if cfg.ReportsQueueURL == "" {
		return errors.New("no reports queue URL configured (reports_queue_url)")
	}
	docker, err := container.New()
	if err != nil {
		return err
	}
	fw, err := firewall.New(settings.ChainPrefix)
	if err != nil {
		return err
	}
	if err := fw.Setup(); err != nil {
		return err
	}
	routes := route.New(settings.RedisAddr, settings.RouteTTL)
	defer routes.Close()
	queueURL, err := register(ctx, clients.SQS, clients.SSM, settings, cfg.StartTimeout)
	if err != nil {
		return err
	}
	reportKey, err := queue.EnsureHostKey(ctx, clients.SSM, settings.HostID)
	if err != nil {
		return err
	}
	a := newAgent()
	a.hostID, a.advertise, a.procDir, a.sources = settings.HostID, settings.AdvertiseAddr, settings.ProcDir, settings.Sources
	a.pipEnv = settings.PipEnv
	a.setLinkKeys(cfg.LinkKeys)
	a.tuning = tuning{
		startTimeout: cfg.StartTimeout, stopGrace: settings.StopGrace,
		healthEvery: settings.HealthEvery, heartbeatEvery: settings.Heartbeat, unhealthyAfter: 3,
		pluginTimeout: settings.PluginTimeout,
		restartBudget: settings.RestartBudget, restartWindow: 10 * time.Minute,
	}
	a.docker, a.firewall, a.routes = docker, fw, routes
	a.reports = queue.NewReports(clients.SQS, cfg.ReportsQueueURL, reportKey)
	a.state = stateFile{path: filepath.Join(settings.StateDir, "instances.json")}
	a.log = log
	declareMetrics(a)

	srv := &http.Server{Addr: settings.StatusAddr, Handler: statusHandler(a.metrics), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("status server", "error", err)
		}
	}()
	defer srv.Close()

	var work sync.WaitGroup
	defer work.Wait()
	resume := func(s savedInstance) {
		work.Add(1)
		go func() {
			defer work.Done()
			if err := a.handle(context.WithoutCancel(ctx), s.Command); err != nil {
				log.Error("resuming a start", "instance_id", s.Command.InstanceID, "error", err)
			}
		}()
	}
	if err := a.reconcile(ctx, resume); err != nil {
		return fmt.Errorf("reconciling at start-up: %w", err)
	}
	a.refreshRoutes(ctx) // publishes the link keys at once
	every(ctx, &work, settings.RouteTTL/3, a.refreshRoutes)
	// Access-link keys rotate in SSM; the proxy learns them from here.
	every(ctx, &work, settings.ConfigReload, func(ctx context.Context) {
		if c, err := config.Load(ctx, clients.SSM); err == nil {
			a.setLinkKeys(c.LinkKeys)
		} else {
			log.Warn("reloading configuration", "error", err)
		}
	})
	every(ctx, &work, settings.HealthEvery, a.checkAll)
	work.Add(1)
	go func() {
		defer work.Done()
		a.watchContainers(ctx, docker.Client())
	}()
	log.Info("sidecar ready", "queue_url", queueURL, "advertise", settings.AdvertiseAddr)
	poll(ctx, log, clients.SQS, queueURL, a, cfg.StartTimeout)
	// Running Jupyters keep running: a restarted sidecar takes them over.
	log.Info("sidecar shutting down; instances keep running")
	return nil
}

// register makes sure this host's command queue exists and publishes its URL
// in SSM, where the control plane looks it up.
func register(ctx context.Context, sqsClient *sqs.Client, ssmClient *ssm.Client, s settings, startTimeout time.Duration) (string, error) {
	out, err := sqsClient.CreateQueue(ctx, &sqs.CreateQueueInput{
		QueueName: aws.String(s.QueuePrefix + s.HostID),
		Attributes: map[string]string{
			string(sqstypes.QueueAttributeNameVisibilityTimeout):      fmt.Sprint(int(visibility(startTimeout).Seconds())),
			string(sqstypes.QueueAttributeNameMessageRetentionPeriod): "3600",
		},
	})
	if err != nil {
		return "", fmt.Errorf("creating the command queue of host %s: %w", s.HostID, err)
	}
	_, err = ssmClient.PutParameter(ctx, &ssm.PutParameterInput{
		Name: aws.String(config.HostQueueParameter(s.HostID)), Value: out.QueueUrl,
		Type: ssmtypes.ParameterTypeString, Overwrite: aws.Bool(true),
	})
	if err != nil {
		return "", fmt.Errorf("publishing the command queue of host %s: %w", s.HostID, err)
	}
	return aws.ToString(out.QueueUrl), nil
}

// visibility is how long a received command stays hidden: longer than the
// longest start, so it is not handed out twice while it runs.
func visibility(startTimeout time.Duration) time.Duration { return startTimeout + time.Minute }

// maxInFlight bounds the commands carried out at once.
const maxInFlight = 16

// poll long-polls the command queue until ctx ends, carrying out commands
// concurrently; a command is deleted once carried out and reported.
func poll(ctx context.Context, log *slog.Logger, client *sqs.Client, url string, a *agent, startTimeout time.Duration) {
	var wg sync.WaitGroup
	defer wg.Wait()
	slots := make(chan struct{}, maxInFlight)
	failing := false
	for ctx.Err() == nil {
		out, err := client.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{
			QueueUrl: &url, MaxNumberOfMessages: 10, WaitTimeSeconds: 20,
			VisibilityTimeout:           int32(visibility(startTimeout).Seconds()),
			MessageSystemAttributeNames: []sqstypes.MessageSystemAttributeName{sqstypes.MessageSystemAttributeNameAWSTraceHeader},
		})
		if err != nil {
			if ctx.Err() == nil {
				if !failing {
					log.Error("receiving commands; retrying", "error", err)
				}
				failing = true
				sleep(ctx, 2*time.Second)
			}
			continue
		}
		failing = false
		for _, m := range out.Messages {
			cmd, err := message.DecodeCommand([]byte(aws.ToString(m.Body)))
			if err != nil {
				log.Warn("dropping malformed command", "message_id", aws.ToString(m.MessageId), "error", err)
				deleteMessage(ctx, log, client, url, m)
				continue
			}
			select {
			case slots <- struct{}{}:
			case <-ctx.Done():
				return
			}
			wg.Add(1)
			go func() {
				defer func() { <-slots; wg.Done() }()
				// The command's work outlives a shutdown signal so that a
				// start half done is finished or cleaned, not abandoned.
				hctx, seg := xray.BeginSegment(context.WithoutCancel(ctx), "sidecar "+cmd.Type)
				seg.TraceID = traceID(m.Attributes)
				err := a.handle(hctx, cmd)
				seg.Close(err)
				if err != nil {
					log.Error("command not completed; it will be delivered again", "instance_id", cmd.InstanceID, "type", cmd.Type, "error", err)
					return
				}
				deleteMessage(context.WithoutCancel(ctx), log, client, url, m)
			}()
		}
	}
}

func deleteMessage(ctx context.Context, log *slog.Logger, client *sqs.Client, url string, m sqstypes.Message) {
	if _, err := client.DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: &url, ReceiptHandle: m.ReceiptHandle}); err != nil {
		log.Warn("deleting command; it will come again and be repeated harmlessly", "error", err)
	}
}

// traceID continues the caller's X-Ray trace when the message carries one.
func traceID(attrs map[string]string) string {
	h := attrs[string(sqstypes.MessageSystemAttributeNameAWSTraceHeader)]
	const root = "Root="
	for _, part := range splitSemicolons(h) {
		if len(part) > len(root) && part[:len(root)] == root {
			return part[len(root):]
		}
	}
	return xray.NewTraceID()
}

func splitSemicolons(s string) []string {
	var parts []string
	start := 0
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == ';' {
			parts = append(parts, s[start:i])
			start = i + 1
		}
	}
	return parts
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// every runs f every period until ctx ends.
func every(ctx context.Context, wg *sync.WaitGroup, period time.Duration, f func(context.Context)) {
	wg.Add(1)
	go func() {
		defer wg.Done()
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
	}()
}

func statusHandler(m *metrics.Registry) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		_ = m.Write(w)
	})
	return mux
}

// declareMetrics declares the sidecar's series.
func declareMetrics(a *agent) {
	m := a.metrics
	m.Gauge("envjupyter_instances", "Instances on this host by state.", func() map[string]float64 {
		counts := map[string]float64{
			metrics.Labels("state", "starting"): 0, metrics.Labels("state", "running"): 0, metrics.Labels("state", "unhealthy"): 0,
		}
		for _, in := range a.managedCopy() {
			state := "starting"
			if in.running {
				state = string(in.status)
			}
			counts[metrics.Labels("state", state)]++
		}
		return counts
	})
	m.Histogram("envjupyter_start_duration_seconds", "Time from a start command to Jupyter answering through its port.",
		[]float64{0.5, 1, 1.5, 2, 3, 5, 10, 30, 60, 120})
	m.Histogram("envjupyter_command_lag_seconds", "Time from a command being sent to the sidecar taking it.",
		[]float64{0.05, 0.1, 0.25, 0.5, 1, 2, 5, 20, 60})
	m.Counter("envjupyter_starts_total", "Starts carried out, by outcome.")
	m.Counter("envjupyter_stops_total", "Instances stopped, by reason.")
	m.Counter("envjupyter_health_check_failures_total", "Failed health checks.")
	m.Counter("envjupyter_restarts_total", "Restarts of a Jupyter that died.")
	m.Counter("envjupyter_reconcile_actions_total", "Actions of the start-up reconcile, by action.")
}
