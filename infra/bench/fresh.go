package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"

	"github.com/envjupyter/envjupyter/infra/devstack"
	"github.com/envjupyter/envjupyter/sidecar/jupyter"
)

// freshStart is one first start in a fresh container, and the same
// Jupyter's first boot in another fresh container of the same image.
type freshStart struct {
	total, boot float64 // ms
}

func (s freshStart) overhead() float64 { return s.total - s.boot }

// freshSample makes two containers of img at once, starts Jupyter through
// the API in one (its first start: the sidecar has never seen the
// container) and execs the same Jupyter directly in the other, in
// alternating order; then stops the instance and removes both containers.
func (b *bench) freshSample(ctx context.Context, img string, i int, tag string, flavour jupyter.Flavour) (freshStart, error) {
	var ids [2]string
	var errs [2]error
	var wg sync.WaitGroup
	for k := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ids[k], errs[k] = b.createContainerFrom(ctx, fmt.Sprintf("%s%d-%d", tag, i, k), img)
		}()
	}
	wg.Wait()
	// Both containers are gone before the next sample begins: a removal
	// (processes killed, overlay unmounted) left to run in the background
	// would take CPU from the next sample's boots, ours or the baseline's,
	// whichever came first.
	defer func() {
		var removing sync.WaitGroup
		for _, id := range ids {
			if id != "" {
				removing.Go(func() { _ = b.docker.ContainerRemove(context.Background(), id, container.RemoveOptions{Force: true}) })
			}
		}
		removing.Wait()
	}()
	for _, err := range errs {
		if err != nil {
			return freshStart{}, err
		}
	}
	e, err := b.registerEnv(ctx, fmt.Sprintf("ejb-%s%d", tag, i), "cust-bench-fresh", ids[0])
	if err != nil {
		return freshStart{}, err
	}
	direct, err := newDirectFresh(ctx, env{ID: e.ID, ContainerID: ids[1]}, flavour)
	if err != nil {
		return freshStart{}, err
	}
	var s freshStart
	doBoot := func() error {
		boot, _, err := direct.boot(ctx)
		s.boot = ms(boot)
		return err
	}
	if i%2 == 0 {
		if err := doBoot(); err != nil {
			return s, err
		}
	}
	r, tl, err := b.startAndWait(ctx, e, 20*time.Millisecond, 120*time.Second)
	if err != nil {
		return s, err
	}
	s.total = ms(tl.seenRunning.Sub(tl.t0))
	if i%2 == 1 {
		if err := doBoot(); err != nil {
			return s, err
		}
	}
	if _, err := b.stopAndWait(ctx, r, 20*time.Millisecond, 60*time.Second); err != nil {
		return s, err
	}
	return s, nil
}

// unseenImage makes an image the host's Docker and sidecar have never
// seen: a commit of a container of the environment image (same files, a new
// image id and tag). The caller removes it.
func (b *bench) unseenImage(ctx context.Context, i int) (string, error) {
	id, err := b.createContainerFrom(ctx, fmt.Sprintf("unseen-src%d", i), devstack.EnvImage)
	if err != nil {
		return "", err
	}
	defer func() { _ = b.docker.ContainerRemove(context.Background(), id, container.RemoveOptions{Force: true}) }()
	ref := fmt.Sprintf("envjupyter/bench-unseen:%d-%s", i, randomID()[:8])
	if _, err := b.docker.ContainerCommit(ctx, id, container.CommitOptions{Reference: ref, Pause: false,
		Config: &container.Config{Labels: map[string]string{benchLabel: stackName}, Cmd: []string{"sleep", "infinity"}}}); err != nil {
		return "", fmt.Errorf("committing an unseen image: %w", err)
	}
	return ref, nil
}

// benchFreshStarts is figure 1: the first start in a fresh container, for
// the environment image (seen) and for never-seen images, against the same
// Jupyter's first boot in a fresh container, and JupyterHub's overhead.
func (b *bench) benchFreshStarts(ctx context.Context, flavour jupyter.Flavour) error {
	unseenN := max(1, b.starts/4)
	b.logf("start (fresh containers): %d first starts through the API in a new container of %s, each beside a first direct boot in another new container; %d more on never-seen images", b.starts, devstack.EnvImage, unseenN)
	var seen, seenBoot, seenTotal, unseen, unseenBoot, unseenTotal series
	for i := range b.starts {
		s, err := b.freshSample(ctx, devstack.EnvImage, i, "fresh", flavour)
		if err != nil {
			return err
		}
		seen, seenBoot, seenTotal = append(seen, s.overhead()), append(seenBoot, s.boot), append(seenTotal, s.total)
		b.logf("  fresh start %2d: %5.0f ms to running (fresh direct boot %5.0f ms, overhead %5.0f ms)", i+1, s.total, s.boot, s.overhead())
	}
	for i := range unseenN {
		img, err := b.unseenImage(ctx, i)
		if err != nil {
			return err
		}
		s, err := b.freshSample(ctx, img, i, "unseen", flavour)
		// The containers go (in the background) before the image can.
		go func() {
			time.Sleep(10 * time.Second)
			_, _ = b.docker.ImageRemove(context.Background(), img, image.RemoveOptions{Force: true, PruneChildren: true})
		}()
		if err != nil {
			return err
		}
		unseen, unseenBoot, unseenTotal = append(unseen, s.overhead()), append(unseenBoot, s.boot), append(unseenTotal, s.total)
		b.logf("  never-seen image %d: %5.0f ms to running (fresh direct boot %5.0f ms, overhead %5.0f ms)", i+1, s.total, s.boot, s.overhead())
	}
	p50, p95 := quantileOverhead(seenTotal, seenBoot)
	hubRatio, hubNote, hubOK := "JupyterHub not measured in this run (-only without hub)", "", true
	if b.hubFig != nil && !(b.hubFig.overheadMed() > 0) {
		hubRatio, hubOK = fmt.Sprintf("n/a: JupyterHub's overhead p50 %s ms is not above 0 (too few samples on a noisy machine)", num(b.hubFig.overheadMed())), false
	} else if b.hubFig != nil {
		q := p50 / b.hubFig.overheadMed()
		hubRatio = fmt.Sprintf("×%.2f of JupyterHub's overhead (p50 %s ms)", q, num(b.hubFig.overheadMed()))
		hubOK = q <= 0.25
		hubNote = " JupyterHub 5.2's overhead, same run, same way (figure 1h): " + overheadSummary(b.hubFig.spawn, b.hubFig.boot, b.hubFig.overhead) + "."
	} else {
		hubOK = false
	}
	b.record(figure{
		ID: "1", Name: "start overhead, first start in a fresh container (API start → running, minus a fresh direct boot)",
		Result: "seen image: overhead " + overheadSummary(seenTotal, seenBoot, seen) + "; API start → running " + seenTotal.summary95(" ms") +
			"; never-seen image: overhead " + overheadSummary(unseenTotal, unseenBoot, unseen),
		Baseline: "the same Jupyter's first boot exec'd directly in another fresh container to /api 200: " + seenBoot.summary95(" ms") + " (never-seen: " + unseenBoot.summary(" ms") + ")",
		Ratio:    hubRatio,
		Target:   "overhead p50 ≤ 150 ms, p95 ≤ 400 ms over ≥ 20 starts (seen image); ≤ ¼ of JupyterHub's overhead",
		Verdict:  b.verdict(p50 <= 150 && p95 <= 400 && len(seen) >= 20 && hubOK),
		Note: "Each sample makes two containers at once; the sidecar has never seen either (it detects a container's Jupyter once per container, so every new environment pays the detection). " +
			"The overhead is read from the two distributions, each quantile of the starts minus the same quantile of the boots: a start and a boot are independent samples, so a difference taken pair by pair (shown too) adds the noise of both into its tails. That noise, in this run: two of its direct boots differ by " + seenBoot.pairDiffs().summary95(" ms") + " (every pair). " +
			"A never-seen image is a commit of an environment-image container (new image id and tag, same files: the page cache is warm, so this measures what is per image in Docker and the sidecar, not a cold disk)." + hubNote,
	})
	return nil
}
