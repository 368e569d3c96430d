package firewall

import (
	"net"
	"net/netip"
	"testing"

	"github.com/google/nftables"
)

func pinOf(port int, mac, ip string) Pin {
	hw, _ := net.ParseMAC(mac)
	return Pin{Port: port, MAC: hw, IP: netip.MustParseAddr(ip), Jupyter: 8888, Gateway: netip.MustParseAddr("172.17.0.1")}
}

// The pins' table in a namespace of its own: its rules are made once and
// again without doubling, pins come and go idempotently and read back
// whole, the gateway stays guarded, and Teardown leaves nothing.
func TestBridgePins(t *testing.T) {
	ns := netns(t)
	b := NewBridge("EJTEST", ns)
	for range 2 {
		if err := b.Setup(); err != nil {
			t.Fatal(err)
		}
	}
	c, err := nftables.New(ns)
	if err != nil {
		t.Fatal(err)
	}
	for chain, want := range map[*nftables.Chain]int{b.prerouting: 4, b.forward: 1} {
		rules, err := c.GetRules(b.table, chain)
		if err != nil || len(rules) != want {
			t.Fatalf("chain %s has %d rules (%v), want %d", chain.Name, len(rules), err, want)
		}
	}
	a, z := pinOf(7, "02:42:ac:11:00:02", "172.17.0.2"), pinOf(9, "02:42:ac:11:00:03", "172.17.0.3")
	pins := func(want ...Pin) {
		t.Helper()
		got, err := b.Pins()
		if err != nil || len(got) != len(want) {
			t.Fatalf("%d pins (%v), want %d", len(got), err, len(want))
		}
		for i := range want {
			w := want[i]
			w.Gateway = netip.Addr{}
			found := false
			for _, g := range got {
				found = found || (g.Port == w.Port && g.IP == w.IP && g.MAC.String() == w.MAC.String() && g.Jupyter == w.Jupyter)
			}
			if !found {
				t.Fatalf("pins %+v, want %+v among them", got, w)
			}
		}
	}
	for range 2 {
		if err := b.Pin(a); err != nil {
			t.Fatal(err)
		}
	}
	pins(a)
	if err := b.Pin(z); err != nil {
		t.Fatal(err)
	}
	if err := b.Setup(); err != nil { // a restarted sidecar keeps the pins
		t.Fatal(err)
	}
	pins(a, z)
	for range 2 {
		if err := b.Unpin(a); err != nil {
			t.Fatal(err)
		}
	}
	pins(z)
	for range 2 {
		if err := b.UnpinAddr(z.IP); err != nil {
			t.Fatal(err)
		}
	}
	pins()
	// The gateway stays guarded after its pins are gone.
	if els, err := c.GetSetElements(b.guardedIP); err != nil || len(els) != 1 {
		t.Fatalf("guarded addresses: %d (%v), want the gateway alone", len(els), err)
	}
	if err := b.Pin(Pin{Port: 3, IP: netip.MustParseAddr("172.17.0.4"), Jupyter: 8888}); err == nil {
		t.Fatal("a pin without a MAC was taken")
	}
	for range 2 {
		if err := b.Teardown(); err != nil {
			t.Fatal(err)
		}
	}
	if tables, _ := c.ListTablesOfFamily(nftables.TableFamilyBridge); len(tables) != 0 {
		t.Fatalf("%d bridge tables left after Teardown", len(tables))
	}
}

// A forward with a pin pins its container while a forward leads to it:
// removing the instance unpins it, a container with two forwards stays
// pinned until the last goes, and a restarted sidecar's Setup drops pins no
// forward leads to.
func TestForwardsPinTheirContainers(t *testing.T) {
	fw, _, _ := newFirewall(t, "EJPIN")
	a := pinOf(7, "02:42:ac:11:00:02", "172.17.0.2")
	one, two := fwd("ji-1", 20001, "172.17.0.2"), fwd("ji-2", 20002, "172.17.0.2")
	one.Pin, two.Pin = &a, &a
	pinned := func(want int) {
		t.Helper()
		if pins, err := fw.bridge.Pins(); err != nil || len(pins) != want {
			t.Fatalf("%d pins (%v), want %d", len(pins), err, want)
		}
	}
	for _, f := range []Forward{one, two} {
		if err := fw.Add(f); err != nil {
			t.Fatal(err)
		}
	}
	pinned(1)
	if got, _ := fw.Forwards(); got["ji-1"].Pin != nil {
		t.Fatal("a forward read back carries a pin")
	}
	if err := fw.RemoveInstance("ji-1"); err != nil {
		t.Fatal(err)
	}
	pinned(1)
	if err := fw.Remove(two); err != nil {
		t.Fatal(err)
	}
	pinned(0)
	// A pin left by a sidecar that died before removing its forward's.
	if err := fw.bridge.Pin(a); err != nil {
		t.Fatal(err)
	}
	if err := fw.Setup(); err != nil {
		t.Fatal(err)
	}
	pinned(0)
	// A pin that cannot be made (no bridge port known) fails the forward.
	bad := fwd("ji-3", 20003, "172.17.0.3")
	bad.Pin = &Pin{MAC: a.MAC, IP: netip.MustParseAddr("172.17.0.3"), Jupyter: 8888, Gateway: a.Gateway}
	if err := fw.Add(bad); err == nil {
		t.Fatal("a forward whose pin has no bridge port was added without error")
	}
}
