#!/usr/bin/env bash
# Fresh scratch database + release server for the benchmarks:
#   creates $BENCH_DB (drops it first), migrates, seeds the demo accounts, creates the
#   pgbench scratch tables (setup.sql), starts `casebook serve` on $BENCH_LISTEN and
#   enrols one FR01 subject with consent (its code goes to $STATE/subject_code.$BENCH_DB:
#   one file per scratch database, so that builds compared on databases of their own each
#   post to a subject of theirs).
# Needs: cargo build --release --bin casebook; wrk, jq, curl, pidstat (sysstat), pgbench.
source "$(dirname "$0")/common.sh"
[ -x "$CASEBOOK_BIN" ] || { echo "no $CASEBOOK_BIN: cargo build --release --bin casebook" >&2; exit 1; }
if [ -f "$STATE/server.pid" ] && kill -0 "$(cat "$STATE/server.pid")" 2>/dev/null; then
    echo "a bench server is already running (pid $(cat "$STATE/server.pid")): bench/down.sh first" >&2; exit 1
fi
psql "$PG/postgres" -qX -v ON_ERROR_STOP=1 -c "DROP DATABASE IF EXISTS $BENCH_DB" -c "CREATE DATABASE $BENCH_DB"
cd "$CASEBOOK_SRC"
"$CASEBOOK_BIN" migrate
"$CASEBOOK_BIN" seed-demo > "$STATE/seed.txt"
psql "$DATABASE_URL" -qX -v ON_ERROR_STOP=1 -f "$BENCH_DIR/setup.sql"
CASEBOOK_LISTEN=$BENCH_LISTEN nohup "$CASEBOOK_BIN" serve > "$STATE/server.log" 2>&1 &
echo $! > "$STATE/server.pid"
for _ in $(seq 50); do
    curl -sf "$BASE/health/ready" > /dev/null && break
    sleep 0.2
done
curl -sf "$BASE/health/ready" > /dev/null || { echo "server not ready, see $STATE/server.log" >&2; exit 1; }

TOKEN=$(login "$INVESTIGATOR")
CODE=$(curl -sf -X POST "$BASE/api/v1/subjects" -H "Authorization: Bearer $TOKEN" \
    -H 'content-type: application/json' \
    -d '{"site_code":"FR01","sex":"female","birth_year_month":"2023-04","weight_kg":20.0,"eligibility":{"INC-KD":true,"INC-IVIG":true,"INC-WINDOW":true,"INC-CONSENT":true,"EXC-INFECTION":false,"EXC-ANAKINRA":false}}' |
    jq -r .subject_code)
curl -sf -o /dev/null -X POST "$BASE/api/v1/subjects/$CODE/consents" -H "Authorization: Bearer $TOKEN" \
    -H 'content-type: application/json' \
    -d '{"form_version":"2.0","signed_on":"2026-10-01","signer":"legal_representative","representative_relationship":"mother"}'
# one temperature, to check the path works before measuring it
curl -sf -o /dev/null -w 'probe POST temperature: %{http_code}\n' -X POST "$BASE/api/v1/subjects/$CODE/temperatures" \
    -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' \
    -d '{"measured_at":"2026-10-05T08:00:00Z","celsius":38.4,"method":"rectal"}'
curl -sf -o /dev/null -w "probe POST form $ENGINE_FORM: %{http_code}\n" -X POST "$BASE/api/v1/subjects/$CODE/forms/$ENGINE_FORM" \
    -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' -d "$ENGINE_BODY"
echo "$CODE" > "$STATE/subject_code.$BENCH_DB"
echo "server pid $(cat "$STATE/server.pid") on $BASE, database $BENCH_DB, subject $CODE"
