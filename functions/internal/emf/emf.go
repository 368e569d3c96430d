// Package emf writes CloudWatch Embedded Metric Format lines: a JSON log
// line that CloudWatch Logs turns into metrics, with no API call from the
// function.
package emf

import (
	"encoding/json"
	"io"
	"sort"
	"sync"
	"time"
)

// Namespace of every metric this project emits.
const Namespace = "envjupyter"

// Metric is one value with its CloudWatch unit (Count, Milliseconds, ...).
type Metric struct {
	Name  string
	Value float64
	Unit  string
}

// Emitter writes metric lines to one writer (a function's standard output,
// which CloudWatch Logs reads). A nil Emitter writes nothing.
type Emitter struct {
	mu  sync.Mutex
	out io.Writer
}

// NewEmitter returns an emitter writing to out.
func NewEmitter(out io.Writer) *Emitter { return &Emitter{out: out} }

// Emit writes one line with the metrics under the given dimensions.
func (e *Emitter) Emit(dimensions map[string]string, metrics ...Metric) {
	if e == nil {
		return
	}
	names := make([]string, 0, len(dimensions))
	line := map[string]any{}
	for k, v := range dimensions {
		names = append(names, k)
		line[k] = v
	}
	sort.Strings(names)
	defs := make([]map[string]string, 0, len(metrics))
	for _, m := range metrics {
		line[m.Name] = m.Value
		defs = append(defs, map[string]string{"Name": m.Name, "Unit": m.Unit})
	}
	line["_aws"] = map[string]any{
		"Timestamp": time.Now().UnixMilli(),
		"CloudWatchMetrics": []any{map[string]any{
			"Namespace": Namespace, "Dimensions": [][]string{names}, "Metrics": defs,
		}},
	}
	b, err := json.Marshal(line)
	if err != nil {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	_, _ = e.out.Write(append(b, '\n'))
}
