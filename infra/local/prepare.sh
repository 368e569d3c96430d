#!/usr/bin/env bash
# Installs and starts what the local stack and the tests need, once per
# machine: Debian packages, dockerd, the environment images, and kumo (the AWS
# emulator, built from the Go module proxy). Safe to run again: each step is
# skipped when already done.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cache=/var/cache/envjupyter
kumo_version=v0.33.1
kumo_bin="$cache/bin/kumo-$kumo_version"

say() { echo "prepare: $*" >&2; }

[ "$(id -u)" -eq 0 ] || { say "must run as root (iptables, dockerd, apt)"; exit 1; }

packages=(docker.io redis-server redis-sentinel nginx libnginx-mod-http-lua lua-nginx-redis iptables debootstrap curl ca-certificates util-linux
    chromium fonts-wqy-microhei wrk strace)
# Node.js (20.19 or later, for Vite 7) and npm build the console and validate
# the template; the machine may ship its own, newer than Debian's.
command -v npm >/dev/null 2>&1 || packages+=(nodejs npm)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The distribution's redis and nginx services are not ours: the stack runs its own.
for svc in redis-server redis-sentinel nginx; do
    systemctl is-active --quiet "$svc" 2>/dev/null && systemctl stop "$svc" 2>/dev/null || true
done

bash "$root/infra/local/dockerd.sh"
# JupyterLab 4 (the default image) and the classic Notebook 6: each is built
# once (about 12 and 3 minutes) and cached in $cache.
bash "$root/infra/image/build-env-image.sh" trixie
bash "$root/infra/image/build-env-image.sh" bookworm
# The benchmark's peer, JupyterHub 5.2 + configurable-http-proxy, layered on
# the trixie image's rootfs (about 3 minutes once).
bash "$root/infra/image/build-hub-image.sh"

if [ ! -x "$kumo_bin" ]; then
    say "building kumo $kumo_version (a few minutes, once per machine)"
    mkdir -p "$cache/bin"
    dir=$(cd "$root" && GOFLAGS=-mod=mod go mod download -json "github.com/sivchari/kumo@$kumo_version" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
    [ -n "$dir" ] || { say "could not download kumo"; exit 1; }
    src=$(mktemp -d)
    trap 'rm -rf "$src"' EXIT
    cp -r "$dir/." "$src"
    chmod -R u+w "$src"
    # Built as its own module, so kumo's go.sum (not the checksum database,
    # which lacks some of its dependencies) vouches for what it pulls in.
    (cd "$src" && go build -trimpath -o "$kumo_bin.tmp" ./cmd/kumo)
    mv "$kumo_bin.tmp" "$kumo_bin"
fi
echo "$kumo_bin"
