-- Short-lived access links, browser sessions and the cookies that reach and
-- leave an environment (see shared/accesslink and docs/SECURITY.md).
--
-- GET /env-<id>/_access?t=<ticket>: a ticket signed by the control plane,
-- valid a few minutes and once, is exchanged for a session cookie
-- __Host-ejsession-<id> (Secure, Path=/, no Domain: locked to the host);
-- the response redirects to the clean URL. On later requests the cookie is
-- checked and Jupyter's token is added towards the backend, so the browser
-- never holds it. Keys (kid -> base64 secret) are in the Redis hash
-- jupyter:link-keys; the token of an environment's instance is in
-- jupyter:token:<env> as "<instance id> <token>"; both are written by the
-- sidecars.
--
-- Formats: ticket "t1.<kid>.<env>.<instance>.<expiry>.<nonce>.<mac>", session
-- "s1.<same>"; mac = base64url(HMAC-SHA1(k, everything before it)) with
-- k = HMAC-SHA1(secret, "envjupyter ticket v1" or "envjupyter session v1"):
-- neither works as the other, and only a ticket is ever exchanged, so a
-- session ends 12 hours after its ticket was used at the latest.

local _M = {}

local KEYS = "jupyter:link-keys"
_M.TOKEN_PREFIX = "jupyter:token:"
local USED_PREFIX = "jupyter:ticket-used:"
local SESSION_TTL = 12 * 3600 -- seconds; a browser session never outlives this
local COOKIE_PREFIX = "__Host-ejsession-"
local TICKET = { prefix = "t1", label = "envjupyter ticket v1" }
local SESSION = { prefix = "s1", label = "envjupyter session v1" }
-- Jupyter's login cookie is "username-<host>"; the proxy binds its value to
-- the instance that set it: "ej1.<instance>.<Jupyter's value>" (inside the
-- quotes if Jupyter quoted it).
local LOGIN_PREFIX = "username-"

function _M.cookie_name(env)
    return COOKIE_PREFIX .. env
end

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

-- verify returns the claims of a valid string of the purpose, or nil and a code.
local function verify(red, purpose, token, now)
    if type(token) ~= "string" or #token > 512 then return nil, "malformed" end
    local p = split(token)
    if #p ~= 7 or p[1] ~= purpose.prefix then return nil, "malformed" end
    local secret, err = red:hget(KEYS, p[2])
    if err then return nil, "unavailable" end
    if secret == nil or secret == ngx.null then return nil, "unknown_key" end
    local key = ngx.decode_base64(secret)
    if not key then return nil, "unknown_key" end
    local payload = table.concat(p, ".", 1, 6)
    if not equal(b64url(ngx.hmac_sha1(ngx.hmac_sha1(key, purpose.label), payload)), p[7]) then
        return nil, "bad_signature"
    end
    local exp = tonumber(p[5])
    if not exp or now >= exp then return nil, "expired" end
    return { kid = p[2], key = key, env = p[3], instance = p[4], nonce = p[6], exp = exp }
end

local function sign(purpose, claims, exp)
    local payload = table.concat({ purpose.prefix, claims.kid, claims.env, claims.instance, tostring(exp),
                                   string.format("%08x%08x", math.random(0, 0x7fffffff), math.random(0, 0x7fffffff)) }, ".")
    return payload .. "." .. b64url(ngx.hmac_sha1(ngx.hmac_sha1(claims.key, purpose.label), payload))
end

-- instance_of and token_of read jupyter:token:<env> ("<instance> <token>").
function _M.instance_of(v)
    if type(v) ~= "string" then return nil end
    return (string.match(v, "^(%S+) %S+$"))
end

local function token_of(v)
    if type(v) ~= "string" then return nil end
    return (string.match(v, "^%S+ (%S+)$"))
end

-- exchange turns a ticket into a session; it returns a decision table.
function _M.exchange(red, env, ticket, current)
    local now = ngx.time()
    local c, why = verify(red, TICKET, ticket, now)
    if not c then
        if why == "unavailable" then return { status = 502, code = "route_table_unavailable" } end
        return { status = why == "expired" and 401 or 403, code = "link_" .. why }
    end
    if c.env ~= env then return { status = 403, code = "link_other_environment" } end
    if _M.instance_of(current) ~= c.instance then return { status = 401, code = "link_instance_gone" } end
    -- Once only: the first use claims the nonce until the ticket expires anyway.
    local ok, err = red:set(USED_PREFIX .. c.nonce, "1", "EX", math.max(c.exp - now, 1), "NX")
    -- A node that is no longer the primary refuses the write (READONLY):
    -- err makes the caller try again on the primary.
    if err then return { status = 502, code = "route_table_unavailable", err = err } end
    if ok == nil or ok == ngx.null then return { status = 403, code = "link_used" } end
    return {
        status = 302,
        location = "/env-" .. env .. "/",
        cookie = _M.cookie_name(env) .. "=" .. sign(SESSION, c, now + SESSION_TTL) .. "; Path=/; Max-Age=" ..
                 SESSION_TTL .. "; HttpOnly; Secure; SameSite=Lax",
    }
end

-- authorize checks a session cookie; it returns { token = ... } or a refusal.
function _M.authorize(red, env, cookie, current)
    local c, why = verify(red, SESSION, cookie, ngx.time())
    if not c then
        if why == "unavailable" then return { status = 502, code = "route_table_unavailable" } end
        return { status = 401, code = "session_" .. why }
    end
    if c.env ~= env then return { status = 403, code = "session_other_environment" } end
    local token = token_of(current)
    if not token or _M.instance_of(current) ~= c.instance then
        return { status = 401, code = "session_instance_gone" }
    end
    return { token = token }
end

-- parse_cookies reads a Cookie header into name -> value plus the order.
function _M.parse_cookies(header)
    local out = { order = {} }
    if type(header) ~= "string" then return out end
    for pair in string.gmatch(header, "[^;]+") do
        local name, value = string.match(pair, "^%s*([^=]-)%s*=%s*(.-)%s*$")
        if name and name ~= "" and out[name] == nil and name ~= "order" then
            out[name] = value
            out.order[#out.order + 1] = name
        end
    end
    return out
end

-- unquote splits a cookie value into its quote ('"' or "") and what is
-- inside (Jupyter quotes its login cookie's value); the binding goes inside.
local function unquote(value)
    local inner = string.match(value, '^"(.*)"$')
    if inner then return '"', inner end
    return "", value
end

-- forward_cookies sets the Cookie header Jupyter receives: never a
-- __Host-/__Secure- cookie (the proxy's sessions), and Jupyter's login
-- cookie only when the proxy did not authenticate the request itself and
-- the cookie is bound to the instance now running (replayed from an ended
-- instance, or tossed in by another page, it is dropped).
function _M.forward_cookies(cookies, instance, authed)
    local keep = {}
    for _, name in ipairs(cookies.order) do
        local value = cookies[name]
        if string.sub(name, 1, 2) == "__" then
            value = nil
        elseif string.sub(name, 1, #LOGIN_PREFIX) == LOGIN_PREFIX then
            local bound = instance and "ej1." .. instance .. "."
            local quote, inner = unquote(value)
            if authed or not bound or string.sub(inner, 1, #bound) ~= bound then
                value = nil
            else
                value = quote .. string.sub(inner, #bound + 1) .. quote
            end
        end
        if value then keep[#keep + 1] = name .. "=" .. value end
    end
    if #keep > 0 then
        ngx.req.set_header("Cookie", table.concat(keep, "; "))
    else
        ngx.req.clear_header("Cookie")
    end
end

-- rewrite_set_cookie confines one Set-Cookie of Jupyter to its environment:
-- no Domain, a Path inside /env-<id>/, Secure; prefixed names are the
-- proxy's alone; the login cookie is bound to the instance and lives 12
-- hours at most, and is not set at all on requests a session authenticated.
-- It returns the new header value, or nil to drop it.
local function rewrite_set_cookie(sc, base, instance, authed)
    local first, attrs = string.match(sc, "^([^;]*);?(.*)$")
    local name, value = string.match(first or "", "^%s*([^=]-)%s*=%s*(.-)%s*$")
    if not name or name == "" or string.sub(name, 1, 2) == "__" then return nil end
    local login = string.sub(name, 1, #LOGIN_PREFIX) == LOGIN_PREFIX
    if login and (authed or not instance) then return nil end
    local out, path, max_age, expires = {}, nil, nil, nil
    for attr in string.gmatch(attrs, "[^;]+") do
        local k, v = string.match(attr, "^%s*([^=]-)%s*=%s*(.-)%s*$")
        k = string.lower(k or string.match(attr, "^%s*(.-)%s*$"))
        if k == "path" then
            path = v
        elseif k == "max-age" then
            max_age = tonumber(v)
        elseif k == "expires" then
            expires = v
        elseif k == "httponly" then
            out[#out + 1] = "HttpOnly"
        elseif k == "samesite" and v and string.match(v, "^%a+$") then
            out[#out + 1] = "SameSite=" .. v
        end -- Domain, Secure and anything unknown go
    end
    if not path or string.sub(path, 1, #base) ~= base or string.find(path, "%.%.") or string.find(path, "[^%w%-%._~/]") then
        path = base
    end
    local gone = value == "" or value == '""' or (max_age and max_age <= 0)
    if not gone and expires and not max_age then
        local t = ngx.parse_http_time(expires)
        gone = t ~= nil and t <= ngx.time()
    end
    if gone then
        out[#out + 1] = "Max-Age=0"
    elseif login then
        local quote, inner = unquote(value)
        value = quote .. "ej1." .. instance .. "." .. inner .. quote
        out[#out + 1] = "Max-Age=" .. math.min(max_age or SESSION_TTL, SESSION_TTL)
    elseif max_age then
        out[#out + 1] = "Max-Age=" .. max_age
    elseif expires then
        out[#out + 1] = "Expires=" .. expires
    end
    return name .. "=" .. value .. "; Path=" .. path .. "; Secure" ..
           (#out > 0 and ("; " .. table.concat(out, "; ")) or "")
end
_M.rewrite_set_cookie = rewrite_set_cookie

-- without_token removes every occurrence of tok from s as plain text: a
-- token is never read as a Lua pattern, whatever characters it holds.
local function without_token(s, tok)
    local out, i = {}, 1
    while true do
        local a, b = string.find(s, tok, i, true)
        if not a then break end
        out[#out + 1] = string.sub(s, i, a - 1)
        i = b + 1
    end
    out[#out + 1] = string.sub(s, i)
    return table.concat(out)
end

-- header_filter confines Jupyter's cookies and, for requests a session
-- authenticated, removes Jupyter's token from what goes back.
function _M.header_filter()
    local base = ngx.ctx.base
    local set = ngx.header["Set-Cookie"]
    if base and set then
        if type(set) == "string" then set = { set } end
        local kept = {}
        for _, sc in ipairs(set) do
            kept[#kept + 1] = rewrite_set_cookie(sc, base, ngx.ctx.instance, ngx.ctx.authed)
        end
        ngx.header["Set-Cookie"] = #kept > 0 and kept or nil
    end
    local tok = ngx.ctx.scrub
    if not tok then return end
    ngx.header.content_length = nil -- the body changes length
    local loc = ngx.header.location
    if type(loc) == "string" then
        ngx.header.location = without_token(loc, tok)
    end
end

-- Jupyter writes the token it was authenticated with into its pages (the
-- notebook's data-jupyter-api-token, links with ?token=). For session
-- requests the proxy authenticated, it is removed from what goes back: the
-- page's scripts then call the API with the session cookie, which works.
function _M.body_filter()
    local tok = ngx.ctx.scrub
    if not tok then return end
    local chunk = (ngx.ctx.carry or "") .. (ngx.arg[1] or "")
    chunk = without_token(chunk, tok)
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
