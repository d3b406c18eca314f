#!/usr/bin/env bash
# Compares builds on the same scratch database, interleaved: for each round, for each
# binary, restarts the server with it and runs one round of login.sh or entry.sh.
#   bench/compare.sh login /path/to/casebook-a /path/to/casebook-b
# A binary may be given as BIN:TREE to run it from its own source tree (its config/, e.g.
# an older commit's pool size): bench/compare.sh entry /tmp/bins/casebook-old:/tmp/old /tmp/bins/casebook-new:/tmp/new
# and as BIN:TREE:DB to run it on its own scratch database (a build whose migrations differ;
# make that database with BENCH_DB=DB CASEBOOK_BIN=BIN CASEBOOK_SRC=TREE bench/up.sh).
# Outputs in $STATE/compare-<binary name>-r<round>/. Run bench/up.sh first; the last binary
# stays running (bench/down.sh stops it).
source "$(dirname "$0")/common.sh"
what=$1; shift
for r in $(seq "$ROUNDS"); do
    for arg in "$@"; do
        IFS=: read -r bin src db <<< "$arg"
        src=${src:-$CASEBOOK_SRC}; db=${db:-$BENCH_DB}
        label=$(basename "$bin")
        echo "##### $label round $r ($(date -u +%H:%M:%S), load $(cut -d' ' -f1-3 /proc/loadavg))"
        BENCH_DB=$db CASEBOOK_BIN=$bin CASEBOOK_SRC=$src "$BENCH_DIR/restart.sh"
        BENCH_DB=$db CASEBOOK_BIN=$bin CASEBOOK_SRC=$src OUT=$STATE/compare-$label-r$r ROUNDS=1 "$BENCH_DIR/$what.sh"
    done
done
