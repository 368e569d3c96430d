package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-xray-sdk-go/xray"

	"github.com/envjupyter/envjupyter/functions/internal/control"
	"github.com/envjupyter/envjupyter/shared/config"
	"github.com/envjupyter/envjupyter/shared/instance"
	"github.com/envjupyter/envjupyter/shared/strictjson"
)

// Routes served by this function (API Gateway route keys).
const (
	routeStart  = "POST /api/environments/{id}/jupyter/start"
	routeStop   = "POST /api/environments/{id}/jupyter/stop"
	routeStatus = "GET /api/environments/{id}/jupyter"
	// routePlugins lists the plugins a start may ask for, so a client can
	// offer them before starting.
	routePlugins = "GET /api/jupyter/plugins"
)

// maxBodyBytes bounds a request body; a start body is a password and a few plugin names.
const maxBodyBytes = 16 << 10

// Controller is the part of the control plane the API calls.
type Controller interface {
	Start(ctx context.Context, customerID, environmentID string, opts control.StartOptions) (instance.Instance, bool, error)
	Stop(ctx context.Context, customerID, environmentID, reason string) (instance.Instance, bool, error)
	Status(ctx context.Context, customerID, environmentID string) (instance.Instance, bool, error)
	AccessLink(in instance.Instance) string
}

type handler struct {
	control Controller
	// settings is the configuration in force (it is re-read while the
	// function runs); nil means the defaults: token mode, no plugins.
	settings      func() config.Config
	customerClaim string
	log           *slog.Logger
}

// apiError is the body of every error response.
type apiError struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code    string   `json:"code"`
	Message string   `json:"message"`
	Allowed []string `json:"allowed,omitempty"`
}

func (h *handler) handle(ctx context.Context, req events.APIGatewayV2HTTPRequest) (events.APIGatewayV2HTTPResponse, error) {
	began := time.Now()
	var resp events.APIGatewayV2HTTPResponse
	err := xray.Capture(ctx, "api "+req.RouteKey, func(ctx context.Context) error {
		resp = h.route(ctx, req)
		return nil
	})
	// The handler's own duration, measured inside it: the benchmark
	// (figure 8) sets it beside the client's latency.
	h.log.Info("request handled", "route", req.RouteKey, "environment_id", req.PathParameters["id"],
		"status", resp.StatusCode, "duration_ms", float64(time.Since(began).Microseconds())/1000)
	return resp, err
}

func (h *handler) route(ctx context.Context, req events.APIGatewayV2HTTPRequest) events.APIGatewayV2HTTPResponse {
	customer := h.customer(req)
	if customer == "" {
		return errorResponse(http.StatusUnauthorized, "unauthorized", "a valid identity is required")
	}
	if req.RouteKey == routePlugins {
		return jsonResponse(http.StatusOK, pluginList{Plugins: h.allowedPlugins()})
	}
	envID := req.PathParameters["id"]
	if !instance.ValidEnvironmentID(envID) {
		return errorResponse(http.StatusBadRequest, "invalid_environment_id", "the environment id must be 1 to 63 letters, digits or dashes")
	}
	log := h.log.With("environment_id", envID, "route", req.RouteKey)
	ctx = control.WithActor(ctx, control.Actor{Cause: "customer", Subject: req.RequestContext.Authorizer.JWT.Claims["sub"]})
	switch req.RouteKey {
	case routeStart:
		var body startBody
		if resp, ok := decodeBody(req, &body); !ok {
			return resp
		}
		in, created, err := h.control.Start(ctx, customer, envID, control.StartOptions{
			Password: body.Password, Plugins: body.Plugins, InternalPort: body.InternalPort,
		})
		if err != nil {
			return h.errorFor(ctx, log, err)
		}
		status := http.StatusOK
		if created {
			status = http.StatusAccepted
		}
		return jsonResponse(status, h.view(in))
	case routeStop:
		if resp, ok := decodeBody(req, &struct{}{}); !ok {
			return resp
		}
		in, stopping, err := h.control.Stop(ctx, customer, envID, instance.ReasonUser)
		if err != nil {
			return h.errorFor(ctx, log, err)
		}
		if !stopping {
			v := h.view(in)
			if in.ID == "" {
				v.EnvironmentID, v.Status = envID, string(instance.Stopped)
			}
			return jsonResponse(http.StatusOK, v)
		}
		return jsonResponse(http.StatusAccepted, h.view(in))
	case routeStatus:
		wait, ok := parseWait(req.QueryStringParameters["wait"])
		if !ok {
			return errorResponse(http.StatusBadRequest, "invalid_wait", "wait must be a whole number of seconds from 0 to 25")
		}
		in, found, err := h.statusWhenSettled(ctx, customer, envID, wait)
		if err != nil {
			return h.errorFor(ctx, log, err)
		}
		if !found {
			return jsonResponse(http.StatusOK, instanceView{EnvironmentID: envID, Status: "not_started"})
		}
		return jsonResponse(http.StatusOK, h.view(in))
	}
	return errorResponse(http.StatusNotFound, "route_not_found", "no such route")
}

// pluginList is the answer of routePlugins: the names a start's "plugins"
// may contain (what each installs is the operator's business).
type pluginList struct {
	Plugins []string `json:"plugins"`
}

func (h *handler) config() config.Config {
	if h.settings == nil {
		return config.Config{AccessMode: config.AccessToken}
	}
	return h.settings()
}

func (h *handler) allowedPlugins() []string {
	names := slices.Sorted(maps.Keys(h.config().AllowedPlugins))
	if names == nil {
		names = []string{}
	}
	return names
}

// retryAfter is what a customer at the limit is told to wait.
const retryAfter = 30 * time.Second

// maxWait bounds ?wait=, below API Gateway's 30 s integration timeout.
const maxWait = 25 * time.Second

func parseWait(v string) (time.Duration, bool) {
	if v == "" {
		return 0, true
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 || time.Duration(n)*time.Second > maxWait {
		return 0, false
	}
	return time.Duration(n) * time.Second, true
}

// statusWhenSettled returns the status as soon as the instance is neither
// starting nor stopping, or when wait has passed, so clients need not poll
// fast.
func (h *handler) statusWhenSettled(ctx context.Context, customer, envID string, wait time.Duration) (instance.Instance, bool, error) {
	deadline := time.Now().Add(wait)
	for {
		in, found, err := h.control.Status(ctx, customer, envID)
		settled := !found || (in.Status != instance.Starting && in.Status != instance.Stopping)
		if err != nil || settled || !time.Now().Before(deadline) {
			return in, found, err
		}
		select {
		case <-ctx.Done():
			return in, found, nil
		case <-time.After(statusPoll):
		}
	}
}

// statusPoll is how often a waiting status call reads the instance.
const statusPoll = 200 * time.Millisecond

func (h *handler) customer(req events.APIGatewayV2HTTPRequest) string {
	if a := req.RequestContext.Authorizer; a != nil && a.JWT != nil {
		return a.JWT.Claims[h.customerClaim]
	}
	return ""
}

type startBody struct {
	Password     string   `json:"password,omitempty"`
	Plugins      []string `json:"plugins,omitempty"`
	InternalPort int      `json:"internal_port,omitempty"`
}

// decodeBody parses an optional JSON body strictly: unknown fields and
// trailing data are errors.
func decodeBody(req events.APIGatewayV2HTTPRequest, v any) (events.APIGatewayV2HTTPResponse, bool) {
	raw := []byte(req.Body)
	if req.IsBase64Encoded {
		var err error
		if raw, err = base64.StdEncoding.DecodeString(req.Body); err != nil {
			return errorResponse(http.StatusBadRequest, "invalid_body", "the body is not valid base64"), false
		}
	}
	if len(raw) > maxBodyBytes {
		return errorResponse(http.StatusRequestEntityTooLarge, "body_too_large", "the body must be at most 16 KiB"), false
	}
	if len(bytes.TrimSpace(raw)) == 0 {
		return events.APIGatewayV2HTTPResponse{}, true
	}
	if err := strictjson.Decode(raw, v); err != nil {
		return errorResponse(http.StatusBadRequest, "invalid_body", "the body must be a JSON object with only the documented fields"), false
	}
	return events.APIGatewayV2HTTPResponse{}, true
}

func (h *handler) errorFor(ctx context.Context, log *slog.Logger, err error) events.APIGatewayV2HTTPResponse {
	var input *control.InputError
	switch {
	case errors.As(err, &input):
		resp := jsonResponse(http.StatusBadRequest, apiError{errorDetail{Code: input.Code, Message: input.Message, Allowed: input.Allowed}})
		return resp
	case errors.Is(err, control.ErrNotFound):
		return errorResponse(http.StatusNotFound, "environment_not_found", "no such environment")
	case errors.Is(err, control.ErrEnvironmentNotRunning):
		return errorResponse(http.StatusConflict, "environment_not_running", "the environment is not running; start it first")
	case errors.Is(err, control.ErrStopping):
		return errorResponse(http.StatusConflict, "jupyter_stopping", "JupyterLab is still stopping; try again in a few seconds")
	case errors.Is(err, control.ErrLimit):
		resp := errorResponse(http.StatusTooManyRequests, "too_many_instances", "you have as many running JupyterLab instances as allowed; stop one first")
		resp.Headers["Retry-After"] = strconv.Itoa(int(retryAfter.Seconds()))
		return resp
	case errors.Is(err, control.ErrHostUnavailable):
		return errorResponse(http.StatusServiceUnavailable, "host_unavailable", "the environment's host is not answering; JupyterLab cannot start there until it is back")
	case errors.Is(err, control.ErrNoFreePort):
		return errorResponse(http.StatusServiceUnavailable, "no_free_port", "no free port on the environment's host; try again later")
	case errors.Is(err, control.ErrUnavailable):
		log.ErrorContext(ctx, "dependency failed", "error", err)
		return errorResponse(http.StatusServiceUnavailable, "unavailable", "the service is temporarily unavailable; try again")
	default:
		log.ErrorContext(ctx, "request failed", "error", err)
		return errorResponse(http.StatusInternalServerError, "internal_error", "an internal error occurred")
	}
}

// instanceView is an instance as the API shows it; the token appears only
// inside the access URL, which is the customer's to open.
type instanceView struct {
	InstanceID    string `json:"instance_id,omitempty"`
	EnvironmentID string `json:"environment_id"`
	Status        string `json:"status"`
	StatusReason  string `json:"status_reason,omitempty"`
	Stage         string `json:"stage,omitempty"`
	// ElapsedSeconds is how long a start or a stop has been under way.
	ElapsedSeconds float64 `json:"elapsed_seconds,omitempty"`
	AccessURL      string  `json:"access_url,omitempty"`
	// AccessLink opens JupyterLab in a browser session; it works once,
	// within minutes, and keeps Jupyter's token away from the browser.
	AccessLink   string           `json:"access_link,omitempty"`
	Plugins      []string         `json:"plugins,omitempty"`
	CreatedAt    *time.Time       `json:"created_at,omitempty"`
	StartedAt    *time.Time       `json:"started_at,omitempty"`
	StoppedAt    *time.Time       `json:"stopped_at,omitempty"`
	UpdatedAt    *time.Time       `json:"updated_at,omitempty"`
	Health       *instance.Health `json:"health,omitempty"`
	LastActivity *time.Time       `json:"last_activity,omitempty"`
	InternalPort int              `json:"internal_port,omitempty"`
	// Audit says who or what started and stopped the instance, and when.
	Audit []instance.AuditEntry `json:"audit,omitempty"`
}

// view is an instance as the API shows it, with a fresh access link.
func (h *handler) view(in instance.Instance) instanceView {
	v := view(in)
	if v.AccessURL != "" {
		v.AccessLink = h.control.AccessLink(in)
		if h.config().AccessMode == config.AccessLink {
			v.AccessURL = v.AccessLink
		}
	}
	return v
}

func view(in instance.Instance) instanceView {
	v := instanceView{
		InstanceID:    in.ID,
		EnvironmentID: in.EnvironmentID,
		Status:        string(in.Status),
		StatusReason:  in.StatusReason,
		Stage:         string(in.Stage),
		Plugins:       in.Config.Plugins,
		CreatedAt:     timePtr(in.CreatedAt),
		StartedAt:     timePtr(in.StartedAt),
		StoppedAt:     timePtr(in.StoppedAt),
		UpdatedAt:     timePtr(in.UpdatedAt),
		Health:        in.Health,
		InternalPort:  in.InternalPort,
		Audit:         in.Audit,
	}
	if in.Status.Active() && in.Status != instance.Stopping {
		v.AccessURL = in.AccessURL
	}
	if in.Health != nil {
		v.LastActivity = timePtr(in.Health.LastActivity)
	}
	switch in.Status {
	case instance.Starting:
		v.ElapsedSeconds = elapsed(in.CreatedAt)
	case instance.Stopping:
		v.ElapsedSeconds = elapsed(in.UpdatedAt)
	}
	return v
}

func elapsed(since time.Time) float64 {
	return float64(time.Since(since).Milliseconds()) / 1000
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func errorResponse(status int, code, message string) events.APIGatewayV2HTTPResponse {
	return jsonResponse(status, apiError{errorDetail{Code: code, Message: message}})
}

func jsonResponse(status int, v any) events.APIGatewayV2HTTPResponse {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":{"code":"internal_error","message":"an internal error occurred"}}`)
	}
	return events.APIGatewayV2HTTPResponse{
		StatusCode: status,
		Headers:    map[string]string{"Content-Type": "application/json", "Cache-Control": "no-store"},
		Body:       string(b),
	}
}
