//! The third cluster option: a real k3s cluster in a container
//! (testcontainers), with the scenario runner on its kubeconfig, exactly as
//! `cvk-hil run --cluster kubeconfig` would use a kind or lab cluster.
//! The controller runs as a subprocess on the host and the simulators
//! in-process on loopback; the cluster is k3s's own kube-apiserver, with its
//! namespace and garbage-collection controllers (which the local control
//! plane lacks).
//!
//! Needs a Docker engine that has (or can pull) a `rancher/k3s` image, so the
//! test is ignored by default: on a machine with no registry, like this
//! project's CI machine, no k3s image can be had (the kind cluster of
//! `cvk-hil cluster kind up` is built from Go modules instead, and
//! `sim_container.rs` uses testcontainers with the project's own image). The
//! kind-e2e GitHub workflow runs it with
//! `cargo test -p cvk-hil --test k3s -- --ignored`. `CVK_K3S_IMAGE` overrides
//! the image (`rancher/k3s:<tag>`); `DOCKER_HOST` names the engine.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cvk_hil::control_plane::client_from_kubeconfig;
use cvk_hil::scenario::{self, ControllerCommand, Outcome, RunContext, Target};
use cvk_hil::testing::install_project_crds;
use testcontainers::core::{IntoContainerPort, Mount, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{GenericImage, ImageExt};

const DEFAULT_IMAGE: &str = "rancher/k3s:v1.32.3-k3s1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Docker engine with a rancher/k3s image (none without a registry)"]
async fn scenarios_run_against_a_k3s_cluster() {
    let image = std::env::var("CVK_K3S_IMAGE").unwrap_or_else(|_| DEFAULT_IMAGE.to_owned());
    let (name, tag) = image.rsplit_once(':').expect("CVK_K3S_IMAGE is name:tag");
    let conf = tempfile::tempdir().unwrap();
    let container = GenericImage::new(name, tag)
        .with_exposed_port(6443.tcp())
        .with_wait_for(WaitFor::message_on_stderr(
            "Node controller sync successful",
        ))
        .with_cmd([
            "server",
            "--snapshotter=native",
            "--disable=traefik",
            "--disable=metrics-server",
        ])
        .with_env_var("K3S_KUBECONFIG_MODE", "644")
        .with_mount(Mount::bind_mount(
            conf.path().to_str().unwrap(),
            "/etc/rancher/k3s/",
        ))
        .with_privileged(true)
        .with_userns_mode("host")
        .with_startup_timeout(Duration::from_secs(240))
        .start()
        .await
        .expect("starting k3s (is a Docker engine running?)");
    let port = container.get_host_port_ipv4(6443).await.unwrap();
    let kubeconfig = std::fs::read_to_string(conf.path().join("k3s.yaml"))
        .expect("k3s wrote its kubeconfig")
        .replace(
            "https://127.0.0.1:6443",
            &format!("https://127.0.0.1:{port}"),
        );
    assert!(kubeconfig.contains(&format!(":{port}")), "{kubeconfig}");
    let client = client_from_kubeconfig(&kubeconfig).await.unwrap();
    install_project_crds(&client).await.unwrap();

    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let ctx = RunContext {
        kubeconfig,
        target: Target::Sim,
        controller: ControllerCommand {
            program: PathBuf::from(env!("CARGO_BIN_EXE_cvk-hil")),
            args: vec!["controller".into()],
        },
        artifacts: Path::new(env!("CARGO_TARGET_TMPDIR")).join("k3s-scenarios"),
        progress: Arc::new(|line| eprintln!("{line}")),
    };
    let scenarios: Vec<_> = [
        "deviceoperation-time",
        "gate-write-class-off",
        "reboot-outage",
    ]
    .iter()
    .map(|n| scenario::load(&dir.join(format!("{n}.yaml"))).unwrap_or_else(|e| panic!("{e}")))
    .collect();
    let results = scenario::run_all(&ctx, &scenarios, 2).await;
    eprint!("{}", scenario::report::summary_table(&results));
    let failed: Vec<_> = results
        .iter()
        .filter(|r| r.outcome != Outcome::Passed)
        .map(|r| format!("{}: {:?} (logs: {:?})", r.name, r.outcome, r.logs))
        .collect();
    assert!(failed.is_empty(), "{failed:#?}");
}
