#!/usr/bin/env bash
# Find or start a PostgreSQL server for Casebook and print its base URL.
#
#   scripts/pg.sh url              print the server URL (no database name) on stdout
#   scripts/pg.sh ensure-db NAME   create database NAME if it is missing
#   scripts/pg.sh stop-private     stop the private cluster under .pgdata/
#
# Sourcing it defines pg_url / pg_ensure_db / pg_stop_private and exports
# CASEBOOK_PG_URL, without changing the caller's shell options.
#
# Where the server comes from, first match wins:
#   a) DATABASE_URL, used exactly as given (we cannot know what the user meant
#      to derive from it, so we derive nothing);
#   b) a server answering on 127.0.0.1:5432 (Debian's cluster is started first
#      if it is installed but down);
#   c) a private cluster in .pgdata/ on port 54329, so a machine without a
#      system server (or with a broken one) still works without sudo;
#   d) as root with apt-get: install Debian's postgresql, then b/c.
# Knobs: CASEBOOK_PG_FORCE_PRIVATE=1 skips (b), for fault tests and for
# exercising (c); CASEBOOK_PG_PRIVATE_PORT overrides 54329.

_pg_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_pg_private_port="${CASEBOOK_PG_PRIVATE_PORT:-54329}"
_pg_dir="$_pg_root/.pgdata"
_pg_bin=""    # bin dir of the server we chose, so psql matches it

_pg_say() { echo "pg.sh: $*" >&2; }

# Newest /usr/lib/postgresql/N/bin holding $1, else $1 on PATH (resolved, so
# Debian's pg_wrapper symlinks do not hide the real bin dir).
_pg_find_bindir() {
  local tool="$1" b best="" p
  for b in /usr/lib/postgresql/*/bin; do
    [[ -x "$b/$tool" ]] || continue
    if [[ -z "$best" ]] || [[ "$(printf '%s\n' "$best" "$b" | sort -V | tail -n1)" == "$b" ]]; then best="$b"; fi
  done
  if [[ -n "$best" ]]; then echo "$best"; return 0; fi
  p="$(command -v "$tool" 2>/dev/null)" || return 1
  dirname "$(readlink -f "$p")"
}

# Client tool: from the chosen server's bin dir when we have one, else PATH.
_pg_tool() {
  if [[ -n "$_pg_bin" && -x "$_pg_bin/$1" ]]; then echo "$_pg_bin/$1"; return 0; fi
  command -v "$1" 2>/dev/null && return 0
  local d; d="$(_pg_find_bindir "$1")" || return 1; echo "$d/$1"
}

_pg_up() {  # host port
  local isready
  if isready="$(_pg_tool pg_isready)"; then
    "$isready" -q -h "$1" -p "$2" -t 3
  else
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
  fi
}

# initdb and postgres refuse to run as root: as root, run them as Debian's
# postgres user (runuser keeps argv intact; su needs a quoted string).
_pg_as_owner() {
  if [[ $EUID -ne 0 ]]; then (cd "$_pg_dir" && "$@"); return; fi
  if command -v runuser >/dev/null; then
    (cd "$_pg_dir" && runuser -u postgres -- "$@")
  else
    (cd "$_pg_dir" && su postgres -s /bin/bash -c "$(printf '%q ' "$@")")
  fi
}

_pg_try_system_cluster() {
  # Debian installs register clusters in /etc/postgresql; without systemd
  # (containers, CI) nothing restarts them after a reboot.
  command -v pg_ctlcluster >/dev/null || return 1
  local c v
  for c in /etc/postgresql/*/main; do
    [[ -d "$c" ]] || continue
    v="${c%/main}"; v="${v##*/}"
    _pg_say "starting system cluster $v/main"
    pg_ctlcluster --skip-systemctl-redirect "$v" main start >/dev/null 2>&1 || true
  done
  _pg_up 127.0.0.1 5432
}

_pg_start_private() {
  local data="$_pg_dir/data" run="$_pg_dir/run" log="$_pg_dir/log" ver
  _pg_bin="$(_pg_find_bindir initdb)" || return 1
  [[ -x "$_pg_bin/pg_ctl" ]] || return 1
  # An existing cluster only starts with its own major version.
  if [[ -f "$data/PG_VERSION" ]]; then
    ver="$(cat "$data/PG_VERSION")"
    if [[ "$("$_pg_bin/pg_ctl" --version | grep -oE '[0-9]+' | head -n1)" != "$ver" ]]; then
      if [[ -x "/usr/lib/postgresql/$ver/bin/pg_ctl" ]]; then _pg_bin="/usr/lib/postgresql/$ver/bin"
      else _pg_say "$data is PostgreSQL $ver but only $_pg_bin is installed; remove .pgdata/"; return 1; fi
    fi
  fi
  mkdir -p "$data" "$run" "$log"
  if [[ $EUID -eq 0 ]]; then
    getent passwd postgres >/dev/null || { _pg_say "running as root but there is no 'postgres' user to run the server"; return 1; }
    chown -R postgres: "$_pg_dir"
    # A checkout under e.g. /root is not reachable by that user.
    _pg_as_owner test -w "$data" 2>/dev/null || {
      _pg_say "user postgres cannot write $data (a parent directory is closed to it)"; return 1; }
  fi
  chmod 700 "$data"
  if [[ ! -f "$data/PG_VERSION" ]]; then
    _pg_say "initialising private cluster in $data"
    _pg_as_owner "$_pg_bin/initdb" -D "$data" -U postgres --auth=trust -E UTF8 \
      --locale=C.UTF-8 >"$log/initdb.log" 2>&1 \
      || { _pg_say "initdb failed:"; tail -n 20 "$log/initdb.log" >&2; return 1; }
  fi
  if _pg_as_owner "$_pg_bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    _pg_up 127.0.0.1 "$_pg_private_port" && return 0
  fi
  _pg_say "starting private cluster on 127.0.0.1:$_pg_private_port"
  # One retry: after a crash the old postmaster can linger as a zombie for a
  # moment, and postgres then refuses its lock file.
  local try
  for try in 1 2; do
    _pg_as_owner "$_pg_bin/pg_ctl" -D "$data" -l "$log/postgres.log" -w -t 60 \
      -o "-p $_pg_private_port -k $run -c listen_addresses=127.0.0.1" start \
      >"$log/pg_ctl.out" 2>&1 && return 0
    [[ $try -eq 1 ]] && sleep 3
  done
  _pg_say "pg_ctl start failed:"; cat "$log/pg_ctl.out" >&2; tail -n 20 "$log/postgres.log" >&2
  return 1
}

# Sets CASEBOOK_PG_URL. Returns 1 with a hint when there is no way to get one.
_pg_discover() {
  if [[ -n "${DATABASE_URL:-}" ]]; then CASEBOOK_PG_URL="$DATABASE_URL"; return 0; fi
  local tried_apt=0
  while :; do
    if [[ "${CASEBOOK_PG_FORCE_PRIVATE:-0}" != 1 ]]; then
      if _pg_up 127.0.0.1 5432 || _pg_try_system_cluster; then
        CASEBOOK_PG_URL="postgres://postgres@127.0.0.1:5432"; return 0
      fi
    fi
    if _pg_find_bindir initdb >/dev/null; then
      _pg_start_private || return 1
      CASEBOOK_PG_URL="postgres://postgres@127.0.0.1:$_pg_private_port"; return 0
    fi
    if [[ $tried_apt -eq 0 && $EUID -eq 0 ]] && command -v apt-get >/dev/null; then
      tried_apt=1
      _pg_say "installing PostgreSQL with apt-get"
      export DEBIAN_FRONTEND=noninteractive
      { apt-get install -y -q postgresql || { apt-get update -q && apt-get install -y -q postgresql; }; } \
        >/dev/null || { _pg_say "apt-get install postgresql failed"; return 1; }
      continue
    fi
    _pg_say "no PostgreSQL found; install it with: sudo apt-get install -y postgresql"
    return 1
  done
}

pg_url() { _pg_discover && echo "$CASEBOOK_PG_URL"; }

pg_ensure_db() {
  local name="${1:-}" psql exists
  [[ "$name" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || { _pg_say "ensure-db: bad database name '$name'"; return 2; }
  _pg_discover || return 1
  if [[ -n "${DATABASE_URL:-}" ]]; then
    _pg_say "DATABASE_URL is set; not creating '$name' (the database is yours to manage)"; return 0
  fi
  psql="$(_pg_tool psql)" || { _pg_say "psql not found"; return 1; }
  exists="$("$psql" -XqtA -d "$CASEBOOK_PG_URL/postgres" -c "SELECT 1 FROM pg_database WHERE datname = '$name'")" || return 1
  [[ "$exists" == 1 ]] && return 0
  _pg_say "creating database $name"
  "$psql" -Xq -d "$CASEBOOK_PG_URL/postgres" -c "CREATE DATABASE \"$name\"" >/dev/null
}

pg_stop_private() {
  local data="$_pg_dir/data"
  [[ -f "$data/postmaster.pid" ]] || { _pg_say "private cluster is not running"; return 0; }
  _pg_bin="$(_pg_find_bindir pg_ctl)" || return 1
  _pg_say "stopping private cluster"
  _pg_as_owner "$_pg_bin/pg_ctl" -D "$data" -m fast -w stop >/dev/null
}

if [[ "${BASH_SOURCE[0]}" != "$0" ]]; then
  # Sourced: export the URL for the caller; report failure without exiting it.
  _pg_discover && export CASEBOOK_PG_URL
  return
fi

set -euo pipefail
case "${1:-url}" in
  url) pg_url ;;
  ensure-db) pg_ensure_db "${2:-}" ;;
  stop-private) pg_stop_private ;;
  *) echo "usage: $0 [url | ensure-db NAME | stop-private]" >&2; exit 2 ;;
esac
