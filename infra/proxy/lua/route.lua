-- envjupyter route lookup for the per-environment reverse proxy.
--
-- Used from nginx.conf.tmpl:
--   access_by_lua_block { require("route").lookup() }
--
-- Inputs (nginx variables, set in the config):
--   $env_id       environment id captured from /env-<id>/ (already validated by the location regex)
--   Redis's node (IP literal and port), given once to init_redis_node, when there are no sentinels
--   the Redis user and its password file, given once to init_redis_auth
--   the sentinels and the primary's name there, given once to init_sentinels: Redis is then the
--   primary they name, cached in lua_shared_dict redis_primary and asked again only after the
--   primary failed (no sentinel call per request)
-- Outputs:
--   $backend      "a.b.c.d:port" read from Redis key jupyter:env:<id>
--   $route_status ok | unknown_env | redis_unavailable | invalid_route | error  (for the access log)
--
-- Never logs through ngx.log in request context: nginx appends the full request line
-- (including ?token=...) to every error-log entry. Failure reasons go into $route_status,
-- which the access log records without the query string.

local redis = require "nginx.redis"
local routecache = require "routecache"

local _M = {}

local KEY_PREFIX = "jupyter:env:"
local CONNECT_TIMEOUT_MS = 150   -- Redis unreachable => fail fast
local COMMAND_TIMEOUT_MS = 300
local POOL_IDLE_MS = 30000
local POOL_SIZE = 32             -- per worker

-- An error is JSON when the client asks for it, or when the request is to
-- Jupyter's REST API (/env-<id>/api/...): JupyterLab shows the "message" of
-- a JSON error body and nothing of an HTML page.
local ENV_API_PATH = [[^/env-[a-zA-Z0-9][a-zA-Z0-9-]{0,62}/api/]]
local function wants_json()
    local accept = ngx.var.http_accept
    if accept ~= nil and string.find(accept, "application/json", 1, true) ~= nil then
        return true
    end
    return ngx.re.find(ngx.var.request_uri or "", ENV_API_PATH, "jo") ~= nil
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

-- The proxy's Redis user (infra/redis/users.acl: it may read the routes,
-- tokens and link keys, and mark tickets used, nothing else).
local redis_user, redis_password

-- init_redis_auth (init_by_lua, in the master, which may read a file only
-- root can) reads the password of user from password_file; the workers
-- inherit it. No file: no AUTH (a Redis without users, for development).
-- A file that cannot be read stops nginx from starting.
function _M.init_redis_auth(user, password_file)
    if password_file == "" then
        return
    end
    local f, err = io.open(password_file, "r")
    if not f then
        error("reading the Redis password file: " .. err)
    end
    local password = (f:read("*a") or ""):gsub("%s+$", "")
    f:close()
    if password == "" then
        error("the Redis password file " .. password_file .. " is empty")
    end
    redis_user, redis_password = user, password
end

-- Redis without sentinels (init_redis_node): the one node, "ip:port".
local node_addr

-- init_redis_node (init_by_lua) takes where Redis is when there are no
-- sentinels (the template's RedisHost and RedisPort).
function _M.init_redis_node(host, port)
    node_addr = host .. ":" .. port
end

-- The sentinels (init_sentinels) that know which Redis node is the primary
-- now; none: Redis is the node of init_redis_node.
local sentinels, master_name
-- The primary's "ip:port", as the sentinels last said, shared by the
-- workers (lua_shared_dict redis_primary); each worker keeps its parse of
-- the address it last used.
local PRIMARY_KEY = "primary"
local seen_addr, seen_host, seen_port

-- init_sentinels (init_by_lua) takes the sentinels, "ip:port" separated by
-- commas (empty: none), and the name they know the primary by.
function _M.init_sentinels(list, name)
    for addr in string.gmatch(list, "[^,]+") do
        local host, port = string.match(addr, "^(%d+%.%d+%.%d+%.%d+):(%d+)$")
        if not host then
            error("not an ip:port sentinel address: " .. addr)
        end
        sentinels = sentinels or {}
        sentinels[#sentinels + 1] = { host = host, port = tonumber(port) }
    end
    master_name = name
end

-- ask_sentinels asks the sentinels, one after another, where the primary
-- is, and shares the answer. Only after a failure of the primary: the
-- requests between read the shared answer.
local function ask_sentinels()
    for _, s in ipairs(sentinels) do
        local sred = redis:new()
        sred:set_timeout(CONNECT_TIMEOUT_MS)
        if sred:connect(s.host, s.port) then
            sred:set_timeout(COMMAND_TIMEOUT_MS)
            local ok = not redis_password or sred:auth(redis_user, redis_password)
            local res = ok and sred:sentinel("get-master-addr-by-name", master_name)
            sred:close()
            if type(res) == "table" and parse_backend(tostring(res[1]) .. ":" .. tostring(res[2])) then
                local addr = res[1] .. ":" .. res[2]
                ngx.shared.redis_primary:set(PRIMARY_KEY, addr)
                return addr
            end
        end
    end
    return nil, "no sentinel knows the primary"
end

-- primary_addr is the primary's "ip:port" as the requests read it now,
-- without asking anyone: nil after it failed, until someone asks again.
local function primary_addr()
    if not sentinels then
        return node_addr
    end
    return ngx.shared.redis_primary:get(PRIMARY_KEY)
end

-- primary returns where Redis's primary is (host, port, "ip:port"): as the
-- sentinels last said, asking them if no one has yet.
local function primary()
    local addr = primary_addr()
    if not addr then
        local err
        addr, err = ask_sentinels()
        if not addr then return nil, err end
    end
    if addr ~= seen_addr then
        local host, port = string.match(addr, "^(.+):(%d+)$")
        seen_addr, seen_host, seen_port = addr, host, tonumber(port)
    end
    return seen_host, seen_port, addr
end

-- retryable tells the answers of a node that is not (yet) the primary: a
-- replica (READONLY) or a node still loading its data (LOADING).
local function retryable(err)
    return type(err) == "string" and (string.find(err, "^READONLY") or string.find(err, "^LOADING")) ~= nil
end

-- lost_primary forgets the primary after a connection failed (the socket's
-- errors are lowercase: closed, timeout, connection refused) or the node
-- answered retryable: the next request asks the sentinels again. Other
-- answers of Redis (NOPERM, WRONGPASS...) come from the primary itself.
local function lost_primary(err)
    if sentinels and (retryable(err) or type(err) ~= "string" or not string.find(err, "^%u+ ")) then
        ngx.shared.redis_primary:delete(PRIMARY_KEY)
    end
end

-- connect returns a signed-in connection to the primary, pooled if one is
-- free, and the primary's "ip:port" (or nil, why, and whether to try again).
-- A new connection signs in first; pooled ones are already signed in.
local function connect()
    local host, port, addr = primary()
    if not host then
        return nil, port -- why no sentinel answered
    end
    local red, err = redis:new()
    if not red then
        return nil, err
    end
    red:set_timeout(CONNECT_TIMEOUT_MS)
    local ok
    ok, err = red:connect(host, port)
    if not ok then
        lost_primary(err)
        return nil, err, true
    end
    red:set_timeout(COMMAND_TIMEOUT_MS)
    if redis_password and red:get_reused_times() == 0 then
        ok, err = red:auth(redis_user, redis_password)
        if not ok then
            red:close()
            lost_primary(err)
            return nil, err, retryable(err)
        end
    end
    return red, nil, nil, addr
end

-- with_redis runs fn(red) on a pooled connection to the primary; only a
-- connection that completed all its requests goes back to the pool. When
-- the primary cannot be reached, or answers that it is not one (after a
-- failover), the request tries once more on the primary the sentinels
-- name now: fn has done nothing then (a refused write is not done).
local function with_redis(fn)
    local red, err, again = connect()
    if not red and again and sentinels then
        red, err = connect()
    end
    if not red then
        return nil, err
    end
    local res
    res, err = fn(red)
    if err then
        red:close()
        lost_primary(err)
        if not retryable(err) or not sentinels then
            return nil, err
        end
        red, err = connect()
        if not red then
            return nil, err
        end
        res, err = fn(red)
        if err then
            red:close()
            return nil, err
        end
    end
    red:set_keepalive(POOL_IDLE_MS, POOL_SIZE)
    return res
end

-- init_worker (init_worker_by_lua) starts this worker's subscriber to the
-- invalidations of its route cache (routecache.lua), on the primary the
-- requests read.
function _M.init_worker()
    routecache.start(function()
        local red, _, _, addr = connect()
        return red, addr
    end, function(addr)
        return primary_addr() == addr
    end)
end

-- cached_keys reads the link keys from the worker's copy; a key it lacks
-- reads as unavailable (verify's 502), and the request then reads Redis.
local function cached_keys(addr)
    return { hget = function(_, _, kid)
        local secret = routecache.link_key(kid, addr)
        if secret == nil then return nil, "not cached" end
        return secret
    end }
end

-- recording reads the link keys from Redis and keeps them in the worker's
-- copy, unless an invalidation came since began.
local function recording(red, began)
    return { hget = function(_, hash, kid)
        local secret, err = red:hget(hash, kid)
        if not err then routecache.put_link_key(began, kid, secret) end
        return secret, err
    end }
end

-- from_cache answers a request without a ticket from the worker's copy:
-- the route, the instance's token and, with a session cookie, its check.
-- nil: the copy cannot answer; Redis must.
local function from_cache(env, cookie)
    local addr = primary_addr()
    local e = routecache.get(env, addr)
    if not e then return nil end
    local out = { route = e.route, current = e.current }
    if cookie then
        out.decision = session.authorize(cached_keys(addr), env, cookie, e.current)
        if out.decision.status == 502 then return nil end
    end
    return out
end

-- from_redis reads the route, the token and their lifetimes in one round
-- trip, then exchanges the ticket or checks the cookie; the worker's copy
-- keeps what was read.
local function from_redis(red, env, ticket, cookie, began)
    red:init_pipeline(4)
    red:get(KEY_PREFIX .. env)
    red:get(session.TOKEN_PREFIX .. env)
    red:pttl(KEY_PREFIX .. env)
    red:pttl(session.TOKEN_PREFIX .. env)
    local got, rerr = red:commit_pipeline()
    if not got then return nil, rerr end
    for _, v in ipairs(got) do
        if type(v) == "table" and v[1] == false then return nil, v[2] end
    end
    local out = { route = got[1], current = got[2] }
    if out.route ~= nil and out.route ~= ngx.null then
        if ticket then
            out.decision = session.exchange(red, env, ticket, out.current)
        elseif cookie then
            out.decision = session.authorize(recording(red, began), env, cookie, out.current)
        end
        if out.decision and out.decision.err then return nil, out.decision.err end
    end
    routecache.put(began, env, got[1], got[2], got[3], got[4])
    return out
end

-- The raw path as the browser sent it (never nginx's decoded, normalised $uri).
local function raw_path()
    local uri = ngx.var.request_uri or ""
    local q = string.find(uri, "?", 1, true)
    if q then
        return string.sub(uri, 1, q - 1)
    end
    return uri
end

-- unsafe says why a raw path could mean one place to the browser (which
-- scopes cookies by it) and another to a server that decodes or normalises
-- it: encoded slashes, backslashes and dots, their double encodings, NUL,
-- and dot segments. Such paths are refused in every mode.
local ENCODED = { "%2f", "%5c", "%2e", "%00", "%252f", "%255c", "%252e", "%2525" }
local function unsafe(path)
    if string.sub(path, 1, 1) ~= "/" then
        return "not an absolute path"
    end
    local lower = string.lower(path)
    for _, e in ipairs(ENCODED) do
        if string.find(lower, e, 1, true) then
            return "an encoded " .. e
        end
    end
    if string.find(path, "\\", 1, true) then
        return "a backslash"
    end
    if string.find(path .. "/", "/%.%.?/") then
        return "a dot segment"
    end
end
_M.unsafe = unsafe

-- path_env returns the environment id of /env-<id>... and what follows it.
-- The id pattern is shared/instance.ValidEnvironmentID's (its test reads
-- this line).
local ENV_PATH = [[^/env-([a-zA-Z0-9][a-zA-Z0-9-]{0,62})(.*)$]]
local function path_env(path)
    local m = ngx.re.match(path, ENV_PATH, "jo")
    if m then
        return m[1], m[2]
    end
end

-- host_env returns the environment whose own host this is (lowercase id):
-- env-<id>.<domain>. Any other name is the console's origin. Always nil in
-- the path mode.
local function host_env()
    if ngx.var.env_origin ~= "host" then
        return nil
    end
    local host, suffix = ngx.var.host or "", "." .. ngx.var.env_domain
    if #host <= #suffix or string.sub(host, -#suffix) ~= suffix then
        return nil
    end
    local id = string.match(string.sub(host, 1, #host - #suffix), "^env%-([a-z0-9][a-z0-9%-]*)$")
    if id and #id <= 63 then
        return id
    end
end

local function refuse_path(why)
    ngx.var.route_status = "bad_path"
    return respond(400, "bad_path", "Bad request path",
                   "The address holds " .. why .. ", which proxies and browsers read differently; it is refused.")
end

-- host_disagrees tells an absolute-form request (GET http://a/... HTTP/1.1)
-- whose request line names another host than its Host header: nginx routes
-- by the first ($host), while Jupyter and the origin checks see the second.
local function host_disagrees()
    local header = string.gsub(string.lower(ngx.var.http_host or ""), ":%d+$", "")
    return header ~= "" and header ~= ngx.var.host
end

local function refuse_host()
    ngx.var.route_status = "bad_host"
    return respond(400, "bad_host", "Bad request host",
                   "The request line and the Host header name different hosts; it is refused.")
end

-- dispatch (rewrite phase of every location but /healthz) sends an
-- environment's requests to @env and lets the console's through. Routing
-- reads the raw URI and, in the host mode, the Host: an environment is
-- served only on env-<id>.<domain>, and that host serves nothing else.
function _M.dispatch()
    local path = raw_path()
    local why = unsafe(path)
    if why then
        return refuse_path(why)
    end
    if host_disagrees() then
        return refuse_host()
    end
    local henv = host_env()
    local penv, rest = path_env(path)
    if henv then
        if not penv then
            ngx.var.route_status = "not_environment"
            return respond(404, "not_found", "Not found",
                           "This host serves its environment's JupyterLab under /env-" .. henv .. "/ only.")
        elseif penv ~= henv then -- also env-ABC's path on env-abc's host: ids are lowercase there
            ngx.var.env_id = penv
            ngx.var.route_status = "other_environment"
            return respond(400, "environment_mismatch", "Wrong host for this environment",
                           "The host and the path of this address name different environments; it is refused.")
        end
    elseif penv and ngx.var.env_origin == "host" then
        ngx.var.env_id = penv
        ngx.var.route_status = "console_origin"
        return respond(404, "wrong_origin", "Not found here",
                       "Environments are served on their own host, env-<id>." .. ngx.var.env_domain .. ", not here.")
    elseif not penv then
        if string.sub(path, 1, 5) == "/env-" then
            return _M.invalid_id()
        end
        return -- the console's own files and the API
    end
    ngx.var.env_id = penv
    if rest == "" then
        local args = ngx.var.args
        return ngx.redirect("/env-" .. penv .. "/" .. (args and ("?" .. args) or ""), 301)
    end
    if string.sub(rest, 1, 1) ~= "/" then
        return _M.invalid_id()
    end
    -- WebSockets (kernels, terminals) idle for long between messages; any
    -- other request gets the ordinary read timeout (nginx.conf.tmpl).
    if string.lower(ngx.var.http_upgrade or "") == "websocket" then
        return ngx.exec("@env_socket")
    end
    return ngx.exec("@env")
end

-- console_only (the API's location) refuses unsafe paths and environment hosts.
function _M.console_only()
    local why = unsafe(raw_path())
    if why then
        return refuse_path(why)
    end
    if host_disagrees() then
        return refuse_host()
    end
    if host_env() ~= nil then
        ngx.var.route_status = "not_console"
        return respond(404, "not_found", "Not found", "The API is not served on an environment's host.")
    end
end

-- cross_origin tells a request another origin's page made: its Origin is
-- not the environment's own, or the browser says it comes from another
-- site or origin and is not a top-level navigation (how the console opens
-- an environment). Such requests never reach an environment: its cookies
-- and the proxy's session would otherwise act for the other page.
local function cross_origin()
    local origin = ngx.var.http_origin
    if origin and string.lower(origin) ~= string.lower(ngx.var.fwd_proto .. "://" .. (ngx.var.http_host or "")) then
        return true
    end
    local site = ngx.var.http_sec_fetch_site
    if site and site ~= "same-origin" and site ~= "none" then
        return ngx.var.http_sec_fetch_mode ~= "navigate" or ngx.var.http_sec_fetch_dest ~= "document"
    end
    return false
end

-- sso_required (access mode sso, docs/SSO.md): only the proxy's sessions
-- open an environment, and Jupyter sees no other request. A page
-- navigation without a valid session (none, expired, or of an instance
-- that ended) goes to the sign-in on the console's host, which ends in a
-- single-use access link for this environment; anything else gets 401.
local function sso_required(env, d)
    ngx.var.route_status = d and d.code or "sso_required"
    local mode = ngx.var.http_sec_fetch_mode
    if ngx.req.get_method() ~= "GET" or (mode and mode ~= "navigate") or wants_json() then
        return respond(401, "sso_required", "Sign-in required",
                       "Open this environment's JupyterLab in the browser to sign in.")
    end
    -- The console's host: this one without its first label (env-<id>.).
    local host = ngx.var.http_host or ""
    if ngx.var.env_origin == "host" then
        host = string.sub(host, (string.find(host, ".", 1, true) or 0) + 1)
    end
    ngx.header["Cache-Control"] = "no-store"
    return ngx.redirect(ngx.var.fwd_proto .. "://" .. host .. "/sso/start?env=" .. env, 302)
end

-- sso_only (the sign-in's location) serves /sso/ on the console's host of
-- a proxy in access mode sso, and nowhere else.
function _M.sso_only()
    _M.console_only()
    if ngx.var.access_mode ~= "sso" then
        ngx.var.route_status = "not_sso"
        return respond(404, "not_found", "Not found", "Sign-in is not enabled here.")
    end
end

function _M.lookup()
    local env = ngx.var.env_id
    if env == nil or env == "" then
        ngx.var.route_status = "error"
        return respond(404, "unknown_environment", "Environment not found",
                       "No environment id in the request path.")
    end
    if cross_origin() then
        ngx.var.route_status = "cross_origin"
        return respond(403, "cross_origin", "Access refused",
                       "Requests from another site's or environment's page are refused.")
    end
    local prefix = "/env-" .. env .. "/"
    local ticket = raw_path() == prefix .. "_access" and (ngx.var.arg_t or "") or nil
    local cookies = session.parse_cookies(ngx.var.http_cookie)
    local cookie = cookies[session.cookie_name(env)]

    local ok, res, err = true, not ticket and from_cache(env, cookie), nil
    if not res then
        local began = routecache.begin()
        ok, res, err = pcall(with_redis, function(red)
            return from_redis(red, env, ticket, cookie, began)
        end)
    end
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

    -- In the link and sso modes only the proxy's own sessions open an
    -- environment: Jupyter's token (which anyone who once held a session
    -- could have copied from a kernel's environment) is refused from
    -- browsers, and so is Jupyter's login cookie.
    local d = res.decision
    local mode = ngx.var.access_mode
    if (mode == "sso" or mode == "link") and not ticket and not (d and (d.token or d.status == 502)) then
        if mode == "sso" then
            return sso_required(env, d)
        end
        ngx.var.route_status = d and d.code or "session_required"
        return respond(401, "session_required", "Open it from the console",
                       "This environment opens only through a link from the console; Jupyter's own token is not accepted here.")
    end
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
    -- What reaches Jupyter: never the proxy's sessions, and its own login
    -- cookie only if bound to the instance now running (session.lua).
    local instance = session.instance_of(res.current)
    ngx.ctx.base, ngx.ctx.instance, ngx.ctx.authed = prefix, instance, d ~= nil and d.token ~= nil
    session.forward_cookies(cookies, instance, ngx.ctx.authed)

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

-- Body for nginx's 413: a request body over the limit of the location
-- that judged it (an environment's: $env_body_limit). It may come before
-- dispatch ran (nginx checks Content-Length first), so the environment is
-- read from the path here.
function _M.too_large()
    local env = path_env(raw_path())
    if env and (ngx.var.env_id or "") == "" then
        ngx.var.env_id = env
    end
    ngx.var.route_status = "too_large"
    if not env then
        return respond(413, "request_too_large", "Request too large",
                       "The request's body is larger than this address accepts.")
    end
    return respond(413, "request_too_large", "Request too large",
                   "This request's body is larger than the " .. ngx.var.env_body_limit ..
                   " an environment accepts through the proxy (its body limit).")
end

-- Body for nginx's 429 of limit_conn: the environment holds as many
-- connections through the proxy as it may ($env_conn_limit).
function _M.busy()
    ngx.var.route_status = "busy"
    return respond(429, "environment_busy", "Environment busy",
                   "This environment already holds " .. ngx.var.env_conn_limit ..
                   " connections through the proxy, its limit. Close some of its tabs, or retry shortly.")
end

-- Body for requests to /env-<something> whose id is not a valid environment id.
function _M.invalid_id()
    ngx.var.route_status = "invalid_id"
    return respond(404, "invalid_environment_id", "Environment not found",
                   "The environment id in the URL is not valid.")
end

return _M
