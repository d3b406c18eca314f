#!/usr/bin/env bash
# Compares builds on the same scratch database, interleaved: for each round, for each
# binary, restarts the server with it and runs one round of login.sh or entry.sh.
#   bench/compare.sh login /path/to/casebook-a /path/to/casebook-b
# Outputs in $STATE/compare-<binary name>-r<round>/. Run bench/up.sh first; the last binary
# stays running (bench/down.sh stops it).
source "$(dirname "$0")/common.sh"
what=$1; shift
for r in $(seq "$ROUNDS"); do
    for bin in "$@"; do
        label=$(basename "$bin")
        echo "##### $label round $r"
        CASEBOOK_BIN=$bin "$BENCH_DIR/restart.sh"
        CASEBOOK_BIN=$bin OUT=$STATE/compare-$label-r$r ROUNDS=1 "$BENCH_DIR/$what.sh"
    done
done
