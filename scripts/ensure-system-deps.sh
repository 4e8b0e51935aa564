#!/usr/bin/env bash
# Make sure the system packages the dev stack and the tests need are present:
#   - PostgreSQL server binaries (initdb, pg_ctl, postgres) for throwaway test clusters,
#   - java + mvn to fetch and run the local Kafka broker,
#   - kcat (librdkafka), a non-Python producer the codec tests publish with.
# Idempotent: installs only what is missing, and says what it did. Debian/Ubuntu (apt-get).
# Needs root (or password-less sudo) only when something is missing.
set -euo pipefail

log() { printf 'ensure-system-deps: %s\n' "$*"; }

have_pg_server() {
    local d
    for d in /usr/lib/postgresql/*/bin; do
        [[ -x "$d/initdb" && -x "$d/pg_ctl" && -x "$d/postgres" ]] && return 0
    done
    return 1
}

missing=()
if have_pg_server; then
    log "PostgreSQL server binaries: present ($(ls -d /usr/lib/postgresql/*/bin | tr '\n' ' '))"
else
    missing+=(postgresql)
fi
if command -v java >/dev/null 2>&1; then
    log "java: present ($(java -version 2>&1 | head -n 1))"
else
    missing+=(default-jre-headless)
fi
if command -v mvn >/dev/null 2>&1; then
    log "mvn: present ($(mvn -v 2>/dev/null | head -n 1 | sed 's/\x1b\[[0-9;]*m//g'))"
else
    missing+=(maven)
fi
if command -v kcat >/dev/null 2>&1; then
    log "kcat: present ($(kcat -V 2>/dev/null | grep -m 1 '^Version' | sed 's/ (.*//'))"
else
    missing+=(kcat)
fi

if [[ ${#missing[@]} -eq 0 ]]; then
    log "nothing to install"
    exit 0
fi

if [[ $(id -u) -eq 0 ]]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO=(sudo -n)  # e.g. CI runners with password-less sudo
else
    log "missing: ${missing[*]}" >&2
    log "run this script as root (or install them yourself: apt-get install ${missing[*]})" >&2
    exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
    log "missing: ${missing[*]}, and no apt-get here; install them with your package manager" >&2
    exit 1
fi

# The Debian package would create and start a system-wide "main" cluster; the tests make
# their own throwaway clusters, so ask postgresql-common not to (only if not configured yet).
if [[ " ${missing[*]} " == *" postgresql "* && ! -e /etc/postgresql-common/createcluster.conf ]]; then
    "${SUDO[@]}" mkdir -p /etc/postgresql-common
    echo "create_main_cluster = false" | "${SUDO[@]}" tee /etc/postgresql-common/createcluster.conf >/dev/null
fi

log "installing: ${missing[*]}"
"${SUDO[@]}" apt-get update -q
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}"

if [[ " ${missing[*]} " == *" postgresql "* ]] && ! have_pg_server; then
    log "postgresql installed but no initdb under /usr/lib/postgresql/*/bin" >&2
    exit 1
fi
log "installed: ${missing[*]}"
