package instance

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

var allStatuses = []Status{Starting, Running, Unhealthy, Stopping, Stopped, Failed}

func TestCanTransitionEveryPair(t *testing.T) {
	// The documented lifecycle, written out independently of the code's table.
	allowed := map[Status]map[Status]bool{
		Starting:  {Running: true, Failed: true, Stopping: true, Stopped: true},
		Running:   {Unhealthy: true, Stopping: true, Stopped: true, Failed: true},
		Unhealthy: {Running: true, Stopping: true, Stopped: true, Failed: true},
		Stopping:  {Stopped: true, Failed: true},
		Stopped:   {},
		Failed:    {},
	}
	for _, from := range allStatuses {
		for _, to := range allStatuses {
			want := allowed[from][to]
			t.Run(string(from)+"->"+string(to), func(t *testing.T) {
				if got := CanTransition(from, to); got != want {
					t.Errorf("CanTransition(%q, %q) = %v, want %v", from, to, got, want)
				}
			})
		}
	}
}

func TestCanTransitionUnknownStates(t *testing.T) {
	tests := []struct {
		name     string
		from, to Status
	}{
		{"empty from", "", Running},
		{"empty to", Starting, ""},
		{"unknown from", "exploded", Stopped},
		{"unknown to", Running, "exploded"},
		{"case matters", Starting, "Running"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if CanTransition(tt.from, tt.to) {
				t.Errorf("CanTransition(%q, %q) = true, want false", tt.from, tt.to)
			}
		})
	}
}

func TestStatusPredicates(t *testing.T) {
	tests := []struct {
		name                    string
		status                  Status
		active, terminal, valid bool
	}{
		{"starting", Starting, true, false, true},
		{"running", Running, true, false, true},
		{"unhealthy", Unhealthy, true, false, true},
		{"stopping", Stopping, true, false, true},
		{"stopped", Stopped, false, true, true},
		{"failed", Failed, false, true, true},
		{"empty", "", false, false, false},
		{"not_started is an API word, not a state", "not_started", false, false, false},
		{"upper case", "RUNNING", false, false, false},
		{"padded", " running", false, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.status.Active(); got != tt.active {
				t.Errorf("%q.Active() = %v, want %v", tt.status, got, tt.active)
			}
			if got := tt.status.Terminal(); got != tt.terminal {
				t.Errorf("%q.Terminal() = %v, want %v", tt.status, got, tt.terminal)
			}
			if got := tt.status.Valid(); got != tt.valid {
				t.Errorf("%q.Valid() = %v, want %v", tt.status, got, tt.valid)
			}
		})
	}
}

func TestTerminalStatesHaveNoWayOut(t *testing.T) {
	for _, from := range allStatuses {
		t.Run(string(from), func(t *testing.T) {
			var out []Status
			for _, to := range allStatuses {
				if CanTransition(from, to) {
					out = append(out, to)
				}
			}
			if from.Terminal() && len(out) != 0 {
				t.Errorf("terminal %q can move to %v", from, out)
			}
			if !from.Terminal() && len(out) == 0 {
				t.Errorf("active %q can move nowhere", from)
			}
		})
	}
}

func TestBasePath(t *testing.T) {
	tests := []struct {
		name, id, want string
	}{
		{"simple", "e1", "/env-e1/"},
		{"with dashes", "abc-123", "/env-abc-123/"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := BasePath(tt.id); got != tt.want {
				t.Errorf("BasePath(%q) = %q, want %q", tt.id, got, tt.want)
			}
		})
	}
}

func TestValidEnvironmentID(t *testing.T) {
	tests := []struct {
		name string
		id   string
		want bool
	}{
		{"lower letters and digits", "env123", true},
		{"upper letters", "ENV", true},
		{"one char", "a", true},
		{"one digit", "7", true},
		{"inner dash", "a-b", true},
		{"trailing dash", "ab-", true},
		{"63 chars", strings.Repeat("a", 63), true},
		{"uuid", "0b8e6c1c-3f1e-4c36-9b8e-6c1c3f1e4c36", true},

		{"empty", "", false},
		{"64 chars", strings.Repeat("a", 64), false},
		{"leading dash", "-abc", false},
		{"only dash", "-", false},
		{"dot dot slash", "../x", false},
		{"slash", "a/b", false},
		{"dot", "a.b", false},
		{"underscore", "a_b", false},
		{"inner space", "a b", false},
		{"leading space", " ab", false},
		{"trailing space", "ab ", false},
		{"percent-encoded slash", "%2F", false},
		{"percent-encoded inside", "a%2Fb", false},
		{"trailing newline", "abc\n", false},
		{"inner newline", "ab\ncd", false},
		{"carriage return", "ab\r", false},
		{"tab", "a\tb", false},
		{"nul", "ab\x00", false},
		{"cyrillic a lookalike", "env\u0430", false},
		{"fullwidth letters", "\uff45\uff4e\uff56", false},
		{"unicode hyphen", "a\u2010b", false},
		{"non-breaking hyphen", "a\u2011b", false},
		{"zero width space", "ab\u200b", false},
		{"query", "a?token=x", false},
		{"hash", "a#b", false},
		{"colon", "a:b", false},
		{"backslash", `a\b`, false},
		{"63 bytes ending in unicode", strings.Repeat("a", 61) + "\u00e9", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ValidEnvironmentID(tt.id); got != tt.want {
				t.Errorf("ValidEnvironmentID(%q) = %v, want %v", tt.id, got, tt.want)
			}
		})
	}
}

// proxyRoute reads the id pattern of the proxy's /env-<id>/ routing from
// infra/proxy/lua/route.lua; an id valid here must be routable there and
// the other way round.
func proxyRoute(t *testing.T) *regexp.Regexp {
	conf, err := os.ReadFile("../../infra/proxy/lua/route.lua")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`ENV_PATH = \[\[\^/env-\((.+?)\)\(\.\*\)\$\]\]`).FindSubmatch(conf)
	if m == nil {
		t.Fatal(`route.lua has no ENV_PATH = [[^/env-(<id pattern>)(.*)$]]`)
	}
	return regexp.MustCompile("^" + string(m[1]) + "$")
}

func TestValidEnvironmentIDMatchesProxyRoute(t *testing.T) {
	route := proxyRoute(t)
	var ids []string
	for c := 0; c < 256; c++ {
		b := string([]byte{byte(c)})
		ids = append(ids, b, "a"+b, b+"a", "a"+b+"a", strings.Repeat("a", 62)+b, b+strings.Repeat("a", 62))
	}
	for n := 0; n <= 65; n++ {
		ids = append(ids, strings.Repeat("a", n), strings.Repeat("-", n), "x"+strings.Repeat("-", n))
	}
	for _, id := range ids {
		if got, want := ValidEnvironmentID(id), route.MatchString(id); got != want {
			t.Errorf("ValidEnvironmentID(%q) = %v, proxy route matches = %v", id, got, want)
		}
	}
}
