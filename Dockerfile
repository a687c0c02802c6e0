# syntax=docker/dockerfile:1
# retagd's container image: built from this checkout, run as the distroless `nonroot` user.
#
#   scripts/build-image                      # buildah or docker, tags retagd:0.1.0
#   docker run --rm retagd:0.1.0 --version
#   docker run --rm -p 9090:9090 -v "$PWD/retagd.toml:/etc/retagd/retagd.toml:ro" \
#       -e RETAGD_SERVER__LISTEN=0.0.0.0:9090 retagd:0.1.0
#
# The runtime base has glibc, CA certificates (for https registries) and /etc/passwd entries, and
# nothing else: no shell, no package manager, no docker-credential-* helpers (build your own image
# FROM this one to add a helper). The Helm chart (charts/retagd) runs it with a read-only root
# filesystem and passes its own arguments.

# Both bases can be replaced with mirrors: --build-arg BUILDER_IMAGE=... RUNTIME_IMAGE=....
# The builder must be the runtime's Debian release (bookworm = debian12): same glibc.
ARG BUILDER_IMAGE=docker.io/library/rust:1.95-slim-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${BUILDER_IMAGE} AS build
WORKDIR /src
# The manifest and lock first, so a source change does not re-fetch the registry index.
COPY Cargo.toml Cargo.lock ./
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    cargo fetch --locked
# .cargo/config.toml holds jemalloc's build-time options.
COPY .cargo ./.cargo
COPY build.rs ./
COPY src ./src
# Cargo.toml declares the benchmark target, so its file must exist to load the manifest.
COPY benches ./benches
# No .git in the build context: build.rs takes the commit from here (`retagd version`).
ARG REVISION=unknown
ENV SOURCE_REVISION=${REVISION}
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin retagd \
    && install -D -m 0755 target/release/retagd /out/retagd \
    && /out/retagd --version

# cc-debian12 (not static-debian12): retagd links glibc dynamically.
FROM ${RUNTIME_IMAGE}
ARG RUNTIME_IMAGE
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="retagd" \
      org.opencontainers.image.description="Promotes container images between environments (dev -> rc -> release) inside registries, with Flux-exact tag policies." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/retagd/retagd" \
      org.opencontainers.image.base.name="${RUNTIME_IMAGE}"
COPY --from=build /out/retagd /usr/local/bin/retagd
# 65532:65532 is distroless' nonroot; the chart's securityContext uses the same ids.
USER 65532:65532
EXPOSE 9090
ENTRYPOINT ["/usr/local/bin/retagd"]
CMD ["run", "--config", "/etc/retagd/retagd.toml"]
