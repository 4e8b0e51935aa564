#!/usr/bin/env bash
# Build the local images from the Debian base, for machines without a registry (the tests, CI):
#   vidpipe/kafka:local     docker/kafka     (Java from Debian + the Kafka jars from Maven)
#   vidpipe/postgres:local  docker/postgres  (Debian's PostgreSQL server)
#   vidpipe:local           Dockerfile       (Debian's Python 3.11 + vidpipe)
# BASE_IMAGE (default vidpipe/debian-base:bookworm, made by scripts/ensure-docker.sh) is every
# image's FROM. Docker's layer cache makes a re-run with unchanged inputs take seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

BASE_IMAGE=${BASE_IMAGE:-vidpipe/debian-base:bookworm}
KAFKA_VERSION=${VIDPIPE_KAFKA_VERSION:-3.9.1}
PY=${PYTHON:-.venv/bin/python}
export DOCKER_BUILDKIT=${DOCKER_BUILDKIT:-0}
built=()

build() {  # build TAG CONTEXT [DOCKERFILE]
    local tag=$1 context=$2 file=${3:-$2/Dockerfile} started
    started=$(date +%s)
    # Quiet unless it fails: the classic builder warns of its deprecation on every build.
    if ! docker build -q --build-arg "BASE_IMAGE=$BASE_IMAGE" -t "$tag" -f "$file" "$context" \
        >"$logs/build.log" 2>&1; then
        cat "$logs/build.log" >&2
        return 1
    fi
    built+=("$tag $(($(date +%s) - started))s")
}

# The Kafka jars: the same Maven fetch as the local path (vidpipe/dev/jars.py), then a build
# context of their own (copied, not linked: the builder does not follow links out of it).
libs=$("$PY" -c "from vidpipe.dev.jars import fetch_kafka_jars; print(fetch_kafka_jars('$KAFKA_VERSION'))")
ctx=$(mktemp -d)
logs=$(mktemp -d)
trap 'rm -rf "$ctx" "$logs"' EXIT
cp -r docker/kafka/. "$ctx/"
cp -r "$libs" "$ctx/libs"
build vidpipe/kafka:local "$ctx"
build vidpipe/postgres:local docker/postgres
build vidpipe:local . Dockerfile
printf '%s; ' "${built[@]}"
