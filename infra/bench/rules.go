package main

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"time"

	"github.com/envjupyter/envjupyter/sidecar/firewall"
)

// syntheticForward is the i-th made-up forward of the rules benchmark: to
// addresses no container has, from host ports below the ephemeral range
// that no stack hands out (23000 up) and nothing listens on, allowed from
// loopback as the local sidecar's are.
func syntheticForward(tag string, i int) firewall.Forward {
	return firewall.Forward{
		InstanceID:    fmt.Sprintf("ejbrules-%s-%d", tag, i),
		HostPort:      23000 + i%9000,
		ContainerIP:   netip.AddrFrom4([4]byte{10, 253, byte(i / 250), byte(i%250 + 1)}),
		ContainerPort: 8888,
		Sources:       []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
	}
}

// restoreForwards appends forwards [from, to) to the chains in one
// iptables-restore --noflush, which is how the benchmark fills them fast.
func restoreForwards(ctx context.Context, chains firewall.Chains, from, to int) error {
	return restoreRules(ctx, "-A", chains, from, to)
}

// removeForwards deletes forwards [from, to) (by their exact specs).
func removeForwards(ctx context.Context, chains firewall.Chains, from, to int) error {
	return restoreRules(ctx, "-D", chains, from, to)
}

// restoreRules applies op to the rules of forwards [from, to) in one
// iptables-restore --noflush.
func restoreRules(ctx context.Context, op string, chains firewall.Chains, from, to int) error {
	if from >= to {
		return nil
	}
	byTable := map[string][]string{}
	for i := from; i < to; i++ {
		for _, r := range chains.Rules(syntheticForward("fill", i)) {
			byTable[r.Table] = append(byTable[r.Table], r.Line(op))
		}
	}
	var in strings.Builder
	for _, table := range []string{"nat", "filter"} {
		fmt.Fprintf(&in, "*%s\n%s\nCOMMIT\n", table, strings.Join(byTable[table], "\n"))
	}
	cmd := exec.CommandContext(ctx, "iptables-restore", "--noflush")
	cmd.Stdin = strings.NewReader(in.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("iptables-restore: %v %s", err, out)
	}
	return nil
}

func countRules(table, chain string) int {
	out, err := exec.Command("iptables", "-w", "-t", table, "-S", chain).Output()
	if err != nil {
		return -1
	}
	return strings.Count(string(out), "\n-A ") + map[bool]int{true: 1, false: 0}[strings.HasPrefix(string(out), "-A ")]
}

func tableRules(table string) int {
	out, err := exec.Command("iptables-save", "-t", table).Output()
	if err != nil {
		return -1
	}
	return strings.Count(string(out), "\n-A ")
}

func (b *bench) benchRules(ctx context.Context) error {
	chains := firewall.ChainsFor(rulesPrefix)
	fw, err := firewall.New(rulesPrefix)
	if err != nil {
		return err
	}
	_ = fw.Teardown() // a killed run's chains
	// The chains a forward's rules go in, without the jumps Setup would
	// add: no packet ever reaches these rules, yet adding and removing
	// them costs what it costs in use.
	made := map[string]bool{}
	var perForward int
	for _, r := range chains.Rules(syntheticForward("fill", 0)) {
		perForward++
		if made[r.Table+"/"+r.Chain] {
			continue
		}
		made[r.Table+"/"+r.Chain] = true
		if out, err := exec.CommandContext(ctx, "iptables", "-w", "-t", r.Table, "-N", r.Chain).CombinedOutput(); err != nil {
			return fmt.Errorf("creating %s/%s: %v %s", r.Table, r.Chain, err, out)
		}
	}
	defer func() {
		if err := fw.Teardown(); err != nil {
			b.logf("removing the %s chains: %v", rulesPrefix, err)
		}
	}()
	b.logf("iptables: forwards (%d rules each) added and removed through sidecar/firewall with %v forwards already in throwaway chains %s-* (no jumps to them); %d probes per size", perForward, b.ruleSizes, rulesPrefix, b.ruleProbes)
	type row struct {
		size                  int
		add, removeInst, rmv  series
		natRules, filterRules int
	}
	var rows []row
	have := 0
	for _, n := range b.ruleSizes {
		if n > have {
			err = restoreForwards(ctx, chains, have, n)
		} else {
			err = removeForwards(ctx, chains, n, have)
		}
		if err != nil {
			return err
		}
		have = n
		if got := countRules("nat", chains.DNAT); got != n {
			return fmt.Errorf("%s holds %d rules, want %d", chains.DNAT, got, n)
		}
		rw := row{size: n, natRules: tableRules("nat"), filterRules: tableRules("filter")}
		for k := range b.ruleProbes {
			f := syntheticForward("probe", 19000+k)
			t := time.Now()
			if err := fw.Add(f); err != nil {
				return err
			}
			rw.add = append(rw.add, ms(time.Since(t)))
			t = time.Now()
			if err := fw.RemoveInstance(f.InstanceID); err != nil {
				return err
			}
			rw.removeInst = append(rw.removeInst, ms(time.Since(t)))
			if err := fw.Add(f); err != nil {
				return err
			}
			t = time.Now()
			if err := fw.Remove(f); err != nil {
				return err
			}
			rw.rmv = append(rw.rmv, ms(time.Since(t)))
			if ctx.Err() != nil {
				return ctx.Err()
			}
		}
		rows = append(rows, rw)
		b.logf("  %5d forwards (nat table %d rules, filter %d): add %s; RemoveInstance %s; Remove %s",
			n, rw.natRules, rw.filterRules, rw.add.summary(" ms"), rw.removeInst.summary(" ms"), rw.rmv.summary(" ms"))
	}
	var lines []string
	for _, rw := range rows {
		lines = append(lines, fmt.Sprintf("%d forwards: add %s ms, remove (RemoveInstance, as the sidecar does) %s ms, remove by spec %s ms (nat table then %d rules, filter %d)",
			rw.size, num(rw.add.med()), num(rw.removeInst.med()), num(rw.rmv.med()), rw.natRules, rw.filterRules))
	}
	first, last := rows[0], rows[len(rows)-1]
	flat := last.add.med() <= 1.5*first.add.med() && last.removeInst.med() <= 1.5*first.removeInst.med()
	b.record(figure{
		ID: "6b", Name: "iptables forward add/remove vs forwards in our chains",
		Result:   fmt.Sprintf("at %d forwards: add %s, remove %s", last.size, last.add.summary(" ms"), last.removeInst.summary(" ms")),
		Baseline: fmt.Sprintf("at %d forwards: add %s, remove %s", first.size, first.add.summary(" ms"), first.removeInst.summary(" ms")),
		Ratio:    fmt.Sprintf("add %s, remove %s", ratio(last.add.med(), first.add.med()), ratio(last.removeInst.med(), first.removeInst.med())),
		Target:   "flat or close to it (here: within ×1.5)",
		Verdict:  b.verdict(flat),
		Note: strings.Join(lines, "; ") + fmt.Sprintf(". A forward is %d rules in %d chains, as the local sidecar makes them (one allowed source). Add = AppendUnique per rule (iptables -C then -A); ", perForward, len(made)) +
			"RemoveInstance lists our chains (iptables -S) and deletes the instance's tagged rules, so it reads every rule of ours; Remove deletes by exact spec.",
	})
	return nil
}
