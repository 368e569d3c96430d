#!/usr/bin/env bash
# Start a local Docker daemon (Debian's docker.io dockerd) for the envjupyter
# local stack. Idempotent: exits 0 immediately if a daemon already answers on
# /var/run/docker.sock.
#
# Usage: sudo infra/local/dockerd.sh
#
# Environment:
#   DOCKERD_LOG      dockerd log file   (default /var/log/envjupyter-dockerd.log)
#   DOCKERD_TIMEOUT  seconds to wait for the daemon (default 60)
set -euo pipefail

LOG="${DOCKERD_LOG:-/var/log/envjupyter-dockerd.log}"
TIMEOUT="${DOCKERD_TIMEOUT:-60}"
SOCK=/var/run/docker.sock

log() { echo "dockerd.sh: $*" >&2; }
die() { echo "dockerd.sh: ERROR: $*" >&2; exit 1; }

# Pick a docker client. Debian's /usr/bin/docker matches Debian's dockerd
# (API 1.41). Another client (e.g. a newer /usr/local/bin/docker) normally
# negotiates the API version down, but we prefer the matching one and, if we
# fall back to another client, let it negotiate (never pin an API version
# that the client cannot speak).
pick_client() {
	if [ -x /usr/bin/docker ]; then
		echo /usr/bin/docker
	elif command -v docker >/dev/null 2>&1; then
		command -v docker
	else
		echo ""
	fi
}

docker_ok() {
	local c
	c="$(pick_client)"
	[ -n "$c" ] || return 1
	[ -S "$SOCK" ] || return 1
	DOCKER_HOST="unix://$SOCK" timeout 10 "$c" info >/dev/null 2>&1
}

if docker_ok; then
	log "docker daemon already running ($SOCK)"
	exit 0
fi

[ "$(id -u)" -eq 0 ] || die "must run as root to start dockerd"

if ! command -v dockerd >/dev/null 2>&1 && [ ! -x /usr/sbin/dockerd ]; then
	log "dockerd missing; installing docker.io via apt"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q
	apt-get install -y -q docker.io
fi
DOCKERD="$(command -v dockerd || echo /usr/sbin/dockerd)"
[ -x "$DOCKERD" ] || die "dockerd not found after install"
[ -n "$(pick_client)" ] || die "no docker client found (expected /usr/bin/docker from docker.io)"

# A stale pidfile/socket from a dead daemon makes dockerd refuse to start.
PIDFILE=/var/run/docker.pid
if [ -f "$PIDFILE" ]; then
	oldpid="$(cat "$PIDFILE" 2>/dev/null || true)"
	if [ -n "$oldpid" ] && kill -0 "$oldpid" 2>/dev/null; then
		log "dockerd (pid $oldpid) is running but not answering yet; waiting"
	else
		log "removing stale $PIDFILE"
		rm -f "$PIDFILE"
	fi
fi

# overlay2 makes a container in well under a second; vfs copies the whole
# image for each one (seconds, and 0.5 GB). Use overlay2 where the kernel
# mounts it here; DOCKERD_STORAGE_DRIVER overrides.
storage_driver() {
	if [ -n "${DOCKERD_STORAGE_DRIVER:-}" ]; then
		echo "$DOCKERD_STORAGE_DRIVER"
		return
	fi
	local d
	mkdir -p /var/lib/docker
	d=$(mktemp -d /var/lib/docker/.overlay-probe.XXXXXX)
	mkdir -p "$d/l" "$d/u" "$d/w" "$d/m"
	if mount -t overlay overlay -o "lowerdir=$d/l,upperdir=$d/u,workdir=$d/w" "$d/m" 2>/dev/null; then
		umount "$d/m"
		echo overlay2
	else
		echo vfs
	fi
	rm -rf "$d"
}

if ! { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }; then
	driver=$(storage_driver)
	# dockerd starts containerd itself when no system containerd is running.
	log "starting $DOCKERD --storage-driver=$driver (log: $LOG)"
	mkdir -p "$(dirname "$LOG")"
	nohup "$DOCKERD" --storage-driver="$driver" >>"$LOG" 2>&1 </dev/null &
	disown || true
fi

for _ in $(seq 1 "$TIMEOUT"); do
	if docker_ok; then
		log "docker daemon is up"
		exit 0
	fi
	sleep 1
done

echo "dockerd.sh: ERROR: docker daemon did not become ready within ${TIMEOUT}s; last lines of $LOG:" >&2
tail -n 30 "$LOG" >&2 || true
exit 1
