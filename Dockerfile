# Multi-stage image of the DAQ: every process binary and daqctl, built in the
# Rust image, run in a slim Debian as an unprivileged user (uid 10001, the
# one deploy/k8s runs as). Build: docker build -t daq:latest .
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# protoc is vendored (protoc-bin-vendored); jemalloc and ring need only cc/make.
RUN cargo build --release --locked \
        -p boardreader -p eventbuilder -p aggregator -p monitor -p daqctl \
    && mkdir /out \
    && cp target/release/boardreader target/release/eventbuilder \
          target/release/aggregator target/release/monitor target/release/daqctl /out/

FROM debian:bookworm-slim
RUN groupadd --system --gid 10001 daq \
    && useradd --system --uid 10001 --gid daq --home-dir /var/lib/daq --create-home daq
COPY --from=build /out/ /usr/local/bin/
USER 10001:10001
WORKDIR /var/lib/daq
EXPOSE 7000
# No default process: the Kubernetes manifests and `docker run` name one,
# e.g. docker run daq:latest boardreader --rank 0 --listen 0.0.0.0:7000 --token-file /run/secrets/daq-token
CMD ["daqctl", "--help"]
