#!/usr/bin/env bash
# Render nginx.conf.tmpl and run the envjupyter proxy in the foreground.
#
# Usage: run-local.sh <prefix dir> <listen port> <redis port> <console dir> <api upstream>
#   e.g. run-local.sh /tmp/envjupyter-proxy 18080 6379 /srv/console http://127.0.0.1:8081
# Optional env: REDIS_HOST (default 127.0.0.1), REDIS_USER (default proxy) and REDIS_PASSWORD_FILE (its
#   password, read by the nginx master; unset: no AUTH), REDIS_SENTINELS (ip:port of the Redis sentinels,
#   separated by commas: Redis is then the primary they name REDIS_MASTER_NAME, default envjupyter, and the
#   proxy signs in to them as REDIS_USER too; REDIS_HOST and <redis port> are not used), LUA_DIR (default:
#   <this dir>/lua),
#   API_HOST (Host header for the API front; default: the request's),
#   ENV_ORIGIN (host, the default: env-<id>.<ENV_DOMAIN> per environment; or path: one origin for all,
#   single tenant only, see docs/SECURITY.md), ENV_DOMAIN (the Jupyter domain; needed in the host mode),
#   ENV_ACCESS (open, the default: Jupyter's token, access links and sessions; link: only access links
#   and the proxy's sessions, Jupyter's token refused; or sso: the same, with a sign-in, docs/SSO.md)
#   and SSO_UPSTREAM (the sign-in service, for sso),
#   ENV_BODY_LIMIT (largest request body of an environment, nginx size; default 1g),
#   ENV_READ_TIMEOUT (an environment's HTTP request without a byte from Jupyter; default 300s),
#   ENV_SOCKET_IDLE_TIMEOUT (an environment's WebSocket without a message; default 3600s),
#   ENV_CONN_LIMIT (connections one environment may hold through the proxy; default 512),
#   WORKER_CONNECTIONS (connections each nginx worker may hold; default 16384, at most 32768).
#
# Idempotent: re-renders <prefix>/conf/nginx.conf, (re)creates logs/ and temp/, runs
# `nginx -t`, then execs nginx (daemon off, master process on). Stop it with SIGTERM/SIGQUIT.
set -euo pipefail

usage() {
    echo "usage: $0 <prefix dir> <listen port> <redis port> <console dir> <api upstream>" >&2
    exit 2
}
[ "$#" -eq 5 ] || usage

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
prefix_in="$1"
listen_port="$2"
redis_port="$3"
console_in="$4"
api_upstream="$5"
redis_host="${REDIS_HOST:-127.0.0.1}"
redis_user="${REDIS_USER:-proxy}"
redis_password_file="${REDIS_PASSWORD_FILE:-}"
redis_sentinels="${REDIS_SENTINELS:-}"
redis_master_name="${REDIS_MASTER_NAME:-envjupyter}"
lua_dir="${LUA_DIR:-$here/lua}"

die() { echo "run-local.sh: $*" >&2; exit 1; }

is_port() { [[ "$1" =~ ^[0-9]{1,5}$ ]] && [ "$1" -ge 1 ] && [ "$1" -le 65535 ]; }
is_port "$listen_port" || die "invalid listen port: $listen_port"
is_port "$redis_port"  || die "invalid redis port: $redis_port"
[[ "$redis_host" =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}$ ]] || die "REDIS_HOST must be an IPv4 literal: $redis_host"
[[ -z "$redis_sentinels" || "$redis_sentinels" =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}:[0-9]{1,5}(,[0-9]{1,3}(\.[0-9]{1,3}){3}:[0-9]{1,5})*$ ]] \
    || die "REDIS_SENTINELS must be ip:port (IPv4 literals) separated by commas: $redis_sentinels"
[[ "$redis_master_name" =~ ^[A-Za-z0-9._-]{1,64}$ ]] || die "REDIS_MASTER_NAME must be a name of letters, digits, '.', '_' or '-': $redis_master_name"
[[ "$redis_user" =~ ^[A-Za-z0-9._-]{1,64}$ ]] || die "REDIS_USER must be a user name of letters, digits, '.', '_' or '-': $redis_user"
if [ -n "$redis_password_file" ]; then
    [ -r "$redis_password_file" ] || die "REDIS_PASSWORD_FILE is not a readable file: $redis_password_file"
    redis_password_file="$(cd "$(dirname "$redis_password_file")" && pwd)/$(basename "$redis_password_file")"
fi
[[ "$api_upstream" =~ ^http://[A-Za-z0-9.-]+:[0-9]{1,5}$ ]] \
    || die "api upstream must look like http://127.0.0.1:PORT (no path): $api_upstream"
env_origin="${ENV_ORIGIN:-host}"
env_domain="${ENV_DOMAIN:-}"
case "$env_origin" in
    host) [[ "$env_domain" =~ ^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$ ]] || die "ENV_ORIGIN=host needs ENV_DOMAIN, a lowercase host name: '$env_domain'" ;;
    path) env_domain="${env_domain:-unused.invalid}" ;;
    *) die "ENV_ORIGIN must be host or path: $env_origin" ;;
esac
access_mode="${ENV_ACCESS:-open}"
sso_upstream="${SSO_UPSTREAM:-http://127.0.0.1:9}"
case "$access_mode" in
    open|link|sso) ;;
    *) die "ENV_ACCESS must be open, link or sso: $access_mode" ;;
esac
[[ "$sso_upstream" =~ ^http://[A-Za-z0-9.-]+:[0-9]{1,5}$ ]] \
    || die "SSO_UPSTREAM must look like http://127.0.0.1:PORT (no path): $sso_upstream"
env_body_limit="${ENV_BODY_LIMIT:-1g}"
env_read_timeout="${ENV_READ_TIMEOUT:-300s}"
env_socket_idle_timeout="${ENV_SOCKET_IDLE_TIMEOUT:-3600s}"
env_conn_limit="${ENV_CONN_LIMIT:-512}"
[[ "$env_conn_limit" =~ ^[1-9][0-9]{0,5}$ ]] || die "ENV_CONN_LIMIT must be a whole number from 1: $env_conn_limit"
worker_connections="${WORKER_CONNECTIONS:-16384}"
[[ "$worker_connections" =~ ^[1-9][0-9]{2,4}$ ]] && [ "$worker_connections" -le 32768 ] || die "WORKER_CONNECTIONS must be a whole number from 100 to 32768: $worker_connections"
[[ "$env_body_limit" =~ ^[1-9][0-9]{0,9}[kmg]?$ ]] || die "ENV_BODY_LIMIT must be an nginx size (e.g. 512m, 1g): $env_body_limit"
for t in "$env_read_timeout" "$env_socket_idle_timeout"; do
    [[ "$t" =~ ^[1-9][0-9]{0,6}(s|m|h)$ ]] || die "ENV_READ_TIMEOUT and ENV_SOCKET_IDLE_TIMEOUT must be nginx times (e.g. 300s, 1h): $t"
done
[ -d "$console_in" ] || die "console dir does not exist: $console_in"
[ -f "$lua_dir/route.lua" ] || die "route.lua not found in $lua_dir"

# Paths used in the config must be absolute and free of characters nginx/sed would mangle.
mkdir -p "$prefix_in"
prefix="$(cd "$prefix_in" && pwd)"
console_dir="$(cd "$console_in" && pwd)"
lua_dir="$(cd "$lua_dir" && pwd)"
for p in "$prefix" "$console_dir" "$lua_dir" ${redis_password_file:+"$redis_password_file"}; do
    [[ "$p" =~ ^/[A-Za-z0-9._/+@-]*$ ]] || die "unsupported characters in path: $p"
done

# Packages (Debian bookworm). Installed only if missing.
need=()
for pkg in nginx libnginx-mod-http-lua lua-nginx-redis redis-server; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        need+=("$pkg")
    fi
done
if [ "${#need[@]}" -gt 0 ]; then
    echo "run-local.sh: installing ${need[*]}" >&2
    [ "$(id -u)" -eq 0 ] || die "missing packages (${need[*]}) and not root"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
for m in ndk_http_module.so ngx_http_lua_module.so; do
    [ -f "/usr/lib/nginx/modules/$m" ] || die "missing /usr/lib/nginx/modules/$m"
done
[ -f /usr/share/lua/5.1/nginx/redis.lua ] || die "missing lua-nginx-redis (nginx/redis.lua)"

mkdir -p "$prefix/conf" "$prefix/logs" \
    "$prefix/temp/client_body" "$prefix/temp/proxy" "$prefix/temp/fastcgi" \
    "$prefix/temp/uwsgi" "$prefix/temp/scgi"
# Workers run as nobody when the master is root: they buffer large bodies here.
if [ "$(id -u)" -eq 0 ]; then
    chown -R nobody "$prefix/temp"
    chmod o+x "$prefix"
    [ -x "$(dirname "$prefix")" ] || die "nginx workers (user nobody) cannot reach $prefix: make its parent directories world-searchable"
fi

conf="$prefix/conf/nginx.conf"
tmp="$conf.tmp.$$"
# Values are validated above (digits, IPv4, ip:port lists, http://host:port, [A-Za-z0-9._/+@-] paths, host names, user names),
# so none contains the sed delimiter '|', '&' or '\'.
sed -e "s|{{\.ListenPort}}|$listen_port|g" \
    -e "s|{{\.RedisHost}}|$redis_host|g" \
    -e "s|{{\.RedisPort}}|$redis_port|g" \
    -e "s|{{\.RedisUser}}|$redis_user|g" \
    -e "s|{{\.RedisSentinels}}|$redis_sentinels|g" \
    -e "s|{{\.RedisMasterName}}|$redis_master_name|g" \
    -e "s|{{\.RedisPasswordFile}}|$redis_password_file|g" \
    -e "s|{{\.PrefixDir}}|$prefix|g" \
    -e "s|{{\.LuaDir}}|$lua_dir|g" \
    -e "s|{{\.ConsoleDir}}|$console_dir|g" \
    -e "s|{{\.APIUpstream}}|$api_upstream|g" \
    -e "s|{{\.APIHost}}|${API_HOST:-\$host}|g" \
    -e "s|{{\.EnvOrigin}}|$env_origin|g" \
    -e "s|{{\.EnvDomain}}|$env_domain|g" \
    -e "s|{{\.AccessMode}}|$access_mode|g" \
    -e "s|{{\.SSOUpstream}}|$sso_upstream|g" \
    -e "s|{{\.EnvBodyLimit}}|$env_body_limit|g" \
    -e "s|{{\.EnvReadTimeout}}|$env_read_timeout|g" \
    -e "s|{{\.EnvSocketIdleTimeout}}|$env_socket_idle_timeout|g" \
    -e "s|{{\.EnvConnLimit}}|$env_conn_limit|g" \
    -e "s|{{\.WorkerConnections}}|$worker_connections|g" \
    "$here/nginx.conf.tmpl" > "$tmp"
if grep -n '{{' "$tmp" >&2; then
    rm -f "$tmp"
    die "unrendered placeholders left in config"
fi
mv -f "$tmp" "$conf"
cp "$here/env-upstream.conf" "$prefix/conf/env-upstream.conf"

nginx -p "$prefix" -c "$conf" -t
echo "run-local.sh: starting nginx on 127.0.0.1:$listen_port (prefix $prefix)" >&2
exec nginx -p "$prefix" -c "$conf"
