package config

import (
	"context"
	"errors"
	"fmt"
	"os"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"
)

func TestParsePortRange(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    PortRange
		wantErr bool
	}{
		{name: "default", in: "20000-20999", want: PortRange{20000, 20999}},
		{name: "surrounding spaces", in: "  20000-20999\n", want: PortRange{20000, 20999}},
		{name: "single port", in: "30000-30000", want: PortRange{30000, 30000}},
		{name: "widest", in: "1024-65535", want: PortRange{1024, 65535}},

		{name: "reversed", in: "20999-20000", wantErr: true},
		{name: "privileged first", in: "1023-2000", wantErr: true},
		{name: "zero first", in: "0-2000", wantErr: true},
		{name: "last above 65535", in: "20000-65536", wantErr: true},
		{name: "empty", in: "", wantErr: true},
		{name: "one number", in: "20000", wantErr: true},
		{name: "missing last", in: "20000-", wantErr: true},
		{name: "missing first", in: "-20000", wantErr: true},
		{name: "three parts", in: "20000-20100-20200", wantErr: true},
		{name: "words", in: "low-high", wantErr: true},
		{name: "hex", in: "0x5000-0x6000", wantErr: true},
		{name: "colon separator", in: "20000:20999", wantErr: true},
		{name: "negative", in: "-1--2", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParsePortRange(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("ParsePortRange(%q) error = %v, want error %v", tt.in, err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("ParsePortRange(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
		})
	}
}

func TestPortRangeSize(t *testing.T) {
	tests := []struct {
		name string
		r    PortRange
		want int
	}{
		{"one", PortRange{20000, 20000}, 1},
		{"thousand", PortRange{20000, 20999}, 1000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.r.Size(); got != tt.want {
				t.Errorf("Size() = %d, want %d", got, tt.want)
			}
		})
	}
}

// fakeSSM serves GetParametersByPath from pages of parameters; page i is
// returned for NextToken "" (i=0) or "page<i>".
type fakeSSM struct {
	pages [][]ssmtypes.Parameter
	err   error
	calls []ssm.GetParametersByPathInput
}

func (f *fakeSSM) GetParametersByPath(_ context.Context, in *ssm.GetParametersByPathInput, _ ...func(*ssm.Options)) (*ssm.GetParametersByPathOutput, error) {
	f.calls = append(f.calls, *in)
	if f.err != nil {
		return nil, f.err
	}
	i := 0
	if tok := aws.ToString(in.NextToken); tok != "" {
		n, err := strconv.Atoi(strings.TrimPrefix(tok, "page"))
		if err != nil || n <= 0 || n >= len(f.pages) {
			return nil, fmt.Errorf("fake: bad token %q", tok)
		}
		i = n
	}
	if len(f.pages) == 0 {
		return &ssm.GetParametersByPathOutput{}, nil
	}
	out := &ssm.GetParametersByPathOutput{Parameters: f.pages[i]}
	if i+1 < len(f.pages) {
		out.NextToken = aws.String(fmt.Sprintf("page%d", i+1))
	}
	return out, nil
}

func (f *fakeSSM) GetParameter(context.Context, *ssm.GetParameterInput, ...func(*ssm.Options)) (*ssm.GetParameterOutput, error) {
	return nil, errors.New("fake: GetParameter not expected")
}

func param(name, value string) ssmtypes.Parameter {
	return ssmtypes.Parameter{Name: aws.String(name), Value: aws.String(value)}
}

var overrideVars = []string{
	"ENVJUPYTER_SSM_PREFIX",
	"ENVJUPYTER_PUBLIC_BASE_URL",
	"ENVJUPYTER_PORT_RANGE",
	"ENVJUPYTER_START_TIMEOUT",
	"ENVJUPYTER_IDLE_TIMEOUT",
	"ENVJUPYTER_HOST_SILENCE",
	"ENVJUPYTER_STOP_TIMEOUT",
	"ENVJUPYTER_ALLOWED_PLUGINS",
	"ENVJUPYTER_REPORTS_QUEUE_URL",
}

// clearEnv unsets every variable config reads, restoring them after the test.
func clearEnv(t *testing.T) {
	t.Helper()
	for _, k := range overrideVars {
		t.Setenv(k, "") // registers the restore
		os.Unsetenv(k)
	}
}

func TestLoad(t *testing.T) {
	full := [][]ssmtypes.Parameter{
		{
			param("/envjupyter/public_base_url", "https://jupyter.example.com/"),
			param("/envjupyter/port_range", "21000-21009"),
			param("/envjupyter/hosts/h1/command_queue_url", "https://sqs/h1"),
		},
		{
			param("/envjupyter/start_timeout_seconds", "90"),
			param("/envjupyter/idle_timeout_seconds", "3600"),
			param("/envjupyter/host_silence_seconds", "600"),
			param("/envjupyter/stop_timeout_seconds", "45"),
		},
		{
			param("/envjupyter/allowed_plugins", `{"jupyterlab-git":"jupyterlab-git==0.50.1"}`),
			param("/envjupyter/reports_queue_url", "https://sqs/reports"),
		},
	}
	tests := []struct {
		name      string
		pages     [][]ssmtypes.Parameter
		env       map[string]string
		want      Config
		wantPath  string
		wantCalls int
	}{
		{
			name:  "all from SSM over three pages",
			pages: full,
			want: Config{
				PublicBaseURL:   "https://jupyter.example.com",
				Ports:           PortRange{21000, 21009},
				StartTimeout:    90 * time.Second,
				IdleTimeout:     time.Hour,
				HostSilence:     10 * time.Minute,
				StopTimeout:     45 * time.Second,
				PortCooldown:    330 * time.Second,
				AllowedPlugins:  map[string]string{"jupyterlab-git": "jupyterlab-git==0.50.1"},
				ReportsQueueURL: "https://sqs/reports",
			},
			wantPath:  "/envjupyter/",
			wantCalls: 3,
		},
		{
			name:  "defaults",
			pages: [][]ssmtypes.Parameter{{param("/envjupyter/public_base_url", "http://localhost:8080")}},
			want: Config{
				PublicBaseURL:  "http://localhost:8080",
				Ports:          PortRange{20000, 20999},
				StartTimeout:   120 * time.Second,
				IdleTimeout:    0,
				HostSilence:    300 * time.Second,
				StopTimeout:    120 * time.Second,
				PortCooldown:   330 * time.Second,
				AllowedPlugins: map[string]string{},
			},
			wantPath:  "/envjupyter/",
			wantCalls: 1,
		},
		{
			name:  "environment overrides SSM",
			pages: full,
			env: map[string]string{
				"ENVJUPYTER_PUBLIC_BASE_URL":   "http://127.0.0.1:8080",
				"ENVJUPYTER_PORT_RANGE":        "30000-30001",
				"ENVJUPYTER_START_TIMEOUT":     "5",
				"ENVJUPYTER_IDLE_TIMEOUT":      "0",
				"ENVJUPYTER_HOST_SILENCE":      "0",
				"ENVJUPYTER_STOP_TIMEOUT":      "7",
				"ENVJUPYTER_ALLOWED_PLUGINS":   `{"a":"a==1","b":"b==2"}`,
				"ENVJUPYTER_REPORTS_QUEUE_URL": "http://local/reports",
			},
			want: Config{
				PublicBaseURL:   "http://127.0.0.1:8080",
				Ports:           PortRange{30000, 30001},
				StartTimeout:    5 * time.Second,
				IdleTimeout:     0,
				HostSilence:     0,
				StopTimeout:     7 * time.Second,
				PortCooldown:    330 * time.Second,
				AllowedPlugins:  map[string]string{"a": "a==1", "b": "b==2"},
				ReportsQueueURL: "http://local/reports",
			},
			wantPath:  "/envjupyter/",
			wantCalls: 3,
		},
		{
			name:  "environment only, no SSM parameters",
			pages: nil,
			env:   map[string]string{"ENVJUPYTER_PUBLIC_BASE_URL": "https://j.example.org"},
			want: Config{
				PublicBaseURL:  "https://j.example.org",
				Ports:          PortRange{20000, 20999},
				StartTimeout:   120 * time.Second,
				HostSilence:    300 * time.Second,
				StopTimeout:    120 * time.Second,
				PortCooldown:   330 * time.Second,
				AllowedPlugins: map[string]string{},
			},
			wantPath:  "/envjupyter/",
			wantCalls: 1,
		},
		{
			name: "custom prefix with trailing slash",
			pages: [][]ssmtypes.Parameter{{
				param("/stage/ej/public_base_url", "https://stage.example.com"),
				param("/stage/ej/port_range", "40000-40099"),
			}},
			env: map[string]string{"ENVJUPYTER_SSM_PREFIX": "/stage/ej/"},
			want: Config{
				PublicBaseURL:  "https://stage.example.com",
				Ports:          PortRange{40000, 40099},
				StartTimeout:   120 * time.Second,
				HostSilence:    300 * time.Second,
				StopTimeout:    120 * time.Second,
				PortCooldown:   330 * time.Second,
				AllowedPlugins: map[string]string{},
			},
			wantPath:  "/stage/ej/",
			wantCalls: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clearEnv(t)
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			fake := &fakeSSM{pages: tt.pages}
			got, err := Load(context.Background(), fake)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			want := tt.want
			// The access-link settings keep their defaults in these cases.
			want.LinkTTL, want.AccessMode, want.EnvOrigin = 5*time.Minute, AccessToken, OriginHost
			if !reflect.DeepEqual(got, want) {
				t.Errorf("Load = %+v\nwant   %+v", got, want)
			}
			if len(fake.calls) != tt.wantCalls {
				t.Fatalf("GetParametersByPath called %d times, want %d", len(fake.calls), tt.wantCalls)
			}
			for i, c := range fake.calls {
				if aws.ToString(c.Path) != tt.wantPath {
					t.Errorf("call %d: Path = %q, want %q", i, aws.ToString(c.Path), tt.wantPath)
				}
				if !aws.ToBool(c.WithDecryption) {
					t.Errorf("call %d: WithDecryption not set", i)
				}
				wantToken := ""
				if i > 0 {
					wantToken = fmt.Sprintf("page%d", i)
				}
				if aws.ToString(c.NextToken) != wantToken {
					t.Errorf("call %d: NextToken = %q, want %q", i, aws.ToString(c.NextToken), wantToken)
				}
			}
		})
	}
}

func TestLoadErrors(t *testing.T) {
	base := func(extra ...ssmtypes.Parameter) [][]ssmtypes.Parameter {
		return [][]ssmtypes.Parameter{append([]ssmtypes.Parameter{param("/envjupyter/public_base_url", "https://j.example.com")}, extra...)}
	}
	tests := []struct {
		name    string
		pages   [][]ssmtypes.Parameter
		env     map[string]string
		wantSub string // a word the error must name
	}{
		{name: "no public_base_url", pages: nil, wantSub: "public_base_url"},
		{name: "empty public_base_url from env", pages: base(), env: map[string]string{"ENVJUPYTER_PUBLIC_BASE_URL": ""}, wantSub: "public_base_url"},
		{name: "public_base_url without scheme", pages: [][]ssmtypes.Parameter{{param("/envjupyter/public_base_url", "jupyter.example.com")}}, wantSub: "public_base_url"},
		{name: "public_base_url ftp", pages: [][]ssmtypes.Parameter{{param("/envjupyter/public_base_url", "ftp://jupyter.example.com")}}, wantSub: "public_base_url"},
		{name: "bad plugins JSON", pages: base(param("/envjupyter/allowed_plugins", `{"a":`)), wantSub: "allowed_plugins"},
		{name: "plugins as list", pages: base(param("/envjupyter/allowed_plugins", `["a"]`)), wantSub: "allowed_plugins"},
		{name: "plugins with non-string value", pages: base(param("/envjupyter/allowed_plugins", `{"a":1}`)), wantSub: "allowed_plugins"},
		{name: "negative start timeout", pages: base(param("/envjupyter/start_timeout_seconds", "-1")), wantSub: "start_timeout_seconds"},
		{name: "fractional start timeout", pages: base(param("/envjupyter/start_timeout_seconds", "1.5")), wantSub: "start_timeout_seconds"},
		{name: "negative idle timeout from env", pages: base(), env: map[string]string{"ENVJUPYTER_IDLE_TIMEOUT": "-30"}, wantSub: "idle_timeout_seconds"},
		{name: "idle timeout with unit", pages: base(param("/envjupyter/idle_timeout_seconds", "30s")), wantSub: "idle_timeout_seconds"},
		{name: "negative host silence", pages: base(param("/envjupyter/host_silence_seconds", "-5")), wantSub: "host_silence_seconds"},
		{name: "bad stop timeout from env", pages: base(), env: map[string]string{"ENVJUPYTER_STOP_TIMEOUT": "2m"}, wantSub: "stop_timeout_seconds"},
		{name: "empty start timeout from env", pages: base(), env: map[string]string{"ENVJUPYTER_START_TIMEOUT": ""}, wantSub: "start_timeout_seconds"},
		{name: "reversed port range", pages: base(param("/envjupyter/port_range", "21000-20000")), wantSub: "port range"},
		{name: "garbage port range from env", pages: base(), env: map[string]string{"ENVJUPYTER_PORT_RANGE": "many"}, wantSub: "port range"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clearEnv(t)
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			got, err := Load(context.Background(), &fakeSSM{pages: tt.pages})
			if err == nil {
				t.Fatalf("Load = %+v, want an error", got)
			}
			if !strings.Contains(err.Error(), tt.wantSub) {
				t.Errorf("Load error = %q, want it to name %q", err, tt.wantSub)
			}
			if !reflect.DeepEqual(got, Config{}) {
				t.Errorf("Load returned %+v with its error, want the zero Config", got)
			}
		})
	}
}

func TestLoadSSMError(t *testing.T) {
	clearEnv(t)
	t.Setenv("ENVJUPYTER_PUBLIC_BASE_URL", "https://j.example.com")
	boom := errors.New("AccessDeniedException")
	_, err := Load(context.Background(), &fakeSSM{err: boom})
	if !errors.Is(err, boom) {
		t.Fatalf("Load error = %v, want it to wrap %v", err, boom)
	}
	if !strings.Contains(err.Error(), "/envjupyter") {
		t.Errorf("Load error = %q, want it to name the prefix", err)
	}
}

func TestLoadDoesNotChangeDefaults(t *testing.T) {
	clearEnv(t)
	before := map[string]string{}
	for k, v := range Defaults {
		before[k] = v
	}
	_, err := Load(context.Background(), &fakeSSM{pages: [][]ssmtypes.Parameter{{
		param("/envjupyter/public_base_url", "https://j.example.com"),
		param("/envjupyter/port_range", "30000-30010"),
	}}})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if !reflect.DeepEqual(Defaults, before) {
		t.Errorf("Defaults changed to %v, want %v", Defaults, before)
	}
}

func TestPrefixAndHostQueueParameter(t *testing.T) {
	tests := []struct {
		name       string
		env        string
		set        bool
		wantPrefix string
		wantHost   string
	}{
		{name: "default", wantPrefix: "/envjupyter", wantHost: "/envjupyter/hosts/h1/command_queue_url"},
		{name: "custom", env: "/dev/ej", set: true, wantPrefix: "/dev/ej", wantHost: "/dev/ej/hosts/h1/command_queue_url"},
		{name: "custom trailing slash", env: "/dev/ej/", set: true, wantPrefix: "/dev/ej", wantHost: "/dev/ej/hosts/h1/command_queue_url"},
		{name: "empty means default", env: "", set: true, wantPrefix: "/envjupyter", wantHost: "/envjupyter/hosts/h1/command_queue_url"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clearEnv(t)
			if tt.set {
				t.Setenv("ENVJUPYTER_SSM_PREFIX", tt.env)
			}
			if got := Prefix(); got != tt.wantPrefix {
				t.Errorf("Prefix() = %q, want %q", got, tt.wantPrefix)
			}
			if got := HostQueueParameter("h1"); got != tt.wantHost {
				t.Errorf("HostQueueParameter(h1) = %q, want %q", got, tt.wantHost)
			}
		})
	}
}

// Each environment gets an origin of its own unless the path mode is chosen.
func TestEnvironmentURL(t *testing.T) {
	host := Config{PublicBaseURL: "https://jupyter.example.com:8443", EnvOrigin: OriginHost}
	if got, want := host.EnvironmentURL("Ab-1"), "https://env-ab-1.jupyter.example.com:8443/env-Ab-1/"; got != want {
		t.Errorf("host mode: %s, want %s", got, want)
	}
	path := Config{PublicBaseURL: "https://jupyter.example.com", EnvOrigin: OriginPath}
	if got, want := path.EnvironmentURL("e1"), "https://jupyter.example.com/env-e1/"; got != want {
		t.Errorf("path mode: %s, want %s", got, want)
	}
	for _, bad := range []map[string]string{
		{"public_base_url": "https://j.example.com", "env_origin": "subdomain"},
		{"public_base_url": "https://j.example.com/prefix"},
	} {
		v := map[string]string{}
		for k, d := range Defaults {
			v[k] = d
		}
		for k, x := range bad {
			v[k] = x
		}
		if _, err := parse(v); err == nil {
			t.Errorf("parse accepted %v", bad)
		}
	}
}
