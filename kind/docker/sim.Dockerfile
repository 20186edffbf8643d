# iosxe-sim image (the simulated Catalyst 9300 fleet, and the image servers
# of `iosxe-sim serve-images`). Build from the repository root:
#   docker build -f kind/docker/sim.Dockerfile -t iosxe-sim:dev .
# Profiles are compiled into the binary; files clients write go to
# IOSXE_SIM_DATA_DIR (mount a volume there).
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
      install -D -m 0755 "$PREBUILT" /out/iosxe-sim; \
    else \
      CARGO_TARGET_DIR=/cargo-target CARGO_PROFILE_RELEASE_STRIP=symbols \
        cargo build --release --locked -p iosxe-sim --bin iosxe-sim \
      && install -D -m 0755 /cargo-target/release/iosxe-sim /out/iosxe-sim; \
    fi

FROM ${RUNTIME_IMAGE}
COPY --from=build /out/iosxe-sim /usr/local/bin/iosxe-sim
USER 65532:65532
ENV IOSXE_SIM_ADDRESS=0.0.0.0 \
    IOSXE_SIM_DATA_DIR=/data
EXPOSE 50052 8080
ENTRYPOINT ["/usr/local/bin/iosxe-sim"]
CMD ["serve"]
