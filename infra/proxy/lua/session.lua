-- Short-lived access links and browser sessions (see shared/accesslink).
--
-- GET /env-<id>/_access?t=<ticket>: a ticket signed by the control plane,
-- valid a few minutes and once, is exchanged for a session cookie scoped to
-- /env-<id>/; the response redirects to the clean URL. On later requests the
-- cookie is checked and Jupyter's token is added towards the backend, so the
-- browser never holds it. Keys (kid -> base64 secret) are in the Redis hash
-- jupyter:link-keys; the token of an environment's instance is in
-- jupyter:token:<env> as "<instance id> <token>"; both are written by the
-- sidecars.
--
-- Token and format: "v1.<kid>.<env>.<instance>.<expiry>.<nonce>.<mac>",
-- mac = base64url(HMAC-SHA1(secret, everything before it)).

local _M = {}

local KEYS = "jupyter:link-keys"
local TOKEN_PREFIX = "jupyter:token:"
local USED_PREFIX = "jupyter:ticket-used:"
local SESSION_TTL = 12 * 3600 -- seconds; a browser session never outlives this
_M.COOKIE = "ejsession"

local function b64url(bin)
    return (ngx.encode_base64(bin):gsub("+", "-"):gsub("/", "_"):gsub("=", ""))
end

local function equal(a, b) -- constant time for equal lengths
    if #a ~= #b then return false end
    local diff = 0
    for i = 1, #a do
        diff = bit.bor(diff, bit.bxor(string.byte(a, i), string.byte(b, i)))
    end
    return diff == 0
end

local function split(s)
    local parts = {}
    for p in string.gmatch(s, "[^.]+") do parts[#parts + 1] = p end
    return parts
end

-- verify returns env, instance, nonce of a valid token, or nil and a code.
local function verify(red, token, now)
    if type(token) ~= "string" or #token > 512 then return nil, "malformed" end
    local p = split(token)
    if #p ~= 7 or p[1] ~= "v1" then return nil, "malformed" end
    local secret, err = red:hget(KEYS, p[2])
    if err then return nil, "unavailable" end
    if secret == nil or secret == ngx.null then return nil, "unknown_key" end
    local key = ngx.decode_base64(secret)
    if not key then return nil, "unknown_key" end
    local payload = table.concat(p, ".", 1, 6)
    if not equal(b64url(ngx.hmac_sha1(key, payload)), p[7]) then return nil, "bad_signature" end
    local exp = tonumber(p[5])
    if not exp or now >= exp then return nil, "expired" end
    return { kid = p[2], key = key, env = p[3], instance = p[4], nonce = p[6], exp = exp }
end

local function sign(claims, exp)
    local payload = table.concat({ "v1", claims.kid, claims.env, claims.instance, tostring(exp),
                                   string.format("%08x%08x", math.random(0, 0x7fffffff), math.random(0, 0x7fffffff)) }, ".")
    return payload .. "." .. b64url(ngx.hmac_sha1(claims.key, payload))
end

-- current returns the live instance and token of an environment.
local function current(red, env)
    local v, err = red:get(TOKEN_PREFIX .. env)
    if err then return nil end
    if v == nil or v == ngx.null then return nil end
    local instance, token = string.match(v, "^(%S+) (%S+)$")
    return instance, token
end

-- exchange turns a ticket into a session; it returns a decision table.
function _M.exchange(red, env, ticket)
    local now = ngx.time()
    local c, why = verify(red, ticket, now)
    if not c then
        if why == "unavailable" then return { status = 502, code = "route_table_unavailable" } end
        return { status = why == "expired" and 401 or 403, code = "link_" .. why }
    end
    if c.env ~= env then return { status = 403, code = "link_other_environment" } end
    local instance = current(red, env)
    if instance ~= c.instance then return { status = 401, code = "link_instance_gone" } end
    -- Once only: the first use claims the nonce until the ticket expires anyway.
    local ok, err = red:set(USED_PREFIX .. c.nonce, "1", "EX", math.max(c.exp - now, 1), "NX")
    if err then return { status = 502, code = "route_table_unavailable" } end
    if ok == nil or ok == ngx.null then return { status = 403, code = "link_used" } end
    local cookie = sign(c, now + SESSION_TTL)
    return {
        status = 302,
        location = "/env-" .. env .. "/",
        cookie = _M.COOKIE .. "=" .. cookie .. "; Path=/env-" .. env .. "/; Max-Age=" .. SESSION_TTL ..
                 "; HttpOnly; Secure; SameSite=Lax",
    }
end

-- authorize checks a session cookie; it returns { token = ... } or a refusal.
function _M.authorize(red, env, cookie)
    local c, why = verify(red, cookie, ngx.time())
    if not c then
        if why == "unavailable" then return { status = 502, code = "route_table_unavailable" } end
        return { status = 401, code = "session_" .. why }
    end
    if c.env ~= env then return { status = 403, code = "session_other_environment" } end
    local instance, token = current(red, env)
    if not token or instance ~= c.instance then return { status = 401, code = "session_instance_gone" } end
    return { token = token }
end

-- Jupyter writes the token it was authenticated with into its pages (the
-- notebook's data-jupyter-api-token, links with ?token=). For session
-- requests the proxy authenticated, it is removed from what goes back: the
-- page's scripts then call the API with the session cookie, which works.
function _M.header_filter()
    local tok = ngx.ctx.scrub
    if not tok then return end
    ngx.header.content_length = nil -- the body changes length
    local loc = ngx.header.location
    if type(loc) == "string" then
        ngx.header.location = (loc:gsub(tok, ""))
    end
end

function _M.body_filter()
    local tok = ngx.ctx.scrub
    if not tok then return end
    local chunk = (ngx.ctx.carry or "") .. (ngx.arg[1] or "")
    chunk = chunk:gsub(tok, "") -- the token is hex: no pattern characters
    if ngx.arg[2] then
        ngx.arg[1], ngx.ctx.carry = chunk, nil
        return
    end
    -- Hold back what could be the start of a token split across chunks.
    local keep = #tok - 1
    if #chunk > keep then
        ngx.arg[1], ngx.ctx.carry = chunk:sub(1, #chunk - keep), chunk:sub(#chunk - keep + 1)
    else
        ngx.arg[1], ngx.ctx.carry = "", chunk
    end
end

return _M
