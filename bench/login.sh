#!/usr/bin/env bash
# Issue 4: login throughput and latency at 4 and 16 clients, and the p99 of a cheap
# authenticated GET (/api/v1/me, one paced client) alone and during a 16-client login storm.
# Each round: GET alone, login x4, login x16 + GET; the order is reversed on even rounds.
# Run bench/up.sh first. Outputs in $OUT/login-*.txt.
source "$(dirname "$0")/common.sh"
export BENCH_LUA=$BENCH_DIR/lua
export LOGIN_EMAILS=${LOGIN_EMAILS:-investigator.fr01@casebook.test,investigator.fr02@casebook.test,investigator.fr03@casebook.test,investigator.fr04@casebook.test,monitor@casebook.test,sponsor@casebook.test}
export DEMO_PASSWORD
D=$DURATION

me_alone() {
    TOKEN=$(login "$INVESTIGATOR") wrk_run "login-r$1-me-alone" -t1 -c1 -d"${D}s" -s "$BENCH_LUA/me.lua" "$BASE/api/v1/me"
}
login_c4() {
    cpu_sample $((D - 6)) "$OUT/login-r$1-c4.cpu" &
    wrk_run "login-r$1-c4" -t2 -c4 -d"${D}s" -s "$BENCH_LUA/login.lua" "$BASE/api/v1/auth/login"
    wait; cat "$OUT/login-r$1-c4.cpu"
}
login_c16_me() {
    local token; token=$(login "$INVESTIGATOR")
    cpu_sample $((D - 6)) "$OUT/login-r$1-c16.cpu" &
    wrk_run "login-r$1-c16" -t2 -c16 -d"${D}s" -s "$BENCH_LUA/login.lua" "$BASE/api/v1/auth/login" &
    sleep 1   # the storm is under way before the probe starts
    TOKEN=$token wrk_run "login-r$1-me-storm" -t1 -c1 -d"$((D - 2))s" -s "$BENCH_LUA/me.lua" "$BASE/api/v1/me"
    wait; cat "$OUT/login-r$1-c16.cpu"
}
for r in $(seq "$ROUNDS"); do
    echo "== round $r"
    if [ $((r % 2)) -eq 1 ]; then me_alone "$r"; login_c4 "$r"; login_c16_me "$r"
    else login_c16_me "$r"; login_c4 "$r"; me_alone "$r"; fi
done
