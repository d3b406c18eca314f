#!/usr/bin/env bash
# One POST temperature run through the server and how the entries were batched:
#   bench/batches.sh [CLIENTS] [SECONDS]      (default 8 clients, 8 s)
# Prints wrk's rps/p50/p99 and the statements `casebook_enter_temperatures` ran, from
# pg_stat_user_functions: needs `ALTER DATABASE casebook_bench SET track_functions = 'pl'`
# once, then bench/restart.sh (the setting applies to new connections). Run bench/up.sh first.
source "$(dirname "$0")/common.sh"
CLIENTS=${1:-8}; SECS=${2:-8}
CODE=$(cat "$STATE/subject_code.$BENCH_DB")
counts() {
    psql "$DATABASE_URL" -XAt -F' ' -c "SELECT
        (SELECT coalesce(sum(calls), 0) FROM pg_stat_user_functions
          WHERE funcname = 'casebook_enter_temperatures'),
        (SELECT count(*) FROM temperatures)"
}
token=$(login "$INVESTIGATOR")
before=$(counts)
result=$(BENCH_LUA=$BENCH_DIR/lua TOKEN=$token wrk -t2 -c"$CLIENTS" -d"${SECS}s" \
    -s "$BENCH_DIR/lua/temperature.lua" "$BASE/api/v1/subjects/$CODE/temperatures" | grep RESULT)
sleep 1.5   # function statistics reach the view when the backend next goes idle
after=$(counts)
echo "$result" | awk '{printf "%s %s %s %s ", $3, $4, $6, $8}'
echo "$before $after" | awk '{c = $3 - $1; e = $4 - $2
    printf "statements=%d entries=%d entries/statement=%.2f\n", c, e, (c ? e / c : 0)}'
