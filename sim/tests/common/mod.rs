//! Shared test helpers: fleets on loopback, clients, an install driver and
//! a tiny HTTP/1.1 client for the control API.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use cvk_proto::gnoi::os::{self as ospb, os_client::OsClient};
use iosxe_sim::{DeviceHandle, Fleet, FleetConfig, FleetHandle, Profile};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

pub const REBOOT_MS: u64 = 300;

pub async fn fleet(profile: &str, n: usize) -> FleetHandle {
    Fleet::start(
        FleetConfig::new(n, Profile::builtin(profile).unwrap())
            .reboot_ms(REBOOT_MS)
            .control_port(0),
    )
    .await
    .unwrap()
}

pub async fn channel(d: &DeviceHandle) -> Channel {
    Endpoint::from_shared(d.endpoint())
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(30))
        .connect()
        .await
        .unwrap()
}

/// A lazily connecting channel (works across reboots).
pub fn lazy_channel(d: &DeviceHandle) -> Channel {
    Endpoint::from_shared(d.endpoint())
        .unwrap()
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(10))
        .connect_lazy()
}

/// True when a TCP connect to `addr` is refused.
pub async fn refused(addr: SocketAddr) -> bool {
    matches!(
        tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(addr)).await,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused
    )
}

/// Polls `f` every 20 ms until it returns true or `limit` passes.
pub async fn eventually<F, Fut>(limit: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < limit {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[derive(Debug, Clone, PartialEq)]
pub enum Installed {
    Validated {
        version: String,
        description: String,
    },
    Error {
        kind: ospb::install_error::Type,
        detail: String,
    },
}

#[derive(Debug)]
pub struct InstallRun {
    pub outcome: Result<Installed, tonic::Status>,
    pub progress: Vec<u64>,
    pub ready: bool,
}

fn req(r: ospb::install_request::Request) -> ospb::InstallRequest {
    ospb::InstallRequest { request: Some(r) }
}

/// Drives OS.Install like gnoic: TransferRequest, wait for TransferReady,
/// stream chunks (at most 8 in flight), TransferEnd, read the outcome.
/// `end` false closes the stream without TransferEnd.
pub async fn install<I>(
    ch: Channel,
    version: &str,
    package_size: u64,
    chunks: I,
    end: bool,
) -> InstallRun
where
    I: IntoIterator<Item = Vec<u8>> + Send + 'static,
    I::IntoIter: Send,
{
    install_with(
        ch,
        ospb::TransferRequest {
            version: version.into(),
            package_size,
            ..Default::default()
        },
        chunks,
        end,
    )
    .await
}

pub async fn install_with<I>(
    ch: Channel,
    tr: ospb::TransferRequest,
    chunks: I,
    end: bool,
) -> InstallRun
where
    I: IntoIterator<Item = Vec<u8>> + Send + 'static,
    I::IntoIter: Send,
{
    use ospb::install_request::Request as R;
    use ospb::install_response::Response as A;
    let (tx, rx) = mpsc::channel(8);
    tx.send(req(R::TransferRequest(tr))).await.unwrap();
    let mut client = OsClient::new(ch).max_decoding_message_size(64 << 20);
    let mut run = InstallRun {
        outcome: Err(tonic::Status::unknown("no answer")),
        progress: vec![],
        ready: false,
    };
    let mut stream = match client.install(ReceiverStream::new(rx)).await {
        Ok(s) => s.into_inner(),
        Err(e) => {
            run.outcome = Err(e);
            return run;
        }
    };
    let mut tx = Some(tx);
    let mut chunks = Some(chunks);
    loop {
        let msg = match stream.message().await {
            Ok(Some(m)) => m.response,
            Ok(None) => return run,
            Err(e) => {
                run.outcome = Err(e);
                return run;
            }
        };
        match msg {
            Some(A::TransferReady(_)) => {
                run.ready = true;
                let tx = tx.take().expect("one TransferReady");
                let chunks = chunks.take().expect("one TransferReady");
                tokio::spawn(async move {
                    for c in chunks {
                        if tx.send(req(R::TransferContent(c.into()))).await.is_err() {
                            return;
                        }
                    }
                    if end {
                        let _ = tx.send(req(R::TransferEnd(ospb::TransferEnd {}))).await;
                    }
                });
            }
            Some(A::TransferProgress(p)) => run.progress.push(p.bytes_received),
            Some(A::Validated(v)) => {
                run.outcome = Ok(Installed::Validated {
                    version: v.version,
                    description: v.description,
                });
            }
            Some(A::InstallError(e)) => {
                run.outcome = Ok(Installed::Error {
                    kind: e.r#type(),
                    detail: e.detail,
                });
            }
            Some(A::SyncProgress(_)) | None => {}
        }
    }
}

/// Image bytes as 64 KiB chunks.
pub fn image_chunks(version: &str, size: u64) -> Vec<Vec<u8>> {
    iosxe_sim::ImageSpec::new(version, size)
        .chunks()
        .unwrap()
        .collect()
}

/// Minimal HTTP/1.1 client: returns (status, body as JSON or Null).
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap();
    let status: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(rest)
    } else {
        rest.to_owned()
    };
    (
        status,
        serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
    )
}

fn dechunk(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some((len, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(len.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&after[..n]);
        rest = &after[n + 2..];
    }
    out
}
