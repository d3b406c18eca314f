#!/usr/bin/env bash
# Settings shared by the bench scripts (sourced, not run). Every one can be overridden from
# the environment, e.g. DURATION=10 ROUNDS=1 bench/entry.sh
set -euo pipefail
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
# The tree the server runs from (it reads config/ relative to its working directory) and
# the release binary. Defaults: this checkout.
CASEBOOK_SRC=${CASEBOOK_SRC:-$REPO}
CASEBOOK_BIN=${CASEBOOK_BIN:-$CASEBOOK_SRC/target/release/casebook}
BENCH_DB=${BENCH_DB:-casebook_bench}
PG=${PG:-postgres://postgres@127.0.0.1:5432}
export DATABASE_URL=$PG/$BENCH_DB
BENCH_LISTEN=${BENCH_LISTEN:-127.0.0.1:18181}
BASE=http://$BENCH_LISTEN
DURATION=${DURATION:-20}   # seconds per measured run
ROUNDS=${ROUNDS:-2}        # each set of runs is repeated, interleaved
STATE=$BENCH_DIR/out        # server pid, log, subject code (git-ignored)
OUT=${OUT:-$STATE}          # raw tool outputs
mkdir -p "$STATE"
DEMO_PASSWORD="demo password for casebook"
# The form of the engine that bench/entry.sh posts to (its "engine" contender): Kawasaki's
# disease activity at the unscheduled visit, which repeats.
ENGINE_FORM=${ENGINE_FORM:-disease_activity}
ENGINE_BODY=${ENGINE_BODY:-'{"visit":"UNS","values":{"assessed_on":"2026-10-05","crp_mg_l":45.0,"wbc":12.5,"conjunctivitis":true,"oral_changes":false,"rash":true,"extremity_changes":false,"lymphadenopathy":false}}'}
INVESTIGATOR=investigator.fr01@casebook.test
export CASEBOOK_ENV=development RUST_LOG=${RUST_LOG:-warn}
mkdir -p "$OUT"

# login EMAIL -> prints an access token (valid 15 minutes: log in right before each run)
login() {
    curl -sf -X POST "$BASE/api/v1/auth/login" -H 'content-type: application/json' \
        -d "{\"email\":\"$1\",\"password\":\"$DEMO_PASSWORD\"}" | jq -r .access_token
}

# cpu_sample SECONDS FILE: CPU (% of one core; 200 = both cores) over SECONDS, starting 3 s
# into a run, summed per group: the bench server (by pid), the PostgreSQL backends connected
# to $BENCH_DB (the server's pool or pgbench), other PostgreSQL processes (WAL writer,
# checkpointer, other databases), the load generators, and everything else ("other", e.g.
# another build on the machine, with its busiest command).
cpu_sample() {
    sleep 3
    local server backends
    server=$(cat "$STATE/server.pid" 2>/dev/null || echo 0)
    backends=$(psql "$PG/postgres" -XAtc \
        "SELECT string_agg(pid::text, ',') FROM pg_stat_activity WHERE datname = '$BENCH_DB'")
    local t0; t0=$(head -1 /proc/stat)
    LC_ALL=C pidstat -u "$1" 1 2>/dev/null | awk -v server="$server" -v backends="$backends" '
        BEGIN { n = split(backends, b, ","); for (i = 1; i <= n; i++) bk[b[i]] = 1 }
        /^Average:/ && $3 ~ /^[0-9]+$/ {
            pid = $3; cmd = $NF; v = $8
            if (pid == server) g = "server"
            else if (pid in bk) g = "pg-backends"
            else if (cmd == "postgres") g = "pg-other"
            else if (cmd == "wrk" || cmd == "pgbench") g = cmd
            else { g = "other"; o[cmd] += v }
            cpu[g] += v }
        END { for (g in cpu) printf "cpu %-12s %6.1f%%\n", g, cpu[g]
              top = ""; for (c in o) if (top == "" || o[c] > o[top]) top = c
              if (top != "") printf "cpu other-top %s %.1f%%\n", top, o[top] }' |
        sort > "$2"
    # machine-wide busy time over the same window (pidstat misses short-lived processes)
    echo "$t0 $(head -1 /proc/stat)" | awk -v ncpu="$(nproc)" '{
        idle0 = $5 + $6; tot0 = 0; for (i = 2; i <= 11; i++) tot0 += $i
        idle1 = $16 + $17; tot1 = 0; for (i = 13; i <= 22; i++) tot1 += $i
        printf "cpu machine-busy %6.1f%% (of %d%%)\n", 100 * ncpu * (1 - (idle1 - idle0) / (tot1 - tot0)), 100 * ncpu }' >> "$2"
}

# check_server: fails loudly when the bench server is no longer running.
check_server() {
    local pid; pid=$(cat "$STATE/server.pid" 2>/dev/null || echo 0)
    kill -0 "$pid" 2>/dev/null || { echo "bench server (pid $pid) is not running: results invalid" >&2; exit 1; }
}

# wrk_run NAME WRK-ARGS...: runs wrk, keeps its output in $OUT/NAME.txt, prints the summary.
wrk_run() {
    local name=$1; shift
    BENCH_NAME=$name wrk --latency --timeout 10s "$@" > "$OUT/$name.txt" 2>&1
    grep -E '^RESULT|Non-2xx|Socket errors' "$OUT/$name.txt" || true
    check_server
}
