package main

import (
	"github.com/envjupyter/envjupyter/functions/internal/control"
	"github.com/envjupyter/envjupyter/functions/internal/emf"
)

// emitReaped publishes what a reaper pass ended as metrics, so alarms can
// watch silent hosts (HostsLost) and starts that never finish
// (StartTimeouts) without reading logs.
func emitReaped(m *emf.Emitter, r control.Reaped) {
	m.Emit(map[string]string{},
		emf.Metric{Name: "HostsLost", Value: float64(r.HostsLost), Unit: "Count"},
		emf.Metric{Name: "StartTimeouts", Value: float64(r.StartTimeouts), Unit: "Count"},
		emf.Metric{Name: "StopTimeouts", Value: float64(r.StopTimeouts), Unit: "Count"},
		emf.Metric{Name: "IdleStops", Value: float64(r.Idle), Unit: "Count"},
		// What a pass read: it grows with what is due, not with all instances.
		emf.Metric{Name: "ReaperChecked", Value: float64(r.Checked), Unit: "Count"},
	)
}
