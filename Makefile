# Thin aliases: the scripts hold the logic so CI and humans run the same thing.
.PHONY: run test fmt clippy db stop-db

run:
	bash scripts/run.sh

test:
	bash scripts/test.sh

fmt:
	cargo fmt

clippy:
	cargo clippy --all-targets -- -D warnings

# Prints the PostgreSQL server URL, starting a server if needed.
db:
	@bash scripts/pg.sh url

stop-db:
	bash scripts/pg.sh stop-private
