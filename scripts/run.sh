#!/usr/bin/env bash
# Build and start Casebook on a local PostgreSQL with demo data:
#   scripts/run.sh            (release build; CASEBOOK_DEBUG_BUILD=1 for a debug one)
# With DATABASE_URL set, that database is used as given and nothing is created.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export CASEBOOK_ENV="${CASEBOOK_ENV:-development}"

if [[ -z "${DATABASE_URL:-}" ]]; then
  base="$(bash scripts/pg.sh url)"
  bash scripts/pg.sh ensure-db casebook
  export DATABASE_URL="$base/casebook"
fi

profile=release; flags=(--release)
if [[ "${CASEBOOK_DEBUG_BUILD:-0}" == 1 ]]; then profile=debug; flags=(); fi
cargo build "${flags[@]}" --bin casebook
bin="${CARGO_TARGET_DIR:-target}/$profile/casebook"

# Migrate before seeding so a fresh database and an old one take the same path;
# seed-demo is idempotent, so re-running this script is safe.
"$bin" migrate
"$bin" seed-demo
exec "$bin" serve
