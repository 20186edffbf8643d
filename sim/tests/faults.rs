//! Every fault kind, through real clients; the control API; the journal.

mod common;

use std::time::{Duration, Instant};

use common::*;
use cvk_proto::gnoi::file::{self as filepb, file_client::FileClient};
use cvk_proto::gnoi::os::{self as ospb, install_error::Type as T, os_client::OsClient};
use cvk_proto::gnoi::system::{self as syspb, system_client::SystemClient};
use iosxe_sim::{FaultFile, FaultKind, FaultSpec, Fleet, FleetConfig, Power, Profile};
use serde_json::json;
use tonic::Code;

const V2: &str = "17.18.03.0.4200.1770000000";

async fn time(ch: &tonic::transport::Channel) -> Result<u64, tonic::Status> {
    SystemClient::new(ch.clone())
        .time(syspb::TimeRequest {})
        .await
        .map(|r| r.into_inner().time)
}

async fn put(ch: &tonic::transport::Channel, path: &str, data: &[u8]) -> Result<(), tonic::Status> {
    use filepb::put_request::Request as R;
    use sha2::Digest;
    let mut msgs = vec![filepb::PutRequest {
        request: Some(R::Open(filepb::put_request::Details {
            remote_file: path.into(),
            permissions: 644,
        })),
    }];
    msgs.extend(data.chunks(64 * 1024).map(|c| filepb::PutRequest {
        request: Some(R::Contents(bytes::Bytes::copy_from_slice(c))),
    }));
    msgs.push(filepb::PutRequest {
        request: Some(R::Hash(cvk_proto::gnoi::types::HashType {
            method: 1,
            hash: sha2::Sha256::digest(data).to_vec(),
        })),
    });
    FileClient::new(ch.clone())
        .put(tokio_stream::iter(msgs))
        .await
        .map(|_| ())
}

async fn exists(ch: &tonic::transport::Channel, path: &str) -> bool {
    FileClient::new(ch.clone())
        .stat(filepb::StatRequest { path: path.into() })
        .await
        .is_ok()
}

#[tokio::test]
async fn unimplemented_status_and_latency_by_method_and_service() {
    let f = fleet("c9300-17.18", 1).await;
    let d = f.nth(0).unwrap();
    let ch = lazy_channel(&d);
    d.inject(FaultSpec::rpc(
        "gnoi.system.System",
        FaultKind::Unimplemented,
    ))
    .unwrap();
    assert_eq!(time(&ch).await.unwrap_err().code(), Code::Unimplemented);
    d.clear_faults();
    assert!(time(&ch).await.is_ok());
    let id = d
        .inject(
            FaultSpec::rpc(
                "/gnoi.os.OS/Verify",
                FaultKind::Status {
                    code: "resource_exhausted".into(),
                    message: "busy".into(),
                },
            )
            .once(),
        )
        .unwrap();
    let e = OsClient::new(ch.clone())
        .verify(ospb::VerifyRequest {})
        .await
        .unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::ResourceExhausted, "busy"));
    assert!(
        OsClient::new(ch.clone())
            .verify(ospb::VerifyRequest {})
            .await
            .is_ok(),
        "one-shot"
    );
    assert!(!d.remove_fault(id), "already consumed");
    d.inject(FaultSpec::rpc(
        "/gnoi.system.System/Time",
        FaultKind::Latency { ms: 250 },
    ))
    .unwrap();
    let t0 = Instant::now();
    time(&ch).await.unwrap();
    assert!(t0.elapsed() >= Duration::from_millis(250));
    assert_eq!(d.faults()[0].hits, 1);
    // The journal records injected outcomes too.
    let j = d.journal_for("/gnoi.os.OS/Verify");
    assert_eq!(j[0].code, "RESOURCE_EXHAUSTED");
    assert_eq!(j[1].code, "OK");
}

#[tokio::test]
async fn cut_after_bytes_drops_the_connection_and_keeps_nothing() {
    let f = fleet("c9300-17.18", 1).await;
    let d = f.nth(0).unwrap();
    let ch = lazy_channel(&d);
    let data = vec![5u8; 500_000];
    d.inject(
        FaultSpec::rpc(
            "/gnoi.file.File/Put",
            FaultKind::Cut {
                after_bytes: Some(100_000),
                probability: None,
                seed: 0,
            },
        )
        .once(),
    )
    .unwrap();
    let e = put(&ch, "flash:cut.bin", &data).await.unwrap_err();
    assert!(
        matches!(
            e.code(),
            Code::Unavailable | Code::Unknown | Code::Internal | Code::Cancelled
        ),
        "{e:?}"
    );
    assert!(
        eventually(Duration::from_secs(2), || async {
            !exists(&ch, "flash:cut.bin").await
        })
        .await
    );
    put(&ch, "flash:cut.bin", &data).await.unwrap();
    assert!(exists(&ch, "flash:cut.bin").await);
    let j = d.journal_for("/gnoi.file.File/Put");
    assert_eq!(j[0].fields["fault"], "cut");
    assert!(
        ["DROPPED", "UNAVAILABLE"].contains(&j[0].code.as_str()),
        "{:?}",
        j[0]
    );
    assert_eq!(j[1].code, "OK");

    // Install cut mid-transfer: nothing staged, the install slot is free again.
    d.inject(
        FaultSpec::rpc(
            "/gnoi.os.OS/Install",
            FaultKind::Cut {
                after_bytes: Some(150_000),
                probability: None,
                seed: 0,
            },
        )
        .once(),
    )
    .unwrap();
    let r = install(ch.clone(), V2, 0, image_chunks(V2, 400_000), true).await;
    assert!(r.outcome.is_err(), "{:?}", r.outcome);
    assert!(
        eventually(Duration::from_secs(2), || async {
            d.snapshot().install_in_progress.is_none()
        })
        .await
    );
    assert!(d.snapshot().staged.is_empty());
    let r = install(ch.clone(), V2, 0, image_chunks(V2, 400_000), true).await;
    assert!(
        matches!(r.outcome, Ok(Installed::Validated { .. })),
        "{:?}",
        r.outcome
    );
}

#[tokio::test]
async fn cut_with_probability_is_seeded() {
    let f = fleet("c9300-17.18", 1).await;
    let d = f.nth(0).unwrap();
    let ch = lazy_channel(&d);
    let data = vec![1u8; 300_000];
    d.inject(FaultSpec::rpc(
        "/gnoi.file.File/Put",
        FaultKind::Cut {
            after_bytes: None,
            probability: Some(0.0),
            seed: 1,
        },
    ))
    .unwrap();
    put(&ch, "flash:p0.bin", &data).await.unwrap();
    d.clear_faults();
    d.inject(FaultSpec::rpc(
        "/gnoi.file.File/Put",
        FaultKind::Cut {
            after_bytes: None,
            probability: Some(1.0),
            seed: 1,
        },
    ))
    .unwrap();
    assert!(put(&ch, "flash:p1.bin", &data).await.is_err());
    assert!(
        eventually(Duration::from_secs(2), || async {
            !exists(&ch, "flash:p1.bin").await
        })
        .await
    );
}

#[tokio::test]
async fn stalled_stream_hangs_until_the_deadline() {
    let f = fleet("c9300-17.18", 1).await;
    let d = f.nth(0).unwrap();
    let ch = channel(&d).await;
    d.inject(FaultSpec::rpc(
        "/gnoi.system.System/Time",
        FaultKind::Stall { after_bytes: 0 },
    ))
    .unwrap();
    let mut req = tonic::Request::new(syspb::TimeRequest {});
    req.set_timeout(Duration::from_millis(300));
    let t0 = Instant::now();
    let e = SystemClient::new(ch.clone()).time(req).await.unwrap_err();
    // tonic reports its own deadline as CANCELLED("Timeout expired").
    assert!(
        matches!(e.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{e:?}"
    );
    assert!(t0.elapsed() >= Duration::from_millis(290));
    let j = d.journal_for("/gnoi.system.System/Time");
    assert_eq!(j[0].fields["fault"], "stall");
    // Other methods are untouched.
    assert!(
        OsClient::new(ch.clone())
            .verify(ospb::VerifyRequest {})
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn slow_and_endless_reboots() {
    let f = fleet("c9300-17.18", 1).await;
    let d = f.nth(0).unwrap();
    d.inject(FaultSpec::device(FaultKind::SlowReboot { ms: 900 }).once())
        .unwrap();
    let t0 = Instant::now();
    d.reboot(Duration::ZERO, "slow").unwrap();
    assert!(d.wait_power(Power::Down, Duration::from_secs(1)).await);
    assert!(d.wait_power(Power::Up, Duration::from_secs(3)).await);
    assert!(t0.elapsed() >= Duration::from_millis(900));

    let id = d
        .inject(FaultSpec::device(FaultKind::EndlessReboot))
        .unwrap();
    d.reboot(Duration::ZERO, "endless").unwrap();
    assert!(d.wait_power(Power::Down, Duration::from_secs(1)).await);
    assert!(
        !d.wait_power(Power::Up, Duration::from_millis(800)).await,
        "stays down"
    );
    assert!(refused(d.addr()).await);
    assert!(d.remove_fault(id));
    assert!(
        d.wait_power(Power::Up, Duration::from_secs(2)).await,
        "comes back once cleared"
    );
    assert!(time(&lazy_channel(&d)).await.is_ok());
}

#[tokio::test]
async fn flash_full() {
    let f = fleet("c9300-17.18", 1).await;
    let d = f.nth(0).unwrap();
    let ch = lazy_channel(&d);
    d.inject(FaultSpec::device(FaultKind::FlashFull)).unwrap();
    let flash = |d: &iosxe_sim::DeviceHandle| {
        d.snapshot()
            .filesystems
            .into_iter()
            .find(|f| f.name == "flash:")
            .unwrap()
    };
    assert_eq!(flash(&d).free, 0);
    let r = install(ch.clone(), V2, 200_000, image_chunks(V2, 200_000), true).await;
    assert!(
        matches!(
            r.outcome,
            Ok(Installed::Error {
                kind: T::TooLarge,
                ..
            })
        ),
        "{:?}",
        r.outcome
    );
    let r = install(ch.clone(), V2, 0, image_chunks(V2, 200_000), true).await;
    assert!(
        matches!(
            r.outcome,
            Ok(Installed::Error {
                kind: T::TooLarge,
                ..
            })
        ),
        "no package_size: fails while writing"
    );
    assert_eq!(
        put(&ch, "flash:x.bin", b"12345").await.unwrap_err().code(),
        Code::ResourceExhausted
    );
    assert!(
        put(&ch, "usbflash0:x.bin", b"12345").await.is_ok(),
        "only flash: is full"
    );
    d.clear_faults();
    assert!(flash(&d).free > 1 << 30);
    assert!(put(&ch, "flash:x.bin", b"12345").await.is_ok());
}

#[tokio::test]
async fn faults_from_a_file_at_start() {
    let text = "faults:\n  - {method: /gnoi.os.OS/Verify, kind: unimplemented, device: sim-1}\n  - {kind: clock_skew, ms: 86400000}\n";
    let ff = FaultFile::parse(text).unwrap();
    let mut cfg = FleetConfig::new(2, Profile::builtin("c9300-26.01").unwrap());
    cfg.faults = ff.faults;
    let f = Fleet::start(cfg).await.unwrap();
    let (a, b) = (f.nth(0).unwrap(), f.nth(1).unwrap());
    assert!(
        OsClient::new(channel(&a).await)
            .verify(ospb::VerifyRequest {})
            .await
            .is_ok()
    );
    let e = OsClient::new(channel(&b).await)
        .verify(ospb::VerifyRequest {})
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented);
    let t = time(&channel(&a).await).await.unwrap();
    assert!(
        t > iosxe_sim::device::wall_ns() + 86_000_000_000_000,
        "skew applies to every device"
    );
}

#[tokio::test]
async fn control_api_state_faults_journal() {
    let f = fleet("c9300-17.18", 2).await;
    let api = f.control_addr().unwrap();
    let ch = channel(&f.nth(1).unwrap()).await;
    let (s, v) = http(api, "GET", "/devices", None).await;
    assert_eq!(s, 200);
    assert_eq!(v.as_array().unwrap().len(), 2);
    assert_eq!(v[1]["name"], "sim-1");
    let (s, v) = http(api, "GET", "/devices/sim-1", None).await;
    assert_eq!(s, 200);
    assert_eq!(v["running_version"], "17.18.02.0.4112.1766116039");
    assert_eq!(http(api, "GET", "/devices/nope", None).await.0, 404);
    // Set state.
    let (s, v) = http(
        api,
        "PATCH",
        "/devices/sim-1",
        Some(json!({"running_version": "17.18.05.0.1.1", "committed": false})),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(v["install_state"], "uncommitted");
    let verify = OsClient::new(ch.clone())
        .verify(ospb::VerifyRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(verify.version, "17.18.05.0.1.1");
    assert_eq!(
        http(api, "POST", "/devices/sim-1/commit", None).await.1["install_state"],
        "committed"
    );
    // Faults.
    let (s, v) = http(api, "POST", "/devices/sim-1/faults", Some(json!({"method": "/gnoi.os.OS/Verify", "kind": "status", "code": "unavailable", "message": "x", "once": true}))).await;
    assert_eq!(s, 201);
    let id = v["id"].as_u64().unwrap();
    let (_, list) = http(api, "GET", "/devices/sim-1/faults", None).await;
    assert_eq!(list[0]["id"].as_u64(), Some(id));
    assert_eq!(list[0]["kind"], "status");
    let e = OsClient::new(ch.clone())
        .verify(ospb::VerifyRequest {})
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert_eq!(
        http(
            api,
            "POST",
            "/faults",
            Some(json!({"kind": "latency", "ms": 1}))
        )
        .await
        .0,
        400,
        "an RPC fault needs a method"
    );
    let (s, v) = http(api, "POST", "/faults", Some(json!({"kind": "flash_full"}))).await;
    assert_eq!((s, v.as_array().unwrap().len()), (201, 2), "fleet-wide");
    assert_eq!(
        http(api, "GET", "/faults", None)
            .await
            .1
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let fid = v[0]["id"].as_u64().unwrap();
    assert_eq!(
        http(api, "DELETE", &format!("/devices/sim-0/faults/{fid}"), None)
            .await
            .0,
        204
    );
    assert_eq!(http(api, "DELETE", "/faults", None).await.0, 204);
    assert!(
        http(api, "GET", "/faults", None)
            .await
            .1
            .as_array()
            .unwrap()
            .is_empty()
    );
    // Reboot through the API.
    let (s, _) = http(
        api,
        "POST",
        "/devices/sim-0/reboot",
        Some(json!({"delay_ms": 0})),
    )
    .await;
    assert_eq!(s, 202);
    assert!(
        f.nth(0)
            .unwrap()
            .wait_power(Power::Up, Duration::from_secs(3))
            .await
    );
    // Journal.
    let (_, j) = http(api, "GET", "/journal?device=sim-1&method=Verify", None).await;
    let codes: Vec<_> = j
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["code"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(codes, ["OK", "UNAVAILABLE"]);
    assert_eq!(j[0]["method"], "/gnoi.os.OS/Verify");
    assert_eq!(http(api, "DELETE", "/journal", None).await.0, 204);
    assert!(
        http(api, "GET", "/journal", None)
            .await
            .1
            .as_array()
            .unwrap()
            .is_empty()
    );
    let (_, ready) = http(api, "GET", "/ready", None).await;
    assert_eq!(ready["devices"].as_array().unwrap().len(), 2);
}
