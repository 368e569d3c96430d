#!/usr/bin/env bash
# Build an envjupyter test "environment" image from Debian packages only (no
# image registry, no PyPI): debootstrap minbase SUITE -> apt install Jupyter,
# kernels and pip -> local wheel directory -> tar -> docker import.
#
#   trixie   (default) envjupyter/env-jupyter:trixie-2: JupyterLab 4.0 on
#            jupyter-server 2, Python and R kernels, terminals; ipywidgets and
#            the JupyterLab widgets extension come as wheels in the image's
#            wheel directory, installed by the plugin path.
#   bookworm envjupyter/env-jupyter:bookworm-2: the classic Notebook 6.
#
# Cached: exits quickly if the image exists; re-imports from the rootfs tarball
# in /var/cache/envjupyter/ if only the image is gone (e.g. after a prune).
# Set FORCE=1 to rebuild from scratch (ignores image and tarball cache).
#
# Usage (root): infra/image/build-env-image.sh [trixie|bookworm]
set -euo pipefail

SUITE="${1:-trixie}"
CACHE_DIR="${ENVJUPYTER_CACHE_DIR:-/var/cache/envjupyter}"
# Debian packages repacked as wheels into /opt/envjupyter/wheels (deb_to_wheel.py).
WHEEL_DEBS=()
# Bump an image's tag and tarball suffix when its package set / recipe changes.
case "$SUITE" in
trixie)
	IMAGE="envjupyter/env-jupyter:trixie-2"
	TARBALL="$CACHE_DIR/env-jupyter-trixie-rootfs-v2.tar"
	# jupyterlab pulls jupyter-server 2 and jupyterlab-server; the terminals
	# need jupyter-server-terminals (and its terminado).
	# matplotlib: the notebooks with figures a data scientist saves (the
	# workload battery of infra/e2e saves megabytes of them).
	PACKAGES=(jupyterlab python3-jupyter-server-terminals jupyter-client python3-ipykernel r-cran-irkernel procps python3-pip python3-matplotlib)
	WHEEL_DEBS=(python3-ipywidgets python3-jupyterlab-widgets python3-widgetsnbextension)
	;;
bookworm)
	IMAGE="envjupyter/env-jupyter:bookworm-2"
	TARBALL="$CACHE_DIR/env-jupyter-bookworm-rootfs-v2.tar"
	# jupyter-client provides the `jupyter kernelspec` CLI (needed by IRkernel::installspec).
	# python3-pip installs plugins; the test wheel below stands in for PyPI.
	PACKAGES=(jupyter-notebook jupyter-server jupyter-client python3-ipykernel r-cran-irkernel procps python3-pip)
	;;
*)
	echo "[build-env-image] ERROR: unknown suite '$SUITE' (trixie or bookworm)" >&2
	exit 2
	;;
esac
LOG="$CACHE_DIR/build-$SUITE.log"
TAG=build-env-image
IMPORT_CHANGES=('ENV PYDEVD_DISABLE_FILE_VALIDATION=1')
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
. "$here/lib.sh"

require_docker
reuse_cached

[ "$(id -u)" -eq 0 ] || die "must run as root (debootstrap/chroot)"

# --- find the machine's configured Debian mirror ------------------------------
# Looks for an enabled "deb" source serving suite $1 (not -security/-updates)
# in /etc/apt/sources.list, *.list (one-line format) and *.sources (deb822).
find_mirror() {
	local f suite="$1"
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
		[ -f "$f" ] || continue
		awk -v suite="$suite" '
			/^[[:space:]]*#/ { next }
			$1 == "deb" {
				i = 2
				if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
				if ($(i+1) == suite) { print $i; exit }
			}' "$f"
	done
	for f in /etc/apt/sources.list.d/*.sources; do
		[ -f "$f" ] || continue
		awk -v suite="$suite" '
			function flush() {
				if (types ~ /(^|[[:space:]])deb($|[[:space:]])/ && enabled != "no" &&
				    (" " suites " ") ~ (" " suite " ") && uri != "") print uri
				types = ""; suites = ""; uri = ""; enabled = ""
			}
			/^[[:space:]]*#/ { next }
			/^[[:space:]]*$/ { flush(); next }
			tolower($1) == "types:"   { $1 = ""; types = $0 }
			tolower($1) == "suites:"  { $1 = ""; suites = $0 }
			tolower($1) == "uris:"    { uri = $2 }
			tolower($1) == "enabled:" { enabled = tolower($2) }
			END { flush() }' "$f"
	done
}
# A mirror serves every suite: one configured for the machine's own release
# (say bookworm) serves trixie as well.
host_suite="$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")"
# head may close the pipe before find_mirror ends (SIGPIPE under pipefail).
MIRROR="$({ find_mirror "$SUITE"; [ -z "$host_suite" ] || find_mirror "$host_suite"; } | head -n1 || true)"
[ -n "$MIRROR" ] || die "no apt source for suite '$SUITE' or '$host_suite' found in /etc/apt/sources.list{,.d/*}"
say "mirror: $MIRROR"

if ! command -v debootstrap >/dev/null 2>&1; then
	say "installing debootstrap"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q
	apt-get install -y -q debootstrap
fi

# --- build rootfs -------------------------------------------------------------
new_root rootfs

t0=$SECONDS
say "debootstrap --variant=minbase $SUITE (this takes ~1 min)"
# Pre-seed a dpkg option (kept by debootstrap) so its dpkg runs skip fsync.
mkdir -p "$ROOT/etc/dpkg/dpkg.cfg.d"
echo force-unsafe-io >"$ROOT/etc/dpkg/dpkg.cfg.d/envjupyter-unsafe-io"
debootstrap --variant=minbase "$SUITE" "$ROOT" "$MIRROR" >"$LOG" 2>&1 ||
	{ tail -n 30 "$LOG" >&2; die "debootstrap failed (log: $LOG)"; }
say "debootstrap done ($((SECONDS - t0))s)"

enter_root

say "apt-get install ${PACKAGES[*]} (this takes ~1-2 min)"
in_root apt-get update -q >>"$LOG" 2>&1 ||
	{ tail -n 30 "$LOG" >&2; die "apt-get update in chroot failed"; }
in_root apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" >>"$LOG" 2>&1 ||
	{ tail -n 30 "$LOG" >&2; die "apt-get install in chroot failed (log: $LOG)"; }
say "packages installed ($((SECONDS - t0))s)"

# Register the R kernel system-wide if the package did not ship a kernelspec.
if ! in_root jupyter kernelspec list 2>/dev/null | awk '{print $1}' | grep -qx ir; then
	say "registering IRkernel kernelspec system-wide"
	in_root R -q -e 'IRkernel::installspec(user = FALSE)' >>"$LOG" 2>&1 ||
		die "IRkernel::installspec failed"
fi
specs="$(in_root jupyter kernelspec list 2>&1)"
echo "$specs" | sed 's/^/[build-env-image]   /' >&2
for k in python3 ir; do
	echo "$specs" | awk '{print $1}' | grep -qx "$k" || die "kernelspec '$k' missing in image"
done

# A local wheel directory for the plugin tests: PyPI is not reachable here.
cp "$here/make_test_wheel.py" "$ROOT/tmp/make_test_wheel.py"
in_root python3 /tmp/make_test_wheel.py /opt/envjupyter/wheels >&2 || die "building the test wheel failed"
if [ "${#WHEEL_DEBS[@]}" -gt 0 ]; then
	say "repacking ${WHEEL_DEBS[*]} as wheels"
	mkdir -p "$ROOT/tmp/debs"
	chmod 777 "$ROOT/tmp/debs" # apt's _apt sandbox user downloads into it
	cp "$here/deb_to_wheel.py" "$ROOT/tmp/deb_to_wheel.py"
	in_root sh -c 'cd /tmp/debs && apt-get download -q "$@"' sh "${WHEEL_DEBS[@]}" >>"$LOG" 2>&1 ||
		die "downloading ${WHEEL_DEBS[*]} failed (log: $LOG)"
	in_root sh -c 'python3 /tmp/deb_to_wheel.py /opt/envjupyter/wheels /tmp/debs/*.deb' >&2 || die "repacking the wheels failed"
fi

say "cleaning up"
rm -f "$ROOT/etc/dpkg/dpkg.cfg.d/envjupyter-unsafe-io"
seal_root
say "built in $((SECONDS - t0))s"
