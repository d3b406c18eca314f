#!/usr/bin/env bash
# Issue 5: POST temperature through the server at 8 and 32 clients, interleaved with pgbench
# -M prepared running bench/entry.sql (the same two inserts, scratch tables) at the same
# concurrency; with ENGINE=1 (the default) also POST of a record of a form of the engine
# ($ENGINE_FORM, body $ENGINE_BODY, see common.sh) through /subjects/{code}/forms/{form}. With APP_SEQUENCE=1 (the default) a third contender runs too: pgbench
# replaying the server's own 8-statement sequence (bench/app_sequence.sql) on the real tables.
# Each round: app, pgbench, [app sequence] at 8 clients, then the same at 32; even rounds
# run them in reverse order. Run bench/up.sh first. Outputs in $OUT/entry-*.txt.
source "$(dirname "$0")/common.sh"
export BENCH_LUA=$BENCH_DIR/lua
CODE=$(cat "$STATE/subject_code.$BENCH_DB")
APP_SEQUENCE=${APP_SEQUENCE:-1}
ENGINE=${ENGINE:-1}
D=$DURATION

app() { # round clients
    local token; token=$(login "$INVESTIGATOR")
    cpu_sample $((D - 6)) "$OUT/entry-r$1-app-c$2.cpu" &
    TOKEN=$token wrk_run "entry-r$1-app-c$2" -t2 -c"$2" -d"${D}s" -s "$BENCH_LUA/temperature.lua" \
        "$BASE/api/v1/subjects/$CODE/temperatures"
    wait; cat "$OUT/entry-r$1-app-c$2.cpu"
}
engine() { # round clients
    local token; token=$(login "$INVESTIGATOR")
    cpu_sample $((D - 6)) "$OUT/entry-r$1-engine-c$2.cpu" &
    TOKEN=$token FORM_BODY=$ENGINE_BODY wrk_run "entry-r$1-engine-c$2" -t2 -c"$2" -d"${D}s" \
        -s "$BENCH_LUA/form.lua" "$BASE/api/v1/subjects/$CODE/forms/$ENGINE_FORM"
    wait; cat "$OUT/entry-r$1-engine-c$2.cpu"
}
pgb() { # round clients label script [pgbench options]
    local r=$1 c=$2 label=$3 script=$4; shift 4
    local log=$OUT/entry-r$r-$label-c$c
    cpu_sample $((D - 6)) "$log.cpu" &
    rm -f "$log".tx.*
    pgbench -n -M prepared -c "$c" -j 2 -T "$D" -f "$script" "$@" \
        -l --log-prefix="$log.tx" "$DATABASE_URL" > "$log.txt" 2>&1
    wait
    echo "[$label c$c]"; grep -E '^(number of failed|latency average|tps)' "$log.txt"
    # per-transaction log: 3rd field is the latency in microseconds
    cat "$log".tx.* | awk '{print $3}' | sort -n | awk '{v[NR]=$1} END {
        printf "pgbench latency p50=%.2f p99=%.2f max=%.2f ms (n=%d)\n",
            v[int(NR*0.50)]/1000, v[int(NR*0.99)]/1000, v[NR]/1000, NR }' | tee -a "$log.txt"
    rm -f "$log".tx.*
    cat "$log.cpu"
}
appseq() { # round clients: the server's statements, replayed by pgbench
    login "$INVESTIGATOR" > /dev/null   # a live session for the caller lookup
    local vars
    vars=$(psql "$DATABASE_URL" -XAt -F' ' -c "
        SELECT u.id, (SELECT s.id FROM sessions s WHERE s.user_id = u.id AND s.revoked_at IS NULL
                      ORDER BY s.created_at DESC LIMIT 1),
               (SELECT id FROM subjects WHERE subject_code = '$CODE')
        FROM users u WHERE u.email = '$INVESTIGATOR'")
    set -- "$1" "$2" $vars
    pgb "$1" "$2" appseq "$BENCH_DIR/app_sequence.sql" \
        -D uid="$3" -D sid="$4" -D subject="$5" -D code="$CODE"
}
run_all() { # round clients
    local steps=(app pgb)
    [ "$ENGINE" = 1 ] && steps+=(engine)
    [ "$APP_SEQUENCE" = 1 ] && steps+=(appseq)
    [ $(($1 % 2)) -eq 1 ] || steps=($(printf '%s\n' "${steps[@]}" | tac))
    for s in "${steps[@]}"; do
        case $s in
            app) app "$1" "$2" ;;
            engine) engine "$1" "$2" ;;
            pgb) pgb "$1" "$2" pgbench "$BENCH_DIR/entry.sql" ;;
            appseq) appseq "$1" "$2" ;;
        esac
    done
}
for r in $(seq "$ROUNDS"); do
    echo "== round $r"
    for c in 8 32; do run_all "$r" "$c"; done
done
