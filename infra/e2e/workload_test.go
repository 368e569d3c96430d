package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/pkg/stdcopy"
	"github.com/gorilla/websocket"

	"github.com/envjupyter/envjupyter/infra/devstack"
	"github.com/envjupyter/envjupyter/infra/kernel"
)

// socketIdleTimeout is the test stack's proxy idle timeout of an
// environment's WebSockets (ENV_SOCKET_IDLE_TIMEOUT): shorter than
// Jupyter's 30 s pings, so that an idle kernel socket is cut.
const socketIdleTimeout = 20 * time.Second

// What a data scientist does all day, through the proxy, on one instance:
// big notebooks saved and read back, a big file uploaded in JupyterLab's
// chunks and one downloaded, megabytes of output, a fast terminal, twenty
// saves at once, a body over the limit, and an idle kernel socket that the
// proxy cuts and the client reconnects to the same kernel. The browser's
// side of it (figures, the upload button, reconnecting) is
// TestNotebookWorkInBrowser.
func TestNotebookWorkloads(t *testing.T) {
	env, in := running(t)
	stopAtEnd(t, customerA, env)
	base, jtoken := accessBase(t, in.AccessURL), accessToken(t, in.AccessURL)
	keepActive(t, base, jtoken)
	cid := containerOf(t, env)

	t.Run("notebooks of megabytes save and read back whole", func(t *testing.T) {
		for _, size := range []int{3 << 20, 40 << 20} {
			name := fmt.Sprintf("figures-%dMiB.ipynb", size>>20)
			nb := notebookOfSize(size)
			if st, raw := putContents(t, base, jtoken, name, map[string]any{"type": "notebook", "content": nb}); st != http.StatusCreated && st != http.StatusOK {
				t.Fatalf("saving a %d MiB notebook: %d %.300s", size>>20, st, raw)
			}
			st, raw := jupyter(t, http.MethodGet, base+"api/contents/"+name+"?content=1", jtoken, nil)
			var got struct{ Content map[string]any }
			if st != http.StatusOK || json.Unmarshal(raw, &got) != nil {
				t.Fatalf("reading the %d MiB notebook back: %d %.300s", size>>20, st, raw)
			}
			if a, b := outputsDigest(t, nb), outputsDigest(t, got.Content); a != b {
				t.Fatalf("the %d MiB notebook read back has other outputs than were saved", size>>20)
			}
		}
	})

	t.Run("a file of hundreds of megabytes uploads in JupyterLab's chunks", func(t *testing.T) {
		const size, chunk = 200 << 20, 1 << 20 // JupyterLab's CHUNK_SIZE
		data := randomBytes(size)
		for i, n := 0, 1; i < size; i, n = i+chunk, n+1 {
			part := n
			if i+chunk >= size {
				part = -1 // the last chunk
			}
			body := map[string]any{"type": "file", "format": "base64", "chunk": part,
				"content": base64.StdEncoding.EncodeToString(data[i:min(i+chunk, size)])}
			if st, raw := putContents(t, base, jtoken, "upload.bin", body); st != http.StatusCreated && st != http.StatusOK {
				t.Fatalf("chunk %d of the upload: %d %.300s", part, st, raw)
			}
		}
		if got, want := containerSHA256(t, cid, "upload.bin"), sha256Hex(data); got != want {
			t.Fatalf("the uploaded file in the container has sha256 %s, want %s", got, want)
		}
	})

	t.Run("a file of hundreds of megabytes downloads whole", func(t *testing.T) {
		execInContainer(t, cid, "dd", "if=/dev/urandom", "of=/root/download.bin", "bs=1M", "count=300", "status=none")
		req, _ := http.NewRequest(http.MethodGet, base+"files/download.bin", nil)
		req.Header = tokenHeader(jtoken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		h := sha256.New()
		n, err := io.Copy(h, resp.Body)
		if resp.StatusCode != http.StatusOK || err != nil || n != 300<<20 {
			t.Fatalf("downloading 300 MiB: %d, %d bytes, %v", resp.StatusCode, n, err)
		}
		if got, want := hex.EncodeToString(h.Sum(nil)), containerSHA256(t, cid, "download.bin"); got != want {
			t.Fatalf("the download has sha256 %s, the file %s", got, want)
		}
	})

	t.Run("a cell prints megabytes", func(t *testing.T) {
		// Within Jupyter's own IOPub limit (jupyter-server's default, 1 MB/s
		// over 3 s: docs/JUPYTER.md), as a long loop printing does.
		const lines, width = 30, 99_999
		code := fmt.Sprintf("import time\nfor i in range(%d):\n    print('x' * %d)\n    time.sleep(0.15)", lines, width)
		if got := runCode(t, base, jtoken, "python3", code); strings.Count(got, "x") != lines*width || strings.Count(got, "\n") != lines-1 {
			t.Fatalf("the cell's output has %d x in %d lines (%.80q...), want %d lines of %d", strings.Count(got, "x"), strings.Count(got, "\n")+1, got, lines, width)
		}
	})

	t.Run("a terminal streams fast", func(t *testing.T) {
		const lines = 200_000
		out := terminalStream(t, base, jtoken, fmt.Sprintf("seq 1 %d", lines))
		numbers := 0
		for _, l := range strings.Split(out, "\n") {
			if l = strings.TrimSpace(l); l != "" && strings.Trim(l, "0123456789") == "" {
				numbers++
				if l != strconv.Itoa(numbers) {
					t.Fatalf("line %d of seq reads %q", numbers, l)
				}
			}
		}
		if numbers != lines {
			t.Fatalf("the terminal showed %d of seq's %d lines", numbers, lines)
		}
	})

	t.Run("twenty notebooks save at once", func(t *testing.T) {
		const n = 20
		nbs := make([]map[string]any, n)
		for i := range nbs {
			nbs[i] = notebookOfSize(2 << 20)
		}
		var wg sync.WaitGroup
		codes := make([]int, n)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				codes[i], _ = putContents(t, base, jtoken, fmt.Sprintf("at-once-%d.ipynb", i), map[string]any{"type": "notebook", "content": nbs[i]})
			}()
		}
		wg.Wait()
		for i := range n {
			if codes[i] != http.StatusCreated && codes[i] != http.StatusOK {
				t.Fatalf("save %d of %d at once: %d", i, n, codes[i])
			}
			st, raw := jupyter(t, http.MethodGet, base+fmt.Sprintf("api/contents/at-once-%d.ipynb?content=1", i), jtoken, nil)
			var got struct{ Content map[string]any }
			if st != http.StatusOK || json.Unmarshal(raw, &got) != nil || outputsDigest(t, got.Content) != outputsDigest(t, nbs[i]) {
				t.Fatalf("notebook %d saved at once reads back as something else (%d)", i, st)
			}
		}
	})

	t.Run("a body over the limit gets JSON JupyterLab shows", func(t *testing.T) {
		u, _ := url.Parse(base)
		// Content-Length alone decides: nginx answers before the body.
		reqText := fmt.Sprintf("PUT %sapi/contents/too-big.ipynb HTTP/1.1\r\nHost: %s\r\nAuthorization: token %s\r\n"+
			"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n{", u.Path, u.Host, jtoken, int64(2)<<30)
		resp := rawExchange(t, u.Host, reqText)
		body, _ := io.ReadAll(resp.Body)
		var e struct{ Error, Message string }
		if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") ||
			json.Unmarshal(body, &e) != nil || e.Error != "request_too_large" || !strings.Contains(e.Message, "1g") {
			t.Fatalf("a 2 GiB save: %d %s %q; want 413 with a JSON message naming the 1g limit", resp.StatusCode, resp.Header.Get("Content-Type"), body)
		}
		if st, _ := jupyter(t, http.MethodGet, base+"api/contents/too-big.ipynb", jtoken, nil); st != http.StatusNotFound {
			t.Fatalf("the refused save left a file (GET answers %d)", st)
		}
	})

	t.Run("an idle kernel socket is cut and the kernel's state survives", func(t *testing.T) {
		kernelID, conn := openKernel(t, base, tokenHeader(jtoken), "python3")
		defer conn.Close()
		if got, err := kernel.New(conn).Execute("x = 6 * 7; x", 60*time.Second); err != nil || got != "42" {
			t.Fatalf("x = 6 * 7 gave %q, %v", got, err)
		}
		idleFrom := time.Now()
		_ = conn.SetReadDeadline(idleFrom.Add(socketIdleTimeout + 15*time.Second))
		var err error
		for {
			if _, _, err = conn.ReadMessage(); err != nil {
				break
			}
		}
		idle := time.Since(idleFrom)
		if ne, ok := err.(net.Error); (ok && ne.Timeout()) || idle < socketIdleTimeout-time.Second {
			t.Fatalf("the idle socket ended after %s with %v; want the proxy to close it after its %s idle timeout", idle.Round(time.Millisecond), err, socketIdleTimeout)
		}
		// What JupyterLab does when its kernel socket closes: connect again.
		again, _, err := websocket.DefaultDialer.Dial(kernelSocketURL(base, kernelID), tokenHeader(jtoken))
		if err != nil {
			t.Fatalf("reconnecting to the kernel: %v", err)
		}
		defer again.Close()
		if got, err := kernel.New(again).Execute("x", 60*time.Second); err != nil || got != "42" {
			t.Fatalf("after reconnecting, x is %q (%v), want 42", got, err)
		}
	})

	t.Run("stopped means nothing of it runs", func(t *testing.T) {
		// A kernel that ignores SIGTERM and a terminal running a command.
		if got := runCodeKeepingKernel(t, base, jtoken, "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN); 'ignoring'"); got != "'ignoring'" {
			t.Fatalf("the kernel answered %q", got)
		}
		if got := terminalStream(t, base, jtoken, "(sleep 1000 &) ; echo started"); !strings.Contains(got, "started") {
			t.Fatalf("the terminal printed %q", got)
		}
		if procs, _ := jupyterProcesses(in.InstanceID); len(procs) < 3 {
			t.Fatalf("%d processes of the instance before the stop, want Jupyter, the kernel and the terminal's", len(procs))
		}
		stop(t, token(customerA), env)
		waitStatus(t, token(customerA), env, "stopped", 60*time.Second)
		if procs, err := jupyterProcesses(in.InstanceID); err != nil || len(procs) > 0 {
			t.Fatalf("the status says stopped, yet %d processes of the instance run (%v)", len(procs), err)
		}
	})
}

// runCodeKeepingKernel runs code in a new Python kernel and leaves the
// kernel running.
func runCodeKeepingKernel(t *testing.T, base, jtoken, code string) string {
	t.Helper()
	_, conn := openKernel(t, base, tokenHeader(jtoken), "python3")
	defer conn.Close()
	got, err := kernel.New(conn).Execute(code, 60*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

var (
	smallProxyOnce sync.Once
	smallProxyErr  error
)

// notebookOfSize is an nbformat 4 notebook of about size bytes of JSON:
// cells whose outputs are PNG figures of incompressible data, as plots of
// noise are.
func notebookOfSize(size int) map[string]any {
	const figure = 512 << 10
	var cells []any
	for left := size; left > 0; left -= figure * 4 / 3 {
		cells = append(cells, map[string]any{
			"cell_type": "code", "execution_count": len(cells) + 1, "metadata": map[string]any{},
			"source": fmt.Sprintf("plt.imshow(np.random.rand(512, 512)) # %d", len(cells)),
			"outputs": []any{map[string]any{
				"output_type": "display_data", "metadata": map[string]any{},
				"data": map[string]any{"image/png": base64.StdEncoding.EncodeToString(randomBytes(figure)), "text/plain": "<Figure>"},
			}},
		})
	}
	return map[string]any{"nbformat": 4, "nbformat_minor": 5, "cells": cells,
		"metadata": map[string]any{"kernelspec": map[string]any{"name": "python3", "display_name": "Python 3", "language": "python"}}}
}

// outputsDigest hashes a notebook's cells' outputs as JSON.
func outputsDigest(t *testing.T, nb map[string]any) string {
	t.Helper()
	cells, _ := nb["cells"].([]any)
	h := sha256.New()
	for _, c := range cells {
		cell, _ := c.(map[string]any)
		b, err := json.Marshal(cell["outputs"])
		if err != nil {
			t.Fatal(err)
		}
		h.Write(b)
	}
	return fmt.Sprintf("%d cells %x", len(cells), h.Sum(nil))
}

// putContents writes a file or notebook through Jupyter's contents API.
func putContents(t *testing.T, base, jtoken, name string, body map[string]any) (int, []byte) {
	t.Helper()
	body["name"], body["path"] = name, name
	if body["format"] == nil && body["type"] == "notebook" {
		body["format"] = "json"
	}
	return jupyter(t, http.MethodPut, base+"api/contents/"+name, jtoken, body)
}

// rawExchange sends a request as written to the proxy and reads the answer.
func rawExchange(t *testing.T, host, request string) *http.Response {
	t.Helper()
	conn, err := devstack.DialLoopback(context.Background(), "tcp", host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(conn, request); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("reading the proxy's answer: %v", err)
	}
	return resp
}

// terminalStream runs a command in a new terminal through the proxy and
// returns everything it printed (carriage returns removed), read until the
// command has ended.
func terminalStream(t *testing.T, base, jtoken, command string) string {
	t.Helper()
	st, raw := jupyter(t, http.MethodPost, base+"api/terminals", jtoken, nil)
	var term struct{ Name string }
	if st != http.StatusOK || json.Unmarshal(raw, &term) != nil {
		t.Fatalf("creating a terminal: %d %s", st, raw)
	}
	defer jupyter(t, http.MethodDelete, base+"api/terminals/"+term.Name, jtoken, nil)
	conn, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(base, "http")+"terminals/websocket/"+term.Name, tokenHeader(jtoken))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// The shell echoes the typed line with the quotes; only the command's
	// end prints the marker whole.
	if err := conn.WriteJSON([]string{"stdin", command + "; echo ::end''ed::\r"}); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(2 * time.Minute))
	var out strings.Builder
	for !strings.Contains(out.String(), "\n::ended::") {
		var msg []any
		if err := conn.ReadJSON(&msg); err != nil {
			t.Fatalf("reading the terminal after %d bytes: %v", out.Len(), err)
		}
		if s, ok := msg[1].(string); len(msg) == 2 && msg[0] == "stdout" && ok {
			out.WriteString(strings.ReplaceAll(s, "\r", ""))
		}
	}
	return out.String()
}

// containerOf is the environment's container.
func containerOf(t *testing.T, env string) string {
	t.Helper()
	e, err := stack.Store.Environment(context.Background(), env)
	if err != nil {
		t.Fatal(err)
	}
	return e.ContainerID
}

// containerSHA256 hashes a file of Jupyter's root directory in the container.
func containerSHA256(t *testing.T, cid, name string) string {
	t.Helper()
	out := execOutput(t, cid, "sha256sum", "/root/"+name)
	sum, _, _ := strings.Cut(out, " ")
	return sum
}

// execOutput runs argv in the container as root and returns what it
// printed; it fails the test if argv fails.
func execOutput(t *testing.T, cid string, argv ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ex, err := stack.Docker.ContainerExecCreate(ctx, cid, container.ExecOptions{Cmd: argv, User: "root", AttachStdout: true, AttachStderr: true})
	if err != nil {
		t.Fatal(err)
	}
	att, err := stack.Docker.ContainerExecAttach(ctx, ex.ID, container.ExecAttachOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer att.Close()
	var out, errOut bytes.Buffer
	_, _ = stdcopy.StdCopy(&out, &errOut, att.Reader)
	if ins, err := stack.Docker.ContainerExecInspect(ctx, ex.ID); err != nil || ins.ExitCode != 0 {
		t.Fatalf("%v in the container: exit %d, %v: %s", argv, ins.ExitCode, err, errOut.String())
	}
	return out.String()
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// The workload in Debian's Chromium, as a person does it in JupyterLab
// (web/e2e/workload.mjs): notebooks with matplotlib figures of several and
// of tens of megabytes saved, closed and reopened whole; a file of hundreds
// of megabytes through JupyterLab's upload button, byte for byte in the
// container; an idle kernel socket cut by the proxy and reconnected to the
// same kernel.
func TestNotebookWorkInBrowser(t *testing.T) {
	node := browserTools(t)
	env, in := running(t)
	stopAtEnd(t, customerA, env)
	// The test stack culls an instance idle for 20 s; the idle socket must
	// outlast the proxy's timeout, not the instance.
	keepActive(t, accessBase(t, in.AccessURL), accessToken(t, in.AccessURL))
	upload := filepath.Join(t.TempDir(), "dataset.bin")
	data := randomBytes(250 << 20)
	if err := os.WriteFile(upload, data, 0o644); err != nil {
		t.Fatal(err)
	}

	// The same JupyterLab through a proxy with a small body limit, where a
	// save of a notebook with two figures is over it.
	const smallLimit = "1m"
	smallPort := stack.Opts.ProxyPort + 13
	smallProxyOnce.Do(func() { smallProxyErr = stack.StartProxy("nginx-small-limit", smallPort, "ENV_BODY_LIMIT="+smallLimit) })
	if smallProxyErr != nil {
		t.Fatalf("the small-limit proxy: %v", smallProxyErr)
	}
	small, err := url.Parse(in.AccessURL)
	if err != nil {
		t.Fatal(err)
	}
	small.Host = small.Hostname() + ":" + strconv.Itoa(smallPort)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, filepath.Join("e2e", "workload.mjs"))
	cmd.Dir = filepath.Join(stack.Opts.Root, "web")
	cmd.Env = append(os.Environ(), "LAB_URL="+in.AccessURL, "UPLOAD_FILE="+upload,
		"IDLE_SECONDS="+strconv.Itoa(int((socketIdleTimeout+8*time.Second).Seconds())), "CHROMIUM="+chromiumBin,
		"SMALL_LIMIT_LAB_URL="+small.String(), "SMALL_LIMIT="+smallLimit)
	out, err := cmd.CombinedOutput()
	t.Logf("web/e2e/workload.mjs:\n%s", out)
	if err != nil {
		t.Fatalf("web/e2e/workload.mjs: %v", err)
	}
	if got, want := containerSHA256(t, containerOf(t, env), "dataset.bin"), sha256Hex(data); got != want {
		t.Fatalf("the file uploaded in the browser has sha256 %s in the container, want %s", got, want)
	}
}
