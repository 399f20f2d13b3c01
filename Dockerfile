# dcos-token-proxy as a sidecar container.
#
#   docker build -t dcos-token-proxy .
#   docker run -e DCOS_URL=https://master.example.com \
#              -e DCOS_SERVICE_ACCOUNT_CREDENTIAL="$(cat sa-credential.json)" \
#              -p 127.0.0.1:8079:8079 dcos-token-proxy
#
# `.ci/run` keeps this file honest without a Docker engine: it builds the binary with
# the RUN line of the build stage, starts it with the ENV and CMD below, and runs the
# HEALTHCHECK command against it. Keep each of those on one line.

# ---- build stage: the same command CI runs ----
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
COPY config ./config
RUN cargo build --locked --release --bin dcos-token-proxy

# ---- runtime: no shell, no package manager, a non-root user ----
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/dcos-token-proxy /usr/local/bin/dcos-token-proxy
USER nonroot:nonroot
# Plain HTTP on every interface of the pod (the explicit remote opt-in); clients in the
# pod use 127.0.0.1:8079, other containers need their host name in
# DCOS_TOKEN_PROXY_ALLOWED_HOSTS. The admin listener has no Host allow-list (probes).
ENV DCOS_TOKEN_PROXY_LOG_FORMAT=json
EXPOSE 8079 9079
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s CMD ["/usr/local/bin/dcos-token-proxy", "health", "--url", "http://127.0.0.1:9079"]
ENTRYPOINT ["/usr/local/bin/dcos-token-proxy"]
CMD ["--listen", "0.0.0.0:8079", "--allow-remote", "--admin-listen", "0.0.0.0:9079"]
