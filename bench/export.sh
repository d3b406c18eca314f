#!/usr/bin/env bash
# Issue 8 export benchmark, in one run on a scratch database (self-contained: its own
# database and port, so it does not disturb bench/up.sh's):
#   - creates $EXPORT_DB, migrates, seeds the demo accounts, starts the release server,
#     enrols 2 subjects per site through the API, then bench/export_setup.sql adds $ROWS
#     temperature rows with their audit rows (INSERT ... SELECT generate_series), and waits
#     for the server's sealer to chain those audit rows (so it does not run during the runs);
#   - per round, interleaved: psql \copy of the temperature rows (same columns, joins, order
#     and filter as the export) to /dev/null, GET /api/v1/exports/temperatures.csv, the same
#     psql \copy again, GET /api/v1/exports/odm.xml (sponsor token; curl -o /dev/null);
#   - server memory: VmRSS sampled every 100 ms during each export, and VmHWM after
#     resetting it (echo 5 > /proc/PID/clear_refs) right before the export, against VmRSS idle.
# Leaves nothing behind (server stopped, database dropped) unless KEEP=1.
#   cargo build --release --bin casebook && bench/export.sh     # ROWS=1000000 ROUNDS=2
set -euo pipefail
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
CASEBOOK_BIN=${CASEBOOK_BIN:-$REPO/target/release/casebook}
EXPORT_DB=${EXPORT_DB:-casebook_bench_export}
PG=${PG:-postgres://postgres@127.0.0.1:5432}
export DATABASE_URL=$PG/$EXPORT_DB
LISTEN=${EXPORT_LISTEN:-127.0.0.1:18191}
BASE=http://$LISTEN
ROWS=${ROWS:-1000000}
ROUNDS=${ROUNDS:-2}
OUT=${OUT:-$BENCH_DIR/out/export}
mkdir -p "$OUT"
export CASEBOOK_ENV=development RUST_LOG=${RUST_LOG:-warn}
PASSWORD="demo password for casebook"
[ -x "$CASEBOOK_BIN" ] || { echo "no $CASEBOOK_BIN: cargo build --release --bin casebook" >&2; exit 1; }

SERVER=
cleanup() {
    [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null || true
    if [ "${KEEP:-0}" != 1 ]; then
        psql "$PG/postgres" -qX -c "DROP DATABASE IF EXISTS $EXPORT_DB WITH (FORCE)" || true
    fi
}
trap cleanup EXIT

login() {
    curl -sf -X POST "$BASE/api/v1/auth/login" -H 'content-type: application/json' \
        -d "{\"email\":\"$1\",\"password\":\"$PASSWORD\"}" | jq -r .access_token
}
kib() { awk -v k="$1" '$1 == k":" { print $2 }' "/proc/$SERVER/status"; }
now() { date +%s.%N; }
load() { cut -d' ' -f1-3 /proc/loadavg; }

psql "$PG/postgres" -qX -v ON_ERROR_STOP=1 -c "DROP DATABASE IF EXISTS $EXPORT_DB WITH (FORCE)" \
    -c "CREATE DATABASE $EXPORT_DB"
cd "$REPO"
"$CASEBOOK_BIN" migrate > /dev/null
"$CASEBOOK_BIN" seed-demo > /dev/null
CASEBOOK_LISTEN=$LISTEN "$CASEBOOK_BIN" serve > "$OUT/server.log" 2>&1 &
SERVER=$!
for _ in $(seq 100); do curl -sf "$BASE/health/ready" > /dev/null && break; sleep 0.2; done
curl -sf "$BASE/health/ready" > /dev/null || { echo "server not ready: $OUT/server.log" >&2; exit 1; }

for site in FR01 FR02 FR03 FR04; do
    token=$(login "investigator.${site,,}@casebook.test")
    for _ in 1 2; do
        curl -sf -o /dev/null -X POST "$BASE/api/v1/subjects" -H "Authorization: Bearer $token" \
            -H 'content-type: application/json' \
            -d "{\"site_code\":\"$site\",\"sex\":\"female\",\"birth_year_month\":\"2023-04\",\"weight_kg\":20.0,\"eligibility\":{\"INC-KD\":true,\"INC-IVIG\":true,\"INC-WINDOW\":true,\"INC-CONSENT\":true,\"EXC-INFECTION\":false,\"EXC-ANAKINRA\":false}}"
    done
done
t0=$(now)
psql "$DATABASE_URL" -qXAt -v rows="$ROWS" -f "$BENCH_DIR/export_setup.sql" > /dev/null
t1=$(now)
echo "setup: $ROWS temperature rows + audit rows in $(echo "$t1 - $t0" | bc) s"
# the sealer chains the new audit rows in the background: let it finish first
while [ "$(psql "$DATABASE_URL" -XAtc 'SELECT count(*) FROM audit_unsealed')" != 0 ]; do sleep 1; done
t2=$(now)
echo "sealer: chained them in $(echo "$t2 - $t1" | bc) s"
psql "$DATABASE_URL" -qXc "CHECKPOINT" -c "VACUUM ANALYZE form_records"

# the same columns, joins, filter and order as GET /exports/temperatures.csv
COPY_SQL="SELECT x.id, s.subject_code, st.code, (x.values ->> 'measured_at')::timestamptz, \
x.values ->> 'celsius', x.values ->> 'method', coalesce((x.values ->> 'fever')::boolean, false), \
x.version, x.created_at, x.created_by, x.updated_at, x.updated_by, x.deleted_at, x.deleted_by, \
x.deleted_reason FROM form_records x JOIN subjects s ON s.id = x.subject_id \
JOIN sites st ON st.id = x.site_id WHERE x.form_id = 'temperature' AND x.deleted_at IS NULL \
ORDER BY x.id"
N=$(psql "$DATABASE_URL" -XAtc "SELECT count(*) FROM form_records WHERE form_id = 'temperature' AND deleted_at IS NULL")

psql_copy() {
    local a b
    a=$(now)
    psql "$DATABASE_URL" -XAtc "\\copy ($COPY_SQL) TO STDOUT CSV" > /dev/null
    b=$(now)
    echo "$b - $a" | bc
}

# api_export NAME PATH -> prints "seconds bytes peak_rss_kib hwm_kib idle_kib"
api_export() {
    local name=$1 path=$2 token idle sampler res code secs bytes peak hwm
    token=$(login sponsor@casebook.test)
    echo 5 > "/proc/$SERVER/clear_refs" 2>/dev/null || true
    idle=$(kib VmRSS)
    ( while :; do kib VmRSS; sleep 0.1; done ) > "$OUT/$name.rss" 2>/dev/null &
    sampler=$!
    res=$(curl -s -o /dev/null -w '%{http_code} %{time_total} %{size_download}' \
        -H "Authorization: Bearer $token" "$BASE$path")
    kill "$sampler"; wait "$sampler" 2>/dev/null || true
    read -r code secs bytes <<< "$res"
    [ "$code" = 200 ] || { echo "$path answered $code" >&2; exit 1; }
    peak=$(sort -n "$OUT/$name.rss" | tail -1)
    hwm=$(kib VmHWM)
    echo "$secs $bytes $peak $hwm $idle"
}

printf '%s\n' "rows: $N temperature rows; load average before: $(load)"
for r in $(seq "$ROUNDS"); do
    p1=$(psql_copy)
    echo "round $r raw: psql $p1" >> "$OUT/raw.txt"
    read -r cs cb cpk chwm cidle <<< "$(api_export "csv-$r" /api/v1/exports/temperatures.csv)"
    p2=$(psql_copy)
    read -r os ob opk ohwm oidle <<< "$(api_export "odm-$r" /api/v1/exports/odm.xml)"
    orows=$(psql "$DATABASE_URL" -XAtc "SELECT new_values->>'rows' FROM audit_log \
        WHERE action = 'export' AND entity_table = 'odm' ORDER BY id DESC LIMIT 1")
    awk -v r="$r" -v n="$N" -v p1="$p1" -v p2="$p2" -v cs="$cs" -v cb="$cb" -v cpk="$cpk" \
        -v chwm="$chwm" -v cidle="$cidle" -v os="$os" -v ob="$ob" -v opk="$opk" -v ohwm="$ohwm" \
        -v oidle="$oidle" -v orows="$orows" -v la="$(load)" 'BEGIN {
        printf "round %d  psql \\copy: %.2f s (%.0f rows/s) and %.2f s (%.0f rows/s)\n", r, p1, n/p1, p2, n/p2
        printf "round %d  CSV  export: %.2f s, %d bytes, %.0f rows/s = %.2f of psql (mean of the two)\n", r, cs, cb, n/cs, ((p1+p2)/2)/cs
        printf "round %d  CSV  memory: idle %.1f MiB, peak VmRSS %.1f MiB (+%.1f), VmHWM %.1f MiB (+%.1f)\n", r, cidle/1024, cpk/1024, (cpk-cidle)/1024, chwm/1024, (chwm-cidle)/1024
        printf "round %d  ODM  export: %.2f s, %d bytes, %d item groups, %.0f item groups/s = %.2f of psql (temperature rows, same round)\n", r, os, ob, orows, orows/os, ((p1+p2)/2)/os
        printf "round %d  ODM  memory: idle %.1f MiB, peak VmRSS %.1f MiB (+%.1f), VmHWM %.1f MiB (+%.1f)\n", r, oidle/1024, opk/1024, (opk-oidle)/1024, ohwm/1024, (ohwm-oidle)/1024
        printf "round %d  load average after: %s\n", r, la }'
done
