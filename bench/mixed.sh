#!/usr/bin/env bash
# Issue 9 mixed-workload load test: scratch database, release server, then
# examples/mixed_load.rs (64 clients x 60 s: 80% reads, 15% data entry, 5% small exports),
# then cleanup (server stopped, database dropped unless KEEP=1).
#   cargo build --release --bin casebook --example mixed_load && bench/mixed.sh
# Overrides: CLIENTS, SECONDS, SUBJECTS (per site), MIXED_DB, MIXED_LISTEN.
set -euo pipefail
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
CASEBOOK_BIN=${CASEBOOK_BIN:-$REPO/target/release/casebook}
LOADGEN=${LOADGEN:-$REPO/target/release/examples/mixed_load}
MIXED_DB=${MIXED_DB:-casebook_bench_mixed}
PG=${PG:-postgres://postgres@127.0.0.1:5432}
export DATABASE_URL=$PG/$MIXED_DB
LISTEN=${MIXED_LISTEN:-127.0.0.1:18192}
OUT=${OUT:-$BENCH_DIR/out/mixed}
mkdir -p "$OUT"
export CASEBOOK_ENV=development RUST_LOG=${RUST_LOG:-warn}
for f in "$CASEBOOK_BIN" "$LOADGEN"; do
    [ -x "$f" ] || { echo "no $f: cargo build --release --bin casebook --example mixed_load" >&2; exit 1; }
done
SERVER=
cleanup() {
    [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null || true
    if [ "${KEEP:-0}" != 1 ]; then
        psql "$PG/postgres" -qX -c "DROP DATABASE IF EXISTS $MIXED_DB WITH (FORCE)" || true
    fi
}
trap cleanup EXIT
psql "$PG/postgres" -qX -v ON_ERROR_STOP=1 -c "DROP DATABASE IF EXISTS $MIXED_DB WITH (FORCE)" \
    -c "CREATE DATABASE $MIXED_DB"
cd "$REPO"
"$CASEBOOK_BIN" migrate > /dev/null
"$CASEBOOK_BIN" seed-demo > /dev/null
CASEBOOK_LISTEN=$LISTEN "$CASEBOOK_BIN" serve > "$OUT/server.log" 2>&1 &
SERVER=$!
for _ in $(seq 100); do curl -sf "http://$LISTEN/health/ready" > /dev/null && break; sleep 0.2; done
curl -sf "http://$LISTEN/health/ready" > /dev/null || { echo "server not ready: $OUT/server.log" >&2; exit 1; }
echo "machine: $(nproc) cores; pool_max_size from config/default.toml: $(awk -F' *= *' '/^pool_max_size/ {print $2}' config/default.toml)"
set +e
BASE=http://$LISTEN SERVER_PID=$SERVER "$LOADGEN" | tee "$OUT/result.txt"
status=${PIPESTATUS[0]}
set -e
echo "after the run: $(psql "$DATABASE_URL" -XAtc "SELECT count(*) FROM form_records WHERE form_id = 'temperature'") temperatures, \
$(psql "$DATABASE_URL" -XAtc "SELECT count(*) FROM audit_log WHERE action = 'export'") audited exports, \
$(psql "$DATABASE_URL" -XAtc "SELECT count(*) FROM audit_unsealed") audit rows pending sealing"
exit "$status"
