# syntax=docker/dockerfile:1
FROM rust:1-slim-bookworm AS builder
# Unpinned on purpose: bookworm's security updates replace pinned versions.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends libpq-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src

# Build the dependencies once against stub sources, so code edits don't
# recompile the whole dependency tree.
COPY Cargo.toml Cargo.lock build.rs ./
RUN mkdir -p src migrations \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && cargo build --release --locked --bin casebook \
 && rm -rf src target/release/.fingerprint/casebook-* target/release/deps/*casebook*

# migrations/ is embedded at compile time, config/ is read at run time.
COPY src ./src
COPY migrations ./migrations
COPY config ./config
# COPY keeps the context's mtimes, which may be older than the stub build.
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked --bin casebook \
 && install -m 0755 target/release/casebook /usr/local/bin/casebook

FROM debian:bookworm-slim
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends libpq5 ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 casebook \
 && useradd --system --uid 10001 --gid 10001 --home-dir /app --shell /usr/sbin/nologin casebook
COPY --from=builder /usr/local/bin/casebook /usr/local/bin/casebook
COPY --from=builder /src/config /app/config
WORKDIR /app
ENV CASEBOOK_LISTEN=0.0.0.0:8080 \
    CASEBOOK_ENV=production \
    CASEBOOK_CONFIG_DIR=/app/config
# Numeric, so Kubernetes runAsNonRoot can verify it.
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
  CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:8080/health/live"]
ENTRYPOINT ["casebook"]
CMD ["serve"]
