# cvk-controller image. Build from the repository root:
#   docker build -f kind/docker/controller.Dockerfile -t cvk-controller:dev .
# Pure Rust (rustls, protox): no OpenSSL, no protoc; the binary needs only
# glibc, so the runtime is distroless/cc, running as the nonroot user.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p cvk-controller --bin cvk-controller \
    && install -D -m 0755 target/release/cvk-controller /out/cvk-controller

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/cvk-controller /usr/local/bin/cvk-controller
USER 65532:65532
EXPOSE 8080 8081
ENTRYPOINT ["/usr/local/bin/cvk-controller"]
CMD ["run"]
