package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/envjupyter/envjupyter/infra/devstack"
	"github.com/envjupyter/envjupyter/sidecar/route"
)

// The test stack's proxy capacity and per-environment limit
// (WORKER_CONNECTIONS, ENV_CONN_LIMIT): small, so that one environment's
// flood would use up every worker's connections within a test.
const (
	proxyWorkerConnections = 2048
	envConnLimit           = 256
)

// One customer's backend that accepts requests and never answers, flooded
// with thousands of requests, cannot starve another environment: past its
// connection limit its requests get 429 environment_busy at once, and
// another environment keeps answering. (Without the limit, the hung
// requests hold two connections each until the workers have none left.)
func TestHungEnvironmentDoesNotStarveOthers(t *testing.T) {
	hung, other := "e2e-hung-"+randomID()[:8], "e2e-calm-"+randomID()[:8]
	// The hung backend: accepts, reads, never answers.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var held sync.WaitGroup
	stopHung := make(chan struct{})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			held.Add(1)
			go func() {
				defer held.Done()
				defer c.Close()
				<-stopHung
			}()
		}
	}()
	t.Cleanup(func() { close(stopHung); ln.Close(); held.Wait() })
	answered := countingBackend(t, other)
	rdb := redisAs(t, devstack.RedisAdmin)
	if err := rdb.Set(context.Background(), route.Key(hung), ln.Addr().String(), 0).Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.Del(context.Background(), route.Key(hung)) })

	// More hung requests than the workers have connections for, sent at
	// once (each would hold a client and an upstream connection): without
	// the limit they fill every worker.
	const flood = 2*proxyWorkerConnections + 500
	proxy := "127.0.0.1:" + strconv.Itoa(stack.Opts.ProxyPort)
	hostOf := func(env string) string { return "env-" + env + ".localhost:" + strconv.Itoa(stack.Opts.ProxyPort) }
	var mu sync.Mutex
	busy, otherwise := 0, map[string]int{}
	var conns []net.Conn
	var wg sync.WaitGroup
	for range flood {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.DialTimeout("tcp", proxy, 5*time.Second)
			if err != nil {
				mu.Lock()
				otherwise["dial: "+errKind(err)]++
				mu.Unlock()
				return
			}
			fmt.Fprintf(c, "GET /env-%s/api/status HTTP/1.1\r\nHost: %s\r\n\r\n", hung, hostOf(hung))
			_ = c.SetReadDeadline(time.Now().Add(15 * time.Second))
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil && isTimeout(err):
				conns = append(conns, c) // hung at the backend: keep it open
				return
			case err != nil:
				otherwise["read: "+errKind(err)]++
			case resp.StatusCode == http.StatusTooManyRequests && resp.Header.Get("X-Envjupyter-Error") == "environment_busy":
				body, _ := io.ReadAll(resp.Body)
				if !strings.Contains(string(body), hung) {
					otherwise["a 429 page that does not name the environment"]++
				}
				busy++
			default:
				otherwise[resp.Status]++
			}
			c.Close()
		}()
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	t.Logf("%d requests to the hung environment: %d hung, %d refused as busy, others %v", flood, len(conns), busy, otherwise)
	// The flood's own requests may also be shed while it arrives (more at
	// once than the workers take); what matters is that it holds no more
	// than its limit, says why, and that the others are served.
	if len(conns) > envConnLimit || busy == 0 || otherwise["a 429 page that does not name the environment"] > 0 {
		t.Errorf("%d hung and %d refused of %d (others %v); want at most %d hung (its limit), the rest refused with 429 environment_busy naming it",
			len(conns), busy, flood, otherwise, envConnLimit)
	}
	// Meanwhile another environment answers at once.
	for i := range 20 {
		st := rawGet(t, proxy, hostOf(other), "/env-"+other+"/x")
		if st != http.StatusOK {
			t.Fatalf("request %d to another environment during the flood: %d, want 200", i, st)
		}
	}
	if n := answered.Load(); n != 20 {
		t.Fatalf("the other environment's backend saw %d of 20 requests", n)
	}
}

// errKind names an error without its addresses, so that thousands of
// them count under a few names.
func errKind(err error) string {
	switch {
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return "closed"
	}
	return fmt.Sprintf("%T", err)
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}
