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
)

func randomID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// kernelConn is a WebSocket to a kernel's channels.
type kernelConn struct {
	conn    *websocket.Conn
	session string
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
	return &kernelConn{conn: conn, session: randomID()}, nil
}

// execute sends an execute_request and waits for the kernel to go idle
// after it (the last message of a request); it returns the round trip.
func (k *kernelConn) execute(code string) (time.Duration, string, error) {
	id := randomID()
	req := map[string]any{
		"header": map[string]any{"msg_id": id, "username": "bench", "session": k.session, "msg_type": "execute_request",
			"version": "5.3", "date": time.Now().UTC().Format(time.RFC3339)},
		"parent_header": map[string]any{}, "metadata": map[string]any{}, "channel": "shell", "buffers": []any{},
		"content": map[string]any{"code": code, "silent": false, "store_history": false, "user_expressions": map[string]any{},
			"allow_stdin": false, "stop_on_error": true},
	}
	t := time.Now()
	if err := k.conn.WriteJSON(req); err != nil {
		return 0, "", err
	}
	_ = k.conn.SetReadDeadline(time.Now().Add(60 * time.Second))
	result := ""
	for {
		var msg struct {
			Header struct {
				MsgType string `json:"msg_type"`
			} `json:"header"`
			ParentHeader struct {
				MsgID string `json:"msg_id"`
			} `json:"parent_header"`
			Content struct {
				Data           map[string]any `json:"data"`
				ExecutionState string         `json:"execution_state"`
			} `json:"content"`
		}
		if err := k.conn.ReadJSON(&msg); err != nil {
			return 0, "", err
		}
		if msg.ParentHeader.MsgID != id {
			continue
		}
		switch msg.Header.MsgType {
		case "execute_result":
			result = fmt.Sprint(msg.Content.Data["text/plain"])
		case "status":
			if msg.Content.ExecutionState == "idle" {
				return time.Since(t), result, nil
			}
		}
	}
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
		Target:   "ratio ≤ 1.1",
		Verdict:  b.verdict(rt <= 1.1),
		Note:     fmt.Sprintf("Round trip = send execute_request → the kernel's idle status for it (execute_result and execute_reply come before). Added by the proxy: p50 %+.3f ms. The kernel's own work dominates the round trip.", proxied.med()-direct.med()),
	})
	return nil
}
