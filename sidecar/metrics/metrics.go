// Package metrics is the sidecar's small Prometheus registry: counters,
// gauges and one histogram, written in the text exposition format. The
// sidecar needs a dozen series; a client library would be most of its size.
package metrics

import (
	"fmt"
	"io"
	"math"
	"sort"
	"strings"
	"sync"
)

// Registry holds the series.
type Registry struct {
	mu       sync.Mutex
	help     map[string]string
	kinds    map[string]string
	values   map[string]map[string]float64 // name → labels → value
	hists    map[string]*histogram
	gaugeFns map[string]func() map[string]float64
}

type histogram struct {
	bounds []float64
	counts []uint64
	sum    float64
	n      uint64
}

// New returns an empty registry.
func New() *Registry {
	return &Registry{
		help: map[string]string{}, kinds: map[string]string{},
		values: map[string]map[string]float64{}, hists: map[string]*histogram{},
		gaugeFns: map[string]func() map[string]float64{},
	}
}

// Labels renders label pairs ("k", "v", ...) in the exposition syntax.
func Labels(kv ...string) string {
	if len(kv) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteByte('{')
	for i := 0; i+1 < len(kv); i += 2 {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%s=%q", kv[i], kv[i+1])
	}
	b.WriteByte('}')
	return b.String()
}

func (r *Registry) declare(name, kind, help string) {
	r.help[name], r.kinds[name] = help, kind
	if r.values[name] == nil {
		r.values[name] = map[string]float64{}
	}
}

// Counter declares a counter.
func (r *Registry) Counter(name, help string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.declare(name, "counter", help)
}

// Add adds to a counter (or sets nothing for an undeclared name).
func (r *Registry) Add(name, labels string, v float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if m, ok := r.values[name]; ok {
		m[labels] += v
	}
}

// Gauge declares a gauge whose values fn computes at each scrape.
func (r *Registry) Gauge(name, help string, fn func() map[string]float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.declare(name, "gauge", help)
	r.gaugeFns[name] = fn
}

// Histogram declares a histogram with the given upper bounds.
func (r *Registry) Histogram(name, help string, bounds []float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.declare(name, "histogram", help)
	r.hists[name] = &histogram{bounds: bounds, counts: make([]uint64, len(bounds))}
}

// Observe records a value in a histogram.
func (r *Registry) Observe(name string, v float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	h, ok := r.hists[name]
	if !ok {
		return
	}
	for i, b := range h.bounds {
		if v <= b {
			h.counts[i]++
		}
	}
	h.sum += v
	h.n++
}

// Write writes every series in the text exposition format.
func (r *Registry) Write(w io.Writer) error {
	r.mu.Lock()
	names := make([]string, 0, len(r.kinds))
	for n := range r.kinds {
		names = append(names, n)
	}
	fns := map[string]func() map[string]float64{}
	for n, fn := range r.gaugeFns {
		fns[n] = fn
	}
	r.mu.Unlock()
	sort.Strings(names)
	// Gauge functions run unlocked: they may take their owner's locks.
	computed := map[string]map[string]float64{}
	for n, fn := range fns {
		computed[n] = fn()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	for _, n := range names {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s %s\n", n, r.help[n], n, r.kinds[n])
		if h, ok := r.hists[n]; ok {
			for i, bound := range h.bounds {
				fmt.Fprintf(&b, "%s_bucket{le=%q} %d\n", n, formatFloat(bound), h.counts[i])
			}
			fmt.Fprintf(&b, "%s_bucket{le=\"+Inf\"} %d\n%s_sum %s\n%s_count %d\n", n, h.n, n, formatFloat(h.sum), n, h.n)
			continue
		}
		values := r.values[n]
		if c, ok := computed[n]; ok {
			values = c
		}
		labels := make([]string, 0, len(values))
		for l := range values {
			labels = append(labels, l)
		}
		sort.Strings(labels)
		for _, l := range labels {
			fmt.Fprintf(&b, "%s%s %s\n", n, l, formatFloat(values[l]))
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func formatFloat(v float64) string {
	if v == math.Trunc(v) && math.Abs(v) < 1e15 {
		return fmt.Sprintf("%d", int64(v))
	}
	return fmt.Sprintf("%g", v)
}
