//! gNMI Capabilities / Get / Subscribe; TLS, mTLS and credentials.

mod common;

use std::time::Duration;

use common::*;
use cvk_proto::gnmi::{self as g, g_nmi_client::GNmiClient};
use cvk_proto::gnoi::os::{self as ospb, os_client::OsClient};
use iosxe_sim::{Fleet, FleetConfig, Profile, StatePatch, TlsOptions};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

fn path(p: &str) -> g::Path {
    let mut elem = vec![];
    for part in p.trim_start_matches('/').split('/') {
        let (name, key) = match part.split_once('[') {
            Some((n, k)) => {
                let (k, v) = k.trim_end_matches(']').split_once('=').unwrap();
                (n, [(k.to_owned(), v.to_owned())].into())
            }
            None => (part, Default::default()),
        };
        elem.push(g::PathElem {
            name: name.into(),
            key,
        });
    }
    g::Path {
        elem,
        ..Default::default()
    }
}

fn text(p: &g::Path) -> String {
    p.elem.iter().map(|e| format!("/{}", e.name)).collect()
}

fn json(u: &g::Update) -> serde_json::Value {
    match u.val.as_ref().unwrap().value.as_ref().unwrap() {
        g::typed_value::Value::JsonIetfVal(b) | g::typed_value::Value::JsonVal(b) => {
            serde_json::from_slice(b).unwrap()
        }
        other => panic!("not JSON: {other:?}"),
    }
}

async fn get(
    c: &mut GNmiClient<tonic::transport::Channel>,
    p: &str,
    enc: g::Encoding,
) -> Result<Vec<g::Update>, tonic::Status> {
    let r = c
        .get(g::GetRequest {
            path: vec![path(p)],
            encoding: enc as i32,
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok(r.notification.into_iter().flat_map(|n| n.update).collect())
}

#[tokio::test]
async fn capabilities_and_get() {
    let f = fleet("c9300-17.18", 1).await;
    let d = f.nth(0).unwrap();
    let mut c = GNmiClient::new(channel(&d).await);
    let caps = c
        .capabilities(g::CapabilityRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(
        caps.supported_models
            .iter()
            .any(|m| m.name == "openconfig-system")
    );
    assert!(
        caps.supported_models
            .iter()
            .any(|m| m.name == "Cisco-IOS-XE-install-oper")
    );
    assert!(
        caps.supported_encodings
            .contains(&(g::Encoding::JsonIetf as i32))
    );
    assert_eq!(caps.g_nmi_version, "0.4.0");

    let u = get(
        &mut c,
        "/system/state/software-version",
        g::Encoding::JsonIetf,
    )
    .await
    .unwrap();
    assert_eq!(u.len(), 1);
    assert_eq!(json(&u[0]), "17.18.02.0.4112.1766116039");
    let u = get(&mut c, "/system/state/boot-time", g::Encoding::JsonIetf)
        .await
        .unwrap();
    assert_eq!(
        json(&u[0]).as_str().unwrap().parse::<u64>().unwrap(),
        d.snapshot().boot_time_ns,
        "uint64 as a JSON string (RFC 7951)"
    );
    let u = get(&mut c, "/system/install/state", g::Encoding::JsonIetf)
        .await
        .unwrap();
    let by: std::collections::HashMap<String, serde_json::Value> = u
        .iter()
        .map(|u| (text(u.path.as_ref().unwrap()), json(u)))
        .collect();
    assert_eq!(by["/system/install/state/state"], "committed");
    assert_eq!(by["/system/install/state/committed"], true);
    let u = get(
        &mut c,
        "/system/filesystems/filesystem[name=flash:]/state/free",
        g::Encoding::Proto,
    )
    .await
    .unwrap();
    let free = match u[0].val.as_ref().unwrap().value.as_ref().unwrap() {
        g::typed_value::Value::UintVal(n) => *n,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        free,
        d.snapshot()
            .filesystems
            .iter()
            .find(|f| f.name == "flash:")
            .unwrap()
            .free
    );
    let u = get(
        &mut c,
        "/system/cpus/cpu[index=ALL]/state/total/instant",
        g::Encoding::JsonIetf,
    )
    .await
    .unwrap();
    assert!(json(&u[0]).as_u64().unwrap() <= 100);
    let u = get(&mut c, "/system/memory/state", g::Encoding::Json)
        .await
        .unwrap();
    assert_eq!(u.len(), 3);
    assert_eq!(
        get(&mut c, "/system/nothing-here", g::Encoding::JsonIetf)
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    assert_eq!(
        get(&mut c, "/system/state", g::Encoding::Ascii)
            .await
            .unwrap_err()
            .code(),
        Code::Unimplemented
    );
    let e = c.set(g::SetRequest::default()).await.unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented);
}

fn sub_list(
    mode: g::subscription_list::Mode,
    subs: Vec<(&str, g::SubscriptionMode, u64)>,
) -> g::SubscribeRequest {
    g::SubscribeRequest {
        request: Some(g::subscribe_request::Request::Subscribe(
            g::SubscriptionList {
                subscription: subs
                    .into_iter()
                    .map(|(p, m, ns)| g::Subscription {
                        path: Some(path(p)),
                        mode: m as i32,
                        sample_interval: ns,
                        ..Default::default()
                    })
                    .collect(),
                mode: mode as i32,
                encoding: g::Encoding::JsonIetf as i32,
                ..Default::default()
            },
        )),
        ..Default::default()
    }
}

enum Msg {
    Update(Vec<(String, serde_json::Value)>),
    Sync,
}

async fn next(s: &mut tonic::Streaming<g::SubscribeResponse>) -> Option<Msg> {
    let m = tokio::time::timeout(Duration::from_secs(3), s.message())
        .await
        .expect("no message within 3 s")
        .unwrap()?;
    Some(match m.response.unwrap() {
        g::subscribe_response::Response::Update(n) => Msg::Update(
            n.update
                .iter()
                .map(|u| (text(u.path.as_ref().unwrap()), json(u)))
                .collect(),
        ),
        g::subscribe_response::Response::SyncResponse(_) => Msg::Sync,
        #[allow(deprecated)]
        other => panic!("{other:?}"),
    })
}

#[tokio::test]
async fn subscribe_once_poll_sample_on_change() {
    use g::subscription_list::Mode;
    let f = fleet("c9300-17.18", 1).await;
    let d = f.nth(0).unwrap();
    let mut c = GNmiClient::new(channel(&d).await);

    // ONCE: updates, sync, end.
    let mut s = c
        .subscribe(tokio_stream::iter(vec![sub_list(
            Mode::Once,
            vec![("/system/state", g::SubscriptionMode::TargetDefined, 0)],
        )]))
        .await
        .unwrap()
        .into_inner();
    let Some(Msg::Update(u)) = next(&mut s).await else {
        panic!("update first")
    };
    assert!(
        u.iter().any(
            |(p, v)| p == "/system/state/software-version" && v == "17.18.02.0.4112.1766116039"
        )
    );
    assert!(matches!(next(&mut s).await, Some(Msg::Sync)));
    assert!(next(&mut s).await.is_none(), "ONCE ends the stream");

    // POLL: one answer per poll.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(sub_list(
        Mode::Poll,
        vec![(
            "/system/memory/state/physical",
            g::SubscriptionMode::TargetDefined,
            0,
        )],
    ))
    .await
    .unwrap();
    let mut s = c
        .subscribe(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    assert!(matches!(next(&mut s).await, Some(Msg::Update(_))));
    assert!(matches!(next(&mut s).await, Some(Msg::Sync)));
    for _ in 0..2 {
        tx.send(g::SubscribeRequest {
            request: Some(g::subscribe_request::Request::Poll(g::Poll {})),
            ..Default::default()
        })
        .await
        .unwrap();
        let Some(Msg::Update(u)) = next(&mut s).await else {
            panic!("update per poll")
        };
        assert_eq!(u[0].1, "8589934592");
        assert!(matches!(next(&mut s).await, Some(Msg::Sync)));
    }
    drop(tx);

    // STREAM SAMPLE every 50 ms.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(sub_list(
        Mode::Stream,
        vec![("/system/cpus", g::SubscriptionMode::Sample, 50_000_000)],
    ))
    .await
    .unwrap();
    let mut s = c
        .subscribe(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    assert!(matches!(next(&mut s).await, Some(Msg::Update(_))));
    assert!(matches!(next(&mut s).await, Some(Msg::Sync)));
    let t0 = std::time::Instant::now();
    for _ in 0..3 {
        assert!(matches!(next(&mut s).await, Some(Msg::Update(_))));
    }
    assert!(t0.elapsed() >= Duration::from_millis(140) && t0.elapsed() < Duration::from_secs(2));
    drop(s);

    // STREAM ON_CHANGE: only what changed.
    let (tx2, rx) = tokio::sync::mpsc::channel(1);
    tx2.send(sub_list(
        Mode::Stream,
        vec![
            ("/system/install/state", g::SubscriptionMode::OnChange, 0),
            ("/system/state/hostname", g::SubscriptionMode::OnChange, 0),
        ],
    ))
    .await
    .unwrap();
    let mut s = c
        .subscribe(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    assert!(matches!(next(&mut s).await, Some(Msg::Update(_))));
    assert!(matches!(next(&mut s).await, Some(Msg::Sync)));
    d.apply(StatePatch {
        hostname: Some("core-sw-1".into()),
        ..Default::default()
    })
    .unwrap();
    let Some(Msg::Update(u)) = next(&mut s).await else {
        panic!()
    };
    assert_eq!(
        u,
        vec![(
            "/system/state/hostname".to_owned(),
            serde_json::json!("core-sw-1")
        )]
    );
    d.apply(StatePatch {
        committed: Some(false),
        ..Default::default()
    })
    .unwrap();
    let Some(Msg::Update(mut u)) = next(&mut s).await else {
        panic!()
    };
    u.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        u,
        vec![
            (
                "/system/install/state/committed".to_owned(),
                serde_json::json!(false)
            ),
            (
                "/system/install/state/state".to_owned(),
                serde_json::json!("uncommitted")
            ),
        ]
    );
    drop(tx);
    drop(tx2);
}

async fn tls_channel(
    f: &iosxe_sim::FleetHandle,
    with_identity: bool,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    let d = f.nth(0).unwrap();
    let files = f.cert_files().unwrap();
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(f.ca_pem().unwrap()))
        .domain_name("localhost");
    if with_identity {
        let cert = std::fs::read_to_string(&files.client_cert).unwrap();
        let key = std::fs::read_to_string(&files.client_key).unwrap();
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Endpoint::from_shared(d.endpoint())
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await
}

async fn verify(ch: tonic::transport::Channel) -> Result<String, tonic::Status> {
    OsClient::new(ch)
        .verify(ospb::VerifyRequest {})
        .await
        .map(|r| r.into_inner().version)
}

#[tokio::test]
async fn tls_and_mtls() {
    let f = Fleet::start(
        FleetConfig::new(1, Profile::builtin("c9300-26.01").unwrap()).tls(TlsOptions::default()),
    )
    .await
    .unwrap();
    assert!(f.nth(0).unwrap().endpoint().starts_with("https://"));
    assert!(
        std::fs::read_to_string(&f.cert_files().unwrap().ca_cert)
            .unwrap()
            .contains("BEGIN CERTIFICATE")
    );
    assert_eq!(
        verify(tls_channel(&f, false).await.unwrap()).await.unwrap(),
        "26.01.01.0.340"
    );
    // A plaintext client cannot talk to a TLS device.
    let plain = Endpoint::from_shared(f.nth(0).unwrap().endpoint().replace("https", "http"))
        .unwrap()
        .connect_lazy();
    assert!(verify(plain).await.is_err());

    let m = Fleet::start(
        FleetConfig::new(1, Profile::builtin("c9300-26.01").unwrap()).tls(TlsOptions {
            mtls: true,
            cert_dir: None,
        }),
    )
    .await
    .unwrap();
    let no_id = match tls_channel(&m, false).await {
        Ok(ch) => verify(ch).await.is_err(),
        Err(_) => true,
    };
    assert!(no_id, "mTLS refuses a client without a certificate");
    assert_eq!(
        verify(tls_channel(&m, true).await.unwrap()).await.unwrap(),
        "26.01.01.0.340"
    );
}

#[tokio::test]
async fn credentials_per_device() {
    let f = Fleet::start(
        FleetConfig::new(2, Profile::builtin("c9300-17.18").unwrap())
            .credentials("admin", "pw-{n}"),
    )
    .await
    .unwrap();
    let d1 = f.nth(1).unwrap();
    let ch = channel(&d1).await;
    let call = |user: Option<&str>, pass: Option<&str>| {
        let mut r = tonic::Request::new(ospb::VerifyRequest {});
        if let Some(u) = user {
            r.metadata_mut().insert("username", u.parse().unwrap());
        }
        if let Some(p) = pass {
            r.metadata_mut().insert("password", p.parse().unwrap());
        }
        let ch = ch.clone();
        async move { OsClient::new(ch).verify(r).await }
    };
    assert_eq!(
        call(None, None).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    assert_eq!(
        call(Some("admin"), Some("pw-0")).await.unwrap_err().code(),
        Code::Unauthenticated,
        "device 0's password"
    );
    assert!(call(Some("admin"), Some("pw-1")).await.is_ok());
    let j = d1.journal_for("/gnoi.os.OS/Verify");
    assert_eq!(
        j.iter().map(|e| e.code.as_str()).collect::<Vec<_>>(),
        ["UNAUTHENTICATED", "UNAUTHENTICATED", "OK"]
    );
    assert_eq!(f.ready_info().devices[1].password.as_deref(), Some("pw-1"));
}
