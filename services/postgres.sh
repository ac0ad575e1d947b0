#!/usr/bin/env bash
# PostgreSQL for development and CI on a Debian/Ubuntu machine -- NOT for production.
#
#   services/postgres.sh up     install (apt-get, as root) when absent, trust local TCP
#                               connections, start the cluster, create database "test"
#   services/postgres.sh down   stop the cluster started by "up"
#
# "up" is idempotent: when the cluster already runs and the database exists it returns in a
# second. Authentication: connections from 127.0.0.1 and ::1 are trusted (no password), which
# is what the test URL postgresql+psycopg://postgres@127.0.0.1:5432/test expects. Never do this
# on a machine reachable by others.
set -euo pipefail

PORT=${PGPORT:-5432}
DATABASE=${RESILIENT_TASK_TEST_DATABASE:-test}
MARK="# resilient-task: trust local TCP (development and CI only)"

log() { printf '==> postgres: %s\n' "$*" >&2; }


installed_version() {
    # The newest server version installed, or nothing.
    local dir
    for dir in $(ls -d /usr/lib/postgresql/*/bin/postgres 2>/dev/null | sort -V); do
        basename "$(dirname "$(dirname "$dir")")"
    done | tail -n 1
}

install_server() {
    if [[ $(id -u) != 0 ]]; then
        log "PostgreSQL is not installed and this is not root: run 'apt-get install postgresql' first"
        exit 1
    fi
    log "installing PostgreSQL from Debian's packages"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq postgresql >/dev/null
}

up() {
    local version
    version=$(installed_version)
    if [[ -z $version ]]; then
        install_server
        version=$(installed_version)
    fi
    [[ -n $version ]] || { log "no PostgreSQL server found after installing"; exit 1; }

    if ! pg_lsclusters --no-header | awk '{print $1, $2}' | grep -qx "$version main"; then
        log "creating cluster $version/main on port $PORT"
        pg_createcluster --port "$PORT" "$version" main >/dev/null
    fi
    local conf=/etc/postgresql/$version/main
    if ! grep -qF "$MARK" "$conf/pg_hba.conf"; then
        log "trusting connections from 127.0.0.1 and ::1 ($conf/pg_hba.conf)"
        # pg_hba.conf is read top down, first match wins: our lines go first.
        {
            echo "$MARK"
            echo "host all all 127.0.0.1/32 trust"
            echo "host all all ::1/128 trust"
            cat "$conf/pg_hba.conf"
        } >"$conf/pg_hba.conf.new"
        chown postgres:postgres "$conf/pg_hba.conf.new"
        mv "$conf/pg_hba.conf.new" "$conf/pg_hba.conf"
        if pg_lsclusters --no-header | grep -q "^$version \+main .*online"; then
            pg_ctlcluster --skip-systemctl-redirect "$version" main reload
        fi
    fi
    if ! pg_lsclusters --no-header | grep -q "^$version \+main .*online"; then
        log "starting cluster $version/main"
        pg_ctlcluster --skip-systemctl-redirect "$version" main start
    fi
    for _ in {1..60}; do
        pg_isready -q -h 127.0.0.1 -p "$PORT" && break
        sleep 0.5
    done
    pg_isready -q -h 127.0.0.1 -p "$PORT" || { log "not ready on 127.0.0.1:$PORT after 30 s"; exit 1; }
    if [[ $(psql -h 127.0.0.1 -p "$PORT" -U postgres -tAc \
        "select 1 from pg_database where datname = '$DATABASE'") != 1 ]]; then
        log "creating database '$DATABASE'"
        createdb -h 127.0.0.1 -p "$PORT" -U postgres "$DATABASE"
    fi
    log "ready: postgresql+psycopg://postgres@127.0.0.1:$PORT/$DATABASE (PostgreSQL $version)"
}

down() {
    local version
    version=$(installed_version)
    if [[ -n $version ]] && pg_lsclusters --no-header | grep -q "^$version \+main .*online"; then
        pg_ctlcluster --skip-systemctl-redirect "$version" main stop
        log "stopped cluster $version/main"
    else
        log "no running cluster to stop"
    fi
}

case ${1:-} in
up) up ;;
down) down ;;
*)
    echo "usage: $0 up|down" >&2
    exit 2
    ;;
esac
