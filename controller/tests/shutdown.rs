//! Shutdown is bounded: after the cancellation token fires,
//! `run_controllers` returns within the grace period plus a little, whatever
//! the reconcilers and watches are doing at that moment. Against the real
//! local control plane.

mod reconcile_common;

use std::time::{Duration, Instant};

use cvk_controller::reconcile::run_controllers;
use cvk_hil::testing::shared_control_plane;
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};
use reconcile_common::*;
use tokio_util::sync::CancellationToken;

const GRACE: Duration = Duration::from_secs(1);
/// Grace plus the time to drop the streams and the API client's tasks.
const BOUND: Duration = Duration::from_secs(6);

async fn stop_within_bound(client: Client, ns: &str, before_stop: impl Future<Output = ()>) {
    let mut s = settings(ns);
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
