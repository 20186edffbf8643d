#!/usr/bin/env bash
# Everything on kind, the way users run the product, with no registry:
#
#   bash kind/e2e.sh          # leaves the cluster up; `... cluster kind down` removes it
#
# 1. `cvk-hil cluster kind up`: the node image and the project's images
#    (cached after the first build), the cluster, the chart, the fleet;
# 2. the in-cluster end to end (harness/tests/kind_e2e.rs) and the
#    simulator image under testcontainers (harness/tests/sim_container.rs);
# 3. the scenario suite against the kind API server, with a summary table
#    and JUnit (target/kind-junit.xml).
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '\n==> %s (%s)\n' "$*" "$(date -u +%H:%M:%S)"; }

step "kind cluster up"
cargo run --release --locked -p cvk-hil -- cluster kind up
DOCKER_HOST=$(bash kind/host/docker.sh up)
export DOCKER_HOST CVK_REQUIRE_KIND=1

step "in-cluster end to end, and the simulator image under testcontainers"
cargo test --locked -p cvk-hil --test kind_e2e --test sim_container -- --nocapture

step "the scenario suite on the kind cluster"
cargo run --release --locked -p cvk-hil -- run --cluster kind --junit target/kind-junit.xml --artifacts target/cvk-hil-kind
