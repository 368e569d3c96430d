# Shared steps of the image builds (sourced by build-env-image.sh and
# build-hub-image.sh): find Docker, reuse a built image or its cached rootfs
# tarball, prepare a chroot, and seal the rootfs into a tarball and an image.
#
# The sourcing script sets TAG (its log prefix), IMAGE, TARBALL and, for
# import_tarball, IMPORT_CHANGES (extra `docker import --change` values).

say() { echo "[$TAG] $*" >&2; }
die() { echo "[$TAG] ERROR: $*" >&2; exit 1; }

# Prefer Debian's client (matches Debian's dockerd, API 1.41); any other client
# negotiates the API version down automatically. DOCKER_HOST is honoured, so
# the same script fills a second host's daemon.
require_docker() {
	if [ -x /usr/bin/docker ]; then DOCKER=/usr/bin/docker
	elif command -v docker >/dev/null 2>&1; then DOCKER="$(command -v docker)"
	else die "no docker client found (run infra/local/dockerd.sh first)"; fi
	"$DOCKER" info >/dev/null 2>&1 || die "docker daemon not reachable (run infra/local/dockerd.sh first)"
}

import_tarball() {
	say "importing $TARBALL as $IMAGE"
	local changes=(--change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
		--change 'ENV LANG=C.UTF-8')
	local c
	for c in "${IMPORT_CHANGES[@]}"; do changes+=(--change "$c"); done
	changes+=(--change 'WORKDIR /root' --change 'CMD ["sleep","infinity"]')
	"$DOCKER" import "${changes[@]}" "$TARBALL" "$IMAGE" >/dev/null
	say "done: $IMAGE"
}

# reuse_cached exits the script when the image exists, or after importing it
# from the cached tarball; FORCE=1 skips both.
reuse_cached() {
	[ "${FORCE:-0}" != 1 ] || return 0
	if "$DOCKER" image inspect "$IMAGE" >/dev/null 2>&1; then
		say "$IMAGE already present"
		exit 0
	fi
	if [ -s "$TARBALL" ]; then
		import_tarball
		exit 0
	fi
}

# new_root makes ROOT, a directory under the cache that is removed on exit
# (unless something is still mounted below it).
MOUNTS=()
new_root() {
	mkdir -p "$CACHE_DIR"
	ROOT="$(mktemp -d "$CACHE_DIR/$1.XXXXXX")"
	chmod 755 "$ROOT" # apt's _apt sandbox user must be able to traverse it
	trap cleanup_root EXIT
	trap 'exit 130' INT TERM
}

unmount_root() {
	local i
	for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
		umount "${MOUNTS[$i]}" 2>/dev/null || umount -l "${MOUNTS[$i]}" 2>/dev/null || true
	done
	MOUNTS=()
}

cleanup_root() {
	unmount_root
	if ! grep -q " $ROOT/" /proc/mounts; then
		rm -rf --one-file-system "$ROOT"
	else
		say "WARNING: mounts remain under $ROOT, not deleting it"
	fi
	rm -f "$TARBALL.tmp"
}

# enter_root mounts what apt and the packages' scripts need, and keeps
# services from starting in the chroot.
enter_root() {
	mount -t proc proc "$ROOT/proc"; MOUNTS+=("$ROOT/proc")
	mount -t sysfs sys "$ROOT/sys"; MOUNTS+=("$ROOT/sys")
	mount --bind /dev "$ROOT/dev"; MOUNTS+=("$ROOT/dev")
	mount --bind /dev/pts "$ROOT/dev/pts"; MOUNTS+=("$ROOT/dev/pts")
	printf '#!/bin/sh\nexit 101\n' >"$ROOT/usr/sbin/policy-rc.d"
	chmod +x "$ROOT/usr/sbin/policy-rc.d"
	cp /etc/resolv.conf "$ROOT/etc/resolv.conf" 2>/dev/null || true
}

in_root() {
	chroot "$ROOT" /usr/bin/env -i \
		PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
		HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"
}

# seal_root cleans apt's leftovers, unmounts (visibly failing here rather
# than in the trap), writes the tarball and imports it.
seal_root() {
	in_root apt-get clean
	rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/*.bin \
		"$ROOT"/var/log/apt/* "$ROOT"/var/cache/debconf/*-old "$ROOT"/root/.cache \
		"$ROOT"/tmp/* "$ROOT"/var/tmp/*
	rm -f "$ROOT/usr/sbin/policy-rc.d"
	: >"$ROOT/etc/resolv.conf"
	local i
	for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do umount "${MOUNTS[$i]}"; done
	MOUNTS=()
	say "writing $TARBALL"
	tar --numeric-owner --xattrs -C "$ROOT" -cf "$TARBALL.tmp" .
	mv -f "$TARBALL.tmp" "$TARBALL"
	import_tarball
}
