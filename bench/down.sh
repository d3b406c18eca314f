#!/usr/bin/env bash
# Stops the bench server started by up.sh and drops the scratch database.
source "$(dirname "$0")/common.sh"
if [ -f "$STATE/server.pid" ]; then
    pid=$(cat "$STATE/server.pid")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    fi
    rm -f "$STATE/server.pid"
fi
psql "$PG/postgres" -qX -c "DROP DATABASE IF EXISTS $BENCH_DB WITH (FORCE)"
echo "stopped; database $BENCH_DB dropped"
