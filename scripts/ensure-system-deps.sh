#!/usr/bin/env bash
# Make sure the system packages the dev stack and the tests need are present:
#   - PostgreSQL server binaries (initdb, pg_ctl, postgres) for throwaway test clusters,
#   - java + mvn to fetch and run the local Kafka broker,
#   - kcat (librdkafka), a non-Python producer the codec tests publish with,
#   - pgbouncer, the transaction-mode pooler the pooler tests put in front of PostgreSQL.
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
if command -v pgbouncer >/dev/null 2>&1 || [[ -x /usr/sbin/pgbouncer ]]; then
    log "pgbouncer: present ($( (pgbouncer --version 2>/dev/null || /usr/sbin/pgbouncer --version) | head -n 1))"
else
    missing+=(pgbouncer)
fi
if command -v kcat >/dev/null 2>&1; then
    log "kcat: present ($(kcat -V 2>/dev/null | grep -m 1 '^Version' | sed 's/ (.*//'))"
else
    missing+=(kcat)
fi

if [[ -x /usr/bin/chromium ]]; then
    log "chromium: present ($(/usr/bin/chromium --version 2>/dev/null | head -n 1))"
else
    # The dashboard's browser test; installed without recommends, so a font for its pages too.
    missing+=(chromium fonts-liberation)
fi
# The three-broker cluster test puts each broker in a network namespace (ip) and lets its
# bridge forward (iptables), so it can cut one off the network for real.
if command -v ip >/dev/null 2>&1 || [[ -x /usr/sbin/ip ]]; then
    log "ip: present"
else
    missing+=(iproute2)
fi
if command -v iptables >/dev/null 2>&1 || [[ -x /usr/sbin/iptables ]]; then
    log "iptables: present"
else
    missing+=(iptables)
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
