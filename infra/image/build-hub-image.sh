#!/usr/bin/env bash
# Build the benchmark's peer image envjupyter/hub-peer:trixie-2: the trixie
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

IMAGE="envjupyter/hub-peer:trixie-2"
CACHE_DIR="${ENVJUPYTER_CACHE_DIR:-/var/cache/envjupyter}"
# Keep in step with build-env-image.sh's trixie tarball name.
BASE_TARBALL="$CACHE_DIR/env-jupyter-trixie-rootfs-v2.tar"
# Bump the suffix when the package set changes.
TARBALL="$CACHE_DIR/hub-peer-trixie-rootfs-v2.tar"
PACKAGES=(jupyterhub node-configurable-http-proxy)
LOG="$CACHE_DIR/build-hub.log"

TAG=build-hub-image
IMPORT_CHANGES=()
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
. "$here/lib.sh"

require_docker
reuse_cached

[ "$(id -u)" -eq 0 ] || die "must run as root (chroot)"
if [ ! -s "$BASE_TARBALL" ]; then
	bash "$here/build-env-image.sh" trixie
	[ -s "$BASE_TARBALL" ] || die "no $BASE_TARBALL: build-env-image.sh trixie must build the trixie environment image"
fi

new_root hubroot

t0=$SECONDS
say "unpacking $BASE_TARBALL"
tar --numeric-owner --xattrs -C "$ROOT" -xf "$BASE_TARBALL"
enter_root
say "apt-get install ${PACKAGES[*]}"
in_root apt-get update -q >"$LOG" 2>&1 || { tail -n 30 "$LOG" >&2; die "apt-get update failed"; }
in_root apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" >>"$LOG" 2>&1 ||
	{ tail -n 30 "$LOG" >&2; die "apt-get install failed (log: $LOG)"; }
in_root jupyterhub --version >&2 || die "jupyterhub does not run"
in_root configurable-http-proxy --version >&2 || die "configurable-http-proxy does not run"

seal_root
say "built in $((SECONDS - t0))s"
