package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// A neighbour on the bridge (a customer's container with Docker's default
// NET_RAW) announces for seconds that a running instance's address is at
// its own MAC, and sends frames as that instance's MAC; meanwhile the
// proxy's requests (with the instance's token) and the sidecar's probes go
// to the instance. The neighbour captures none of them, the host keeps the
// instance's MAC for its address, and every request through the proxy is
// answered. (Without the layer-2 pins, the host takes the announcement and
// the neighbour receives the requests and probes, tokens and all.)
func TestNeighbourCannotTakeOverAnInstanceAtLayer2(t *testing.T) {
	spoof := buildTestBinary(t, "l2spoof")
	env, in := running(t)
	stopAtEnd(t, customerA, env)
	base, jtoken := accessBase(t, in.AccessURL), accessToken(t, in.AccessURL)
	victimIP, victimMAC := containerAddr(t, containerOf(t, env))
	neighbour := containerOf(t, newEnvironment(t, customerB))
	_, neighbourMAC := containerAddr(t, neighbour)
	copyInto(t, neighbour, spoof, "/tmp/l2spoof")

	var asked, answered atomic.Int64
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-done:
				return
			case <-time.After(100 * time.Millisecond):
			}
			asked.Add(1)
			req, _ := http.NewRequest(http.MethodGet, base+"api/status", nil)
			req.Header = tokenHeader(jtoken)
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			if resp, err := http.DefaultClient.Do(req.WithContext(ctx)); err == nil {
				if resp.StatusCode == http.StatusOK {
					answered.Add(1)
				}
				resp.Body.Close()
			}
			cancel()
		}
	}()
	out := execOutput(t, neighbour, "/tmp/l2spoof", "eth0", victimIP, victimMAC, "6")
	close(done)
	t.Logf("the neighbour: %s; requests through the proxy meanwhile: %d answered of %d", strings.TrimSpace(out), answered.Load(), asked.Load())
	if !strings.HasPrefix(out, "captured 0 frames") {
		t.Errorf("the neighbour %s", strings.TrimSpace(out))
	}
	neigh, _ := exec.Command("ip", "neigh", "show", "to", victimIP).CombinedOutput()
	if strings.Contains(strings.ToLower(string(neigh)), strings.ToLower(neighbourMAC)) {
		t.Errorf("the host took the neighbour's MAC for the instance's address: %s", neigh)
	}
	if asked.Load() < 20 || answered.Load() != asked.Load() {
		t.Errorf("%d of %d requests through the proxy answered during the spoofing, want all", answered.Load(), asked.Load())
	}
}

// A neighbour connects straight to a running instance's Jupyter port over
// the bridge: it gets nowhere, with bridged frames handed to iptables
// (br_netfilter, bridge-nf-call-iptables=1) and without (=0), for the
// sidecar's bridge table stops it at layer 2 either way.
func TestNeighbourCannotReachJupyterOverTheBridge(t *testing.T) {
	env, _ := running(t)
	stopAtEnd(t, customerA, env)
	victimIP, _ := containerAddr(t, containerOf(t, env))
	neighbour := containerOf(t, newEnvironment(t, customerB))
	const knob = "/proc/sys/net/bridge/bridge-nf-call-iptables"
	if _, err := os.Stat(knob); err != nil {
		if out, err := exec.Command("modprobe", "br_netfilter").CombinedOutput(); err != nil {
			t.Fatalf("loading br_netfilter: %v %s", err, out)
		}
	}
	was, err := os.ReadFile(knob)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.WriteFile(knob, was, 0o644) })
	connect := fmt.Sprintf("import socket\ntry:\n socket.create_connection(('%s', 8888), 3)\n print('connected')\nexcept OSError as e:\n print('refused:', e)", victimIP)
	for _, v := range []string{"1", "0"} {
		if err := os.WriteFile(knob, []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
		if out := execOutput(t, neighbour, "python3", "-c", connect); !strings.HasPrefix(out, "refused") {
			t.Errorf("bridge-nf-call-iptables=%s: the neighbour's connection to the instance's Jupyter: %s", v, strings.TrimSpace(out))
		}
	}
}

// containerAddr is a container's IPv4 address and MAC on Docker's bridge.
func containerAddr(t *testing.T, cid string) (ip, mac string) {
	t.Helper()
	ins, err := stack.Docker.ContainerInspect(context.Background(), cid)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range ins.NetworkSettings.Networks {
		if n.IPAddress != "" {
			return n.IPAddress, n.MacAddress
		}
	}
	t.Fatalf("container %s has no address", cid)
	return "", ""
}
