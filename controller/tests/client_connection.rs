//! Device client over real loopback sockets: workload classes, port
//! inference, pool rebuilds, credentials, deadlines, connect backoff, TLS
//! and mTLS.

mod client_common;

use std::time::{Duration, Instant};

use client_common::*;
use cvk_controller::client::file::PUT_CHUNK_BYTES;
use cvk_controller::client::{
    ClientError, Credentials, DeviceTarget, GnoiSettings, TlsMaterial, Transport, WorkloadClass,
};
use tokio::net::TcpListener;

#[tokio::test]
async fn three_classes_use_three_connections() {
    let dev = start(Services::FULL, ServerTls::None).await;
    dev.device
        .with(|s| s.files.insert("flash:/a.txt".into(), b"hello".to_vec()));
    let pool = pool(fast_settings());
    let client = pool.get_or_create(&dev.target("sw1")).unwrap();
    // Lazy: nothing is dialled until the first call.
    assert_eq!(dev.proxy.accepted(), 0);

    for _ in 0..3 {
        client.time().await.unwrap();
    }
    assert_eq!(
        dev.proxy.accepted(),
        1,
        "control calls share one connection"
    );

    let mut sub = client
        .gnmi_subscribe(&cvk_controller::client::gnmi::SubscribeParams {
            paths: vec!["/system/state/hostname".into()],
            mode: cvk_controller::client::gnmi::SubscriptionListMode::Once,
            path_mode: cvk_controller::client::gnmi::SubscriptionMode::TargetDefined,
            sample_interval: None,
            updates_only: false,
        })
        .await
        .unwrap();
    while sub.next().await.unwrap().is_some() {}
    assert_eq!(dev.proxy.accepted(), 2, "telemetry has its own connection");

    let got = client.file_get("flash:/a.txt", 1024).await.unwrap();
    assert_eq!(&got.content[..], b"hello");
    assert_eq!(
        dev.proxy.accepted(),
        3,
        "bulk transfer has its own connection"
    );

    client.os_verify().await.unwrap();
    client.file_stat("flash:/a.txt").await.unwrap();
    client
        .file_put_bytes("flash:/b.txt", 0o644, vec![1u8; 3 * PUT_CHUNK_BYTES].into())
        .await
        .unwrap();
    assert_eq!(
        dev.proxy.accepted(),
        3,
        "later calls reuse the class connections"
    );
    for class in WorkloadClass::ALL {
        let st = client.connection_state(class);
        assert_eq!(st.connects, 1, "{class}");
        assert_eq!(st.connect_failures, 0, "{class}");
    }
}

#[tokio::test]
async fn single_channel_carries_every_class_on_one_connection() {
    let dev = start(Services::FULL, ServerTls::None).await;
    dev.device
        .with(|s| s.files.insert("flash:/a.txt".into(), b"hello".to_vec()));
    let pool = pool(GnoiSettings {
        single_channel: true,
        ..fast_settings()
    });
    let client = pool.get_or_create(&dev.target("sw1")).unwrap();
    assert_eq!(dev.proxy.accepted(), 0, "still lazy");
    client.time().await.unwrap();
    let got = client.file_get("flash:/a.txt", 1024).await.unwrap();
    assert_eq!(&got.content[..], b"hello");
    client
        .file_put_bytes("flash:/b.txt", 0o644, vec![1u8; 3 * PUT_CHUNK_BYTES].into())
        .await
        .unwrap();
    client.time().await.unwrap();
    assert_eq!(
        dev.proxy.accepted(),
        1,
        "control and bulk transfer share the one connection"
    );
    let control = client.connection_state(WorkloadClass::Control);
    assert_eq!((control.connects, control.connect_failures), (1, 0));
}

#[tokio::test]
async fn port_inference_uses_the_pinned_port_and_explicit_port_wins() {
    let dev = start(Services::FULL, ServerTls::None).await;
    // A port with nothing listening: bind, note it, close.
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().port()
    };
    let settings = GnoiSettings::from_lookup(|name| match name {
        "CISCO_VK_GNOI_INSECURE" => Some("1".into()),
        "CISCO_VK_GNOI_PORT" => Some(dev.proxy.addr.port().to_string()),
        _ => None,
    })
    .unwrap();
    let p = pool(GnoiSettings {
        timeouts: fast_settings().timeouts,
        ..settings
    });

    // No explicit port: CISCO_VK_GNOI_PORT, plaintext from the insecure gate.
    let inferred = DeviceTarget::new("inferred", "127.0.0.1");
    let c = p.get_or_create(&inferred).unwrap();
    assert_eq!(c.endpoint().port, dev.proxy.addr.port());
    assert!(!c.endpoint().tls);
    c.time().await.unwrap();

    // The device's explicit port beats the pinned one.
    let explicit = DeviceTarget {
        port: Some(closed),
        ..DeviceTarget::new("explicit", "127.0.0.1")
    };
    let c = p.get_or_create(&explicit).unwrap();
    assert_eq!(c.endpoint().port, closed);
    let e = c.time().await.unwrap_err();
    assert!(matches!(e, ClientError::Unavailable { .. }), "{e}");

    // Without the gates: 9339 and TLS.
    let p = pool(GnoiSettings::default());
    let c = p
        .get_or_create(&DeviceTarget::new("d", "127.0.0.1"))
        .unwrap();
    assert_eq!((c.endpoint().port, c.endpoint().tls), (9339, true));
    let p = pool(GnoiSettings {
        insecure: true,
        ..Default::default()
    });
    let c = p.get_or_create(&DeviceTarget::new("d", "::1")).unwrap();
    assert_eq!((c.endpoint().port, c.endpoint().tls), (50052, false));
    assert_eq!(c.endpoint().to_string(), "http://[::1]:50052");
}

#[tokio::test]
async fn pool_reuses_and_rebuilds_on_parameter_change() {
    let dev = start(Services::FULL, ServerTls::None).await;
    let p = pool(fast_settings());
    let t = dev.target("sw1");
    let a = p.get_or_create(&t).unwrap();
    let b = p.get_or_create(&t).unwrap();
    assert!(std::sync::Arc::ptr_eq(&a, &b));
    a.time().await.unwrap();
    assert_eq!(
        p.capabilities("sw1")[0].support,
        cvk_controller::client::Support::Supported
    );

    let changed = DeviceTarget {
        credentials: Some(Credentials {
            username: "admin".into(),
            password: "new".into(),
        }),
        ..t.clone()
    };
    let c = p.get_or_create(&changed).unwrap();
    assert!(!std::sync::Arc::ptr_eq(&a, &c));
    assert_eq!(p.len(), 1);
    assert!(
        p.capabilities("sw1")
            .iter()
            .all(|s| s.support == cvk_controller::client::Support::Unknown),
        "a rebuilt client starts with no capability knowledge"
    );
    c.time().await.unwrap();
    assert_eq!(dev.proxy.accepted(), 2, "the rebuilt client dials anew");
    assert!(p.remove("sw1"));
    assert!(p.is_empty());
}

#[tokio::test]
async fn credentials_travel_as_metadata_on_every_call() {
    let dev = start(Services::FULL, ServerTls::None).await;
    let p = pool(fast_settings());
    let t = DeviceTarget {
        credentials: Some(Credentials {
            username: "netops".into(),
            password: "s3cret!".into(),
        }),
        ..dev.target("sw1")
    };
    let c = p.get_or_create(&t).unwrap();
    c.time().await.unwrap();
    c.os_verify().await.unwrap();
    c.gnmi_capabilities().await.unwrap();
    let seen = dev.device.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3);
    for s in &seen {
        assert_eq!(s.username.as_deref(), Some("netops"), "{}", s.path);
        assert_eq!(s.password.as_deref(), Some("s3cret!"), "{}", s.path);
        assert!(
            s.grpc_timeout.is_some(),
            "unary calls carry grpc-timeout: {}",
            s.path
        );
    }

    let bad = DeviceTarget {
        credentials: Some(Credentials {
            username: "netops".into(),
            password: "pa\nss".into(),
        }),
        ..dev.target("sw2")
    };
    let e = p.get_or_create(&bad).unwrap_err();
    assert_eq!(e.category(), "invalid_target");
    assert!(e.to_string().contains("password"), "{e}");
}

#[tokio::test]
async fn a_silent_device_hits_the_deadline() {
    let dev = start(Services::FULL, ServerTls::None).await;
    dev.device
        .with(|s| s.time_delay = Some(Duration::from_secs(3600)));
    let mut settings = fast_settings();
    settings.timeouts.control = Duration::from_millis(300);
    let p = pool(settings);
    let c = p.get_or_create(&dev.target("sw1")).unwrap();
    let started = Instant::now();
    let e = c.time().await.unwrap_err();
    let took = started.elapsed();
    match e {
        ClientError::DeadlineExceeded { rpc, after } => {
            assert_eq!(rpc, "gnoi.system.System/Time");
            assert_eq!(after, Duration::from_millis(300));
        }
        other => panic!("expected DeadlineExceeded, got {other}"),
    }
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert_eq!(
        p.metrics().rpc_count(
            cvk_controller::client::GnoiService::System,
            "deadline_exceeded"
        ),
        1
    );
}

#[tokio::test]
async fn connect_failures_back_off() {
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().port()
    };
    let mut settings = fast_settings();
    settings.timeouts.backoff_initial = Duration::from_millis(300);
    settings.timeouts.backoff_max = Duration::from_millis(600);
    let p = pool(settings);
    let t = DeviceTarget {
        port: Some(closed),
        transport: Transport::Insecure,
        ..DeviceTarget::new("down", "127.0.0.1")
    };
    let c = p.get_or_create(&t).unwrap();
    let e = c.time().await.unwrap_err();
    assert!(
        matches!(
            e,
            ClientError::Unavailable {
                retry_after: None,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.is_transient());
    let st = c.connection_state(WorkloadClass::Control);
    assert_eq!((st.connect_failures, st.consecutive_failures), (1, 1));
    assert!(st.backoff_remaining.is_some());
    assert!(st.last_error.unwrap().contains("TCP connect"));

    // Within the window: fail fast, no dial.
    let e = c.time().await.unwrap_err();
    match e {
        ClientError::Unavailable {
            retry_after: Some(left),
            ..
        } => assert!(left <= Duration::from_millis(300)),
        other => panic!("expected a backoff refusal, got {other}"),
    }
    assert_eq!(
        c.connection_state(WorkloadClass::Control).connect_failures,
        1
    );
    // Other classes are independent.
    assert_eq!(
        c.connection_state(WorkloadClass::BulkTransfer)
            .connect_failures,
        0
    );

    // After the window the class dials again; the next window is longer.
    tokio::time::sleep(Duration::from_millis(350)).await;
    let e = c.time().await.unwrap_err();
    assert!(
        matches!(
            e,
            ClientError::Unavailable {
                retry_after: None,
                ..
            }
        ),
        "{e}"
    );
    let st = c.connection_state(WorkloadClass::Control);
    assert_eq!(st.consecutive_failures, 2);
    assert!(st.backoff_remaining.unwrap() > Duration::from_millis(300));
}

#[tokio::test]
async fn reconnects_after_the_device_drops_the_connection() {
    let dev = start(Services::FULL, ServerTls::None).await;
    let p = pool(fast_settings());
    let c = p.get_or_create(&dev.target("sw1")).unwrap();
    c.time().await.unwrap();
    dev.proxy.killer.kill_all();
    // The first call after the drop may see the dead connection; a bounded
    // number of retries must get through on a fresh one.
    let mut ok = false;
    for _ in 0..20 {
        if c.time().await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "no call succeeded after the reconnect");
    assert_eq!(c.connection_state(WorkloadClass::Control).connects, 2);
}

fn tls_target(dev: &Running, tls: TlsMaterial) -> DeviceTarget {
    DeviceTarget {
        port: Some(dev.proxy.addr.port()),
        transport: Transport::Auto,
        tls,
        ..DeviceTarget::new("tls-sw", "127.0.0.1")
    }
}

#[tokio::test]
async fn tls_verifies_the_device_against_the_given_ca() {
    let pki = Pki::generate();
    let dev = start(Services::FULL, ServerTls::Tls(&pki)).await;
    // The insecure gate does not matter: TLS material makes Auto pick TLS.
    let p = pool(fast_settings());
    let t = tls_target(
        &dev,
        TlsMaterial {
            ca_pem: Some(pki.ca_pem.clone()),
            ..Default::default()
        },
    );
    let c = p.get_or_create(&t).unwrap();
    assert!(c.endpoint().tls);
    c.time().await.unwrap();

    // Another CA: the handshake fails with a TLS error.
    let other = Pki::generate();
    let p2 = pool(fast_settings());
    let c = p2
        .get_or_create(&tls_target(
            &dev,
            TlsMaterial {
                ca_pem: Some(other.ca_pem.clone()),
                ..Default::default()
            },
        ))
        .unwrap();
    let e = c.time().await.unwrap_err();
    assert_eq!(e.category(), "tls", "{e}");

    // A name the certificate does not carry: refused.
    let c = pool(fast_settings())
        .get_or_create(&tls_target(
            &dev,
            TlsMaterial {
                ca_pem: Some(pki.ca_pem.clone()),
                server_name: Some("switch.example".into()),
                ..Default::default()
            },
        ))
        .unwrap();
    assert_eq!(c.time().await.unwrap_err().category(), "tls");

    // Lab-only skip-verify connects to a device signed by an unknown CA.
    let c = pool(fast_settings())
        .get_or_create(&tls_target(
            &dev,
            TlsMaterial {
                insecure_skip_verify: true,
                ..Default::default()
            },
        ))
        .unwrap();
    c.time().await.unwrap();

    // Plaintext against the TLS listener fails.
    let c = pool(fast_settings())
        .get_or_create(&dev.target("plain"))
        .unwrap();
    assert!(c.time().await.is_err());
}

#[tokio::test]
async fn mutual_tls_presents_the_client_certificate() {
    let pki = Pki::generate();
    let dev = start(Services::FULL, ServerTls::MutualTls(&pki)).await;
    let c = pool(fast_settings())
        .get_or_create(&tls_target(
            &dev,
            TlsMaterial {
                ca_pem: Some(pki.ca_pem.clone()),
                client_cert_pem: Some(pki.client_cert_pem.clone()),
                client_key_pem: Some(pki.client_key_pem.clone()),
                ..Default::default()
            },
        ))
        .unwrap();
    c.time().await.unwrap();

    // Without a client certificate the device refuses the handshake.
    let c = pool(fast_settings())
        .get_or_create(&tls_target(
            &dev,
            TlsMaterial {
                ca_pem: Some(pki.ca_pem.clone()),
                ..Default::default()
            },
        ))
        .unwrap();
    assert!(c.time().await.is_err());
    assert_eq!(dev.device.calls("/gnoi.system.System/Time"), 1);

    // Half a key pair, or garbage PEM, is refused when the client is built.
    let e = pool(fast_settings())
        .get_or_create(&tls_target(
            &dev,
            TlsMaterial {
                ca_pem: Some(pki.ca_pem.clone()),
                client_cert_pem: Some(pki.client_cert_pem.clone()),
                ..Default::default()
            },
        ))
        .unwrap_err();
    assert!(e.to_string().contains("together"), "{e}");
    let e = pool(fast_settings())
        .get_or_create(&tls_target(
            &dev,
            TlsMaterial {
                ca_pem: Some("not a certificate".into()),
                ..Default::default()
            },
        ))
        .unwrap_err();
    assert_eq!(e.category(), "tls");
    assert!(e.to_string().contains("CA bundle"), "{e}");
}
