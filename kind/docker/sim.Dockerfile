# iosxe-sim image (the simulated Catalyst 9300 fleet). Build from the
# repository root:
#   docker build -f kind/docker/sim.Dockerfile -t iosxe-sim:dev .
# Profiles are compiled into the binary; files clients write go to
# IOSXE_SIM_DATA_DIR (mount a volume there).
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p iosxe-sim --bin iosxe-sim \
    && install -D -m 0755 target/release/iosxe-sim /out/iosxe-sim

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/iosxe-sim /usr/local/bin/iosxe-sim
USER 65532:65532
ENV IOSXE_SIM_ADDRESS=0.0.0.0 \
    IOSXE_SIM_DATA_DIR=/data
EXPOSE 50052 8080
ENTRYPOINT ["/usr/local/bin/iosxe-sim"]
CMD ["serve"]
