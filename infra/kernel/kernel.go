// Package kernel speaks enough of the Jupyter messaging protocol over a
// kernel's channels WebSocket to run code and read its result; the
// end-to-end tests and the benchmarks use it.
package kernel

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"github.com/gorilla/websocket"
)

// Session runs code on one kernel connection.
type Session struct {
	conn *websocket.Conn
	id   string
}

// New returns a session over an open channels WebSocket.
func New(conn *websocket.Conn) *Session { return &Session{conn: conn, id: randomID()} }

// Execute sends an execute_request and reads until the kernel is idle after
// it (the last message of a request). It returns the text/plain results
// (execute_result, or display_data as IRkernel sends) and stream output.
func (s *Session) Execute(code string, timeout time.Duration) (string, error) {
	msgID := randomID()
	req := map[string]any{
		"header": map[string]any{
			"msg_id": msgID, "username": "envjupyter", "session": s.id, "msg_type": "execute_request",
			"version": "5.3", "date": time.Now().UTC().Format(time.RFC3339),
		},
		"parent_header": map[string]any{}, "metadata": map[string]any{}, "channel": "shell", "buffers": []any{},
		"content": map[string]any{
			"code": code, "silent": false, "store_history": false, "user_expressions": map[string]any{},
			"allow_stdin": false, "stop_on_error": true,
		},
	}
	if err := s.conn.WriteJSON(req); err != nil {
		return "", fmt.Errorf("sending %q: %w", code, err)
	}
	_ = s.conn.SetReadDeadline(time.Now().Add(timeout))
	var out strings.Builder
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
				Ename          string         `json:"ename"`
				Text           string         `json:"text"`
				ExecutionState string         `json:"execution_state"`
			} `json:"content"`
		}
		if err := s.conn.ReadJSON(&msg); err != nil {
			return out.String(), fmt.Errorf("reading the reply to %q (so far %q): %w", code, out.String(), err)
		}
		if msg.ParentHeader.MsgID != msgID {
			continue
		}
		switch msg.Header.MsgType {
		case "execute_result", "display_data":
			out.WriteString(fmt.Sprint(msg.Content.Data["text/plain"]))
		case "stream":
			out.WriteString(msg.Content.Text)
		case "error":
			return "", fmt.Errorf("%q raised %s", code, msg.Content.Ename)
		case "status":
			if msg.Content.ExecutionState == "idle" {
				return strings.TrimSpace(out.String()), nil
			}
		}
	}
}

func randomID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
