package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/envjupyter/envjupyter/sidecar/firewall"
)

// ruleSettle is the pause before each timed change of the firewall figure.
const ruleSettle = 50 * time.Millisecond

// syntheticForward is the i-th made-up forward of the rules benchmark, in
// a network namespace of the benchmark's own (see benchRules): a port of
// its own each, to addresses no container has, allowed from loopback as the
// local sidecar's are.
func syntheticForward(tag string, i int) firewall.Forward {
	return firewall.Forward{
		InstanceID:    fmt.Sprintf("ejbrules-%s-%d", tag, i),
		HostPort:      10000 + i,
		ContainerIP:   netip.AddrFrom4([4]byte{10, 253, byte(i / 250), byte(i%250 + 1)}),
		ContainerPort: 8888,
		Sources:       []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
		EnvironmentID: fmt.Sprintf("env-%d", i), ContainerID: fmt.Sprintf("%064x", i),
	}
}

// fillForwards brings the table from have to n forwards, through the
// firewall itself (each is one netlink transaction).
func fillForwards(ctx context.Context, fw *firewall.Firewall, have, n int) error {
	for i := have; i < n; i++ {
		if err := fw.Add(syntheticForward("fill", i)); err != nil {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	for i := n; i < have; i++ {
		if err := fw.RemoveInstance(syntheticForward("fill", i).InstanceID); err != nil {
			return err
		}
	}
	return nil
}

// benchRules runs the firewall benchmark in a network namespace of its
// own: the table's hooks are live, and 10 000 forwards of made-up ports
// would otherwise catch the host's own (the stacks' fixed ports among
// them). The kernel and its netlink cost are the same. The namespace, with
// everything in it, goes when the thread leaves it.
func (b *bench) benchRules(ctx context.Context) error {
	done := make(chan error, 1)
	go func() {
		// The thread goes back to the host's namespace before it is
		// unlocked. It must not end with the goroutine: a process the
		// stack started from this thread (the sidecar, nginx) has a parent
		// death signal, which the kernel sends when the forking thread
		// exits, not the process. The iptables runs of Setup and Teardown
		// start from this thread, so they are in the namespace too.
		runtime.LockOSThread()
		host, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			done <- err
			return
		}
		defer host.Close()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			done <- fmt.Errorf("a network namespace for the firewall benchmark: %w", err)
			return
		}
		err = b.benchRulesHere(ctx)
		if serr := unix.Setns(int(host.Fd()), unix.CLONE_NEWNET); serr != nil {
			// Left locked: the thread ends with the goroutine rather than
			// run others in the throwaway namespace.
			done <- errors.Join(err, fmt.Errorf("back to the host's network namespace: %w", serr))
			return
		}
		runtime.UnlockOSThread()
		done <- err
	}()
	return <-done
}

func (b *bench) benchRulesHere(ctx context.Context) error {
	fw, err := firewall.New(rulesPrefix)
	if err != nil {
		return err
	}
	if err := fw.Setup(); err != nil {
		return err
	}
	defer func() {
		if err := fw.Teardown(); err != nil {
			b.logf("removing the %s table: %v", rulesPrefix, err)
		}
	}()
	b.logf("firewall: forwards added and removed through sidecar/firewall with %v forwards already in the throwaway table %s (nftables, made-up addresses and ports, in a network namespace of the benchmark's own); %d probes per size", b.ruleSizes, rulesPrefix, b.ruleProbes)
	type row struct {
		size                 int
		add, removeInst, rmv series
	}
	var rows []row
	have := 0
	for _, n := range b.ruleSizes {
		if err := fillForwards(ctx, fw, have, n); err != nil {
			return err
		}
		have = n
		if got, err := fw.Instances(); err != nil || len(got) != n {
			return fmt.Errorf("table %s holds %d forwards (%v), want %d", rulesPrefix, len(got), err, n)
		}
		rw := row{size: n}
		for k := range b.ruleProbes {
			f := syntheticForward("probe", 19000+k)
			// Each timed change starts a moment after the one before, as a
			// stop comes long after its start: back to back, a deletion
			// also waits out the kernel's RCU grace period of the addition
			// just committed (7.5 ms here).
			if err := sleep(ctx, ruleSettle); err != nil {
				return err
			}
			t := time.Now()
			if err := fw.Add(f); err != nil {
				return err
			}
			rw.add = append(rw.add, ms(time.Since(t)))
			if err := sleep(ctx, ruleSettle); err != nil {
				return err
			}
			t = time.Now()
			if err := fw.RemoveInstance(f.InstanceID); err != nil {
				return err
			}
			rw.removeInst = append(rw.removeInst, ms(time.Since(t)))
			if err := fw.Add(f); err != nil {
				return err
			}
			if err := sleep(ctx, ruleSettle); err != nil {
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
		b.logf("  %5d forwards: add %s; RemoveInstance %s; Remove %s",
			n, rw.add.summary(" ms"), rw.removeInst.summary(" ms"), rw.rmv.summary(" ms"))
	}
	var lines []string
	for _, rw := range rows {
		lines = append(lines, fmt.Sprintf("%d forwards: add %s ms, remove (RemoveInstance, as the sidecar does) %s ms, Remove %s ms",
			rw.size, num(rw.add.med()), num(rw.removeInst.med()), num(rw.rmv.med())))
	}
	first, last := rows[0], rows[len(rows)-1]
	// The target: flat (1 000 within ×1.5 of 10) and p50 ≤ 20 ms at 1 000.
	at1000 := first
	for _, rw := range rows {
		if rw.size <= 1000 {
			at1000 = rw
		}
	}
	flat := at1000.add.med() <= 1.5*first.add.med() && at1000.removeInst.med() <= 1.5*first.removeInst.med() &&
		at1000.add.med() <= 20 && at1000.removeInst.med() <= 20
	b.record(figure{
		ID: "6b", Name: "firewall forward add/remove vs forwards present",
		Result:   fmt.Sprintf("at %d forwards: add %s, remove %s", last.size, last.add.summary(" ms"), last.removeInst.summary(" ms")),
		Baseline: fmt.Sprintf("at %d forwards: add %s, remove %s", first.size, first.add.summary(" ms"), first.removeInst.summary(" ms")),
		Ratio:    fmt.Sprintf("add %s, remove %s", ratio(last.add.med(), first.add.med()), ratio(last.removeInst.med(), first.removeInst.med())),
		Target:   fmt.Sprintf("p50 ≤ 20 ms at 1 000 and ≤ ×1.5 the %d figure (judged at %d)", first.size, at1000.size),
		Verdict:  b.verdict(flat),
		Note: strings.Join(lines, "; ") + ". A forward is one element in each of up to four nftables maps and sets of the sidecar's table (google/nftables, one netlink transaction per change, no iptables run), measured in a network namespace of the benchmark's own; " +
			"RemoveInstance finds the instance's forwards in the firewall's in-memory index of the table and deletes their elements.",
	})
	return nil
}
