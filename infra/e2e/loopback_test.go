package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
)

// A throwaway namespace of the test's own whose host side has
// route_localnet=1: where the probe must arrive (benchmarking range, which
// no real network here uses).
const (
	localnetHostSide = "198.18.87.1"
	localnetNSSide   = "198.18.87.2"
)

// A customer with NET_RAW (a Docker default) in their container sends
// hand-made frames to 127.0.0.1 through the bridge (CVE-2020-8558): nothing
// reaches the host's loopback services (the stack's Redis, the sidecar's
// status port), and no interface has route_localnet=1 while an instance
// runs. The same probe into a namespace with route_localnet=1 does arrive,
// so the probe is real.
func TestNoPathToHostLoopback(t *testing.T) {
	probe := buildTestBinary(t, "rawprobe")
	ports := []string{strconv.Itoa(stack.Opts.RedisPort), strconv.Itoa(stack.Opts.StatusPort)}

	// The control: the same probe, into a namespace with route_localnet=1.
	netns(t, "ejt-lnet", localnetHostSide, localnetNSSide)
	if err := os.WriteFile("/proc/sys/net/ipv4/conf/ejt-lnet-h/route_localnet", []byte("1"), 0o644); err != nil {
		t.Fatal(err)
	}
	arrived := countArrivals(t, "ejt-lnet-h", "127.0.0.0/8", ports)
	eventually(t, 10*time.Second, func() error {
		// Sent again until it arrives: a new link drops what it is given
		// until it is up.
		if out, err := exec.Command("ip", "netns", "exec", "ejt-lnet", probe, "ejt-lnet-n", macOf(t, "ejt-lnet-h"), "127.0.0.1", ports[0], ports[1]).CombinedOutput(); err != nil {
			t.Fatalf("probe in the control namespace: %v\n%s", err, out)
		}
		if n := arrived(); n == 0 {
			return fmt.Errorf("the probe did not arrive where route_localnet=1: it proves nothing")
		}
		return nil
	})

	// The real thing: from a customer's container whose Jupyter runs.
	env, _ := running(t)
	stopAtEnd(t, customerA, env)
	e, err := stack.Store.Environment(context.Background(), env)
	if err != nil {
		t.Fatal(err)
	}
	bridge := interfaceWithAddr(t, stack.AdvertiseAddr())
	toLoopback := countArrivals(t, bridge, "127.0.0.0/8", ports)
	// A marker sent after the probes, to the bridge's own address, which
	// arrives: once it has, the probes before it have been judged too.
	markerPort := strconv.Itoa(stack.Opts.StatusPort + 1)
	marker := countArrivals(t, bridge, stack.AdvertiseAddr()+"/32", []string{markerPort})
	copyInto(t, e.ContainerID, probe, "/tmp/rawprobe")
	hop := macOf(t, bridge)
	execInContainer(t, e.ContainerID, "/tmp/rawprobe", "eth0", hop, "127.0.0.1", ports[0], ports[1])
	eventually(t, 10*time.Second, func() error {
		execInContainer(t, e.ContainerID, "/tmp/rawprobe", "eth0", hop, stack.AdvertiseAddr(), markerPort)
		if marker() == 0 {
			return fmt.Errorf("the marker frame has not arrived")
		}
		return nil
	})
	if n := toLoopback(); n != 0 {
		t.Fatalf("%d frames from the container reached the host's 127.0.0.1 (ports %v)", n, ports)
	}
	files, _ := filepath.Glob("/proc/sys/net/ipv4/conf/*/route_localnet")
	for _, f := range files {
		if strings.Contains(f, "/ejt-lnet-h/") {
			continue // the control's own
		}
		if b, err := os.ReadFile(f); err != nil || strings.TrimSpace(string(b)) != "0" {
			t.Errorf("%s = %q (%v), want 0", f, b, err)
		}
	}
}

// stopAtEnd stops the environment's JupyterLab when the test ends, however
// it ends, so that the customer's limit of active instances is free for the
// next tests.
func stopAtEnd(t *testing.T, customer, env string) {
	t.Cleanup(func() {
		if _, b := status(t, token(customer), env); b.Status == "starting" || b.Status == "running" || b.Status == "unhealthy" {
			stop(t, token(customer), env)
			waitStatus(t, token(customer), env, "stopped", 60*time.Second)
		}
	})
}

// countArrivals adds a rule that counts TCP packets coming in on iface to
// dst on the ports and delivered to this host (a martian is dropped before
// it); it returns how many have arrived.
func countArrivals(t *testing.T, iface, dst string, ports []string) func() int {
	t.Helper()
	comment := "ejtest-arrivals-" + randomID()[:8]
	spec := []string{"INPUT", "-i", iface, "-d", dst, "-p", "tcp", "-m", "multiport", "--dports", strings.Join(ports, ","), "-m", "comment", "--comment", comment}
	if out, err := exec.Command("iptables", append([]string{"-w", "-I"}, spec...)...).CombinedOutput(); err != nil {
		t.Fatalf("adding a counting rule: %v\n%s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("iptables", append([]string{"-w", "-D"}, spec...)...).Run() })
	return func() int {
		out, err := exec.Command("iptables", "-w", "-L", "INPUT", "-v", "-x", "-n").Output()
		if err != nil {
			t.Fatalf("listing INPUT: %v", err)
		}
		for _, line := range strings.Split(string(out), "\n") {
			if strings.Contains(line, comment) {
				n, _ := strconv.Atoi(strings.Fields(line)[0])
				return n
			}
		}
		t.Fatalf("the counting rule %s is gone", comment)
		return 0
	}
}

func macOf(t *testing.T, iface string) string {
	t.Helper()
	i, err := net.InterfaceByName(iface)
	if err != nil {
		t.Fatal(err)
	}
	return i.HardwareAddr.String()
}

// interfaceWithAddr names the interface that has the address.
func interfaceWithAddr(t *testing.T, addr string) string {
	t.Helper()
	ifaces, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range ifaces {
		addrs, _ := i.Addrs()
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.String() == addr {
				return i.Name
			}
		}
	}
	t.Fatalf("no interface has %s", addr)
	return ""
}

// copyInto puts an executable file into a container.
func copyInto(t *testing.T, containerID, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	_ = tw.WriteHeader(&tar.Header{Name: filepath.Base(dst), Mode: 0o755, Size: int64(len(b)), ModTime: time.Now()})
	_, _ = tw.Write(b)
	_ = tw.Close()
	if err := stack.Docker.CopyToContainer(context.Background(), containerID, filepath.Dir(dst), &buf, container.CopyToContainerOptions{}); err != nil {
		t.Fatalf("copying %s into %s: %v", src, containerID, err)
	}
}

// execInContainer runs argv in the container as root, as its customer
// could, and fails the test if it fails.
func execInContainer(t *testing.T, containerID string, argv ...string) {
	t.Helper()
	execOutput(t, containerID, argv...)
}
