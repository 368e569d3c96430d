package main

import (
	"fmt"
	"math"
	"sort"
	"strings"
	"time"
)

// series is a set of measurements in one unit.
type series []float64

func (s series) sorted() []float64 {
	c := append([]float64(nil), s...)
	sort.Float64s(c)
	return c
}

// pct is the p-th percentile (nearest rank), NaN when empty.
func (s series) pct(p float64) float64 {
	if len(s) == 0 {
		return math.NaN()
	}
	c := s.sorted()
	rank := int(math.Ceil(p/100*float64(len(c)))) - 1
	return c[max(0, min(rank, len(c)-1))]
}

func (s series) med() float64 { return s.pct(50) }

func (s series) min() float64 {
	if len(s) == 0 {
		return math.NaN()
	}
	return s.sorted()[0]
}

func (s series) max() float64 {
	if len(s) == 0 {
		return math.NaN()
	}
	c := s.sorted()
	return c[len(c)-1]
}

func (s series) sum() float64 {
	t := 0.0
	for _, v := range s {
		t += v
	}
	return t
}

// summary is "p50 X (min A, max B, n=N)" in the given unit.
func (s series) summary(unit string) string {
	if len(s) == 0 {
		return "no samples"
	}
	return fmt.Sprintf("p50 %s%s (min %s, max %s, n=%d)", num(s.med()), unit, num(s.min()), num(s.max()), len(s))
}

// summary95 adds the 95th percentile.
func (s series) summary95(unit string) string {
	if len(s) == 0 {
		return "no samples"
	}
	return fmt.Sprintf("p50 %s%s, p95 %s%s (min %s, max %s, n=%d)", num(s.med()), unit, num(s.pct(95)), unit, num(s.min()), num(s.max()), len(s))
}

// num prints a number with about three significant digits.
func num(v float64) string {
	switch a := math.Abs(v); {
	case math.IsNaN(v):
		return "n/a"
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	case a >= 1:
		return fmt.Sprintf("%.2f", v)
	default:
		return fmt.Sprintf("%.3f", v)
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// ratio prints a/b as "×1.23", or n/a.
func ratio(a, b float64) string {
	if b == 0 || math.IsNaN(a) || math.IsNaN(b) {
		return "n/a"
	}
	return fmt.Sprintf("×%.2f", a/b)
}

// figure is one line of the results table.
type figure struct {
	ID       string
	Name     string
	Result   string
	Baseline string
	Ratio    string
	Target   string
	Verdict  string // met, not met, n/a
	Note     string
}

// verdict names a target as met or not, or n/a in smoke mode.
func (b *bench) verdict(met bool) string {
	if b.smoke {
		return "n/a (smoke)"
	}
	if met {
		return "met"
	}
	return "not met"
}

func (b *bench) record(f figure) {
	b.figures = append(b.figures, f)
	b.printf("\n== %s %s\n   result:   %s\n   baseline: %s\n   ratio:    %s\n   target:   %s → %s\n", f.ID, f.Name, f.Result, f.Baseline, f.Ratio, f.Target, f.Verdict)
	if f.Note != "" {
		b.printf("   note:     %s\n", strings.ReplaceAll(f.Note, "\n", "\n             "))
	}
}

// markdown renders the figures as a Markdown table.
func markdown(figs []figure) string {
	var b strings.Builder
	b.WriteString("| # | figure | result | in-run baseline | ratio | target | verdict |\n|---|---|---|---|---|---|---|\n")
	esc := func(s string) string { return strings.ReplaceAll(strings.ReplaceAll(s, "|", "\\|"), "\n", "<br>") }
	for _, f := range figs {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s |\n", esc(f.ID), esc(f.Name), esc(f.Result), esc(f.Baseline), esc(f.Ratio), esc(f.Target), esc(f.Verdict))
	}
	b.WriteString("\nNotes:\n\n")
	for _, f := range figs {
		if f.Note != "" {
			fmt.Fprintf(&b, "- **%s %s**: %s\n", f.ID, f.Name, strings.ReplaceAll(f.Note, "\n", " "))
		}
	}
	return b.String()
}

// quantileOverhead is how much later a comes than base, read from the two
// distributions: a's p50 and p95 minus base's (how the issue reads
// JupyterHub's overhead, POST → ready minus JupyterLab's boot, medians). A
// start and a boot are independent samples, in other containers at other
// moments, so pairing them is arbitrary, and a difference taken pair by
// pair adds the noise of both into its tails (see pairDiffs).
func quantileOverhead(a, base series) (p50, p95 float64) {
	return a.med() - base.med(), a.pct(95) - base.pct(95)
}

// overheadSummary prints quantileOverhead beside the pair-by-pair
// differences.
func overheadSummary(a, base, pairs series) string {
	p50, p95 := quantileOverhead(a, base)
	return fmt.Sprintf("p50 %s ms, p95 %s ms (quantile minus the same quantile of the boots; pair by pair: %s)",
		num(p50), num(p95), pairs.summary95(" ms"))
}

// pairDiffs is every difference a−b of two samples of s (a ≠ b, both
// orders): how far apart two measurements of the same thing fall, the
// noise in a figure that subtracts one from another.
func (s series) pairDiffs() series {
	var out series
	for i, a := range s {
		for j, b := range s {
			if i != j {
				out = append(out, a-b)
			}
		}
	}
	return out
}
