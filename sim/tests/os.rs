//! gNOI OS: Install (every InstallError where it applies, a 256 MiB image
//! made by `iosxe-sim mkimage`), Activate and Verify across real reboots.

mod common;

use std::io::Read;
use std::time::{Duration, Instant};

use common::*;
use cvk_proto::gnoi::os::{self as ospb, install_error::Type as T, os_client::OsClient};
use cvk_proto::gnoi::system::{self as syspb, system_client::SystemClient};
use iosxe_sim::{FaultKind, FaultSpec, InstallState, Power};
use tonic::Code;

const V2: &str = "17.18.03.0.4200.1770000000";

async fn verify(ch: &tonic::transport::Channel) -> Result<ospb::VerifyResponse, tonic::Status> {
    OsClient::new(ch.clone())
        .verify(ospb::VerifyRequest {})
        .await
        .map(|r| r.into_inner())
}

async fn activate(
    ch: &tonic::transport::Channel,
    version: &str,
    no_reboot: bool,
) -> Result<ospb::ActivateResponse, tonic::Status> {
    OsClient::new(ch.clone())
        .activate(ospb::ActivateRequest {
            version: version.into(),
            no_reboot,
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner())
}

fn outcome_version(r: &InstallRun) -> Option<String> {
    match &r.outcome {
        Ok(Installed::Validated { version, .. }) => Some(version.clone()),
        _ => None,
    }
}

fn error_kind(r: &InstallRun) -> Option<T> {
    match &r.outcome {
        Ok(Installed::Error { kind, .. }) => Some(*kind),
        _ => None,
    }
}

#[tokio::test]
async fn mkimage_then_install_256_mib() {
    let f = fleet("c9300-26.01", 1).await;
    let d = f.nth(0).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("cat9k_iosxe.bin");
    let size: u64 = 256 << 20;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_iosxe-sim"))
        .args(["mkimage", "--version", V2, "--size", "256MiB", "--out"])
        .arg(&img)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let sha = stdout.split_whitespace().next().unwrap().to_owned();
    assert_eq!(sha.len(), 64);
    assert_eq!(std::fs::metadata(&img).unwrap().len(), size);
    let mut head = [0u8; 1024];
    std::fs::File::open(&img)
        .unwrap()
        .read_exact(&mut head)
        .unwrap();
    assert!(String::from_utf8_lossy(&head).contains(&format!("CW_FULL_VERSION={V2}")));

    // Stream the file in 64 KiB chunks straight from disk.
    let file = std::fs::File::open(&img).unwrap();
    let chunks = std::iter::from_fn({
        let mut file = file;
        move || {
            let mut buf = vec![0u8; 64 * 1024];
            let mut n = 0;
            while n < buf.len() {
                match file.read(&mut buf[n..]).unwrap() {
                    0 => break,
                    k => n += k,
                }
            }
            (n > 0).then(|| {
                buf.truncate(n);
                buf
            })
        }
    });
    let t0 = Instant::now();
    let run = install(channel(&d).await, V2, size, chunks, true).await;
    let secs = t0.elapsed().as_secs_f64();
    assert!(run.ready);
    assert_eq!(
        outcome_version(&run).as_deref(),
        Some(V2),
        "{:?}",
        run.outcome
    );
    eprintln!(
        "OS.Install throughput: {:.1} MiB/s (256 MiB in {secs:.2} s)",
        256.0 / secs
    );
    assert!(
        run.progress.len() >= 40,
        "TransferProgress every 5 MiB: got {}",
        run.progress.len()
    );
    assert!(run.progress.windows(2).all(|w| w[0] < w[1]));
    let snap = d.snapshot();
    let staged = snap.staged.iter().find(|s| s.version == V2).unwrap();
    assert_eq!(staged.path, format!("flash:gNOI_iosxe_{V2}.bin"));
    assert_eq!(staged.size, size);
    let flash = snap
        .filesystems
        .iter()
        .find(|f| f.name == "flash:")
        .unwrap();
    assert!(flash.free < flash.size - size);
    let j = d.journal_for("/gnoi.os.OS/Install");
    assert_eq!(j[0].fields["version"], V2);
    assert_eq!(j[0].fields["result"], "validated");
    assert_eq!(j[0].code, "OK");
    // The stored image is the uploaded one, byte for byte (File.Get would
    // read it; here the sha256 of the spool must match mkimage's).
    let mut f2 = cvk_proto::gnoi::file::file_client::FileClient::new(channel(&d).await);
    let st = f2
        .stat(cvk_proto::gnoi::file::StatRequest {
            path: staged.path.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .stats;
    assert_eq!(st[0].size, size);
}

#[tokio::test]
async fn install_errors_and_already_present() {
    let f = fleet("c9300-17.18", 1).await;
    let d = f.nth(0).unwrap();
    let ch = channel(&d).await;
    let running = d.snapshot().running_version;
    // Running version: Validated at once, no transfer.
    let r = install(ch.clone(), &running, 0, Vec::<Vec<u8>>::new(), true).await;
    assert!(!r.ready);
    assert_eq!(outcome_version(&r), Some(running.clone()));
    // Standby supervisor on a C9300.
    let r = install_with(
        ch.clone(),
        ospb::TransferRequest {
            version: V2.into(),
            standby_supervisor: true,
            ..Default::default()
        },
        vec![],
        true,
    )
    .await;
    assert_eq!(error_kind(&r), Some(T::NotSupportedOnBackup));
    // TOO_LARGE from package_size.
    let r = install(ch.clone(), V2, 100 << 30, vec![], true).await;
    assert_eq!(error_kind(&r), Some(T::TooLarge));
    // PARSE_FAIL: not an image.
    let r = install(ch.clone(), V2, 0, vec![vec![0x42u8; 8192]], true).await;
    assert!(r.ready);
    assert_eq!(error_kind(&r), Some(T::ParseFail));
    // INCOMPATIBLE: another platform family.
    let foreign: Vec<Vec<u8>> = iosxe_sim::ImageSpec::new(V2, 300_000)
        .with_platform("cat8k")
        .chunks()
        .unwrap()
        .collect();
    let r = install(ch.clone(), V2, 0, foreign, true).await;
    assert_eq!(error_kind(&r), Some(T::Incompatible));
    // INTEGRITY_FAIL: a flipped byte, and a truncated image.
    let mut bad = image_chunks(V2, 300_000);
    bad[2][100] ^= 1;
    let r = install(ch.clone(), V2, 0, bad, true).await;
    assert_eq!(error_kind(&r), Some(T::IntegrityFail));
    let mut short = image_chunks(V2, 300_000);
    short.pop();
    let r = install(ch.clone(), V2, 0, short, true).await;
    assert_eq!(error_kind(&r), Some(T::IntegrityFail));
    // INSTALL_RUN_PACKAGE: empty version forces the transfer of the running image.
    let r = install(ch.clone(), "", 0, image_chunks(&running, 200_000), true).await;
    assert_eq!(error_kind(&r), Some(T::InstallRunPackage));
    // Closing without TransferEnd: ABORTED, nothing kept.
    let r = install(ch.clone(), V2, 0, image_chunks(V2, 300_000), false).await;
    assert_eq!(r.outcome.as_ref().unwrap_err().code(), Code::Aborted);
    assert!(d.snapshot().staged.is_empty());
    // A good one; the version comes from the header, not the request.
    let r = install(ch.clone(), "", 0, image_chunks(V2, 300_000), true).await;
    assert_eq!(outcome_version(&r).as_deref(), Some(V2));
    // Now present: Validated at once.
    let r = install(ch.clone(), V2, 0, Vec::<Vec<u8>>::new(), true).await;
    assert!(!r.ready);
    assert_eq!(outcome_version(&r).as_deref(), Some(V2));
    assert!(
        d.snapshot().install_in_progress.is_none(),
        "no install slot leaked"
    );
}

#[tokio::test]
async fn concurrent_install_is_refused() {
    let f = fleet("c9300-17.18", 1).await;
    let d = f.nth(0).unwrap();
    let ch = channel(&d).await;
    // The first install stalls after its TransferReady (its chunks never come).
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(ospb::InstallRequest {
        request: Some(ospb::install_request::Request::TransferRequest(
            ospb::TransferRequest {
                version: V2.into(),
                ..Default::default()
            },
        )),
    })
    .await
    .unwrap();
    let mut first = OsClient::new(ch.clone())
        .install(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let m = first.message().await.unwrap().unwrap();
    assert!(matches!(
        m.response,
        Some(ospb::install_response::Response::TransferReady(_))
    ));
    assert_eq!(d.snapshot().install_state, InstallState::InProgress);
    let r = install(ch.clone(), "17.18.04.0.1.1", 0, vec![], true).await;
    assert_eq!(error_kind(&r), Some(T::InstallInProgress));
    drop(tx);
    drop(first);
    assert!(
        eventually(Duration::from_secs(2), || async {
            d.snapshot().install_in_progress.is_none()
        })
        .await
    );
}

#[tokio::test]
async fn activate_reboots_into_the_new_version() {
    let f = fleet("c9300-17.18", 1).await;
    let d = f.nth(0).unwrap();
    let ch = lazy_channel(&d);
    let before = d.snapshot();
    let r = install(ch.clone(), V2, 0, image_chunks(V2, 200_000), true).await;
    assert_eq!(outcome_version(&r).as_deref(), Some(V2));
    // Unknown and empty versions.
    for v in ["99.99.99.0.1.1", ""] {
        match activate(&ch, v, false).await.unwrap().response.unwrap() {
            ospb::activate_response::Response::ActivateError(e) => {
                assert_eq!(e.r#type(), ospb::activate_error::Type::NonExistentVersion)
            }
            other => panic!("{other:?}"),
        }
    }
    let r = activate(&ch, V2, false).await.unwrap();
    assert!(matches!(
        r.response,
        Some(ospb::activate_response::Response::ActivateOk(_))
    ));
    assert!(d.wait_power(Power::Down, Duration::from_secs(2)).await);
    assert!(eventually(Duration::from_secs(2), || async { refused(d.addr()).await }).await);
    // Let the client notice that its connection was cut.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let e = verify(&ch).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "Verify during the reboot");
    assert!(d.wait_power(Power::Up, Duration::from_secs(3)).await);
    assert!(
        eventually(Duration::from_secs(3), || async {
            verify(&ch).await.is_ok()
        })
        .await
    );
    let v = verify(&ch).await.unwrap();
    assert_eq!(v.version, V2);
    assert_eq!(v.activation_fail_message, "");
    let after = d.snapshot();
    assert!(after.boot_time_ns > before.boot_time_ns);
    assert_eq!(after.install_state, InstallState::Uncommitted);
    assert_eq!(
        after.previous_version.as_deref(),
        Some(before.running_version.as_str())
    );
    assert!(
        after.filesystems.iter().any(|f| f.name == "flash:"),
        "filesystems survive the reboot"
    );
    d.commit();
    assert_eq!(d.snapshot().install_state, InstallState::Committed);
    let acts: Vec<_> = d
        .journal_for("/gnoi.os.OS/Activate")
        .into_iter()
        .filter(|e| e.fields["version"] == V2)
        .collect();
    assert_eq!(acts.len(), 1, "Activate arrived exactly once");
    assert_eq!(acts[0].code, "OK");
    assert_eq!(acts[0].fields["no_reboot"], "false");
}

#[tokio::test]
async fn activate_no_reboot_waits_for_system_reboot() {
    let f = fleet("c9300-17.18", 1).await;
    let d = f.nth(0).unwrap();
    let ch = lazy_channel(&d);
    install(ch.clone(), V2, 0, image_chunks(V2, 200_000), true).await;
    let r = activate(&ch, V2, true).await.unwrap();
    assert!(matches!(
        r.response,
        Some(ospb::activate_response::Response::ActivateOk(_))
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(d.snapshot().power, Power::Up, "no_reboot does not reboot");
    assert_ne!(verify(&ch).await.unwrap().version, V2);
    assert_eq!(d.snapshot().install_state, InstallState::InProgress);
    SystemClient::new(ch.clone())
        .reboot(syspb::RebootRequest {
            method: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(d.wait_power(Power::Down, Duration::from_secs(2)).await);
    assert!(d.wait_power(Power::Up, Duration::from_secs(3)).await);
    assert!(
        eventually(Duration::from_secs(3), || async {
            verify(&ch).await.is_ok_and(|v| v.version == V2)
        })
        .await
    );
}

#[tokio::test]
async fn failed_boot_falls_back_with_activation_fail_message() {
    let f = fleet("c9300-17.18", 1).await;
    let d = f.nth(0).unwrap();
    let ch = lazy_channel(&d);
    let old = d.snapshot().running_version;
    install(ch.clone(), V2, 0, image_chunks(V2, 200_000), true).await;
    d.inject(FaultSpec::device(FaultKind::BootOldImage { message: None }).once())
        .unwrap();
    activate(&ch, V2, false).await.unwrap();
    assert!(d.wait_power(Power::Down, Duration::from_secs(2)).await);
    assert!(d.wait_power(Power::Up, Duration::from_secs(3)).await);
    assert!(
        eventually(Duration::from_secs(3), || async {
            verify(&ch).await.is_ok()
        })
        .await
    );
    let v = verify(&ch).await.unwrap();
    assert_eq!(v.version, old);
    assert!(
        v.activation_fail_message.contains(V2),
        "{}",
        v.activation_fail_message
    );
    assert!(d.faults().is_empty(), "one-shot fault used up");
}

#[tokio::test]
async fn corrupted_images() {
    let f = fleet("c9300-17.18", 1).await;
    let d = f.nth(0).unwrap();
    let ch = lazy_channel(&d);
    let old = d.snapshot().running_version;
    // The next image written lands damaged: INTEGRITY_FAIL.
    d.inject(FaultSpec::device(FaultKind::CorruptImage { version: None }).once())
        .unwrap();
    let r = install(ch.clone(), V2, 0, image_chunks(V2, 200_000), true).await;
    assert_eq!(error_kind(&r), Some(T::IntegrityFail));
    let r = install(ch.clone(), V2, 0, image_chunks(V2, 200_000), true).await;
    assert_eq!(outcome_version(&r).as_deref(), Some(V2));
    // A staged image damaged later fails to boot.
    d.inject(FaultSpec::device(FaultKind::CorruptImage {
        version: Some(V2.into()),
    }))
    .unwrap();
    activate(&ch, V2, false).await.unwrap();
    assert!(d.wait_power(Power::Down, Duration::from_secs(2)).await);
    assert!(d.wait_power(Power::Up, Duration::from_secs(3)).await);
    assert!(
        eventually(Duration::from_secs(3), || async {
            verify(&ch).await.is_ok()
        })
        .await
    );
    let v = verify(&ch).await.unwrap();
    assert_eq!(v.version, old);
    assert!(!v.activation_fail_message.is_empty());
}

#[tokio::test]
async fn release_17_14_activate_closes_the_connection() {
    let f = fleet("c9300-17.14", 1).await;
    let d = f.nth(0).unwrap();
    let ch = lazy_channel(&d);
    let v = "17.15.01.0.100.1720000000";
    let r = install(ch.clone(), v, 0, image_chunks(v, 100_000), true).await;
    assert_eq!(outcome_version(&r).as_deref(), Some(v));
    assert!(
        r.progress.is_empty(),
        "the 17.14 profile sends no TransferProgress"
    );
    let e = activate(&ch, v, false).await.unwrap_err();
    assert!(
        matches!(e.code(), Code::Unavailable | Code::Unknown | Code::Internal),
        "{e:?}"
    );
    assert!(d.wait_power(Power::Up, Duration::from_secs(3)).await);
    assert!(
        eventually(Duration::from_secs(3), || async {
            verify(&ch).await.is_ok_and(|r| r.version == v)
        })
        .await
    );
    let acts = d.journal_for("/gnoi.os.OS/Activate");
    assert_eq!(acts.len(), 1, "Activate arrived exactly once");
    assert_eq!(acts[0].code, "DROPPED");
}
