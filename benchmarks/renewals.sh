#!/usr/bin/env bash
# The scheduler's renewal pass on a large database, on SQLite and on a throwaway
# PostgreSQL cluster: `lodge bench renewals` bulk-inserts the services (the engine's bulk
# rate), then times one pass billing the due ones and an idle second pass.
#
#   benchmarks/renewals.sh BIN [SERVICES=1000000] [DUE=50000] [ROUNDS=1] [OUT_DIR]
#
# Environment: PGPORT [55433], PGBIN [directory of initdb], PG_OS_USER [postgres] (the user
# initdb/postgres run as when this script runs as root). Each run gets a fresh database.
set -euo pipefail

BIN=${1:?usage: renewals.sh BIN [SERVICES] [DUE] [ROUNDS] [OUT_DIR]}
SERVICES=${2:-1000000}
DUE=${3:-50000}
ROUNDS=${4:-1}
OUT_DIR=${5:-benchmarks/renewals-$(date -u +%Y%m%d-%H%M%S)}
PGPORT=${PGPORT:-55433}
PG_OS_USER=${PG_OS_USER:-postgres}
if [[ -z ${PGBIN:-} ]]; then
    if command -v initdb >/dev/null 2>&1; then
        PGBIN=$(dirname "$(realpath "$(command -v initdb)")")
    else
        PGBIN=/usr/lib/postgresql/15/bin
    fi
fi
[[ -x $BIN ]] || { echo "not an executable: $BIN" >&2; exit 2; }
unset LODGE_DATABASE_URL LODGE_CONFIG

mkdir -p "$OUT_DIR"
OUT_DIR=$(realpath "$OUT_DIR")
WORK=$(mktemp -d /tmp/lodge-renewals.XXXXXX)
PGDATA_DIR=""

as_pg() {
    if [[ $(id -u) -eq 0 ]]; then runuser -u "$PG_OS_USER" -- "$@"; else "$@"; fi
}
cleanup() {
    if [[ -n $PGDATA_DIR && -f $PGDATA_DIR/postmaster.pid ]]; then
        as_pg "$PGBIN/pg_ctl" -D "$PGDATA_DIR" -m fast -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "binary: $BIN ($("$BIN" --version))"
    echo "cpus: $(nproc); $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
    echo "command: $0 $*"
} >"$OUT_DIR/meta.txt"

for round in $(seq 1 "$ROUNDS"); do
    echo "round $round: sqlite" >&2
    "$BIN" bench renewals --services "$SERVICES" --due "$DUE" >"$OUT_DIR/sqlite-r$round.json"
    cat "$OUT_DIR/sqlite-r$round.json"
done

if (echo >"/dev/tcp/127.0.0.1/$PGPORT") 2>/dev/null; then
    echo "port $PGPORT on 127.0.0.1 is in use; set PGPORT" >&2
    exit 1
fi
pgroot=$WORK/pg
mkdir -p "$pgroot"
if [[ $(id -u) -eq 0 ]]; then chmod 755 "$WORK"; chown "$PG_OS_USER" "$pgroot"; fi
PGDATA_DIR=$pgroot/data
as_pg "$PGBIN/initdb" -D "$PGDATA_DIR" -U postgres --auth=trust -E UTF8 >/dev/null
as_pg "$PGBIN/pg_ctl" -D "$PGDATA_DIR" -l "$pgroot/server.log" -w \
    -o "-p $PGPORT -c listen_addresses=127.0.0.1 -k $pgroot" start >/dev/null
"$PGBIN/psql" -h 127.0.0.1 -p "$PGPORT" -U postgres -d postgres -Atc \
    "SELECT version(), current_setting('fsync'), current_setting('synchronous_commit')" \
    >"$OUT_DIR/postgres-settings.txt"
for round in $(seq 1 "$ROUNDS"); do
    echo "round $round: postgres" >&2
    db="renewals_r$round"
    "$PGBIN/psql" -h 127.0.0.1 -p "$PGPORT" -U postgres -d postgres -qc "CREATE DATABASE $db"
    "$BIN" bench renewals --services "$SERVICES" --due "$DUE" \
        --database-url "postgres://postgres@127.0.0.1:$PGPORT/$db" >"$OUT_DIR/postgres-r$round.json"
    cat "$OUT_DIR/postgres-r$round.json"
done
