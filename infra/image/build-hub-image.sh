#!/usr/bin/env bash
# Build the benchmark's peer image envjupyter/hub-peer:trixie-1: the trixie
# environment image (JupyterLab 4.0.11, the same files the environments run)
# plus Debian's jupyterhub 5.2.1 and node-configurable-http-proxy 4.5, so the
# benchmark (infra/bench, figure 1 and 3) compares us with JupyterHub
# launching the very same JupyterLab.
#
# Layered on the trixie environment image's rootfs tarball, which
# build-env-image.sh trixie leaves in /var/cache/envjupyter/: no second
# debootstrap. Cached like that image: exits quickly if the image exists and
# re-imports its own tarball if only the image is gone. FORCE=1 rebuilds.
#
# Usage (root): infra/image/build-hub-image.sh
set -euo pipefail

IMAGE="envjupyter/hub-peer:trixie-1"
CACHE_DIR="${ENVJUPYTER_CACHE_DIR:-/var/cache/envjupyter}"
# Keep in step with build-env-image.sh's trixie tarball name.
BASE_TARBALL="$CACHE_DIR/env-jupyter-trixie-rootfs-v1.tar"
# Bump the suffix when the package set changes.
TARBALL="$CACHE_DIR/hub-peer-trixie-rootfs-v1.tar"
PACKAGES=(jupyterhub node-configurable-http-proxy)
LOG="$CACHE_DIR/build-hub.log"

say() { echo "[build-hub-image] $*" >&2; }
die() { echo "[build-hub-image] ERROR: $*" >&2; exit 1; }

if [ -x /usr/bin/docker ]; then DOCKER=/usr/bin/docker
elif command -v docker >/dev/null 2>&1; then DOCKER="$(command -v docker)"
else die "no docker client found (run infra/local/dockerd.sh first)"; fi
"$DOCKER" info >/dev/null 2>&1 || die "docker daemon not reachable (run infra/local/dockerd.sh first)"

if [ "${FORCE:-0}" != 1 ] && "$DOCKER" image inspect "$IMAGE" >/dev/null 2>&1; then
	say "$IMAGE already present"
	exit 0
fi

import_tarball() {
	say "importing $TARBALL as $IMAGE"
	"$DOCKER" import \
		--change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
		--change 'ENV LANG=C.UTF-8' \
		--change 'WORKDIR /root' \
		--change 'CMD ["sleep","infinity"]' \
		"$TARBALL" "$IMAGE" >/dev/null
	say "done: $IMAGE"
}

if [ "${FORCE:-0}" != 1 ] && [ -s "$TARBALL" ]; then
	import_tarball
	exit 0
fi

[ "$(id -u)" -eq 0 ] || die "must run as root (chroot)"
if [ ! -s "$BASE_TARBALL" ]; then
	here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
	bash "$here/build-env-image.sh" trixie
	[ -s "$BASE_TARBALL" ] || die "no $BASE_TARBALL: build-env-image.sh trixie must build the trixie environment image"
fi

mkdir -p "$CACHE_DIR"
ROOT="$(mktemp -d "$CACHE_DIR/hubroot.XXXXXX")"
chmod 755 "$ROOT"
MOUNTS=()
cleanup() {
	local i
	for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
		umount "${MOUNTS[$i]}" 2>/dev/null || umount -l "${MOUNTS[$i]}" 2>/dev/null || true
	done
	MOUNTS=()
	if ! grep -q " $ROOT/" /proc/mounts; then
		rm -rf --one-file-system "$ROOT"
	else
		say "WARNING: mounts remain under $ROOT, not deleting it"
	fi
	rm -f "$TARBALL.tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

t0=$SECONDS
say "unpacking $BASE_TARBALL"
tar --numeric-owner --xattrs -C "$ROOT" -xf "$BASE_TARBALL"
mount -t proc proc "$ROOT/proc"; MOUNTS+=("$ROOT/proc")
mount -t sysfs sys "$ROOT/sys"; MOUNTS+=("$ROOT/sys")
mount --bind /dev "$ROOT/dev"; MOUNTS+=("$ROOT/dev")
printf '#!/bin/sh\nexit 101\n' >"$ROOT/usr/sbin/policy-rc.d"
chmod +x "$ROOT/usr/sbin/policy-rc.d"
cp /etc/resolv.conf "$ROOT/etc/resolv.conf" 2>/dev/null || true
in_root() {
	chroot "$ROOT" /usr/bin/env -i \
		PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
		HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"
}
say "apt-get install ${PACKAGES[*]}"
in_root apt-get update -q >"$LOG" 2>&1 || { tail -n 30 "$LOG" >&2; die "apt-get update failed"; }
in_root apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" >>"$LOG" 2>&1 ||
	{ tail -n 30 "$LOG" >&2; die "apt-get install failed (log: $LOG)"; }
in_root jupyterhub --version >&2 || die "jupyterhub does not run"
in_root configurable-http-proxy --version >&2 || die "configurable-http-proxy does not run"

in_root apt-get clean
rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/*.bin "$ROOT"/var/log/apt/* "$ROOT"/root/.cache
rm -f "$ROOT/usr/sbin/policy-rc.d"
: >"$ROOT/etc/resolv.conf"
for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do umount "${MOUNTS[$i]}"; done
MOUNTS=()

say "writing $TARBALL"
tar --numeric-owner --xattrs -C "$ROOT" -cf "$TARBALL.tmp" .
mv -f "$TARBALL.tmp" "$TARBALL"
import_tarball
say "built in $((SECONDS - t0))s"
