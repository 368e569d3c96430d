-- envjupyter route lookup for the per-environment reverse proxy.
--
-- Used from nginx.conf.tmpl:
--   access_by_lua_block { require("route").lookup() }
--
-- Inputs (nginx variables, set in the config):
--   $env_id       environment id captured from /env-<id>/ (already validated by the location regex)
--   $redis_host   Redis host (IP literal), $redis_port  Redis port
-- Outputs:
--   $backend      "a.b.c.d:port" read from Redis key jupyter:env:<id>
--   $route_status ok | unknown_env | redis_unavailable | invalid_route | error  (for the access log)
--
-- Never logs through ngx.log in request context: nginx appends the full request line
-- (including ?token=...) to every error-log entry. Failure reasons go into $route_status,
-- which the access log records without the query string.

local redis = require "nginx.redis"

local _M = {}

local KEY_PREFIX = "jupyter:env:"
local CONNECT_TIMEOUT_MS = 150   -- Redis unreachable => fail fast
local COMMAND_TIMEOUT_MS = 300
local POOL_IDLE_MS = 30000
local POOL_SIZE = 32             -- per worker

local function wants_json()
    local accept = ngx.var.http_accept
    return accept ~= nil and string.find(accept, "application/json", 1, true) ~= nil
end

local function html_escape(s)
    return (string.gsub(s, "[&<>\"']", {
        ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;", ["'"] = "&#39;",
    }))
end

local function json_string(s)
    s = string.gsub(s, '[%c"\\]', function(c)
        if c == '"' then return '\\"' end
        if c == "\\" then return "\\\\" end
        return string.format("\\u%04x", string.byte(c))
    end)
    return '"' .. s .. '"'
end

-- Send a small final error response from Lua and stop request processing.
local function respond(status, code, title, message)
    local env = ngx.var.env_id or ""
    ngx.status = status
    ngx.header["Cache-Control"] = "no-store"
    ngx.header["X-Content-Type-Options"] = "nosniff"
    ngx.header["X-Envjupyter-Error"] = code
    if wants_json() then
        ngx.header["Content-Type"] = "application/json"
        ngx.print('{"error":', json_string(code), ',"message":', json_string(message),
                  ',"environment":', json_string(env), '}\n')
    else
        ngx.header["Content-Type"] = "text/html; charset=utf-8"
        ngx.print('<!doctype html>\n<html><head><meta charset="utf-8"><title>', status, ' ',
                  html_escape(title), '</title></head>\n<body><h1>', html_escape(title),
                  '</h1>\n<p>', html_escape(message), '</p>\n<p><small>environment: <code>',
                  html_escape(env), '</code> &middot; ', code, '</small></p></body></html>\n')
    end
    return ngx.exit(status)
end
_M.respond = respond

-- Strict "a.b.c.d:port" (IPv4 literal, no leading zeros, port 1-65535).
local function parse_backend(v)
    if type(v) ~= "string" or #v > 21 then
        return nil
    end
    local a, b, c, d, p = string.match(v,
        "^(%d%d?%d?)%.(%d%d?%d?)%.(%d%d?%d?)%.(%d%d?%d?):(%d%d?%d?%d?%d?)$")
    if not a then
        return nil
    end
    for _, o in ipairs({ a, b, c, d }) do
        if (#o > 1 and string.sub(o, 1, 1) == "0") or tonumber(o) > 255 then
            return nil
        end
    end
    if a == "0" then
        return nil
    end
    local port = tonumber(p)
    if string.sub(p, 1, 1) == "0" or port < 1 or port > 65535 then
        return nil
    end
    return v
end
_M.parse_backend = parse_backend

local session = require "session"

local SESSION_MESSAGES = {
    [401] = "This access link or session has expired or is no longer valid. Open JupyterLab again from the console.",
    [403] = "This access link is not valid here, or it has been used already. Open JupyterLab again from the console.",
}

-- with_redis runs fn(red) on a pooled connection; only a connection that
-- completed all its requests goes back to the pool.
local function with_redis(fn)
    local red, err = redis:new()
    if not red then
        return nil, err
    end
    red:set_timeout(CONNECT_TIMEOUT_MS)
    local ok
    ok, err = red:connect(ngx.var.redis_host, tonumber(ngx.var.redis_port))
    if not ok then
        return nil, err
    end
    red:set_timeout(COMMAND_TIMEOUT_MS)
    local res
    res, err = fn(red)
    if err then
        red:close()
        return nil, err
    end
    red:set_keepalive(POOL_IDLE_MS, POOL_SIZE)
    return res
end

function _M.lookup()
    local env = ngx.var.env_id
    if env == nil or env == "" then
        ngx.var.route_status = "error"
        return respond(404, "unknown_environment", "Environment not found",
                       "No environment id in the request path.")
    end
    local prefix = "/env-" .. env .. "/"
    local ticket = ngx.var.uri == prefix .. "_access" and (ngx.var.arg_t or "") or nil
    local cookie = ngx.var["cookie_" .. session.COOKIE]

    local ok, res, err = pcall(with_redis, function(red)
        local route, rerr = red:get(KEY_PREFIX .. env)
        if rerr then return nil, rerr end
        local out = { route = route }
        if route ~= nil and route ~= ngx.null then
            if ticket then
                out.decision = session.exchange(red, env, ticket)
            elseif cookie then
                out.decision = session.authorize(red, env, cookie)
            end
        end
        return out
    end)
    if not ok or err then
        ngx.var.route_status = "redis_unavailable"
        return respond(502, "route_table_unavailable", "Route table unavailable",
                       "The environment route table (Redis) is currently unavailable. Please retry shortly.")
    end

    if res.route == nil or res.route == ngx.null then
        ngx.var.route_status = "unknown_env"
        return respond(404, "unknown_environment", "Environment not found",
                       "This environment does not exist or is not running.")
    end

    local backend = parse_backend(res.route)
    if not backend then
        ngx.var.route_status = "invalid_route"
        return respond(502, "invalid_route", "Invalid environment route",
                       "The route for this environment is malformed.")
    end

    local d = res.decision
    if d and d.status == 302 then
        ngx.var.route_status = "session_started"
        ngx.header["Set-Cookie"] = d.cookie
        ngx.header["Cache-Control"] = "no-store"
        return ngx.redirect(d.location, 302)
    elseif d and d.status then
        ngx.var.route_status = d.code
        if d.status == 502 then
            return respond(502, "route_table_unavailable", "Route table unavailable",
                           "The environment route table (Redis) is currently unavailable. Please retry shortly.")
        end
        return respond(d.status, d.code, d.status == 401 and "Link or session expired" or "Access refused",
                       SESSION_MESSAGES[d.status])
    elseif d and d.token then
        -- Towards Jupyter only: the browser never sees this token (it is
        -- also scrubbed from the responses; they must come uncompressed).
        ngx.req.set_header("Authorization", "token " .. d.token)
        ngx.req.clear_header("Accept-Encoding")
        ngx.ctx.scrub = d.token
    end

    ngx.var.route_status = "ok"
    ngx.var.backend = backend
end

-- Body for nginx-generated 502/504 when the backend itself cannot be reached
-- (used via error_page in a named location).
function _M.backend_error(status)
    if status == 504 then
        return respond(504, "environment_timeout", "Environment not responding",
                       "The environment's JupyterLab server did not respond in time.")
    end
    return respond(502, "environment_unreachable", "Environment unreachable",
                   "The environment's JupyterLab server is not reachable (it may be starting or stopped).")
end

-- Body for requests to /env-<something> whose id is not a valid environment id.
function _M.invalid_id()
    ngx.var.route_status = "invalid_id"
    return respond(404, "invalid_environment_id", "Environment not found",
                   "The environment id in the URL is not valid.")
end

return _M
