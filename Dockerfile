# bigd: a self-contained image (RocksDB compiled in statically).
#
#   docker build -t bigd .
#   docker run -v bigd-data:/data -p 8008:8008 -e BIGD_SERVER_NAME=example.org bigd
#
# Configuration: mount a config file and pass it, e.g.
#   docker run -v ./bigd.toml:/etc/bigd/bigd.toml:ro ... bigd --config /etc/bigd/bigd.toml
# or use environment overrides: the prefix BIGD_, nested keys joined by "__"
# (BIGD_REGISTRATION__TOKENS_REQUIRED=true), lists written as TOML arrays
# (BIGD_LISTEN='["0.0.0.0:8008"]'). Set server_name: the built-in default is
# "localhost".
#
# Registration: this image listens on a public address, and on a public listener
# bigd refuses open registration unless registration tokens are required or
# registration.open_on_public_listener = true. The image sets neither; the
# operator chooses.
#
# Admin commands run through the same entry point, e.g.
#   docker run --rm -v bigd-data:/data bigd create-user --help

FROM rust:1-bookworm AS builder
# libclang for bindgen (librocksdb-sys); clang and cmake for building RocksDB's C++.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        libclang-dev clang cmake \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# .cargo/config.toml points the build at Debian's shared librocksdb (fast local
# builds). Without it librocksdb-sys compiles its bundled RocksDB and links it
# statically, so the runtime image needs no RocksDB package. Slow (~30 CPU-minutes).
RUN rm -f .cargo/config.toml && cargo build --release --bin bigd

FROM debian:bookworm-slim
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
# Fixed numeric ids so orchestrators can check runAsNonRoot and volumes can be
# prepared with the right owner.
RUN groupadd --system --gid 10001 bigd \
    && useradd --system --uid 10001 --gid bigd --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin bigd \
    && mkdir -p /data /etc/bigd \
    && chown bigd:bigd /data
COPY --from=builder /src/target/release/bigd /usr/local/bin/bigd

ENV BIGD_DATA_DIR=/data BIGD_LISTEN='["0.0.0.0:8008"]'
# /data must be owned by bigd before VOLUME so a fresh volume inherits it.
VOLUME /data
# 8008: Client-Server API. 8448: federation (not served yet).
EXPOSE 8008 8448
USER 10001:10001
WORKDIR /data
ENTRYPOINT ["bigd"]
