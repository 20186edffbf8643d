//! The capability cache over real gRPC: UNIMPLEMENTED is learned once,
//! later calls fail fast without touching the network, and the entry
//! expires after the TTL.

mod client_common;

use std::time::Duration;

use client_common::*;
use cvk_controller::client::{ClientError, GnoiService, Support};
use prometheus_client::registry::Registry;

#[tokio::test]
async fn unimplemented_is_learned_once_then_fails_fast_until_the_ttl() {
    // The 17.14 profile: System and File are not served.
    let dev = start(Services::IOSXE_17_14, ServerTls::None).await;
    let mut settings = fast_settings();
    settings.capability_ttl = Duration::from_millis(400);
    let p = pool(settings);
    let c = p.get_or_create(&dev.target("sw1")).unwrap();

    let e = c.time().await.unwrap_err();
    assert!(
        matches!(
            e,
            ClientError::ServiceUnsupported {
                service: GnoiService::System,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(dev.device.calls("/gnoi.system.System/Time"), 1);

    // Every System RPC now fails fast; the device sees nothing more.
    for _ in 0..5 {
        let e = c.time().await.unwrap_err();
        assert_eq!(e.category(), "service_unsupported");
        assert!(!e.is_transient());
    }
    assert!(matches!(
        c.reboot_status().await.unwrap_err(),
        ClientError::ServiceUnsupported { .. }
    ));
    assert_eq!(dev.device.calls("/gnoi.system.System/Time"), 1);
    assert_eq!(dev.device.calls("/gnoi.system.System/RebootStatus"), 0);

    // Other services are unaffected and learned as supported.
    c.os_verify().await.unwrap();
    let snap = c.capabilities();
    let get = |s: GnoiService| snap.iter().find(|x| x.service == s).unwrap().clone();
    assert_eq!(get(GnoiService::System).support, Support::Unsupported);
    assert!(get(GnoiService::System).observed_at.is_some());
    assert_eq!(get(GnoiService::Os).support, Support::Supported);
    assert_eq!(get(GnoiService::File).support, Support::Unknown);
    let json = serde_json::to_value(&snap).unwrap();
    assert_eq!(json[0]["service"], "System");
    assert_eq!(json[0]["support"], "Unsupported");

    // The same device key seen through another pool client shares nothing,
    // but through this pool the cache is shared by key.
    assert_eq!(p.capabilities("sw1"), snap);

    // After the TTL the device is asked again.
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(
        c.capabilities()
            .iter()
            .find(|x| x.service == GnoiService::System)
            .unwrap()
            .support,
        Support::Unknown
    );
    assert!(matches!(
        c.time().await.unwrap_err(),
        ClientError::ServiceUnsupported { .. }
    ));
    assert_eq!(dev.device.calls("/gnoi.system.System/Time"), 2);

    // Metrics: one learned_unsupported per learning, fail_fast per refusal.
    let m = p.metrics();
    assert_eq!(
        m.capability_count(GnoiService::System, "learned_unsupported"),
        2
    );
    assert_eq!(m.capability_count(GnoiService::System, "fail_fast"), 6);
    assert_eq!(m.capability_count(GnoiService::System, "expired"), 1);
    assert_eq!(m.capability_count(GnoiService::Os, "learned_supported"), 1);
    assert_eq!(m.rpc_count(GnoiService::System, "service_unsupported"), 8);
    assert_eq!(m.rpc_count(GnoiService::Os, "ok"), 1);

    let mut registry = Registry::default();
    m.register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(
        text.contains(
            r#"cisco_vk_gnoi_rpc_total{service="system",outcome="service_unsupported"} 8"#
        ),
        "{text}"
    );
    assert!(
        text.contains(
            r#"cisco_vk_gnoi_capability_cache_total{service="system",result="fail_fast"} 6"#
        ),
        "{text}"
    );
    assert!(
        text.contains(
            r#"cisco_vk_devicegrpc_lease_events_total{class="ClassControl",event="connect"} 1"#
        ),
        "{text}"
    );
}

#[tokio::test]
async fn an_application_error_proves_the_service_exists() {
    let dev = start(Services::FULL, ServerTls::None).await;
    let p = pool(fast_settings());
    let c = p.get_or_create(&dev.target("sw1")).unwrap();
    let e = c.file_stat("flash:/missing.bin").await.unwrap_err();
    match &e {
        ClientError::Rpc { code, method, .. } => {
            assert_eq!(*code, tonic::Code::NotFound);
            assert_eq!(*method, "Stat");
        }
        other => panic!("expected NotFound, got {other}"),
    }
    assert_eq!(e.category(), "not_found");
    let file = c
        .capabilities()
        .into_iter()
        .find(|s| s.service == GnoiService::File)
        .unwrap();
    assert_eq!(file.support, Support::Supported);
}

#[tokio::test]
async fn an_unimplemented_method_of_a_served_service_marks_it_too() {
    // gNMI is served, but this fake answers Set with UNIMPLEMENTED; the
    // client never calls Set, so check with OS on a device without OS.
    let dev = start(
        Services {
            os: false,
            ..Services::FULL
        },
        ServerTls::None,
    )
    .await;
    let p = pool(fast_settings());
    let c = p.get_or_create(&dev.target("sw1")).unwrap();
    assert!(matches!(
        c.os_activate("17.18.02.0.4112.1766116039", true)
            .await
            .unwrap_err(),
        ClientError::ServiceUnsupported {
            service: GnoiService::Os,
            ..
        }
    ));
    assert!(matches!(
        c.os_verify().await.unwrap_err(),
        ClientError::ServiceUnsupported { .. }
    ));
    assert_eq!(dev.device.calls("/gnoi.os.OS/Activate"), 1);
    assert_eq!(dev.device.calls("/gnoi.os.OS/Verify"), 0);
    // Install fails fast too, before any stream is opened.
    let e = c
        .os_install(
            &cvk_controller::client::os::InstallParams::new("x", 0),
            futures::stream::empty(),
            |_| {},
        )
        .await
        .unwrap_err();
    assert_eq!(e.category(), "service_unsupported");
    assert_eq!(dev.device.calls("/gnoi.os.OS/Install"), 0);
}
