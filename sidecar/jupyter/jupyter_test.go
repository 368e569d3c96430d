package jupyter

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
)

var (
	lab      = Flavour{Name: "lab", Executable: "jupyter-lab", App: "ServerApp", Version: "4.2.5"}
	notebook = Flavour{Name: "notebook", Executable: "jupyter-notebook", App: "NotebookApp", Version: "6.4.12"}
	server   = Flavour{Name: "server", Executable: "jupyter-server", App: "ServerApp", Version: "2.14.2"}
)

func TestArgv(t *testing.T) {
	tests := []struct {
		name string
		f    Flavour
		o    Options
		want []string
	}{
		{
			name: "notebook 6 uses NotebookApp",
			f:    notebook,
			o:    Options{BasePath: "/env-e1/", Port: 8888},
			want: []string{"jupyter-notebook", "--no-browser", "--allow-root", "--ip=0.0.0.0", "--port=8888",
				"--NotebookApp.port_retries=0", "--NotebookApp.base_url=/env-e1/"},
		},
		{
			name: "lab uses ServerApp",
			f:    lab,
			o:    Options{BasePath: "/env-abc-123/", Port: 8888},
			want: []string{"jupyter-lab", "--no-browser", "--allow-root", "--ip=0.0.0.0", "--port=8888",
				"--ServerApp.port_retries=0", "--ServerApp.base_url=/env-abc-123/"},
		},
		{
			name: "lab through the launcher: its options unchanged",
			f:    Flavour{Name: "lab", Executable: "jupyter-lab", App: "ServerApp", Launcher: "python3"},
			o:    Options{BasePath: "/env-abc-123/", Port: 8888, ConfigFile: "/var/lib/envjupyter/i-1.json"},
			want: []string{"python3", "-c", launcherProgram, "--no-browser", "--allow-root", "--ip=0.0.0.0", "--port=8888",
				"--ServerApp.port_retries=0", "--ServerApp.base_url=/env-abc-123/", "--config=/var/lib/envjupyter/i-1.json"},
		},
		{
			name: "server uses ServerApp",
			f:    server,
			o:    Options{BasePath: "/env-e2/", Port: 9999},
			want: []string{"jupyter-server", "--no-browser", "--allow-root", "--ip=0.0.0.0", "--port=9999",
				"--ServerApp.port_retries=0", "--ServerApp.base_url=/env-e2/"},
		},
		{
			name: "notebook 7 is launched as a ServerApp",
			f:    Flavour{Name: "notebook", Executable: "jupyter-notebook", App: "ServerApp", Version: "7.0.1"},
			o:    Options{BasePath: "/env-e1/", Port: 8888},
			want: []string{"jupyter-notebook", "--no-browser", "--allow-root", "--ip=0.0.0.0", "--port=8888",
				"--ServerApp.port_retries=0", "--ServerApp.base_url=/env-e1/"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Argv(tt.f, tt.o)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Argv =\n %q\nwant\n %q", got, tt.want)
			}
			for _, a := range got {
				if strings.Contains(strings.ToLower(a), "token") || strings.Contains(strings.ToLower(a), "password") {
					t.Errorf("Argv carries a secret option: %q", a)
				}
			}
		})
	}
}

func TestArgvNeverContainsTheToken(t *testing.T) {
	const token = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
	argv := Argv(lab, Options{BasePath: "/env-e1/", Port: 8888})
	env := Env("ji-1", token, "")
	if strings.Contains(strings.Join(argv, " "), token) {
		t.Errorf("Argv %q contains the token", argv)
	}
	if !strings.Contains(strings.Join(env, "\n"), token) {
		t.Errorf("Env %q does not carry the token", env)
	}
}

func TestEnv(t *testing.T) {
	tests := []struct {
		name, instanceID, token, configPath string
		want                                []string
	}{
		{"ordinary", "ji-1", "tok", "", []string{"JUPYTER_TOKEN=tok", "ENVJUPYTER_INSTANCE_ID=ji-1", "JUPYTER_CONFIG_PATH=/var/lib/envjupyter/config"}},
		{"long", "ji-0123456789abcdef01234567", strings.Repeat("ab", 32), "", []string{"JUPYTER_TOKEN=" + strings.Repeat("ab", 32), "ENVJUPYTER_INSTANCE_ID=ji-0123456789abcdef01234567", "JUPYTER_CONFIG_PATH=/var/lib/envjupyter/config"}},
		// The container's own directories keep their priority, ours come last.
		{"container config path", "ji-1", "tok", "/opt/conf:/etc/more:", []string{"JUPYTER_TOKEN=tok", "ENVJUPYTER_INSTANCE_ID=ji-1", "JUPYTER_CONFIG_PATH=/opt/conf:/etc/more:/var/lib/envjupyter/config"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Env(tt.instanceID, tt.token, tt.configPath); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Env = %q, want %q", got, tt.want)
			}
		})
	}
	if MarkerVar != "ENVJUPYTER_INSTANCE_ID" {
		t.Errorf("MarkerVar = %q; processes started by older sidecars carry ENVJUPYTER_INSTANCE_ID", MarkerVar)
	}
}

// answer is what a fake `<executable> --version` does.
type answer struct {
	out  string
	code int
	err  error
}

// fakeContainer has the executables of its answers; each answers --version
// as given. It records what was looked for and what ran.
type fakeContainer struct {
	answers    map[string]answer
	findErr    error  // look-ups fail with it
	findErrFor string // only the look-up of this name, if set
	looked     []string
	ran        [][]string
}

func (f *fakeContainer) find(_ context.Context, name string) (bool, error) {
	f.looked = append(f.looked, name)
	if f.findErr != nil && (f.findErrFor == "" || f.findErrFor == name) {
		return false, f.findErr
	}
	_, ok := f.answers[name]
	return ok, nil
}

func (f *fakeContainer) run(_ context.Context, argv []string) (string, int, error) {
	f.ran = append(f.ran, argv)
	a, ok := f.answers[argv[0]]
	if !ok {
		return "OCI runtime exec failed: exec: \"" + argv[0] + "\": executable file not found in $PATH\n", 127, nil
	}
	return a.out, a.code, a.err
}

func TestDetect(t *testing.T) {
	dockerDown := errors.New("docker: connection refused")
	tests := []struct {
		name      string
		c         fakeContainer
		want      Flavour
		wantErr   error
		wantLooks []string // executables looked for, in order
		wantRuns  []string // executables run with --version, in order
	}{
		{
			name:      "lab present: found, never run",
			c:         fakeContainer{answers: map[string]answer{"jupyter-lab": {out: "4.2.5\n"}, "jupyter-notebook": {out: "7.2.2\n"}}},
			want:      Flavour{Name: "lab", Executable: "jupyter-lab", App: "ServerApp"},
			wantLooks: []string{"jupyter-lab", "python3"},
		},
		{
			name:      "lab and python3: launched through the launcher",
			c:         fakeContainer{answers: map[string]answer{"jupyter-lab": {out: "4.2.5\n"}, "python3": {}}},
			want:      Flavour{Name: "lab", Executable: "jupyter-lab", App: "ServerApp", Launcher: "python3"},
			wantLooks: []string{"jupyter-lab", "python3"},
		},
		{
			name:      "lab missing, notebook 6",
			c:         fakeContainer{answers: map[string]answer{"jupyter-notebook": {out: "6.4.12\n"}}},
			want:      Flavour{Name: "notebook", Executable: "jupyter-notebook", App: "NotebookApp", Version: "6.4.12"},
			wantLooks: []string{"jupyter-lab", "jupyter-notebook"},
			wantRuns:  []string{"jupyter-notebook"},
		},
		{
			name:      "lab missing, notebook 7",
			c:         fakeContainer{answers: map[string]answer{"jupyter-notebook": {out: "7.0.1\n"}, "jupyter-server": {out: "2.7.0\n"}}},
			want:      Flavour{Name: "notebook", Executable: "jupyter-notebook", App: "ServerApp", Version: "7.0.1"},
			wantLooks: []string{"jupyter-lab", "jupyter-notebook"},
			wantRuns:  []string{"jupyter-notebook"},
		},
		{
			name:      "notebook 10 is not taken for 1",
			c:         fakeContainer{answers: map[string]answer{"jupyter-notebook": {out: "10.0.0\n"}}},
			want:      Flavour{Name: "notebook", Executable: "jupyter-notebook", App: "ServerApp", Version: "10.0.0"},
			wantLooks: []string{"jupyter-lab", "jupyter-notebook"},
			wantRuns:  []string{"jupyter-notebook"},
		},
		{
			name:      "a broken notebook (126), then a server",
			c:         fakeContainer{answers: map[string]answer{"jupyter-notebook": {out: "permission denied", code: 126}, "jupyter-server": {out: "2.14.2\n"}}},
			want:      Flavour{Name: "server", Executable: "jupyter-server", App: "ServerApp"},
			wantLooks: []string{"jupyter-lab", "jupyter-notebook", "jupyter-server"},
			wantRuns:  []string{"jupyter-notebook"},
		},
		{
			name:      "version after a warning takes the last version",
			c:         fakeContainer{answers: map[string]answer{"jupyter-notebook": {out: "[W 2024-01-01 00:00:00.000 NotebookApp] 'x' 1.2 is deprecated\n6.4.12\n"}}},
			want:      Flavour{Name: "notebook", Executable: "jupyter-notebook", App: "NotebookApp", Version: "6.4.12"},
			wantLooks: []string{"jupyter-lab", "jupyter-notebook"},
			wantRuns:  []string{"jupyter-notebook"},
		},
		{
			name:      "two-part version",
			c:         fakeContainer{answers: map[string]answer{"jupyter-notebook": {out: "6.5\n"}}},
			want:      Flavour{Name: "notebook", Executable: "jupyter-notebook", App: "NotebookApp", Version: "6.5"},
			wantLooks: []string{"jupyter-lab", "jupyter-notebook"},
			wantRuns:  []string{"jupyter-notebook"},
		},
		{
			name:      "none",
			c:         fakeContainer{answers: map[string]answer{}},
			wantErr:   ErrNoJupyter,
			wantLooks: []string{"jupyter-lab", "jupyter-notebook", "jupyter-server"},
		},
		{
			name:      "a look-up error is returned at once",
			c:         fakeContainer{answers: map[string]answer{"jupyter-lab": {}}, findErr: dockerDown},
			wantErr:   dockerDown,
			wantLooks: []string{"jupyter-lab"},
		},
		{
			name:      "an error looking for the launcher's python3 is returned",
			c:         fakeContainer{answers: map[string]answer{"jupyter-lab": {}, "python3": {}}, findErr: dockerDown, findErrFor: "python3"},
			wantErr:   dockerDown,
			wantLooks: []string{"jupyter-lab", "python3"},
		},
		{
			name:      "a runner error is returned at once",
			c:         fakeContainer{answers: map[string]answer{"jupyter-notebook": {err: dockerDown}, "jupyter-server": {out: "2.0.0"}}},
			wantErr:   dockerDown,
			wantLooks: []string{"jupyter-lab", "jupyter-notebook"},
			wantRuns:  []string{"jupyter-notebook"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.c
			got, err := Detect(context.Background(), c.find, c.run)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Detect error = %v, want %v", err, tt.wantErr)
				}
				if got != (Flavour{}) {
					t.Errorf("Detect = %+v with an error, want zero", got)
				}
			} else if err != nil {
				t.Fatalf("Detect: %v", err)
			}
			if got != tt.want {
				t.Errorf("Detect = %+v, want %+v", got, tt.want)
			}
			var ran []string
			for _, r := range c.ran {
				if len(r) != 2 || r[1] != "--version" {
					t.Errorf("ran %q, want <executable> --version", r)
				}
				ran = append(ran, r[0])
			}
			if !reflect.DeepEqual(c.looked, tt.wantLooks) || !reflect.DeepEqual(ran, tt.wantRuns) {
				t.Errorf("looked for %q and ran %q, want %q and %q", c.looked, ran, tt.wantLooks, tt.wantRuns)
			}
		})
	}
}

func TestDetectDoesNotChangeCandidates(t *testing.T) {
	c := &fakeContainer{answers: map[string]answer{"jupyter-notebook": {out: "7.0.1"}}}
	if _, err := Detect(context.Background(), c.find, c.run); err != nil {
		t.Fatal(err)
	}
	c = &fakeContainer{answers: map[string]answer{"jupyter-notebook": {out: "6.4.12"}}}
	got, err := Detect(context.Background(), c.find, c.run)
	if err != nil {
		t.Fatal(err)
	}
	if got.App != "NotebookApp" {
		t.Errorf("after detecting notebook 7, notebook 6 is detected as %q, want NotebookApp", got.App)
	}
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestReady(t *testing.T) {
	tests := []struct {
		name   string
		status int
		err    error
		want   bool
	}{
		{"200", http.StatusOK, nil, true},
		{"404 while starting", http.StatusNotFound, nil, false},
		{"403", http.StatusForbidden, nil, false},
		{"302 is not ready", http.StatusFound, nil, false},
		{"connection refused", 0, errors.New("connect: connection refused"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var asked []string
			client := &http.Client{
				Transport: roundTripper(func(r *http.Request) (*http.Response, error) {
					asked = append(asked, r.Method+" "+r.URL.String())
					if tt.err != nil {
						return nil, tt.err
					}
					return &http.Response{StatusCode: tt.status, Body: io.NopCloser(strings.NewReader("{}")), Header: http.Header{}, Request: r}, nil
				}),
				CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
			}
			if got := Ready(context.Background(), client, "http://172.17.0.2:8888/env-e1/"); got != tt.want {
				t.Errorf("Ready = %v, want %v", got, tt.want)
			}
			if want := []string{"GET http://172.17.0.2:8888/env-e1/api"}; !reflect.DeepEqual(asked, want) {
				t.Errorf("requests = %q, want %q", asked, want)
			}
		})
	}
}

func TestDescribeExit(t *testing.T) {
	if got, want := DescribeExit(lab, 1), "jupyter-lab exited with code 1 before it answered"; got != want {
		t.Errorf("DescribeExit = %q, want %q", got, want)
	}
}

// A customer's Jupyter that redirects its API elsewhere (the metadata
// service, an internal address): the probes do not follow, even with a
// client that would, and say nothing of what the target would have answered.
func TestProbesDoNotFollowRedirects(t *testing.T) {
	var hit atomic.Int32
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hit.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"last_activity":"2026-01-01T00:00:00Z","kernels":7,"connections":7}`)
	}))
	defer target.Close()
	jupyter := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.URL+"/latest/meta-data/", http.StatusFound)
	}))
	defer jupyter.Close()
	client := &http.Client{} // follows redirects by default
	base := jupyter.URL + "/env-e1/"
	if Ready(context.Background(), client, base) {
		t.Error("Ready = true for a redirect")
	}
	if h, err := Status(context.Background(), client, base, "tok"); err == nil {
		t.Errorf("Status = %+v, nil for a redirect; want an error", h)
	}
	if n := hit.Load(); n != 0 {
		t.Fatalf("the redirect target was fetched %d times", n)
	}
	if client.CheckRedirect != nil {
		t.Error("the caller's client was changed")
	}
}

// Both flavours' config names carry the same code, and it sets no
// configuration value (the customer's own config must still apply).
func TestExtraConfigFilesSetNoConfiguration(t *testing.T) {
	files := ConfigFiles()
	for _, name := range []string{"jupyter_server_config.py", "jupyter_notebook_config.py"} {
		content, ok := files[ExtraConfigDir+"/"+name]
		if !ok {
			t.Fatalf("no %s in %v", name, files)
		}
		if !bytes.Contains(content, []byte("set_nodelay(True)")) {
			t.Errorf("%s does not set TCP_NODELAY", name)
		}
		if bytes.Contains(content, []byte("c.")) || bytes.Contains(content, []byte("get_config")) {
			t.Errorf("%s touches the configuration object", name)
		}
	}
}
