package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/envjupyter/envjupyter/infra/devstack"
	"github.com/envjupyter/envjupyter/shared/instance"
	"github.com/envjupyter/envjupyter/sidecar/firewall"
	jupyterproc "github.com/envjupyter/envjupyter/sidecar/jupyter"
	"github.com/envjupyter/envjupyter/sidecar/route"
)

// apiClient calls the HTTP API through the proxy, as a customer does.
type apiClient struct {
	stack *devstack.Stack
	http  *http.Client
	redis *redis.Client
}

// newAPIClient also signs in to the stack's Redis as its admin: the bench
// writes made-up routes and counts keys, which no component's user may.
func newAPIClient(s *devstack.Stack) (*apiClient, error) {
	tr := &http.Transport{MaxIdleConns: 512, MaxIdleConnsPerHost: 512, IdleConnTimeout: time.Minute,
		DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext}
	rdb, err := s.Redis(devstack.RedisAdmin)
	if err != nil {
		return nil, err
	}
	return &apiClient{
		stack: s,
		http:  &http.Client{Transport: tr, Timeout: 60 * time.Second},
		redis: rdb,
	}, nil
}

// apiBody is the API's view of an instance (and of errors).
type apiBody struct {
	InstanceID   string `json:"instance_id"`
	Status       string `json:"status"`
	StatusReason string `json:"status_reason"`
	Stage        string `json:"stage"`
	AccessURL    string `json:"access_url"`
	Error        *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func (c *apiClient) token(customer string) string { return c.stack.Token(customer, 2*time.Hour) }

// call makes one API call and returns its status, body and latency.
func (c *apiClient) call(ctx context.Context, method, path, customer string) (int, apiBody, time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.stack.ProxyURL()+path, nil)
	if err != nil {
		return 0, apiBody{}, 0, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token(customer))
	t := time.Now()
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, apiBody{}, time.Since(t), fmt.Errorf("%s %s: %w", method, path, err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	took := time.Since(t)
	var b apiBody
	if err := json.Unmarshal(raw, &b); err != nil {
		return resp.StatusCode, b, took, fmt.Errorf("%s %s: %d, body is not JSON: %.200q", method, path, resp.StatusCode, raw)
	}
	return resp.StatusCode, b, took, nil
}

func (c *apiClient) start(ctx context.Context, e env) (int, apiBody, time.Duration, error) {
	return c.call(ctx, http.MethodPost, "/api/environments/"+e.ID+"/jupyter/start", e.Customer)
}

func (c *apiClient) stop(ctx context.Context, e env) (int, apiBody, time.Duration, error) {
	return c.call(ctx, http.MethodPost, "/api/environments/"+e.ID+"/jupyter/stop", e.Customer)
}

func (c *apiClient) status(ctx context.Context, e env) (int, apiBody, time.Duration, error) {
	return c.call(ctx, http.MethodGet, "/api/environments/"+e.ID+"/jupyter", e.Customer)
}

// running is a running instance with what the benchmarks need of it.
type running struct {
	env        env
	instanceID string
	port       int    // host port
	host       string // the host's advertised address, where its ports are forwarded
	token      string // Jupyter token
	base       string // /env-<id>/
}

func (r *running) direct() string { return "http://" + r.backend() + r.base }

// backend is the forwarded host port, as the proxy reaches it.
func (r *running) backend() string { return net.JoinHostPort(r.host, strconv.Itoa(r.port)) }
func (r *running) proxied() string {
	return "http://127.0.0.1:" + strconv.Itoa(proxyPort) + r.base
}

// startTimeline is what one API start looked like.
type startTimeline struct {
	t0, apiReturned, seenRunning time.Time
	stages                       map[string]time.Time // first time each stage was seen in the record
	rec                          instance.Instance
}

// startAndWait starts the environment's Jupyter through the API and polls
// the instance record every poll until it runs, noting when each stage is
// first seen.
func (b *bench) startAndWait(ctx context.Context, e env, poll time.Duration, timeout time.Duration) (*running, startTimeline, error) {
	tl := startTimeline{stages: map[string]time.Time{}}
	tl.t0 = time.Now()
	code, body, _, err := b.api.start(ctx, e)
	tl.apiReturned = time.Now()
	if err != nil {
		return nil, tl, err
	}
	if code != http.StatusAccepted {
		return nil, tl, fmt.Errorf("start of %s: HTTP %d %+v", e.ID, code, body.Error)
	}
	deadline := time.Now().Add(timeout)
	for {
		rec, err := b.stack.Store.Instance(ctx, body.InstanceID)
		now := time.Now()
		if err == nil {
			if rec.Status == instance.Starting && rec.Stage != "" {
				if _, ok := tl.stages[string(rec.Stage)]; !ok {
					tl.stages[string(rec.Stage)] = now
				}
			}
			switch rec.Status {
			case instance.Running:
				tl.seenRunning, tl.rec = now, rec
				return runningOf(e, rec, body.AccessURL, b.stack.AdvertiseAddr()), tl, nil
			case instance.Failed, instance.Stopped:
				return nil, tl, fmt.Errorf("instance %s of %s ended %s: %s", rec.ID, e.ID, rec.Status, rec.StatusReason)
			}
		}
		if now.After(deadline) {
			return nil, tl, fmt.Errorf("instance %s of %s not running after %s (status %s, stage %s)", body.InstanceID, e.ID, timeout, rec.Status, rec.Stage)
		}
		if err := sleep(ctx, poll); err != nil {
			return nil, tl, err
		}
	}
}

func runningOf(e env, rec instance.Instance, accessURL, host string) *running {
	r := &running{env: e, instanceID: rec.ID, port: rec.ExternalPort, host: host, base: instance.BasePath(e.ID), token: rec.AccessToken}
	if u, err := url.Parse(accessURL); err == nil && u.Query().Get("token") != "" {
		r.token = u.Query().Get("token")
	}
	return r
}

// stopTimeline is when each part of a stop was first seen done.
type stopTimeline struct {
	t0, apiReturned                                  time.Time
	statusStopped, portReleased, ruleGone, routeGone time.Time
	unreachable                                      time.Time // the proxy no longer answers 200
	processesGone                                    time.Time // no process of the instance runs (Jupyter, kernels, terminals)
}

func (s stopTimeline) done() time.Time {
	last := s.statusStopped
	for _, t := range []time.Time{s.portReleased, s.ruleGone, s.routeGone, s.processesGone} {
		if t.After(last) {
			last = t
		}
	}
	return last
}

// stopAndWait stops through the API and polls every poll until the status
// is stopped, the port lease is released, the forward and the route are
// gone, and no process of the instance runs: what JupyterHub's stop waits
// for too (its spawner's process gone).
func (b *bench) stopAndWait(ctx context.Context, r *running, poll, timeout time.Duration) (stopTimeline, error) {
	var tl stopTimeline
	tl.t0 = time.Now()
	code, body, _, err := b.api.stop(ctx, r.env)
	tl.apiReturned = time.Now()
	if err != nil {
		return tl, err
	}
	if code != http.StatusAccepted {
		return tl, fmt.Errorf("stop of %s: HTTP %d %+v", r.env.ID, code, body.Error)
	}
	// Opened once: opening runs `iptables --version`, which would load the
	// machine on every poll.
	fw, err := firewall.New(chainPrefix)
	if err != nil {
		return tl, err
	}
	deadline := time.Now().Add(timeout)
	probe := &http.Client{Timeout: time.Second}
	for {
		if tl.unreachable.IsZero() {
			if st, err := get(ctx, probe, r.proxied()+"api"); err != nil || st != http.StatusOK {
				tl.unreachable = time.Now()
			}
		}
		if tl.statusStopped.IsZero() {
			if rec, err := b.stack.Store.Instance(ctx, r.instanceID); err == nil && rec.Status == instance.Stopped {
				tl.statusStopped = time.Now()
			}
		}
		if tl.portReleased.IsZero() {
			if held, err := b.stack.Store.InstancePorts(ctx, hostID); err == nil && !held[r.port] {
				tl.portReleased = time.Now()
			}
		}
		if tl.routeGone.IsZero() {
			if _, err := b.api.redis.Get(ctx, route.Key(r.env.ID)).Result(); errors.Is(err, redis.Nil) {
				tl.routeGone = time.Now()
			}
		}
		if tl.ruleGone.IsZero() {
			if has, err := forwardsPort(fw, r.port); err == nil && !has {
				tl.ruleGone = time.Now()
			}
		}
		if tl.processesGone.IsZero() {
			if procs, err := jupyterproc.Processes("/proc", r.instanceID); err == nil && len(procs) == 0 {
				tl.processesGone = time.Now()
			}
		}
		if !tl.unreachable.IsZero() && !tl.statusStopped.IsZero() && !tl.portReleased.IsZero() && !tl.routeGone.IsZero() && !tl.ruleGone.IsZero() && !tl.processesGone.IsZero() {
			return tl, nil
		}
		if time.Now().After(deadline) {
			return tl, fmt.Errorf("stop of %s not complete after %s: %+v", r.env.ID, timeout, tl)
		}
		if err := sleep(ctx, poll); err != nil {
			return tl, err
		}
	}
}

// forwardsPort reports whether the sidecar's firewall forwards port, as
// the kernel holds it now.
func forwardsPort(fw *firewall.Firewall, port int) (bool, error) {
	forwards, err := fw.Forwards()
	if err != nil {
		return false, err
	}
	for _, f := range forwards {
		if f.HostPort == port {
			return true, nil
		}
	}
	return false, nil
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// sidecarLine is a line of the sidecar's JSON log.
type sidecarLine struct {
	Time       time.Time `json:"time"`
	Msg        string    `json:"msg"`
	InstanceID string    `json:"instance_id"`
	DurationMS int64     `json:"duration_ms"`
}

// sidecarLog returns the sidecar's log lines about one instance.
func (b *bench) sidecarLog(instanceID string) []sidecarLine {
	f, err := os.Open(filepath.Join(b.stack.LogDir(), "sidecar.log"))
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []sidecarLine
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if !strings.Contains(sc.Text(), instanceID) {
			continue
		}
		var l sidecarLine
		if json.Unmarshal(sc.Bytes(), &l) == nil && l.InstanceID == instanceID {
			out = append(out, l)
		}
	}
	return out
}

func findLine(lines []sidecarLine, msg string) (sidecarLine, bool) {
	for _, l := range lines {
		if l.Msg == msg {
			return l, true
		}
	}
	return sidecarLine{}, false
}

// sidecarMetric reads one series of the sidecar's /metrics.
func (b *bench) sidecarMetric(ctx context.Context, name string) (float64, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, b.stack.StatusURL()+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, fmt.Errorf("no %s in the sidecar's metrics", name)
}

// sidecarPID is the pid of the stack's sidecar.
func (b *bench) sidecarPID() (int, error) {
	bin := filepath.Join(b.work, "bin", "sidecar")
	pids := pidsWhere(func(p proc) bool { return p.Exe == bin })
	if len(pids) != 1 {
		return 0, fmt.Errorf("found %d sidecar processes (%s)", len(pids), bin)
	}
	return pids[0], nil
}

// get fetches url and returns the status, or an error.
func get(ctx context.Context, c *http.Client, u string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}
