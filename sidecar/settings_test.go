package main

import (
	"net/netip"
	"reflect"
	"testing"
)

func TestSources(t *testing.T) {
	lo := netip.MustParsePrefix("127.0.0.0/8")
	tests := []struct {
		name, cidrs, advertise string
		want                   []netip.Prefix
		ok                     bool
	}{
		{"loopback only", "", "127.0.0.1", []netip.Prefix{lo}, true},
		{"the host's own address", "", "10.0.1.23", []netip.Prefix{lo, netip.MustParsePrefix("10.0.1.23/32")}, true},
		{"proxies, masked", "10.0.5.7/24, 192.0.2.0/28", "127.0.0.1", []netip.Prefix{lo, netip.MustParsePrefix("10.0.5.0/24"), netip.MustParsePrefix("192.0.2.0/28")}, true},
		{"not a CIDR", "10.0.5.7", "127.0.0.1", nil, false},
		{"IPv6", "fd00::/8", "127.0.0.1", nil, false},
		{"shell", "10.0.0.0/8;reboot", "127.0.0.1", nil, false},
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
