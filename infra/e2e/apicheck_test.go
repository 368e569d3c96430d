package e2e

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"

	"github.com/envjupyter/envjupyter/infra/apispec"
)

// Every answer of the HTTP API that the suite gets through http.DefaultClient
// (api() and the tests' own requests) is checked against docs/openapi.yaml;
// an answer the document does not allow fails the request, and so the test.
func init() {
	spec, err := apispec.Load(apispec.DefaultPath())
	if err != nil {
		panic(err)
	}
	http.DefaultClient.Transport = &specCheckedTransport{spec: spec, next: http.DefaultTransport}
}

// apiAnswersChecked counts the answers checked (TestMain reports it).
var apiAnswersChecked atomic.Int64

type specCheckedTransport struct {
	spec *apispec.Spec
	next http.RoundTripper
}

func (c *specCheckedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := c.next.RoundTrip(req)
	if err != nil || !strings.HasPrefix(req.URL.Path, "/api/") {
		return resp, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, fmt.Errorf("reading the answer of %s %s: %w", req.Method, req.URL.Path, err)
	}
	if err := c.spec.Check(req, resp.StatusCode, resp.Header, body); err != nil {
		return nil, err
	}
	apiAnswersChecked.Add(1)
	resp.Body = io.NopCloser(bytes.NewReader(body))
	return resp, nil
}
