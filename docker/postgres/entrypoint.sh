#!/usr/bin/env bash
# The official postgres image's contract, for Debian's server: on an empty $PGDATA, initdb with
# superuser $POSTGRES_USER (default postgres) and password $POSTGRES_PASSWORD (required unless
# POSTGRES_HOST_AUTH_METHOD=trust), create $POSTGRES_DB (default: the user's name), accept
# password logins from anywhere; then run the server in the foreground as `postgres`.
set -euo pipefail

if [[ ${1:-} != postgres ]]; then
    exec "$@"
fi
shift

if [[ $(id -u) -eq 0 ]]; then
    mkdir -p "$PGDATA" /var/run/postgresql
    chown postgres:postgres "$PGDATA" /var/run/postgresql
    chmod 700 "$PGDATA"
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" postgres "$@"
fi

POSTGRES_USER=${POSTGRES_USER:-postgres}
POSTGRES_DB=${POSTGRES_DB:-$POSTGRES_USER}
AUTH=${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}

if [[ ! -s $PGDATA/PG_VERSION ]]; then
    if [[ -z ${POSTGRES_PASSWORD:-} && $AUTH != trust ]]; then
        echo "error: POSTGRES_PASSWORD is not set (or set POSTGRES_HOST_AUTH_METHOD=trust)" >&2
        exit 1
    fi
    pwfile=$(mktemp)
    printf '%s\n' "${POSTGRES_PASSWORD:-}" >"$pwfile"
    initdb -D "$PGDATA" -U "$POSTGRES_USER" --pwfile="$pwfile" -E UTF8 \
        --auth-local=trust --auth-host="$AUTH" >/dev/null
    rm -f "$pwfile"
    echo "listen_addresses = '*'" >>"$PGDATA/postgresql.conf"
    echo "host all all all $AUTH" >>"$PGDATA/pg_hba.conf"
    if [[ $POSTGRES_DB != postgres ]]; then
        # A server on the socket only, so no client sees the database before it exists.
        pg_ctl -D "$PGDATA" -w -o "-c listen_addresses=''" start >/dev/null
        createdb -U "$POSTGRES_USER" -- "$POSTGRES_DB"
        pg_ctl -D "$PGDATA" -w -m fast stop >/dev/null
    fi
    echo "PostgreSQL init process complete; ready for start up."
fi

exec postgres -D "$PGDATA" "$@"
