# cvk-controller image. Build from the repository root:
#   docker build -f kind/docker/controller.Dockerfile -t cvk-controller:dev .
# Pure Rust (rustls, protox): no OpenSSL, no protoc; the binary needs only
# glibc, so the runtime is distroless/cc, running as the nonroot user.
#
# The two bases are build arguments. Where no registry can be reached,
# kind/docker/build-images.sh builds this file with local bases made from
# Debian packages (kind/node/build.sh bases) and PREBUILT naming a binary
# built on the host with the same toolchain (see kind/README.md).
ARG RUST_IMAGE=docker.io/library/rust:1-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
# A path in the build context to a binary built already; empty: build here.
ARG PREBUILT=""
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/cargo-target \
    if [ -n "$PREBUILT" ]; then \
      install -D -m 0755 "$PREBUILT" /out/cvk-controller; \
    else \
      CARGO_TARGET_DIR=/cargo-target CARGO_PROFILE_RELEASE_STRIP=symbols \
        cargo build --release --locked -p cvk-controller --bin cvk-controller \
      && install -D -m 0755 /cargo-target/release/cvk-controller /out/cvk-controller; \
    fi

FROM ${RUNTIME_IMAGE}
COPY --from=build /out/cvk-controller /usr/local/bin/cvk-controller
USER 65532:65532
EXPOSE 8080 8081
ENTRYPOINT ["/usr/local/bin/cvk-controller"]
CMD ["run"]
