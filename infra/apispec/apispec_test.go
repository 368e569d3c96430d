package apispec

import (
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func load(t *testing.T) *Spec {
	t.Helper()
	s, err := Load(DefaultPath())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

var jsonHeader = http.Header{"Content-Type": {"application/json"}, "Cache-Control": {"no-store"}}

// The document is a valid OpenAPI 3.1 description, and answers of the shape
// the API sends pass the check.
func TestOpenAPIDocument(t *testing.T) {
	s := load(t)
	if s.Doc.OpenAPI != "3.1.0" {
		t.Errorf("openapi: %q, want 3.1.0", s.Doc.OpenAPI)
	}
	ok := []struct {
		method, path string
		status       int
		header       http.Header
		body         string
	}{
		{"POST", "/api/environments/e1/jupyter/start", 202, jsonHeader,
			`{"instance_id":"i1","environment_id":"e1","status":"starting","stage":"queued","elapsed_seconds":0.2,"created_at":"2026-01-01T00:00:00.123Z","audit":[{"at":"2026-01-01T00:00:00Z","action":"start","cause":"customer","actor":"u"}]}`},
		{"GET", "/api/environments/e1/jupyter", 200, jsonHeader, `{"environment_id":"e1","status":"not_started"}`},
		{"GET", "/api/environments/e1/jupyter", 200, jsonHeader,
			`{"instance_id":"i1","environment_id":"e1","status":"running","access_url":"https://j.example.com/env-e1/?token=x","access_link":"https://j.example.com/env-e1/_access?t=y","health":{"checked_at":"2026-01-01T00:00:00Z","kernels":1,"connections":0},"internal_port":8888}`},
		{"POST", "/api/environments/e1/jupyter/start", 400, jsonHeader,
			`{"error":{"code":"plugin_not_allowed","message":"plugin \"x\" is not allowed","allowed":["a"]}}`},
		{"POST", "/api/environments/e1/jupyter/start", 429, http.Header{"Content-Type": {"application/json"}, "Retry-After": {"30"}},
			`{"error":{"code":"too_many_instances","message":"stop one first"}}`},
		{"POST", "/api/environments/e1/jupyter/stop", 401, jsonHeader, `{"message":"Unauthorized"}`},
		{"GET", "/api/environments/e1/jupyter", 500, jsonHeader, `{"error":{"code":"internal_error","message":"an internal error occurred"}}`},
		{"GET", "/api/jupyter/plugins", 200, jsonHeader, `{"plugins":["jupyterlab-git"]}`},
	}
	for _, c := range ok {
		req := httptest.NewRequest(c.method, "http://127.0.0.1:8080"+c.path, nil)
		if err := s.Check(req, c.status, c.header, []byte(c.body)); err != nil {
			t.Errorf("a documented answer fails the check: %v", err)
		}
	}
}

// The check fails on answers that do not match the document: an unknown
// field, an undocumented status or error code, a wrong type, an undescribed
// route.
func TestCheckRejectsUndocumentedAnswers(t *testing.T) {
	s := load(t)
	bad := []struct {
		name, method, path string
		status             int
		body               string
	}{
		{"unknown field", "GET", "/api/environments/e1/jupyter", 200, `{"environment_id":"e1","status":"running","token":"secret"}`},
		{"unknown status value", "GET", "/api/environments/e1/jupyter", 200, `{"environment_id":"e1","status":"sleeping"}`},
		{"wrong type", "GET", "/api/environments/e1/jupyter", 200, `{"environment_id":"e1","status":"running","internal_port":"8888"}`},
		{"undocumented status code", "GET", "/api/environments/e1/jupyter", 418, `{"error":{"code":"teapot","message":"x"}}`},
		{"error code of another answer", "GET", "/api/environments/e1/jupyter", 400, `{"error":{"code":"invalid_password","message":"x"}}`},
		{"error without the envelope", "POST", "/api/environments/e1/jupyter/stop", 404, `{"code":"environment_not_found","message":"x"}`},
		{"gateway message it never sends", "POST", "/api/environments/e1/jupyter/stop", 401, `{"message":"Forbidden"}`},
		{"not JSON", "GET", "/api/jupyter/plugins", 200, `<html>`},
		{"undescribed route", "DELETE", "/api/environments/e1/jupyter", 200, `{}`},
	}
	for _, c := range bad {
		t.Run(c.name, func(t *testing.T) {
			req := httptest.NewRequest(c.method, "http://127.0.0.1:8080"+c.path, nil)
			err := s.Check(req, c.status, jsonHeader, []byte(c.body))
			if err == nil {
				t.Fatalf("%s %s %d %s passed the check", c.method, c.path, c.status, c.body)
			}
			t.Logf("rejected: %v", err)
		})
	}
}

// Every route of the template's HTTP API is described, and every error
// code the API and the control plane send appears in the document.
func TestDocumentCoversRoutesAndErrorCodes(t *testing.T) {
	s := load(t)
	root := filepath.Join(filepath.Dir(DefaultPath()), "..")
	tmpl, err := os.ReadFile(filepath.Join(root, "template.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	routes := regexp.MustCompile(`(?m)^\s+Method: (\w+)\n\s+Path: (\S+)`).FindAllStringSubmatch(string(tmpl), -1)
	if len(routes) == 0 {
		t.Fatal("no HttpApi routes found in template.yaml")
	}
	for _, r := range routes {
		item := s.Doc.Paths.Value(r[2])
		if item == nil || item.GetOperation(r[1]) == nil {
			t.Errorf("template route %s %s is not in docs/openapi.yaml", r[1], r[2])
		}
	}

	doc, _ := os.ReadFile(DefaultPath())
	codeUse := regexp.MustCompile(`(?:errorResponse\(http\.Status\w+, |InputError\{Code: )"([a-z_]+)"`)
	found := 0
	_ = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() && (d.Name() == "node_modules" || strings.HasPrefix(d.Name(), ".")) {
			return fs.SkipDir
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		src, _ := os.ReadFile(path)
		for _, m := range codeUse.FindAllStringSubmatch(string(src), -1) {
			found++
			if m[1] != "route_not_found" && !strings.Contains(string(doc), m[1]) {
				t.Errorf("%s sends error code %q, which docs/openapi.yaml does not document", path, m[1])
			}
		}
		return nil
	})
	if found < 10 {
		t.Fatalf("found %d error codes in the Go sources; the pattern no longer matches how they are written", found)
	}
}
