//! gNOI System, File, Cert and FactoryReset over loopback with real tonic
//! clients; the 17.14 profile's UNIMPLEMENTED services; a reboot outage.
#![allow(deprecated)] // gNOI Cert RPCs are deprecated upstream; IOS-XE still serves them

mod common;

use std::time::Duration;

use common::*;
use cvk_proto::gnoi::cert::{
    self as certpb, certificate_management_client::CertificateManagementClient,
};
use cvk_proto::gnoi::factory_reset::{self as frpb, factory_reset_client::FactoryResetClient};
use cvk_proto::gnoi::file::{self as filepb, file_client::FileClient};
use cvk_proto::gnoi::os::os_client::OsClient;
use cvk_proto::gnoi::system::{self as syspb, system_client::SystemClient};
use cvk_proto::gnoi::types::HashType;
use iosxe_sim::{FaultKind, FaultSpec, Power, StatePatch};
use sha2::Digest;
use tonic::Code;

fn now_ns() -> i128 {
    iosxe_sim::device::wall_ns() as i128
}

#[tokio::test]
async fn time_follows_state_and_fault_skew() {
    let f = fleet("c9300-17.18", 1).await;
    let d = f.nth(0).unwrap();
    let mut sys = SystemClient::new(channel(&d).await);
    let t = sys
        .time(syspb::TimeRequest {})
        .await
        .unwrap()
        .into_inner()
        .time as i128;
    assert!(
        (t - now_ns()).abs() < 2_000_000_000,
        "time {t} far from host clock"
    );
    d.apply(StatePatch {
        clock_skew_ms: Some(3_600_000),
        ..Default::default()
    })
    .unwrap();
    let t = sys
        .time(syspb::TimeRequest {})
        .await
        .unwrap()
        .into_inner()
        .time as i128;
    assert!((t - now_ns() - 3_600_000_000_000).abs() < 2_000_000_000);
    d.inject(FaultSpec::device(FaultKind::ClockSkew { ms: -7_200_000 }).once())
        .unwrap();
    let t = sys
        .time(syspb::TimeRequest {})
        .await
        .unwrap()
        .into_inner()
        .time as i128;
    assert!(
        (t - now_ns() + 3_600_000_000_000).abs() < 2_000_000_000,
        "one-shot fault skew applies once"
    );
    let t = sys
        .time(syspb::TimeRequest {})
        .await
        .unwrap()
        .into_inner()
        .time as i128;
    assert!(
        (t - now_ns() - 3_600_000_000_000).abs() < 2_000_000_000,
        "then only the state skew"
    );
}

async fn ping(
    sys: &mut SystemClient<tonic::transport::Channel>,
    r: syspb::PingRequest,
) -> Result<Vec<syspb::PingResponse>, tonic::Status> {
    let mut s = sys.ping(r).await?.into_inner();
    let mut out = vec![];
    while let Some(m) = s.message().await? {
        out.push(m);
    }
    Ok(out)
}

#[tokio::test]
async fn ping_and_traceroute_stream_per_packet_and_summary() {
    let f = fleet("c9300-17.18", 1).await;
    let mut sys = SystemClient::new(channel(&f.nth(0).unwrap()).await);
    let r = ping(
        &mut sys,
        syspb::PingRequest {
            destination: "127.0.0.1".into(),
            count: 3,
            interval: 1_000_000,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(r.len(), 4);
    for (i, p) in r[..3].iter().enumerate() {
        assert_eq!(p.sequence, i as i32 + 1);
        assert_eq!(p.bytes, 64);
        assert!(p.time > 0);
        assert_eq!(p.sent, 0);
    }
    let s = &r[3];
    assert_eq!((s.sent, s.received), (3, 3));
    assert!(s.min_time <= s.avg_time && s.avg_time <= s.max_time);
    let lost = ping(
        &mut sys,
        syspb::PingRequest {
            destination: "203.0.113.7".into(),
            count: 2,
            interval: 1_000_000,
            wait: 1_000_000,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(lost.len(), 1, "only the summary when nothing answers");
    assert_eq!((lost[0].sent, lost[0].received), (2, 0));
    let e = ping(
        &mut sys,
        syspb::PingRequest {
            destination: "nowhere.invalid".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = ping(&mut sys, syspb::PingRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    let mut s = sys
        .traceroute(syspb::TracerouteRequest {
            destination: "core1.example.net".into(),
            max_ttl: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut hops = vec![];
    while let Some(m) = s.message().await.unwrap() {
        hops.push(m);
    }
    let head = &hops[0];
    assert!(head.destination_address.starts_with("198.51.100."));
    let last = hops.last().unwrap();
    assert_eq!(last.address, head.destination_address);
    assert_eq!(last.hop as usize, hops.len() - 1);
}

#[tokio::test]
async fn reboot_delay_status_second_refused_cancel() {
    let f = fleet("c9300-17.18", 1).await;
    let d = f.nth(0).unwrap();
    let mut sys = SystemClient::new(channel(&d).await);
    let cold = syspb::RebootMethod::Cold as i32;
    let e = sys
        .reboot(syspb::RebootRequest {
            method: 0,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = sys
        .reboot(syspb::RebootRequest {
            method: syspb::RebootMethod::Powerdown as i32,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented);
    sys.reboot(syspb::RebootRequest {
        method: cold,
        delay: 60_000_000_000,
        message: "maintenance".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let st = sys
        .reboot_status(syspb::RebootStatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(st.active);
    assert_eq!(st.wait, 60_000_000_000);
    assert_eq!(st.reason, "maintenance");
    assert_eq!(st.method, cold);
    assert!(st.when as i128 > now_ns() + 50_000_000_000);
    let e = sys
        .reboot(syspb::RebootRequest {
            method: cold,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        e.code(),
        Code::FailedPrecondition,
        "second reboot while one is pending"
    );
    sys.cancel_reboot(syspb::CancelRebootRequest {
        message: "not today".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    assert!(
        !sys.reboot_status(syspb::RebootStatusRequest::default())
            .await
            .unwrap()
            .into_inner()
            .active
    );
    let e = sys
        .cancel_reboot(syspb::CancelRebootRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert_eq!(
        d.snapshot().boot_count,
        1,
        "a cancelled reboot never happened"
    );
    let j = d.journal_for("/gnoi.system.System/Reboot");
    assert_eq!(j.len(), 4);
    assert_eq!(j[2].fields["delay_ns"], "60000000000");
    assert_eq!(j[3].code, "FAILED_PRECONDITION");
}

#[tokio::test]
async fn reboot_is_an_outage_then_a_new_boot() {
    let f = fleet("c9300-17.18", 1).await;
    let d = f.nth(0).unwrap();
    let ch = lazy_channel(&d);
    let mut sys = SystemClient::new(ch.clone());
    let before = d.snapshot();
    // An open gNMI stream must break when the device goes down.
    let mut gnmi = cvk_proto::gnmi::g_nmi_client::GNmiClient::new(channel(&d).await);
    let (stx, srx) = tokio::sync::mpsc::channel(1);
    stx.send(subscribe_stream_on_change("/system/state/software-version"))
        .await
        .unwrap();
    let mut sub = gnmi
        .subscribe(tokio_stream::wrappers::ReceiverStream::new(srx))
        .await
        .unwrap()
        .into_inner();
    let _initial = sub.message().await.unwrap();

    let t0 = std::time::Instant::now();
    sys.reboot(syspb::RebootRequest {
        method: 1,
        message: "test".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    assert!(d.wait_power(Power::Down, Duration::from_secs(2)).await);
    assert!(
        refused(d.addr()).await,
        "new connections are refused during the reboot"
    );
    let e = sys.time(syspb::TimeRequest {}).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    let broken = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            match sub.message().await {
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => return true,
            }
        }
    })
    .await;
    assert_eq!(
        broken,
        Ok(true),
        "the open subscription ended with the reboot"
    );
    assert!(d.wait_power(Power::Up, Duration::from_secs(3)).await);
    assert!(
        t0.elapsed() >= Duration::from_millis(REBOOT_MS),
        "outage lasts the reboot time"
    );
    assert!(
        eventually(Duration::from_secs(3), || {
            let mut s = sys.clone();
            async move { s.time(syspb::TimeRequest {}).await.is_ok() }
        })
        .await
    );
    let after = d.snapshot();
    assert!(after.boot_time_ns > before.boot_time_ns);
    assert_eq!(after.boot_count, before.boot_count + 1);
    assert_eq!(
        after.addr_port(),
        before.addr_port(),
        "same address after the reboot"
    );
    assert_ne!(after.processes[0].pid, 0);
    let st = sys
        .reboot_status(syspb::RebootStatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(!st.active);
    assert_eq!(st.count, 1);
    assert_eq!(
        st.status.unwrap().status,
        syspb::reboot_status::Status::Success as i32
    );
}

trait Port {
    fn addr_port(&self) -> Option<String>;
}
impl Port for iosxe_sim::DeviceSnapshot {
    fn addr_port(&self) -> Option<String> {
        self.address.clone()
    }
}

fn subscribe_stream_on_change(path: &str) -> cvk_proto::gnmi::SubscribeRequest {
    use cvk_proto::gnmi as g;
    let elems = path
        .trim_start_matches('/')
        .split('/')
        .map(|n| g::PathElem {
            name: n.into(),
            ..Default::default()
        })
        .collect();
    g::SubscribeRequest {
        request: Some(g::subscribe_request::Request::Subscribe(
            g::SubscriptionList {
                subscription: vec![g::Subscription {
                    path: Some(g::Path {
                        elem: elems,
                        ..Default::default()
                    }),
                    mode: g::SubscriptionMode::OnChange as i32,
                    ..Default::default()
                }],
                mode: g::subscription_list::Mode::Stream as i32,
                encoding: g::Encoding::JsonIetf as i32,
                ..Default::default()
            },
        )),
        ..Default::default()
    }
}

#[tokio::test]
async fn kill_process_with_and_without_restart() {
    let f = fleet("c9300-17.18", 1).await;
    let d = f.nth(0).unwrap();
    let mut sys = SystemClient::new(channel(&d).await);
    let pid_of = |name: &str| {
        d.snapshot()
            .processes
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.pid)
    };
    let old = pid_of("gnmib").unwrap();
    let term = syspb::kill_process_request::Signal::Term as i32;
    sys.kill_process(syspb::KillProcessRequest {
        name: "gnmib".into(),
        signal: term,
        restart: true,
        ..Default::default()
    })
    .await
    .unwrap();
    let new = pid_of("gnmib").unwrap();
    assert_ne!(new, old);
    let nginx = pid_of("nginx").unwrap();
    sys.kill_process(syspb::KillProcessRequest {
        pid: nginx,
        signal: syspb::kill_process_request::Signal::Kill as i32,
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(pid_of("nginx"), None);
    let e = sys
        .kill_process(syspb::KillProcessRequest {
            pid: nginx,
            signal: term,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = sys
        .kill_process(syspb::KillProcessRequest {
            name: "IOSd".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "signal is required");
}

pub async fn put(
    c: &mut FileClient<tonic::transport::Channel>,
    path: &str,
    data: &[u8],
    hash: Option<HashType>,
    chunk: usize,
) -> Result<(), tonic::Status> {
    use filepb::put_request::Request as R;
    let mut msgs = vec![filepb::PutRequest {
        request: Some(R::Open(filepb::put_request::Details {
            remote_file: path.into(),
            permissions: 644,
        })),
    }];
    for c in data.chunks(chunk) {
        msgs.push(filepb::PutRequest {
            request: Some(R::Contents(bytes::Bytes::copy_from_slice(c))),
        });
    }
    if let Some(h) = hash {
        msgs.push(filepb::PutRequest {
            request: Some(R::Hash(h)),
        });
    }
    c.put(tokio_stream::iter(msgs)).await.map(|_| ())
}

fn sha256(data: &[u8]) -> HashType {
    HashType {
        method: 1,
        hash: sha2::Sha256::digest(data).to_vec(),
    }
}

async fn get(
    c: &mut FileClient<tonic::transport::Channel>,
    path: &str,
) -> Result<(Vec<u8>, HashType), tonic::Status> {
    let mut s = c
        .get(filepb::GetRequest {
            remote_file: path.into(),
        })
        .await?
        .into_inner();
    let (mut data, mut hash) = (vec![], None);
    while let Some(m) = s.message().await? {
        match m.response.unwrap() {
            filepb::get_response::Response::Contents(b) => {
                assert!(b.len() <= 64 * 1024);
                data.extend(b)
            }
            filepb::get_response::Response::Hash(h) => hash = Some(h),
        }
    }
    Ok((data, hash.expect("Get ends with a hash")))
}

async fn stat(
    c: &mut FileClient<tonic::transport::Channel>,
    path: &str,
) -> Result<Vec<filepb::StatInfo>, tonic::Status> {
    Ok(c.stat(filepb::StatRequest { path: path.into() })
        .await?
        .into_inner()
        .stats)
}

#[tokio::test]
async fn file_put_get_stat_remove_and_hashes() {
    let f = fleet("c9300-17.18", 1).await;
    let d = f.nth(0).unwrap();
    let mut c = FileClient::new(channel(&d).await);
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 31 % 251) as u8).collect();
    put(
        &mut c,
        "flash:/cfg/startup.bak",
        &data,
        Some(sha256(&data)),
        64 * 1024,
    )
    .await
    .unwrap();
    let s = stat(&mut c, "bootflash:cfg/startup.bak").await.unwrap();
    assert_eq!(s.len(), 1);
    assert_eq!(
        (s[0].path.as_str(), s[0].size, s[0].permissions),
        ("flash:cfg/startup.bak", 200_000, 644)
    );
    assert!(s[0].last_modified > 0);
    let dir = stat(&mut c, "flash:cfg").await.unwrap();
    assert_eq!(dir.len(), 1);
    let root = stat(&mut c, "flash:").await.unwrap();
    assert!(root.iter().any(|e| e.path == "flash:packages.conf"));
    assert!(root.iter().any(|e| e.path == "flash:cfg" && e.size == 0));
    let (back, h) = get(&mut c, "flash:cfg/startup.bak").await.unwrap();
    assert_eq!(back, data);
    assert_eq!(h.method, 3, "the 17.18 profile answers Get with MD5");
    assert_eq!(h.hash, md5::Md5::digest(&data).to_vec());
    // SHA512 and MD5 on Put.
    put(
        &mut c,
        "usbflash0:a.bin",
        b"abc",
        Some(HashType {
            method: 2,
            hash: sha2::Sha512::digest(b"abc").to_vec(),
        }),
        64 * 1024,
    )
    .await
    .unwrap();
    put(
        &mut c,
        "usbflash0:b.bin",
        b"abc",
        Some(HashType {
            method: 3,
            hash: md5::Md5::digest(b"abc").to_vec(),
        }),
        64 * 1024,
    )
    .await
    .unwrap();
    // A Put without a hash, or with a wrong one, leaves no file.
    let e = put(&mut c, "flash:nohash.bin", &data, None, 64 * 1024)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(
        stat(&mut c, "flash:nohash.bin").await.unwrap_err().code(),
        Code::NotFound
    );
    let e = put(
        &mut c,
        "flash:bad.bin",
        &data,
        Some(sha256(b"other")),
        64 * 1024,
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::DataLoss);
    assert_eq!(
        stat(&mut c, "flash:bad.bin").await.unwrap_err().code(),
        Code::NotFound
    );
    let e = put(
        &mut c,
        "flash:unspec.bin",
        b"x",
        Some(HashType {
            method: 0,
            hash: vec![],
        }),
        64 * 1024,
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    // 64 KiB content limit.
    let e = put(&mut c, "flash:big.bin", &data, Some(sha256(&data)), 100_000)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    // Capacity: nvram: is 2 MiB.
    let big = vec![7u8; 3 << 20];
    let e = put(&mut c, "nvram:huge", &big, Some(sha256(&big)), 64 * 1024)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    assert_eq!(
        stat(&mut c, "nvram:huge").await.unwrap_err().code(),
        Code::NotFound
    );
    // Path rules.
    assert_eq!(
        stat(&mut c, "/etc/passwd").await.unwrap_err().code(),
        Code::InvalidArgument
    );
    assert_eq!(
        stat(&mut c, "flash:../x").await.unwrap_err().code(),
        Code::InvalidArgument
    );
    assert_eq!(
        stat(&mut c, "disk7:x").await.unwrap_err().code(),
        Code::InvalidArgument
    );
    let e = put(&mut c, "webui:x.html", b"x", Some(sha256(b"x")), 10)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    // Remove.
    let e = c
        .remove(filepb::RemoveRequest {
            remote_file: "flash:packages.conf".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let e = c
        .remove(filepb::RemoveRequest {
            remote_file: "flash:cfg".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    c.remove(filepb::RemoveRequest {
        remote_file: "flash:cfg/startup.bak".into(),
    })
    .await
    .unwrap();
    assert_eq!(
        stat(&mut c, "flash:cfg/startup.bak")
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    let e = c
        .remove(filepb::RemoveRequest {
            remote_file: "flash:cfg/startup.bak".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert_eq!(
        get(&mut c, "flash:nothing").await.unwrap_err().code(),
        Code::NotFound
    );
    // Big system files are synthetic but readable: a Get of a .pkg streams its size.
    let pkg = root.iter().find(|e| e.path.ends_with(".SPA.pkg")).unwrap();
    assert!(pkg.size > 10_000_000);
    // The journal has the paths.
    let j = d.journal_for("/gnoi.file.File/Put");
    assert_eq!(j[0].fields["path"], "flash:/cfg/startup.bak");
    assert_eq!(j[0].code, "OK");
}

#[tokio::test]
async fn certificates() {
    let f = fleet("c9300-17.18", 1).await;
    let mut c = CertificateManagementClient::new(channel(&f.nth(0).unwrap()).await);
    let certs = c
        .get_certificates(certpb::GetCertificatesRequest {})
        .await
        .unwrap()
        .into_inner()
        .certificate_info;
    assert_eq!(certs.len(), 1);
    assert!(certs[0].certificate_id.starts_with("TP-self-signed-"));
    let pem =
        String::from_utf8(certs[0].certificate.as_ref().unwrap().certificate.clone()).unwrap();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
    let can = |key_size| certpb::CanGenerateCsrRequest {
        key_type: certpb::KeyType::KtRsa as i32,
        certificate_type: certpb::CertificateType::CtX509 as i32,
        key_size,
    };
    assert!(
        c.can_generate_csr(can(2048))
            .await
            .unwrap()
            .into_inner()
            .can_generate
    );
    assert!(
        !c.can_generate_csr(can(1024))
            .await
            .unwrap()
            .into_inner()
            .can_generate
    );
    c.load_certificate(certpb::LoadCertificateRequest {
        certificate_id: "gnxi-cert".into(),
        certificate: Some(certpb::Certificate {
            r#type: 1,
            certificate: pem.clone().into_bytes(),
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    let certs = c
        .get_certificates(certpb::GetCertificatesRequest {})
        .await
        .unwrap()
        .into_inner()
        .certificate_info;
    assert!(certs.iter().any(|c| c.certificate_id == "gnxi-cert"));
    let r = c
        .revoke_certificates(certpb::RevokeCertificatesRequest {
            certificate_id: vec!["gnxi-cert".into(), "nope".into()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.revoked_certificate_id, vec!["gnxi-cert".to_string()]);
    assert_eq!(r.certificate_revocation_error[0].certificate_id, "nope");
    let e = c
        .generate_csr(certpb::GenerateCsrRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented);
}

#[tokio::test]
async fn factory_reset_wipes_and_reboots() {
    let f = fleet("c9300-17.18", 1).await;
    let d = f.nth(0).unwrap();
    let ch = lazy_channel(&d);
    let mut file = FileClient::new(ch.clone());
    put(
        &mut file,
        "flash:user.txt",
        b"hello",
        Some(sha256(b"hello")),
        64,
    )
    .await
    .unwrap();
    let mut fr = FactoryResetClient::new(ch.clone());
    let r = fr
        .start(frpb::StartRequest {
            factory_os: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    match r.response.unwrap() {
        frpb::start_response::Response::ResetError(e) => assert!(e.factory_os_unsupported),
        other => panic!("expected ResetError, got {other:?}"),
    }
    let r = fr
        .start(frpb::StartRequest {
            zero_fill: true,
            retain_certs: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(matches!(
        r.response.unwrap(),
        frpb::start_response::Response::ResetSuccess(_)
    ));
    assert!(d.wait_power(Power::Down, Duration::from_secs(2)).await);
    assert!(d.wait_power(Power::Up, Duration::from_secs(3)).await);
    assert!(
        eventually(Duration::from_secs(3), || {
            let mut f = file.clone();
            async move {
                matches!(stat(&mut f, "flash:user.txt").await, Err(e) if e.code() == Code::NotFound)
            }
        })
        .await
    );
    assert!(
        stat(&mut file, "flash:packages.conf").await.is_ok(),
        "system files survive"
    );
    assert_eq!(
        d.snapshot().certificates.len(),
        1,
        "retain_certs kept the trustpoint"
    );
}

#[tokio::test]
async fn release_17_14_has_no_system_or_file_service() {
    let f = fleet("c9300-17.14", 1).await;
    let d = f.nth(0).unwrap();
    let ch = channel(&d).await;
    let e = SystemClient::new(ch.clone())
        .time(syspb::TimeRequest {})
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented);
    let e = FileClient::new(ch.clone())
        .stat(filepb::StatRequest {
            path: "flash:".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented);
    let v = OsClient::new(ch.clone())
        .verify(cvk_proto::gnoi::os::VerifyRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v.version, "17.14.01.0.1590.1711400034");
    let j = d.journal_for("/gnoi.system.System/Time");
    assert_eq!(j.len(), 1);
    assert_eq!(j[0].code, "UNIMPLEMENTED");
}
