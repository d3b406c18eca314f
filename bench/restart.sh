#!/usr/bin/env bash
# Restarts the bench server on the existing scratch database (e.g. to compare two builds:
# CASEBOOK_BIN=/path/to/other/casebook bench/restart.sh). Extra environment such as
# CASEBOOK__DATABASE__POOL_MAX_SIZE=4 is passed to the server.
source "$(dirname "$0")/common.sh"
if [ -f "$STATE/server.pid" ]; then
    pid=$(cat "$STATE/server.pid")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    fi
fi
cd "$CASEBOOK_SRC"
CASEBOOK_LISTEN=$BENCH_LISTEN nohup "$CASEBOOK_BIN" serve > "$STATE/server.log" 2>&1 &
echo $! > "$STATE/server.pid"
for _ in $(seq 50); do
    curl -sf "$BASE/health/ready" > /dev/null && break
    sleep 0.2
done
curl -sf "$BASE/health/ready" > /dev/null || { echo "server not ready, see $STATE/server.log" >&2; exit 1; }
echo "server pid $(cat "$STATE/server.pid") ($CASEBOOK_BIN) on $BASE"
