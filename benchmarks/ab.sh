#!/usr/bin/env bash
# A/B benchmark of two lodge release binaries: `lodge bench load --json`, alternating the
# two builds in every round, a fresh database for every run.
#
#   benchmarks/ab.sh OLD_BIN NEW_BIN [ROUNDS=2] [ENGINE=both] [OUT_DIR]
#
#   ENGINE   sqlite | postgres | both
#   OUT_DIR  where each run's JSON goes (default: benchmarks/ab-<date>); named
#            <engine>-r<round>-<old|new>.json, with the run's stderr beside it (.log)
#            and one line per run in runs.tsv
#
# Settings from the environment (defaults in brackets):
#   SCENARIOS    [healthz,order_external,order_keyed,order_register,pay_credit]
#   BENCH_SECONDS [8]   seconds per scenario
#   CONNECTIONS  [64]
#   PGPORT       [55432] loopback port of the throwaway PostgreSQL cluster
#   PGBIN        [directory of initdb on the PATH, else /usr/lib/postgresql/15/bin]
#   PG_OS_USER   [postgres] the user initdb/postgres run as when this script runs as root
#   FIRST_ROUND  [1] number of the first round (to add rounds to an earlier OUT_DIR)
#
# Round r runs old then new when r is odd, new then old when r is even, so neither build
# always goes first. For PostgreSQL the script starts its own cluster (initdb in a temp
# dir, default settings: fsync=on, synchronous_commit=on, listening on 127.0.0.1 only),
# creates a database for each run and drops it afterwards, and stops the cluster on exit.
# For SQLite each run gets a new temp dir with a new database file. Summarize with
# benchmarks/ab_summary.py OUT_DIR.
set -euo pipefail

usage() {
    sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

[[ $# -ge 2 && $# -le 5 ]] || usage
OLD_BIN=$(realpath "$1")
NEW_BIN=$(realpath "$2")
ROUNDS=${3:-2}
ENGINE=${4:-both}
OUT_DIR=${5:-"$(dirname "$0")/ab-$(date -u +%Y%m%dT%H%M%SZ)"}

SCENARIOS=${SCENARIOS:-healthz,order_external,order_keyed,order_register,pay_credit}
BENCH_SECONDS=${BENCH_SECONDS:-8}
CONNECTIONS=${CONNECTIONS:-64}
PGPORT=${PGPORT:-55432}
PG_OS_USER=${PG_OS_USER:-postgres}
FIRST_ROUND=${FIRST_ROUND:-1}
if [[ -z ${PGBIN:-} ]]; then
    if command -v initdb >/dev/null 2>&1; then
        PGBIN=$(dirname "$(realpath "$(command -v initdb)")")
    else
        PGBIN=/usr/lib/postgresql/15/bin
    fi
fi

case $ENGINE in
    sqlite) ENGINES=(sqlite) ;;
    postgres) ENGINES=(postgres) ;;
    both) ENGINES=(sqlite postgres) ;;
    *) echo "ENGINE must be sqlite, postgres or both, not '$ENGINE'" >&2; exit 2 ;;
esac
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || { echo "ROUNDS must be a positive integer" >&2; exit 2; }
[[ $FIRST_ROUND =~ ^[1-9][0-9]*$ ]] || { echo "FIRST_ROUND must be a positive integer" >&2; exit 2; }

for bin in "$OLD_BIN" "$NEW_BIN"; do
    [[ -x $bin ]] || { echo "not an executable: $bin" >&2; exit 2; }
done

# Nothing from the caller's environment or working directory may pick the database or
# the configuration.
unset LODGE_DATABASE_URL LODGE_CONFIG

# Both builds must know every scenario asked for.
help_old=$("$OLD_BIN" bench load --help)
help_new=$("$NEW_BIN" bench load --help)
IFS=, read -r -a scenario_list <<<"$SCENARIOS"
for s in "${scenario_list[@]}"; do
    for h in "$help_old" "$help_new"; do
        if ! grep -q -- "$s" <<<"$h"; then
            echo "a binary's 'bench load --help' does not list scenario '$s'" >&2
            exit 2
        fi
    done
done

mkdir -p "$OUT_DIR"
OUT_DIR=$(realpath "$OUT_DIR")
WORK=$(mktemp -d /tmp/lodge-ab.XXXXXX)
PGDATA_DIR=""

as_pg() {
    if [[ $(id -u) -eq 0 ]]; then
        runuser -u "$PG_OS_USER" -- "$@"
    else
        "$@"
    fi
}

cleanup() {
    if [[ -n $PGDATA_DIR && -f $PGDATA_DIR/postmaster.pid ]]; then
        as_pg "$PGBIN/pg_ctl" -D "$PGDATA_DIR" -m fast -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

start_postgres() {
    if (echo >"/dev/tcp/127.0.0.1/$PGPORT") 2>/dev/null; then
        echo "port $PGPORT on 127.0.0.1 is in use; set PGPORT" >&2
        exit 1
    fi
    local pgroot=$WORK/pg
    mkdir -p "$pgroot"
    if [[ $(id -u) -eq 0 ]]; then
        chmod 755 "$WORK"
        chown "$PG_OS_USER" "$pgroot"
    fi
    PGDATA_DIR=$pgroot/data
    as_pg "$PGBIN/initdb" -D "$PGDATA_DIR" -U postgres --auth=trust -E UTF8 \
        >"$OUT_DIR/postgres-initdb.log" 2>&1
    as_pg "$PGBIN/pg_ctl" -D "$PGDATA_DIR" -l "$pgroot/server.log" -w \
        -o "-p $PGPORT -c listen_addresses=127.0.0.1 -k $pgroot" start >/dev/null
    "$PGBIN/psql" -h 127.0.0.1 -p "$PGPORT" -U postgres -d postgres -Atc \
        "SELECT version(), current_setting('fsync'), current_setting('synchronous_commit')" \
        >"$OUT_DIR/postgres-settings.txt"
}

pg_sql() {
    PGOPTIONS="-c client_min_messages=warning" "$PGBIN/psql" -h 127.0.0.1 -p "$PGPORT" -U postgres -d postgres -q -v ON_ERROR_STOP=1 -c "$1"
}

# run ENGINE ROUND LABEL BIN
run() {
    local engine=$1 round=$2 label=$3 bin=$4
    local name="$engine-r$round-$label"
    local dir=$WORK/$name
    local url db=""
    mkdir -p "$dir"
    if [[ $engine == sqlite ]]; then
        url="sqlite://$dir/bench.db"
    else
        db="lodge_ab_r${round}_${label}"
        pg_sql "DROP DATABASE IF EXISTS $db"
        pg_sql "CREATE DATABASE $db"
        pg_sql "CHECKPOINT"
        url="postgres://postgres@127.0.0.1:$PGPORT/$db"
    fi
    sync
    local start end rc=0
    start=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    echo "[$start] $name: $bin" >&2
    (cd "$dir" && "$bin" bench load --json \
        --database-url "$url" \
        --connections "$CONNECTIONS" \
        --seconds "$BENCH_SECONDS" \
        --scenarios "$SCENARIOS") >"$OUT_DIR/$name.json" 2>"$OUT_DIR/$name.log" || rc=$?
    end=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    if [[ $rc -ne 0 ]]; then
        echo "  $name failed (exit $rc), see $OUT_DIR/$name.log" >&2
        mv "$OUT_DIR/$name.json" "$OUT_DIR/$name.failed.json"
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$engine" "$round" "$label" "$start" "$end" "$rc" "$bin" \
        >>"$OUT_DIR/runs.tsv"
    [[ -z $db ]] || pg_sql "DROP DATABASE IF EXISTS $db"
    rm -rf "$dir"
}

{
    echo "== $(basename "$0") $*"
    echo "old: $OLD_BIN ($(sha256sum "$OLD_BIN" | cut -c1-16))"
    echo "new: $NEW_BIN ($(sha256sum "$NEW_BIN" | cut -c1-16))"
    echo "rounds: $ROUNDS; engines: ${ENGINES[*]}; scenarios: $SCENARIOS"
    echo "connections: $CONNECTIONS; seconds per scenario: $BENCH_SECONDS"
    echo "host: $(nproc) cores, $(uname -sr); started $(date -u +%Y-%m-%dT%H:%M:%SZ)"
} >>"$OUT_DIR/meta.txt"
[[ -f $OUT_DIR/runs.tsv ]] || printf 'engine\tround\tlabel\tstart\tend\texit\tbinary\n' >"$OUT_DIR/runs.tsv"

for e in "${ENGINES[@]}"; do
    [[ $e == postgres ]] && start_postgres
done

for ((r = FIRST_ROUND; r < FIRST_ROUND + ROUNDS; r++)); do
    for e in "${ENGINES[@]}"; do
        if ((r % 2 == 1)); then
            run "$e" "$r" old "$OLD_BIN"
            run "$e" "$r" new "$NEW_BIN"
        else
            run "$e" "$r" new "$NEW_BIN"
            run "$e" "$r" old "$OLD_BIN"
        fi
    done
done

echo "finished $(date -u +%Y-%m-%dT%H:%M:%SZ)" >>"$OUT_DIR/meta.txt"
echo "results in $OUT_DIR; summary: python3 $(dirname "$0")/ab_summary.py $OUT_DIR" >&2
