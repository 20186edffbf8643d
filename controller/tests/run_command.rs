//! `cvk-controller run` as a process: flags and environment, the health,
//! readiness and metrics endpoints, a real operation against a simulated
//! device, and a graceful exit on SIGTERM.

mod reconcile_common;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use cvk_controller::crd::operation::OperationPhase;
use cvk_hil::testing::shared_control_plane;
use reconcile_common::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A minimal HTTP/1.1 GET (status, body); `None` while nothing listens.
async fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .ok()?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

async fn wait_http(addr: SocketAddr, path: &str, want: u16) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some((status, body)) = http_get(addr, path).await
            && status == want
        {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{path} never answered {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_serves_endpoints_reconciles_and_stops_on_sigterm() {
    let (client, ns) = setup("run").await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    shared_control_plane()
        .write_kubeconfig(&kubeconfig)
        .unwrap();
    let fleet = fleet("c9300-17.18", 1).await;
    let sim = fleet.device("sim-0").unwrap();
    device(&client, ns.name(), "sw", sim.addr().port()).await;
    operation(
        &client,
        ns.name(),
        "verify",
        "sw",
        "GNOIOSVerify",
        Value::Null,
    )
    .await;

    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let health: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_cvk-controller"))
        .arg("run")
        .args(["--metrics-bind-address", &metrics.to_string()])
        .args(["--health-probe-bind-address", &health.to_string()])
        .env("KUBECONFIG", &kubeconfig)
        .env("CISCO_VK_DEVICE_NAMESPACE", ns.name())
        .env("CISCO_VK_GNOI_INSECURE", "1")
        .env("CVK_LOG_FORMAT", "json")
        .env("LOG_LEVEL", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    assert_eq!(wait_http(health, "/healthz", 200).await, "ok");
    wait_http(health, "/readyz", 200).await;
    let op = finished(&client, ns.name(), "verify").await;
    assert_eq!(
        op.status.as_ref().and_then(|s| s.phase),
        Some(OperationPhase::Succeeded),
        "{:#?}",
        op.status
    );
    let body = wait_http(metrics, "/metrics", 200).await;
    assert!(
        body.contains(
            r#"cisco_vk_device_operation_total{kind="GNOIOSVerify",phase="Succeeded"} 1"#
        ),
        "{body}"
    );
    assert!(
        body.contains(r#"cisco_vk_gnoi_rpc_total{service="os",outcome="ok"}"#),
        "{body}"
    );

    let pid = child.id().unwrap().to_string();
    let killed = tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("exits within 30s of SIGTERM")
        .unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .await
        .unwrap();
    assert!(status.success(), "exit {status:?}; logs:\n{stderr}");
    // Structured logs: every line is a JSON object; the shutdown is logged.
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        lines.iter().any(
            |l| l["message"].as_str().is_some_and(|m| m.contains("SIGTERM"))
                || l["signal"] == "SIGTERM"
        ),
        "{stderr}"
    );
    ns.delete().await;
}
