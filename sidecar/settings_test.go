package main

import (
	"net/netip"
	"reflect"
	"testing"
)

func TestSources(t *testing.T) {
	host := netip.MustParsePrefix("10.0.1.23/32")
	tests := []struct {
		name, cidrs, advertise string
		want                   []netip.Prefix
		ok                     bool
	}{
		{"the host's own address", "", "10.0.1.23", []netip.Prefix{host}, true},
		{"proxies, masked", "10.0.5.7/24, 192.0.2.0/28", "10.0.1.23", []netip.Prefix{host, netip.MustParsePrefix("10.0.5.0/24"), netip.MustParsePrefix("192.0.2.0/28")}, true},
		{"loopback is refused (it needs route_localnet)", "", "127.0.0.1", nil, false},
		{"no address", "", "", nil, false},
		{"unspecified", "", "0.0.0.0", nil, false},
		{"not a CIDR", "10.0.5.7", "10.0.1.23", nil, false},
		{"IPv6", "fd00::/8", "10.0.1.23", nil, false},
		{"shell", "10.0.0.0/8;reboot", "10.0.1.23", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := sources(tt.cidrs, tt.advertise)
			if (err == nil) != tt.ok || !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("sources(%q, %q) = %v, %v; want %v (ok %v)", tt.cidrs, tt.advertise, got, err, tt.want, tt.ok)
			}
		})
	}
}

func TestLastLine(t *testing.T) {
	pip := "Looking in links: /opt/w\nERROR: Could not find a version that satisfies the requirement x==9.9\nERROR: No matching distribution found for x==9.9\n\n"
	if got := lastLine(pip); got != "ERROR: No matching distribution found for x==9.9" {
		t.Fatalf("lastLine = %q", got)
	}
	if got := lastLine("  \n"); got != "no output" {
		t.Fatalf("lastLine of nothing = %q", got)
	}
}
