// Package metrics declares the sidecar's Prometheus series once, as typed
// handles: a series that is not declared here cannot be incremented.
package metrics

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// States of the envjupyter_instances gauge.
var States = []string{"starting", "running", "unhealthy"}

// Metrics are the sidecar's series, in a registry of their own (not the
// process-wide default), so each agent, and each test, has its own.
type Metrics struct {
	registry *prometheus.Registry

	StartDuration       prometheus.Histogram
	CommandLag          prometheus.Histogram
	Starts              *prometheus.CounterVec // by outcome
	Stops               *prometheus.CounterVec // by reason
	HealthCheckFailures prometheus.Counter
	Restarts            prometheus.Counter
	ReconcileActions    *prometheus.CounterVec // by action
}

// New declares the series; instances counts the host's instances by state
// (one of States) when the metrics are read.
func New(instances func() map[string]int) *Metrics {
	m := &Metrics{
		registry: prometheus.NewRegistry(),
		StartDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "envjupyter_start_duration_seconds", Help: "Time from a start command to Jupyter answering through its port.",
			Buckets: []float64{0.5, 1, 1.5, 2, 3, 5, 10, 30, 60, 120},
		}),
		CommandLag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "envjupyter_command_lag_seconds", Help: "Time from a command being sent to the sidecar taking it.",
			Buckets: []float64{0.05, 0.1, 0.25, 0.5, 1, 2, 5, 20, 60},
		}),
		Starts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "envjupyter_starts_total", Help: "Starts carried out, by outcome.",
		}, []string{"outcome"}),
		Stops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "envjupyter_stops_total", Help: "Instances stopped, by reason.",
		}, []string{"reason"}),
		HealthCheckFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "envjupyter_health_check_failures_total", Help: "Failed health checks.",
		}),
		Restarts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "envjupyter_restarts_total", Help: "Restarts of a Jupyter that died.",
		}),
		ReconcileActions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "envjupyter_reconcile_actions_total", Help: "Actions of the start-up reconcile, by action.",
		}, []string{"action"}),
	}
	m.registry.MustRegister(m.StartDuration, m.CommandLag, m.Starts, m.Stops, m.HealthCheckFailures, m.Restarts, m.ReconcileActions)
	for _, state := range States {
		m.registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "envjupyter_instances", Help: "Instances on this host by state.",
			ConstLabels: prometheus.Labels{"state": state},
		}, func() float64 { return float64(instances()[state]) }))
	}
	return m
}

// Handler serves the series in the Prometheus exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{})
}
