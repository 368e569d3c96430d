-- Each nginx worker's copy of what the proxy reads on every request: an
-- environment's route (jupyter:env:<id>) with its instance's token
-- (jupyter:token:<id>), and the access-link keys (jupyter:link-keys). It saves
-- the Redis round trip per request, which was most of the proxy's CPU.
--
-- A copy is only as good as its invalidation. A cache with a lifetime alone is
-- not safe: when a newer start takes a port, customer A's requests, with A's
-- token added, would reach customer B's Jupyter until the lifetime ends. So the
-- copy follows Redis's server-assisted client-side caching: a subscriber per
-- worker asks Redis (CLIENT TRACKING ... BCAST, redirected to itself) for the
-- name of every key under those prefixes that changes, is deleted or expires,
-- and drops it. The copy is used only while that subscriber is connected to
-- the very primary the requests read (Redis sends nothing to a connection
-- that went, so a broken one means "know nothing": the copy is emptied and
-- bypassed until it is back). A worker reads an invalidation before any
-- request that arrives after the write that caused it (the invalidation is
-- on its socket before the writer hears OK); requests already in the same
-- event-loop turn may still see the old value, as a request that read Redis
-- just before the write would.
--
-- Used by route.lua: init_worker starts the subscriber; get/begin/put on the
-- request path.

local _M = {}

local ENV_PREFIX = "jupyter:env:"
local TOKEN_PREFIX = "jupyter:token:"
local LINK_KEYS = "jupyter:link-keys"
local CHANNEL = "__redis__:invalidate"
local MAX_ENTRIES = 20000 -- per worker; more, and the copy starts again empty
local PING_MS = 100       -- silence after which the subscriber pings
local FRESH_S = 0.3       -- the copy answers only if Redis was heard from this recently
local SILENT_S = 2        -- silence after which the subscriber connects again
local RETRY_S = 0.2       -- wait before subscribing again

local entries, count, link_keys = {}, 0, {}
-- generation changes at every invalidation, emptying and (re)subscription: a
-- value read from Redis is kept only if none happened while it was read.
local generation = 0
-- listening is the "ip:port" of the primary whose invalidations this worker
-- hears, or nil while it hears none.
local listening = nil
-- heard is when the subscriber last heard from Redis (a message or a pong):
-- a connection that silently stopped delivering (a partition) must not
-- leave the copy answering. The sidecar keeps a port whose route went
-- unused for longer than FRESH_S (sidecar/agent, DefaultPortQuarantine), so
-- a copy this fresh never leads to another instance.
local heard = 0

local function empty()
    entries, count, link_keys = {}, 0, {}
    generation = generation + 1
end

-- usable says whether the copy may answer for reads of the primary at addr.
local function usable(addr)
    return listening ~= nil and listening == addr and ngx.now() - heard <= FRESH_S
end

-- get returns the environment's { route, current } if the copy holds it and
-- its keys have not expired.
function _M.get(env, addr)
    if not usable(addr) then return nil end
    local e = entries[env]
    if e and e.expires > ngx.now() then return e end
    return nil
end

-- link_key returns a link key's secret if the copy holds it.
function _M.link_key(kid, addr)
    if not usable(addr) then return nil end
    return link_keys[kid]
end

-- begin is taken before reading Redis; put and put_link_key keep what was
-- read only if nothing was invalidated since.
function _M.begin()
    return generation
end

-- expiry turns PTTL answers (ms; -1: no expiry; -2: no key) into the time
-- the copy must drop the entry, at the first of the keys' expiries.
local function expiry(...)
    local at = math.huge
    for i = 1, select("#", ...) do
        local ms = tonumber((select(i, ...)))
        if ms and ms >= 0 then
            at = math.min(at, ngx.now() + ms / 1000)
        end
    end
    return at
end

function _M.put(began, env, route, current, route_pttl, token_pttl)
    if began ~= generation or listening == nil or type(route) ~= "string" then
        return -- unknown environments are not kept: ids are the requester's choice
    end
    if count >= MAX_ENTRIES then
        empty()
        return
    end
    if not entries[env] then count = count + 1 end
    entries[env] = { route = route, current = current, expires = expiry(route_pttl, token_pttl) }
end

function _M.put_link_key(began, kid, secret)
    if began == generation and listening ~= nil and type(secret) == "string" then
        link_keys[kid] = secret
    end
end

-- drop forgets what the named keys held; no list (FLUSHALL, a replica's full
-- resynchronisation) empties the copy.
local function drop(keys)
    if type(keys) ~= "table" then
        empty()
        return
    end
    generation = generation + 1
    for _, key in ipairs(keys) do
        local env
        if key == LINK_KEYS then
            link_keys = {}
        elseif string.sub(key, 1, #ENV_PREFIX) == ENV_PREFIX then
            env = string.sub(key, #ENV_PREFIX + 1)
        elseif string.sub(key, 1, #TOKEN_PREFIX) == TOKEN_PREFIX then
            env = string.sub(key, #TOKEN_PREFIX + 1)
        end
        if env and entries[env] then
            entries[env] = nil
            count = count - 1
        end
    end
end

-- listen subscribes red (signed in to the primary at addr) to the
-- invalidations and applies them until the connection fails, stays silent
-- through a ping, or the proxy's primary moves elsewhere (still_primary).
local function listen(red, addr, still_primary)
    local id = red:client("id")
    if type(id) ~= "number" then return end
    local ok = red:client("tracking", "on", "redirect", id, "bcast",
                          "prefix", ENV_PREFIX, "prefix", TOKEN_PREFIX, "prefix", LINK_KEYS)
    if ok ~= "OK" then return end
    local res = red:subscribe(CHANNEL)
    if type(res) ~= "table" then return end
    empty()
    listening, heard = addr, ngx.now()
    red:set_timeout(PING_MS)
    while not ngx.worker.exiting() do
        local msg, err = red:read_reply()
        if type(msg) == "table" and msg[1] == "message" and msg[2] == CHANNEL then
            heard = ngx.now()
            drop(msg[3])
        elseif type(msg) == "table" and msg[1] == "pong" then
            heard = ngx.now()
        elseif err == "timeout" and ngx.now() - heard < SILENT_S and still_primary(addr) then
            -- Allowed while subscribed; its answer is a "pong" message.
            if not rawget(red, "_sock"):send("*1\r\n$4\r\nPING\r\n") then return end
        else
            -- A failure, a long silence, another primary, or anything
            -- else: after a read cut short by its timeout the stream may
            -- be mid-message, so only the two shapes above are trusted.
            return
        end
    end
end

-- start runs the worker's subscriber: connect() returns a signed-in
-- connection to the primary and its "ip:port" (route.lua), still_primary(addr)
-- whether the requests still read that primary.
function _M.start(connect, still_primary)
    local function run(premature)
        if premature then return end
        while not ngx.worker.exiting() do
            local red, addr = connect()
            if red then
                listen(red, addr, still_primary)
                red:close()
            end
            listening = nil
            empty()
            ngx.sleep(RETRY_S)
        end
    end
    local ok, err = ngx.timer.at(0, run)
    if not ok then
        error("starting the route cache's subscriber: " .. tostring(err))
    end
end

return _M
