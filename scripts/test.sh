#!/usr/bin/env bash
# Lint and test Casebook against a real PostgreSQL:  scripts/test.sh [cargo test args]
# The tests create and drop their own databases, so they get a superuser URL to
# the maintenance database rather than an application database.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Replace the database part of a postgres URL with /postgres, keeping
# user, host and ?query (e.g. sslmode) intact.
maintenance_url() {
  local url="$1" scheme rest auth tail query=""
  scheme="${url%%://*}://"; rest="${url#*://}"
  auth="${rest%%[/?]*}"; tail="${rest:${#auth}}"
  [[ "$tail" == *\?* ]] && query="?${tail#*\?}"
  echo "${scheme}${auth}/postgres${query}"
}

if [[ -z "${CASEBOOK_TEST_DATABASE_URL:-}" ]]; then
  if [[ -n "${DATABASE_URL:-}" ]]; then
    CASEBOOK_TEST_DATABASE_URL="$(maintenance_url "$DATABASE_URL")"
  else
    CASEBOOK_TEST_DATABASE_URL="$(bash scripts/pg.sh url)/postgres"
  fi
fi
export CASEBOOK_TEST_DATABASE_URL

cargo fmt --check
cargo clippy --all-targets -- -D warnings

# Python with lxml validates exported XML, pyreadstat reads exported XPT files back, jsonschema
# validates Dataset-JSON. Best effort
# here: a missing python or an offline pip does not stop the script; the export tests that need
# them then fail, saying how to install them.
if command -v python3 >/dev/null; then
  if { [[ -x .venv/bin/python ]] || python3 -m venv .venv >/dev/null; } &&
     { .venv/bin/python -c 'import lxml, pyreadstat, jsonschema' 2>/dev/null ||
       .venv/bin/python -m pip install -q --disable-pip-version-check lxml pyreadstat jsonschema >/dev/null; }; then
    CASEBOOK_PYTHON="$PWD/.venv/bin/python"; export CASEBOOK_PYTHON
  else
    echo "test.sh: warning: could not set up .venv with lxml, pyreadstat and jsonschema; the export tests that validate XML and JSON and read XPT will fail" >&2
  fi
fi

cargo test "$@"

# schemathesis against the live server (scripts/fuzz.sh, about 3 minutes): on when
# CASEBOOK_FUZZ is set and not 0, as .ci/run does; CASEBOOK_FUZZ_SECONDS sets its budget.
if [[ "${CASEBOOK_FUZZ:-0}" != 0 ]]; then
  cargo build --bin casebook
  bash scripts/fuzz.sh
fi
