package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/gorilla/websocket"

	"github.com/envjupyter/envjupyter/infra/kernel"
)

func randomID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// kernelConn is a WebSocket to a kernel's channels.
type kernelConn struct {
	conn    *websocket.Conn
	session *kernel.Session
}

func dialKernel(ctx context.Context, base, token, kernelID string) (*kernelConn, error) {
	u := strings.Replace(base, "http://", "ws://", 1) + "api/kernels/" + kernelID + "/channels"
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	conn, resp, err := d.DialContext(ctx, u, http.Header{"Authorization": {"token " + token}})
	if err != nil {
		st := 0
		if resp != nil {
			st = resp.StatusCode
		}
		return nil, fmt.Errorf("websocket %s: %v (HTTP %d)", u, err, st)
	}
	return &kernelConn{conn: conn, session: kernel.New(conn)}, nil
}

// execute sends an execute_request and waits for the kernel to go idle
// after it (the last message of a request); it returns the round trip.
func (k *kernelConn) execute(code string) (time.Duration, string, error) {
	t := time.Now()
	result, err := k.session.Execute(code, 60*time.Second)
	return time.Since(t), result, err
}

// jupyterREST calls Jupyter's REST API directly.
func jupyterREST(ctx context.Context, method, u, token string, body any) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		raw, _ := json.Marshal(body)
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "token "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, raw, nil
}

func (b *bench) benchWebSocket(ctx context.Context) error {
	if err := b.ensureMain(ctx); err != nil {
		return err
	}
	r := b.mainRun
	st, raw, err := jupyterREST(ctx, http.MethodPost, r.direct()+"api/kernels", r.token, map[string]string{"name": "python3"})
	if err != nil || st != http.StatusCreated {
		return fmt.Errorf("creating a kernel: %d %s %v", st, raw, err)
	}
	var kernel struct{ ID string }
	_ = json.Unmarshal(raw, &kernel)
	defer jupyterREST(context.Background(), http.MethodDelete, r.direct()+"api/kernels/"+kernel.ID, r.token, nil)

	// Warm up: the kernel starts, both paths are opened once.
	for _, base := range []string{r.direct(), r.proxied()} {
		k, err := dialKernel(ctx, base, r.token, kernel.ID)
		if err != nil {
			return err
		}
		for range 5 {
			if _, got, err := k.execute("1+1"); err != nil || got != "2" {
				k.conn.Close()
				return fmt.Errorf("warm-up 1+1 over %s = %q (%v)", base, got, err)
			}
		}
		k.conn.Close()
	}
	b.logf("websocket: %d execute_request round trips (1+1) each way, in alternating blocks, on one python3 kernel", b.wsRounds)
	var direct, proxied series
	blocks := 4
	per := max(1, b.wsRounds/blocks)
	for blk := range blocks {
		for _, viaProxy := range []bool{blk%2 == 0, blk%2 != 0} {
			base := r.direct()
			if viaProxy {
				base = r.proxied()
			}
			k, err := dialKernel(ctx, base, r.token, kernel.ID)
			if err != nil {
				return err
			}
			for range per {
				d, got, err := k.execute("1+1")
				if err != nil || got != "2" {
					k.conn.Close()
					return fmt.Errorf("1+1 over %s = %q (%v)", base, got, err)
				}
				if viaProxy {
					proxied = append(proxied, ms(d))
				} else {
					direct = append(direct, ms(d))
				}
			}
			k.conn.Close()
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	rt := proxied.med() / direct.med()
	b.record(figure{
		ID: "4", Name: "WebSocket kernel execute_request round trip (1+1)",
		Result:   "through the proxy " + proxied.summary95(" ms"),
		Baseline: "direct to 127.0.0.1:<host port> " + direct.summary95(" ms"),
		Ratio:    ratio(proxied.med(), direct.med()),
		Target:   "ratio ≤ 1.1; through the proxy p50 ≤ 12 ms absolute",
		Verdict:  b.verdict(rt <= 1.1 && proxied.med() <= 12),
		Note: fmt.Sprintf("Round trip = send execute_request → the kernel's idle status for it (execute_result and execute_reply come before). Added by the proxy: p50 %+.3f ms. "+
			"The sidecar launches Jupyter with its kernel WebSockets set to TCP_NODELAY (sidecar/jupyter/kernel_nodelay.py; direct and proxied are the same instance): Jupyter never sets it, and without it about 40 ms of each round trip is Nagle's algorithm meeting delayed ACKs (51.8 ms in the run of 2026-11-26).", proxied.med()-direct.med()),
	})
	return nil
}
