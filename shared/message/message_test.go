package message

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/envjupyter/envjupyter/shared/instance"
)

const secretToken = "s3cr3t-9f8e7d6c5b4a"

var sentAt = time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)

// validStart is a start command in wire form; tests replace parts of it.
const validStart = `{"v":1,"type":"start","instance_id":"ji-1","environment_id":"e1","container_id":"c1",` +
	`"host_port":20001,"internal_port":8888,"token":"` + secretToken + `","base_url":"/env-e1/",` +
	`"plugins":["git"],"sent_at":"2025-03-04T05:06:07Z"}`

const validStop = `{"v":1,"type":"stop","instance_id":"ji-1","environment_id":"e1","container_id":"c1",` +
	`"host_port":20001,"reason":"user","sent_at":"2025-03-04T05:06:07Z"}`

func TestDecodeCommandValid(t *testing.T) {
	tests := []struct {
		name string
		body string
		want Command
	}{
		{
			name: "start",
			body: validStart,
			want: Command{V: 1, Type: TypeStart, InstanceID: "ji-1", EnvironmentID: "e1", ContainerID: "c1",
				HostPort: 20001, InternalPort: 8888, Token: secretToken, BaseURL: "/env-e1/",
				Plugins: []string{"git"}, SentAt: sentAt},
		},
		{
			name: "stop",
			body: validStop,
			want: Command{V: 1, Type: TypeStop, InstanceID: "ji-1", EnvironmentID: "e1", ContainerID: "c1",
				HostPort: 20001, Reason: "user", SentAt: sentAt},
		},
		{
			name: "highest port",
			body: strings.Replace(validStop, `"host_port":20001`, `"host_port":65535`, 1),
			want: Command{V: 1, Type: TypeStop, InstanceID: "ji-1", EnvironmentID: "e1", ContainerID: "c1",
				HostPort: 65535, Reason: "user", SentAt: sentAt},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeCommand([]byte(tt.body))
			if err != nil {
				t.Fatalf("DecodeCommand: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("DecodeCommand = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestEncodeDecodeCommandRoundTrip(t *testing.T) {
	want := Command{V: Version, Type: TypeStart, InstanceID: "ji-2", EnvironmentID: "env-2", ContainerID: "c2",
		HostPort: 20002, InternalPort: instance.InternalPort, Token: "tok", BaseURL: instance.BasePath("env-2"),
		SentAt: sentAt}
	s, err := Encode(want)
	if err != nil {
		t.Fatalf("Encode: %v", err)
	}
	got, err := DecodeCommand([]byte(s))
	if err != nil {
		t.Fatalf("DecodeCommand(%s): %v", s, err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("round trip = %+v, want %+v", got, want)
	}
}

// plugins is a JSON list of n distinct plugin requirements.
func plugins(n int) string {
	list := make([]string, n)
	for i := range list {
		list[i] = fmt.Sprintf(`"p%d"`, i)
	}
	return "[" + strings.Join(list, ",") + "]"
}

func TestDecodeCommandInvalid(t *testing.T) {
	replace := func(base, old, new string) string {
		if !strings.Contains(base, old) {
			panic("test fixture lacks " + old)
		}
		return strings.Replace(base, old, new, 1)
	}
	tests := []struct {
		name string
		body string
	}{
		{"version 2", replace(validStart, `"v":1`, `"v":2`)},
		{"version 0", replace(validStart, `"v":1`, `"v":0`)},
		{"no version", replace(validStart, `"v":1,`, ``)},
		{"unknown field", replace(validStart, `"v":1,`, `"v":1,"extra":true,`)},
		{"trailing brace", validStart + `}`},
		{"trailing object", validStart + `{}`},
		{"not json", `start ji-1`},
		{"empty", ``},
		{"null", `null`},
		{"array", `[` + validStart + `]`},
		{"missing instance id", replace(validStart, `"instance_id":"ji-1",`, ``)},
		{"empty instance id", replace(validStart, `"instance_id":"ji-1"`, `"instance_id":""`)},
		{"missing environment id", replace(validStart, `"environment_id":"e1",`, ``)},
		{"hostile environment id", replace(validStop, `"environment_id":"e1"`, `"environment_id":"../x"`)},
		{"a plugin twice", replace(validStart, `"plugins":["git"]`, `"plugins":["git","git"]`)},
		{"too many plugins", replace(validStart, `"plugins":["git"]`, `"plugins":`+plugins(MaxPlugins+1))},
		{"missing container id", replace(validStart, `"container_id":"c1",`, ``)},
		{"missing host port", replace(validStart, `"host_port":20001,`, ``)},
		{"host port 0", replace(validStart, `"host_port":20001`, `"host_port":0`)},
		{"negative host port", replace(validStart, `"host_port":20001`, `"host_port":-1`)},
		{"host port 65536", replace(validStart, `"host_port":20001`, `"host_port":65536`)},
		{"host port as string", replace(validStart, `"host_port":20001`, `"host_port":"20001"`)},
		{"start without token", replace(validStart, `"token":"`+secretToken+`",`, ``)},
		{"start with empty token", replace(validStart, `"token":"`+secretToken+`"`, `"token":""`)},
		{"start without base url", replace(validStart, `"base_url":"/env-e1/",`, ``)},
		{"base url of another environment", replace(validStart, `"base_url":"/env-e1/"`, `"base_url":"/env-e2/"`)},
		{"base url without trailing slash", replace(validStart, `"base_url":"/env-e1/"`, `"base_url":"/env-e1"`)},
		{"base url as full URL", replace(validStart, `"base_url":"/env-e1/"`, `"base_url":"https://x/env-e1/"`)},
		{"start without internal port", replace(validStart, `"internal_port":8888,`, ``)},
		{"internal port 65536", replace(validStart, `"internal_port":8888`, `"internal_port":65536`)},
		{"unknown type", replace(validStart, `"type":"start"`, `"type":"restart"`)},
		{"empty type", replace(validStart, `"type":"start"`, `"type":""`)},
		{"type in upper case", replace(validStop, `"type":"stop"`, `"type":"STOP"`)},
		{"oversized", validStart[:len(validStart)-1] + `,"reason":"` + strings.Repeat("x", 256<<10) + `"}`},
		{"oversized only by whitespace", validStart + strings.Repeat(" ", 256<<10)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := DecodeCommand([]byte(tt.body))
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("DecodeCommand error = %v, want ErrInvalid", err)
			}
		})
	}
}

func TestCommandStringHidesToken(t *testing.T) {
	c := Command{V: 1, Type: TypeStart, InstanceID: "ji-1", EnvironmentID: "e1", ContainerID: "c1",
		HostPort: 20001, InternalPort: 8888, Token: secretToken, BaseURL: "/env-e1/",
		PasswordHash: "argon2:hash-secret", SentAt: sentAt}
	const want = "start instance=ji-1 environment=e1 port=20001"
	if got := c.String(); got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	tests := []struct {
		name, format string
	}{
		{"v", "%v"},
		{"plus v", "%+v"},
		{"s", "%s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := fmt.Sprintf(tt.format, c)
			if strings.Contains(got, secretToken) || strings.Contains(got, "hash-secret") {
				t.Errorf("Sprintf(%s) = %q, contains a secret", tt.format, got)
			}
			if got != want {
				t.Errorf("Sprintf(%s) = %q, want %q", tt.format, got, want)
			}
		})
	}
	// A validation error must not leak the token either.
	bad := c
	bad.BaseURL = "/env-other/"
	if err := bad.Validate(); err == nil || strings.Contains(err.Error(), secretToken) {
		t.Errorf("Validate() = %v, want an error without the token", err)
	}
}

const validReport = `{"v":1,"instance_id":"ji-1","host_id":"h1","status":"running","stage":"routing",` +
	`"health":{"checked_at":"2025-03-04T05:06:07Z","kernels":2,"connections":1},"at":"2025-03-04T05:06:07Z"}`

func TestDecodeReportValid(t *testing.T) {
	tests := []struct {
		name string
		body string
		want Report
	}{
		{
			name: "running with health",
			body: validReport,
			want: Report{V: 1, InstanceID: "ji-1", HostID: "h1", Status: instance.Running, Stage: instance.StageRouting,
				Health: &instance.Health{CheckedAt: sentAt, Kernels: 2, Connections: 1}, At: sentAt},
		},
		{
			name: "failed with reason",
			body: `{"v":1,"instance_id":"ji-1","host_id":"h1","status":"failed","reason":"no_jupyter","at":"2025-03-04T05:06:07Z"}`,
			want: Report{V: 1, InstanceID: "ji-1", HostID: "h1", Status: instance.Failed, Reason: "no_jupyter", At: sentAt},
		},
		{
			name: "a host's heartbeat",
			body: `{"v":1,"instance_id":"","host_id":"h1","at":"2025-03-04T05:06:07Z"}`,
			want: HostHeartbeat("h1", sentAt),
		},
		{
			name: "the longest host id the sidecar accepts",
			body: `{"v":1,"host_id":"Local-host-` + strings.Repeat("9", 52) + `","at":"2025-03-04T05:06:07Z"}`,
			want: HostHeartbeat("Local-host-"+strings.Repeat("9", 52), sentAt),
		},
	}
	for _, s := range []instance.Status{instance.Starting, instance.Unhealthy, instance.Stopping, instance.Stopped} {
		tests = append(tests, struct {
			name string
			body string
			want Report
		}{
			name: string(s),
			body: `{"v":1,"instance_id":"ji-1","host_id":"h1","status":"` + string(s) + `","at":"2025-03-04T05:06:07Z"}`,
			want: Report{V: 1, InstanceID: "ji-1", HostID: "h1", Status: s, At: sentAt},
		})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeReport([]byte(tt.body))
			if err != nil {
				t.Fatalf("DecodeReport: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("DecodeReport = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestDecodeReportInvalid(t *testing.T) {
	replace := func(old, new string) string {
		if !strings.Contains(validReport, old) {
			panic("test fixture lacks " + old)
		}
		return strings.Replace(validReport, old, new, 1)
	}
	tests := []struct {
		name string
		body string
	}{
		{"version 2", replace(`"v":1`, `"v":2`)},
		{"no version", replace(`"v":1,`, ``)},
		{"unknown field", replace(`"v":1,`, `"v":1,"token":"x",`)},
		{"unknown field in health", replace(`"kernels":2`, `"kernels":2,"cpu":3`)},
		{"trailing brace", validReport + `}`},
		{"two reports", validReport + validReport},
		{"missing instance id", replace(`"instance_id":"ji-1",`, ``)},
		{"a host's heartbeat with a health", replace(`"instance_id":"ji-1","host_id":"h1","status":"running","stage":"routing",`, `"host_id":"h1",`)},
		{"missing host id", replace(`"host_id":"h1",`, ``)},
		// Each would name an SSM path or queue that is not a host's own.
		{"host id with a slash", replace(`"host_id":"h1"`, `"host_id":"h1/x"`)},
		{"host id with dots", replace(`"host_id":"h1"`, `"host_id":"h1/../h2"`)},
		{"host id starting with a dash", replace(`"host_id":"h1"`, `"host_id":"-h1"`)},
		{"host id with a space", replace(`"host_id":"h1"`, `"host_id":"h 1"`)},
		{"host id with an underscore", replace(`"host_id":"h1"`, `"host_id":"h_1"`)},
		{"host id with a NUL", replace(`"host_id":"h1"`, `"host_id":"h1\u0000"`)},
		{"host id of 64 characters", replace(`"host_id":"h1"`, `"host_id":"`+strings.Repeat("h", 64)+`"`)},
		{"a heartbeat's host id with a slash", `{"v":1,"host_id":"h1/x","at":"2025-03-04T05:06:07Z"}`},
		{"missing time", replace(`,"at":"2025-03-04T05:06:07Z"}`, `}`)},
		{"zero time", replace(`"at":"2025-03-04T05:06:07Z"}`, `"at":"0001-01-01T00:00:00Z"}`)},
		{"bad time", replace(`"at":"2025-03-04T05:06:07Z"}`, `"at":"yesterday"}`)},
		{"invalid status", replace(`"status":"running"`, `"status":"exploded"`)},
		{"empty status", replace(`"status":"running"`, `"status":""`)},
		{"missing status", replace(`"status":"running",`, ``)},
		{"not_started is not a status", replace(`"status":"running"`, `"status":"not_started"`)},
		{"oversized", validReport[:len(validReport)-1] + `,"reason":"` + strings.Repeat("x", 256<<10) + `"}`},
		{"empty", ``},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := DecodeReport([]byte(tt.body))
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("DecodeReport error = %v, want ErrInvalid", err)
			}
		})
	}
}

func TestSizeLimitIsExact(t *testing.T) {
	// A valid report padded with whitespace to exactly 256 KiB is accepted;
	// one byte more is not.
	const limit = 256 << 10
	atLimit := validReport + strings.Repeat(" ", limit-len(validReport))
	if _, err := DecodeReport([]byte(atLimit)); err != nil {
		t.Errorf("report of exactly %d bytes: %v", limit, err)
	}
	if _, err := DecodeReport([]byte(atLimit + " ")); !errors.Is(err, ErrInvalid) {
		t.Errorf("report of %d bytes: error = %v, want ErrInvalid", limit+1, err)
	}
}
