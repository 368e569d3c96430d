package main

import (
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/envjupyter/envjupyter/shared/config"
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

func TestPipEnv(t *testing.T) {
	tests := []struct {
		name, list string
		want       []string
		ok         bool
	}{
		{"none", "", nil, true},
		{"a wheel directory", "PIP_NO_INDEX=1, PIP_FIND_LINKS=/opt/w", []string{"PIP_NO_INDEX=1", "PIP_FIND_LINKS=/opt/w"}, true},
		{"a mirror", "PIP_INDEX_URL=https://mirror.internal/simple", []string{"PIP_INDEX_URL=https://mirror.internal/simple"}, true},
		{"a mirror with credentials", "PIP_INDEX_URL=https://u:secret@mirror.internal/simple", nil, false},
		{"extra URLs, one with credentials", "PIP_EXTRA_INDEX_URL=https://a/simple https://tok@b/simple", nil, false},
		{"not pip's", "HTTP_PROXY=http://p:3128", nil, false},
		{"no value", "PIP_NO_INDEX", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := pipEnv(tt.list)
			if (err == nil) != tt.ok || !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("pipEnv(%q) = %v, %v; want %v (ok %v)", tt.list, got, err, tt.want, tt.ok)
			}
			if err != nil && strings.Contains(err.Error(), "secret") {
				t.Fatalf("the error shows the value: %v", err)
			}
		})
	}
}

// The Redis password comes from a file only its owner may read; errors
// never hold the password.
func TestSecretFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		return path
	}
	if got, err := secretFile(""); err != nil || got != "" {
		t.Errorf("no file: %q %v, want no password", got, err)
	}
	if got, err := secretFile(write("ok", "s3cret-pw\n", 0o600)); err != nil || got != "s3cret-pw" {
		t.Errorf("a private file: %q %v", got, err)
	}
	for name, path := range map[string]string{
		"readable by others": write("open", "s3cret-pw\n", 0o644),
		"readable by group":  write("group", "s3cret-pw\n", 0o640),
		"empty":              write("empty", " \n", 0o600),
		"missing":            filepath.Join(dir, "none"),
	} {
		_, err := secretFile(path)
		if err == nil {
			t.Errorf("%s: accepted", name)
		} else if strings.Contains(err.Error(), "s3cret") {
			t.Errorf("%s: the error holds the password: %v", name, err)
		}
	}
}

func TestHostPorts(t *testing.T) {
	got, err := hostPorts("K", " 127.0.0.1:26379,10.0.0.2:26380 ,,redis-sentinel-1.internal:26379")
	if want := []string{"127.0.0.1:26379", "10.0.0.2:26380", "redis-sentinel-1.internal:26379"}; err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("hostPorts = %v, %v; want %v", got, err, want)
	}
	if got, err := hostPorts("K", ""); err != nil || got != nil {
		t.Fatalf("no sentinels: %v, %v", got, err)
	}
	for _, bad := range []string{"127.0.0.1", "127.0.0.1:0", "127.0.0.1:65536", ":26379", "127.0.0.1:x"} {
		if _, err := hostPorts("K", bad); err == nil || !strings.Contains(err.Error(), "K:") {
			t.Errorf("hostPorts(%q): %v, want an error naming the setting", bad, err)
		}
	}
}

// The sidecar's own GC goal applies only when the host sets no GOGC.
func TestTuneGC(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	t.Setenv("GOGC", "")
	tuneGC()
	if got := debug.SetGCPercent(100); got != gcPercent {
		t.Fatalf("GOGC unset: GC percent %d, want %d", got, gcPercent)
	}
	t.Setenv("GOGC", "200")
	debug.SetGCPercent(200) // as the runtime does with GOGC=200 at start
	tuneGC()
	if got := debug.SetGCPercent(100); got != 200 {
		t.Fatalf("GOGC=200: GC percent %d, want 200 (the host's setting)", got)
	}
}

// A host whose routes would outlive the product's port cool-down does not
// start: a route left behind could lead to the next instance on its port.
func TestFitsProduct(t *testing.T) {
	s := settings{RouteTTL: 5 * time.Minute}
	if err := s.fitsProduct(config.Config{PortCooldown: 330 * time.Second}); err != nil {
		t.Fatalf("the defaults do not fit: %v", err)
	}
	for _, cooldown := range []time.Duration{0, 5 * time.Minute, time.Minute} {
		if err := s.fitsProduct(config.Config{PortCooldown: cooldown}); err == nil {
			t.Errorf("a route TTL of 5m fits a port cool-down of %s", cooldown)
		}
	}
}
