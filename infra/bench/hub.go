package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/mount"

	"github.com/envjupyter/envjupyter/shared/instance"
)

// The peer a user would pick instead of envjupyter: JupyterHub 5.2 with
// configurable-http-proxy, from Debian trixie, launching the same JupyterLab
// (infra/image/build-hub-image.sh layers it on the trixie environment image).
// It runs in its own container on the host's network namespace, listening on
// loopback only, so its proxy reaches the same backends as ours.
const (
	hubImage    = "envjupyter/hub-peer:trixie-2"
	chpPort     = 28300 // configurable-http-proxy, public side
	chpAPIPort  = 28301 // configurable-http-proxy, REST API
	hubPort     = 28302 // the hub itself
	hubUser     = "bench"
	hubBootPort = 28303 // the same JupyterLab exec'd directly in the hub's container
)

// hubConfig is the hub's whole configuration: the dummy authenticator (the
// bench drives it with a service token, no login), SimpleLocalProcessSpawner
// (a process in the hub's own container, the cheapest spawner there is), and
// everything on 127.0.0.1.
const hubConfig = `import os
c = get_config()  # noqa
c.JupyterHub.bind_url = 'http://127.0.0.1:%[1]d'
c.JupyterHub.hub_bind_url = 'http://127.0.0.1:%[3]d'
c.ConfigurableHTTPProxy.api_url = 'http://127.0.0.1:%[2]d'
c.ConfigurableHTTPProxy.auth_token = os.environ['BENCH_PROXY_TOKEN']
c.JupyterHub.authenticator_class = 'jupyterhub.auth.DummyAuthenticator'
c.Authenticator.allow_all = True
c.JupyterHub.spawner_class = 'jupyterhub.spawner.SimpleLocalProcessSpawner'
c.Spawner.args = ['--allow-root']
c.Spawner.default_url = '/lab'
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 120
c.Spawner.pre_spawn_hook = lambda spawner: os.makedirs('/tmp/' + spawner.user.name, exist_ok=True)
c.JupyterHub.db_url = 'sqlite:////tmp/jupyterhub.sqlite'
c.JupyterHub.cookie_secret_file = '/tmp/jupyterhub_cookie_secret'
c.JupyterHub.services = [{'name': 'bench', 'api_token': os.environ['BENCH_HUB_TOKEN']}]
c.JupyterHub.load_roles = [{'name': 'bench-admin', 'scopes': ['admin:users', 'admin:servers'], 'services': ['bench']}]
`

// hubPeer is the running JupyterHub container.
type hubPeer struct {
	b           *bench
	containerID string
	token       string // the bench service's API token
	proxyToken  string // configurable-http-proxy's API token
	http        *http.Client
	direct      *directJupyter // the same JupyterLab in the hub's container
}

func (b *bench) startHub(ctx context.Context) (*hubPeer, error) {
	dir := filepath.Join(b.work, "hub")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	cfg := filepath.Join(dir, "jupyterhub_config.py")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(hubConfig, chpPort, chpAPIPort, hubPort)), 0o644); err != nil {
		return nil, err
	}
	h := &hubPeer{b: b, token: randomID(), proxyToken: randomID(), http: &http.Client{Timeout: 30 * time.Second}}
	name := stackName + "-hub"
	_ = b.docker.ContainerRemove(ctx, name, container.RemoveOptions{Force: true})
	created, err := b.docker.ContainerCreate(ctx, &container.Config{
		Image:  hubImage,
		Labels: map[string]string{benchLabel: stackName},
		Env:    []string{"BENCH_HUB_TOKEN=" + h.token, "BENCH_PROXY_TOKEN=" + h.proxyToken},
		Cmd:    []string{"jupyterhub", "-f", "/srv/bench/jupyterhub_config.py"},
	}, &container.HostConfig{
		NetworkMode: "host",
		Mounts:      []mount.Mount{{Type: mount.TypeBind, Source: dir, Target: "/srv/bench", ReadOnly: true}},
	}, nil, nil, name)
	if err != nil {
		return nil, fmt.Errorf("creating the hub container (is %s built? infra/image/build-hub-image.sh): %w", hubImage, err)
	}
	h.containerID = created.ID
	b.madeMu.Lock()
	b.made = append(b.made, created.ID)
	b.madeMu.Unlock()
	if err := b.docker.ContainerStart(ctx, created.ID, container.StartOptions{}); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(90 * time.Second)
	for {
		if st, _, err := h.call(ctx, http.MethodGet, "/hub/api/users", nil); err == nil && st == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("the hub did not answer on 127.0.0.1:%d within 90 s (docker logs %s)", chpPort, name)
		}
		if err := sleep(ctx, 200*time.Millisecond); err != nil {
			return nil, err
		}
	}
	if st, raw, err := h.call(ctx, http.MethodPost, "/hub/api/users/"+hubUser, nil); err != nil || (st != http.StatusCreated && st != http.StatusConflict) {
		return nil, fmt.Errorf("creating hub user %s: %d %s %v", hubUser, st, raw, err)
	}
	// Host network: the baseline listens on loopback, like the spawned one.
	if h.direct, err = newDirectHostNet(ctx, env{ID: "ejb-hub", ContainerID: created.ID}, hubBootPort); err != nil {
		return nil, fmt.Errorf("detecting the hub container's Jupyter: %w", err)
	}
	return h, nil
}

// call makes one hub REST API call, through configurable-http-proxy as a
// client of the hub does.
func (h *hubPeer) call(ctx context.Context, method, path string, body any) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		raw, _ := json.Marshal(body)
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://127.0.0.1:"+strconv.Itoa(chpPort)+path, rd)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "token "+h.token)
	resp, err := h.http.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, raw, nil
}

// serverState is the user's default server as the hub reports it.
func (h *hubPeer) serverState(ctx context.Context) (exists, ready bool, err error) {
	st, raw, err := h.call(ctx, http.MethodGet, "/hub/api/users/"+hubUser, nil)
	if err != nil || st != http.StatusOK {
		return false, false, fmt.Errorf("reading hub user: %d %.200s %v", st, raw, err)
	}
	var u struct {
		Servers map[string]struct {
			Ready bool `json:"ready"`
		} `json:"servers"`
	}
	if err := json.Unmarshal(raw, &u); err != nil {
		return false, false, err
	}
	s, ok := u.Servers[""]
	return ok, ok && s.Ready, nil
}

// spawn is POST /hub/api/users/<u>/server, then the user polled every
// 20 ms (as our start is) until the server is ready.
func (h *hubPeer) spawn(ctx context.Context) (time.Duration, error) {
	t0 := time.Now()
	st, raw, err := h.call(ctx, http.MethodPost, "/hub/api/users/"+hubUser+"/server", nil)
	if err != nil || (st != http.StatusCreated && st != http.StatusAccepted) {
		return 0, fmt.Errorf("hub spawn: %d %.300s %v", st, raw, err)
	}
	return h.pollUntil(ctx, t0, true)
}

// stop is DELETE /hub/api/users/<u>/server, then polled every 10 ms (as our
// stop is) until the hub no longer lists the server.
func (h *hubPeer) stop(ctx context.Context) (time.Duration, error) {
	t0 := time.Now()
	st, raw, err := h.call(ctx, http.MethodDelete, "/hub/api/users/"+hubUser+"/server", nil)
	if err != nil || (st != http.StatusNoContent && st != http.StatusAccepted) {
		return 0, fmt.Errorf("hub stop: %d %.300s %v", st, raw, err)
	}
	return h.pollUntil(ctx, t0, false)
}

func (h *hubPeer) pollUntil(ctx context.Context, t0 time.Time, wantReady bool) (time.Duration, error) {
	poll := 10 * time.Millisecond
	if wantReady {
		poll = 20 * time.Millisecond
	}
	for {
		exists, ready, err := h.serverState(ctx)
		if err == nil && ((wantReady && ready) || (!wantReady && !exists)) {
			return time.Since(t0), nil
		}
		if time.Since(t0) > 120*time.Second {
			return 0, fmt.Errorf("hub server not %s after 120 s (last error %v)", map[bool]string{true: "ready", false: "gone"}[wantReady], err)
		}
		if err := sleep(ctx, poll); err != nil {
			return 0, err
		}
	}
}

// addRoute makes configurable-http-proxy send /env-<id>/ to target, as our
// route table does.
func (h *hubPeer) addRoute(ctx context.Context, envID, target string) error {
	raw, _ := json.Marshal(map[string]string{"target": target})
	u := "http://127.0.0.1:" + strconv.Itoa(chpAPIPort) + "/api/routes" + strings.TrimSuffix(instance.BasePath(envID), "/")
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(raw))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "token "+h.proxyToken)
	resp, err := h.http.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("adding a configurable-http-proxy route for %s: HTTP %d", envID, resp.StatusCode)
	}
	return nil
}

// chpPIDs is configurable-http-proxy's node process (seen from the host).
func chpPIDs() []int {
	return pidsWhere(func(p proc) bool {
		return strings.Contains(p.Cmdline, "configurable-http-proxy") && strings.Contains(p.Cmdline, strconv.Itoa(chpAPIPort))
	})
}

// hubFigures are the hub's start and stop, kept for the ratios of figures
// 1 and 2.
type hubFigures struct {
	overhead, spawn, boot, stop series // overhead: pair by pair
}

// overheadMed is the hub's overhead p50 read as figure 1's (quantileOverhead).
func (f *hubFigures) overheadMed() float64 {
	p50, _ := quantileOverhead(f.spawn, f.boot)
	return p50
}

// benchHub measures JupyterHub's spawn (POST → ready) beside the same
// JupyterLab's own boot in the hub's container, alternating, and its stop.
func (b *bench) benchHub(ctx context.Context) error {
	b.logf("hub: starting JupyterHub 5.2 + configurable-http-proxy (%s) in its own container", hubImage)
	h, err := b.startHub(ctx)
	if err != nil {
		return err
	}
	b.hub = h
	v, _ := h.direct.docker.Run(ctx, h.containerID, []string{"jupyterhub", "--version"}, nil)
	b.logf("hub: jupyterhub %s; its container's Jupyter %s %s", strings.TrimSpace(v.Stdout), h.direct.flavour.Name, h.direct.flavour.Version)
	// Warm-up, not counted, as for ours.
	if _, _, err := h.direct.boot(ctx); err != nil {
		return err
	}
	var f hubFigures
	for i := range b.starts {
		var boot time.Duration
		doBoot := func() (err error) { boot, _, err = h.direct.boot(ctx); return err }
		if i%2 == 0 {
			if err := doBoot(); err != nil {
				return err
			}
		}
		spawn, err := h.spawn(ctx)
		if err != nil {
			return err
		}
		stop, err := h.stop(ctx)
		if err != nil {
			return err
		}
		if i%2 == 1 {
			if err := doBoot(); err != nil {
				return err
			}
		}
		f.spawn, f.boot, f.stop = append(f.spawn, ms(spawn)), append(f.boot, ms(boot)), append(f.stop, ms(stop))
		f.overhead = append(f.overhead, ms(spawn)-ms(boot))
		b.logf("  hub spawn %2d: %5.0f ms to ready (direct boot %5.0f ms, overhead %5.0f ms); stop %4.0f ms", i+1, ms(spawn), ms(boot), ms(spawn)-ms(boot), ms(stop))
	}
	b.hubFig = &f
	b.record(figure{
		ID: "1h", Name: "JupyterHub 5.2 spawn overhead (POST /hub/api/users/<u>/server → ready, minus direct boot)",
		Result:   "overhead " + overheadSummary(f.spawn, f.boot, f.overhead) + "; POST → ready " + f.spawn.summary95(" ms"),
		Baseline: "the same JupyterLab exec'd directly in the hub's container to /api 200: " + f.boot.summary95(" ms"),
		Ratio:    ratio(f.spawn.med(), f.boot.med()),
		Target:   "the peer: figure 1's overhead must be ≤ ¼ of this",
		Verdict:  "peer",
		Note:     "SimpleLocalProcessSpawner (a process in the hub's container), dummy authenticator, a service token; readiness polled on the user model every 20 ms. Alternating with the direct boot, one warm-up boot first.",
	})
	b.record(figure{
		ID: "2h", Name: "JupyterHub 5.2 stop (DELETE /hub/api/users/<u>/server → server gone)",
		Result: f.stop.summary95(" ms"), Baseline: "-", Ratio: "-", Target: "the peer of figure 2", Verdict: "peer",
		Note: "Polled on the user model every 10 ms.",
	})
	return nil
}

// close removes the hub's container (removeContainers would too; this is
// earlier, to free its processes before the footprint figures).
func (h *hubPeer) close() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_ = h.b.docker.ContainerRemove(ctx, h.containerID, container.RemoveOptions{Force: true})
}

// bindArgv is the sidecar's argv with the listening address replaced.
func bindArgv(argv []string, ip string) []string {
	out := append([]string(nil), argv...)
	for i, a := range out {
		if strings.HasPrefix(a, "--ip=") {
			out[i] = "--ip=" + ip
		}
	}
	return out
}
