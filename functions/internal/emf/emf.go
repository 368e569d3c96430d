// Package emf writes CloudWatch Embedded Metric Format lines: a JSON log
// line that CloudWatch Logs turns into metrics, with no API call from the
// function.
package emf

import (
	"encoding/json"
	"io"
	"os"
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

var (
	mu  sync.Mutex
	out io.Writer = os.Stdout
)

// SetOutput redirects the lines (tests).
func SetOutput(w io.Writer) {
	mu.Lock()
	defer mu.Unlock()
	out = w
}

// Emit writes one line with the metrics under the given dimensions.
func Emit(dimensions map[string]string, metrics ...Metric) {
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
	mu.Lock()
	defer mu.Unlock()
	_, _ = out.Write(append(b, '\n'))
}
