//! Shutdown is bounded: after the cancellation token fires,
//! `run_controllers` returns within the grace period plus a little, whatever
//! the reconcilers and watches are doing at that moment (no list yet, a
//! probe on a silent device, a stalled transfer, an action observing a
//! reboot that never ends). Against the real local control plane.

mod reconcile_common;

use std::time::{Duration, Instant};

use cvk_controller::crd::{IOSXEOperationalAction, IOSXESoftwareUpgrade};
use cvk_controller::reconcile::{ControllerSettings, run_controllers};
use cvk_hil::testing::shared_control_plane;
use iosxe_sim::{FaultKind, FaultSpec, ImageSpec};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::Client;
use kube::api::PostParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use reconcile_common::*;
use serde_json::json;
use tokio_util::sync::CancellationToken;

const GRACE: Duration = Duration::from_secs(1);
/// Grace plus the time to drop the streams and the API client's tasks.
const BOUND: Duration = Duration::from_secs(6);

async fn stop_within_bound(client: Client, ns: &str, before_stop: impl Future<Output = ()>) {
    stop_within_bound_with(client, settings(ns), before_stop).await;
}

async fn stop_within_bound_with(
    client: Client,
    mut s: ControllerSettings,
    before_stop: impl Future<Output = ()>,
) {
    s.shutdown_grace = GRACE;
    let token = CancellationToken::new();
    let task = tokio::spawn(run_controllers(client, s, token.clone()));
    before_stop.await;
    let asked = Instant::now();
    token.cancel();
    tokio::time::timeout(BOUND, task)
        .await
        .unwrap_or_else(|_| panic!("controllers still running {BOUND:?} after shutdown"))
        .expect("controller task");
    let took = asked.elapsed();
    assert!(took < BOUND, "stopping took {took:?}");
}

/// An identity the API server knows nothing of: every list and watch is
/// refused (403), so no watch ever completes its first list. kube-runtime's
/// graceful shutdown alone waits for that list forever.
async fn unauthorized_client() -> Client {
    let cp = shared_control_plane();
    let kubeconfig = Kubeconfig::from_yaml(cp.kubeconfig_yaml()).expect("kubeconfig");
    let mut config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("config");
    config.auth_info.impersonate = Some("system:serviceaccount:nowhere:nobody".to_owned());
    Client::try_from(config).expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stops_while_no_watch_could_list() {
    let (_admin, ns) = setup("stop-unlisted").await;
    let client = unauthorized_client().await;
    // Let the watches be refused and back off a few times.
    stop_within_bound(
        client,
        ns.name(),
        tokio::time::sleep(Duration::from_secs(2)),
    )
    .await;
    ns.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stops_while_a_probe_waits_on_a_silent_device() {
    let (client, ns) = setup("stop-probe").await;
    // A "device" that accepts TCP and then never says a word: the probe's
    // HTTP/2 handshake waits on it.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("listener");
    let port = listener.local_addr().expect("addr").port();
    let (accepted_tx, accepted_rx) = tokio::sync::oneshot::channel();
    let silent = tokio::spawn(async move {
        let (conn, _) = listener.accept().await.expect("accept");
        let _ = accepted_tx.send(());
        // Hold the connection open without answering.
        tokio::time::sleep(Duration::from_secs(120)).await;
        drop(conn);
    });
    let dev_client = client.clone();
    let name = ns.name().to_owned();
    stop_within_bound(client, ns.name(), async move {
        device(&dev_client, &name, "silent", port).await;
        tokio::time::timeout(Duration::from_secs(30), accepted_rx)
            .await
            .expect("the probe connects within 30s")
            .expect("accepted");
    })
    .await;
    silent.abort();
    ns.delete().await;
}

/// An upgrade's OS.Install stalled part-way (the simulator stops reading):
/// the transfer task is blocked on a full HTTP/2 window when the
/// controllers are told to stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stops_while_a_transfer_is_stalled() {
    let (client, ns) = setup("stop-transfer").await;
    let sim = fleet("c9300-17.18", 1).await;
    let dev = sim.nth(0).expect("device");
    dev.inject(FaultSpec::rpc(
        "/gnoi.os.OS/Install",
        FaultKind::Stall {
            after_bytes: 128 * 1024,
        },
    ))
    .expect("stall fault");
    let mut image = Vec::new();
    ImageSpec::new("17.18.03.0.4200.1770000000", 512 * 1024)
        .write_to(&mut image)
        .expect("image");
    let cm = ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some("img".into()),
            ..Default::default()
        },
        binary_data: Some([("image".to_owned(), ByteString(image))].into()),
        ..Default::default()
    };
    Api::<ConfigMap>::namespaced(client.clone(), ns.name())
        .create(&PostParams::default(), &cm)
        .await
        .expect("image ConfigMap");
    let name = ns.name().to_owned();
    let (c, d) = (client.clone(), dev.clone());
    let mut s = settings(ns.name());
    s.gates.software_upgrade = true;
    s.upgrade.image_cache_dir = std::env::temp_dir().join(format!("cvk-stop-cache-{name}"));
    stop_within_bound_with(client, s, async move {
        device(&c, &name, "sw1", d.addr().port()).await;
        let _: IOSXESoftwareUpgrade = create(
            &c,
            &name,
            json!({
                "apiVersion": "ops.cisco.vk/v1alpha1", "kind": "IOSXESoftwareUpgrade",
                "metadata": { "name": "up" },
                "spec": {
                    "deviceRef": { "name": "sw1" },
                    "imageSource": { "configMapRef": { "name": "img" } },
                    "targetVersion": "17.18.03",
                },
            }),
        )
        .await;
        wait_journal(&d, "/gnoi.os.OS/Install").await;
        // Let the stream fill the window and block.
        tokio::time::sleep(Duration::from_millis(500)).await;
    })
    .await;
    sim.shutdown().await;
    ns.delete().await;
}

/// A Reboot action observing a reload that never ends: its reconcile is
/// waiting on a device that refuses connections when the controllers are
/// told to stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stops_while_an_action_observes_an_endless_reboot() {
    let (client, ns) = setup("stop-observe").await;
    let sim = fleet("c9300-17.18", 1).await;
    let dev = sim.nth(0).expect("device");
    dev.inject(FaultSpec::device(FaultKind::EndlessReboot))
        .expect("endless reboot fault");
    let name = ns.name().to_owned();
    let (c, d) = (client.clone(), dev.clone());
    let mut s = settings(ns.name());
    s.gates.write_class = true;
    stop_within_bound_with(client, s, async move {
        device(&c, &name, "sw1", d.addr().port()).await;
        let _: IOSXEOperationalAction = create(
            &c,
            &name,
            json!({
                "apiVersion": "ops.cisco.vk/v1alpha1", "kind": "IOSXEOperationalAction",
                "metadata": { "name": "reload" },
                "spec": {
                    "deviceRef": { "name": "sw1" }, "confirm": "sw1",
                    "action": { "kind": "Reboot", "reboot": { "message": "shutdown test", "delay": 0 } },
                },
            }),
        )
        .await;
        wait_journal(&d, "/gnoi.system.System/Reboot").await;
        // The device is down now; the action polls it.
        tokio::time::sleep(Duration::from_secs(1)).await;
    })
    .await;
    sim.shutdown().await;
    ns.delete().await;
}

/// Waits (bounded) until the device has seen `method`.
async fn wait_journal(dev: &iosxe_sim::DeviceHandle, method: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while dev.journal_for(method).is_empty() {
        assert!(
            Instant::now() < deadline,
            "{method} never reached the device"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
