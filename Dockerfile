# syntax=docker/dockerfile:1
#
# preflight: wait for the database, migrate it, then run the app as its init.
#
#   docker build --target preflight -t preflight .   # preflight alone: FROM it, or COPY --from it
#   docker build -t preflight-demo .                  # the example app behind preflight (last stage)
#
# Stop signal: STOPSIGNAL is left at Docker's SIGTERM. preflight, as PID 1, forwards every signal
# it gets to the app's process group; SIGTERM and SIGINT (fly.io's default kill_signal) count as
# stop signals for --stop-delay and --stop-timeout. To give the app a graceful signal of its own,
# keep SIGTERM here and add `--rewrite-signal SIGTERM:SIGQUIT` (nginx) to the command.

ARG RUST_VERSION=1.95

# ---- builder: a static musl binary, dependencies cached in their own layer -------------------
FROM rust:${RUST_VERSION}-alpine AS builder
# hadolint ignore=DL3018
RUN apk add --no-cache bash musl-dev
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY scripts/build-static.sh scripts/
# Build the dependencies against empty sources, so a change to src/ only rebuilds preflight.
RUN mkdir -p src examples/demo-app \
    && echo 'fn main() {}' > src/main.rs \
    && echo 'fn main() {}' > examples/demo-app/main.rs \
    && scripts/build-static.sh --example demo-app \
    && rm -rf src examples
COPY build.rs ./
COPY scripts/supervisor-layout.ld scripts/
COPY src src
COPY examples/demo-app examples/demo-app
RUN touch src/main.rs examples/demo-app/main.rs \
    && scripts/build-static.sh --example demo-app \
    && mkdir -p /out/rootfs/tmp /out/demo \
    && chmod 1777 /out/rootfs/tmp \
    && cp "target/$(uname -m)-unknown-linux-musl/release/preflight" /out/rootfs/preflight \
    && cp "target/$(uname -m)-unknown-linux-musl/release/examples/demo-app" /out/demo/demo-app

# ---- preflight: the binary alone, on scratch ---------------------------------------------------
# musl's resolver reads the /etc/hosts and /etc/resolv.conf that the runtime mounts, so names
# resolve in scratch too. /tmp is writable (mount an emptyDir there under readOnlyRootFilesystem).
FROM scratch AS preflight
COPY --from=builder /out/rootfs/ /
USER 65532:65532
ENTRYPOINT ["/preflight"]
CMD ["--help"]

# ---- demo: the example app, migrated and supervised by preflight (fly.toml deploys this) -------
FROM preflight AS demo
COPY --from=builder /out/demo/demo-app /demo-app
COPY examples/migrations /migrations
ENV PREFLIGHT_MIGRATIONS=/migrations \
    PORT=8080
EXPOSE 8080
CMD ["run", "--", "/demo-app"]
