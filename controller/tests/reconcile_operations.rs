//! The reconcilers end to end: the real local kube-apiserver, simulated
//! IOS-XE devices over loopback gRPC, and `run_controllers` in-process.
//! Every assertion on the device side reads the simulator's journal.

mod reconcile_common;

use std::time::Duration;

use bytes::Bytes;
use cvk_controller::client::Credentials;
use cvk_controller::client::{ClientMetrics, ClientPool, DeviceTarget, GnoiSettings, Transport};
use cvk_controller::crd::device::{DevicePhase, GnoiService, ServiceState};
use cvk_controller::crd::operation::OperationPhase;
use cvk_controller::crd::{
    CiscoDevice, DeviceOperation, IOSXEOperationalAction, IOSXESoftwareUpgrade,
};
use iosxe_sim::{FleetConfig, Profile, TlsOptions};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use reconcile_common::*;
use serde_json::{Value, json};

fn output_json(op: &DeviceOperation) -> Value {
    let s = op.status.as_ref().expect("status");
    assert_eq!(s.outputs.len(), 1, "{s:#?}");
    assert!(!s.outputs[0].truncated, "{s:#?}");
    serde_json::from_str(s.outputs[0].output.as_deref().expect("output")).expect("JSON output")
}

fn phase(op: &DeviceOperation) -> Option<OperationPhase> {
    op.status.as_ref().and_then(|s| s.phase)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_runs_end_to_end_once() {
    let fx = Fixture::builder("ops-all")
        .fleet("c9300-17.18", 1)
        .controllers(settings)
        .device("sw1", 0)
        .start()
        .await;
    let (client, ns, sim) = (fx.client.clone(), fx.namespace(), fx.sim(0));

    let dev = device_ready(&client, ns.name(), "sw1").await;
    let st = dev.status.unwrap();
    let snap = sim.snapshot();
    assert_eq!(
        st.running_version.as_deref(),
        Some(snap.running_version.as_str())
    );
    assert_eq!(st.reachable, Some(true));
    assert!(st.last_seen.is_some());
    let gnmi = st.gnmi.expect("gNMI capabilities");
    assert_eq!(gnmi.version.as_deref(), Some("0.4.0"));
    assert!(gnmi.model_count.unwrap() > 0);
    for svc in [GnoiService::System, GnoiService::Os] {
        let e = st.gnoi_services.iter().find(|s| s.name == svc).unwrap();
        assert_eq!(e.state, ServiceState::Supported, "{svc}");
        assert!(e.observed_at.is_some());
    }
    // The probe sent credentials and ran on the device.
    let probes = sim.journal_for("/gnoi.system.System/Time");
    assert_eq!(probes.len(), 1, "{probes:#?}");
    assert_eq!(probes[0].code, "OK");
    sim.clear_journal();

    let ops = [
        (
            "ping",
            "GNOIPing",
            json!({"ping": {"destination": "192.0.2.1", "count": 3, "intervalMillis": 1}}),
            "/gnoi.system.System/Ping",
        ),
        (
            "trace",
            "GNOITraceroute",
            json!({"traceroute": {"destination": "192.0.2.7", "maxHops": 20, "protocol": "UDP"}}),
            "/gnoi.system.System/Traceroute",
        ),
        ("time", "GNOITime", Value::Null, "/gnoi.system.System/Time"),
        (
            "fileget",
            "GNOIFileGet",
            json!({"file": {"path": "nvram:startup-config"}}),
            "/gnoi.file.File/Get",
        ),
        (
            "filestat",
            "GNOIFileStat",
            json!({"file": {"path": "nvram:startup-config"}}),
            "/gnoi.file.File/Stat",
        ),
        (
            "certget",
            "GNOICertGet",
            Value::Null,
            "/gnoi.certificate.CertificateManagement/GetCertificates",
        ),
        (
            "csr",
            "GNOICanGenerateCSR",
            json!({"cert": {"keyType": "RT_RSA", "keySize": 4096}}),
            "/gnoi.certificate.CertificateManagement/CanGenerateCSR",
        ),
        (
            "rebootstatus",
            "GNOIRebootStatus",
            Value::Null,
            "/gnoi.system.System/RebootStatus",
        ),
        ("verify", "GNOIOSVerify", Value::Null, "/gnoi.os.OS/Verify"),
    ];
    for (name, kind, gnoi, _) in &ops {
        operation(&client, ns.name(), name, "sw1", kind, gnoi.clone()).await;
    }
    let mut done = std::collections::HashMap::new();
    for (name, kind, _, _) in &ops {
        let op = finished(&client, ns.name(), name).await;
        assert_eq!(
            phase(&op),
            Some(OperationPhase::Succeeded),
            "{kind}: {:#?}",
            op.status
        );
        let s = op.status.as_ref().unwrap();
        assert_eq!(s.outputs[0].command, *kind);
        assert_eq!(ready_reason(&s.conditions), "Succeeded");
        assert!(s.start_time.is_some() && s.completion_time.is_some());
        assert!(s.artifact_uris.is_empty());
        done.insert(*name, op);
    }

    let ping = output_json(&done["ping"]);
    assert_eq!(ping["replies"].as_array().unwrap().len(), 3);
    assert_eq!(ping["summary"]["received"], 3);
    assert_eq!(
        done["ping"].status.as_ref().unwrap().message.as_deref(),
        Some("3 ping replies received")
    );

    let trace = output_json(&done["trace"]);
    let hops = trace["hops"].as_array().unwrap();
    assert!(!hops.is_empty());
    assert_eq!(hops.last().unwrap()["address"], "192.0.2.7");

    let time = output_json(&done["time"]);
    let device_ns = time["unixNanos"].as_u64().unwrap() as i128;
    let now = jiff::Timestamp::now().as_nanosecond();
    assert!(
        (now - device_ns).abs() < 60_000_000_000,
        "device clock far off: {time}"
    );
    assert!(time["time"].as_str().unwrap().ends_with('Z'));

    let file = output_json(&done["fileget"]);
    let expected = format!("hostname {}\n!\ngnxi\ngnxi server\n!\nend\n", snap.hostname);
    assert_eq!(file["content"], expected.as_str());
    assert_eq!(file["encoding"], "utf-8");
    assert_eq!(file["bytesRead"], expected.len());
    assert_eq!(file["truncated"], false);

    let stat = output_json(&done["filestat"]);
    assert_eq!(stat[0]["size"], expected.len());

    let certs = output_json(&done["certget"]);
    assert_eq!(certs.as_array().unwrap().len(), snap.certificates.len());

    assert_eq!(output_json(&done["csr"])["canGenerate"], true);
    assert_eq!(output_json(&done["rebootstatus"])["active"], false);
    assert_eq!(
        done["rebootstatus"]
            .status
            .as_ref()
            .unwrap()
            .message
            .as_deref(),
        Some("reboot inactive")
    );
    assert_eq!(
        output_json(&done["verify"])["version"],
        snap.running_version.as_str()
    );

    // Each operation reached the device exactly once, with credentials, and
    // stays done: resyncs (forced by a label change) never re-run it.
    let ops_api: Api<DeviceOperation> = Api::namespaced(client.clone(), ns.name());
    for (name, _, _, _) in &ops {
        ops_api
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {"resync": "1"}}})),
            )
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (name, _, _, method) in &ops {
        let calls = sim.journal_for(method);
        assert_eq!(calls.len(), 1, "{name}: {calls:#?}");
        assert_eq!(calls[0].code, "OK", "{name}");
        let again = ops_api.get(name).await.unwrap();
        assert_eq!(again.status, done[name].status, "{name} was rewritten");
    }

    // Events: Running then Succeeded, once each.
    let events = events_until(&client, ns.name(), "verify", |evs| {
        ["Running", "Succeeded"]
            .iter()
            .all(|r| evs.iter().any(|e| e.reason.as_deref() == Some(r)))
    })
    .await;
    let reasons: Vec<_> = events.iter().filter_map(|e| e.reason.clone()).collect();
    assert_eq!(
        reasons.iter().filter(|r| *r == "Running").count(),
        1,
        "{reasons:?}"
    );
    assert_eq!(
        reasons.iter().filter(|r| *r == "Succeeded").count(),
        1,
        "{reasons:?}"
    );

    fx.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ios_xe_17_14_learns_unimplemented_once_then_fails_fast() {
    let fx = Fixture::builder("ops-1714")
        .fleet("c9300-17.14", 1)
        .controllers(settings)
        .device("old", 0)
        .start()
        .await;
    let (client, ns, sim) = (fx.client.clone(), fx.namespace(), fx.sim(0));

    let dev = device_ready(&client, ns.name(), "old").await;
    let st = dev.status.unwrap();
    // The probe's System.Time taught the controller that System is missing.
    let sys = st
        .gnoi_services
        .iter()
        .find(|s| s.name == GnoiService::System)
        .unwrap();
    assert_eq!(sys.state, ServiceState::Unsupported);
    assert!(sys.observed_at.is_some());
    let os = st
        .gnoi_services
        .iter()
        .find(|s| s.name == GnoiService::Os)
        .unwrap();
    assert_eq!(os.state, ServiceState::Supported);
    assert!(st.message.unwrap().contains("System unsupported"));
    assert_eq!(calls(&sim, "/gnoi.system.System/").len(), 1);

    // System kinds fail fast: no further System call reaches the device.
    for (name, kind, gnoi) in [
        ("time", "GNOITime", Value::Null),
        (
            "ping",
            "GNOIPing",
            json!({"ping": {"destination": "192.0.2.1", "count": 1}}),
        ),
        ("rs", "GNOIRebootStatus", Value::Null),
    ] {
        operation(&client, ns.name(), name, "old", kind, gnoi).await;
        let op = finished(&client, ns.name(), name).await;
        assert_eq!(phase(&op), Some(OperationPhase::Failed), "{kind}");
        let s = op.status.unwrap();
        assert_eq!(
            ready_reason(&s.conditions),
            "SystemServiceUnsupported",
            "{kind}"
        );
        assert!(s.message.unwrap().contains("gnoi.system.System"), "{kind}");
    }
    let system_calls = calls(&sim, "/gnoi.system.System/");
    assert_eq!(system_calls.len(), 1, "{system_calls:#?}");
    assert_eq!(system_calls[0].code, "UNIMPLEMENTED");

    // File is learned by the first File operation, then fails fast.
    for name in ["get1", "stat2", "get3"] {
        let kind = if name.starts_with("get") {
            "GNOIFileGet"
        } else {
            "GNOIFileStat"
        };
        operation(
            &client,
            ns.name(),
            name,
            "old",
            kind,
            json!({"file": {"path": "flash:vlan.dat"}}),
        )
        .await;
        let op = finished(&client, ns.name(), name).await;
        assert_eq!(phase(&op), Some(OperationPhase::Failed), "{name}");
        assert_eq!(
            ready_reason(&op.status.unwrap().conditions),
            "FileServiceUnsupported"
        );
    }
    let file_calls = calls(&sim, "/gnoi.file.File/");
    assert_eq!(file_calls.len(), 1, "{file_calls:#?}");
    assert_eq!(file_calls[0].code, "UNIMPLEMENTED");

    // What 17.14 does serve still works.
    operation(
        &client,
        ns.name(),
        "verify",
        "old",
        "GNOIOSVerify",
        Value::Null,
    )
    .await;
    let op = finished(&client, ns.name(), "verify").await;
    assert_eq!(phase(&op), Some(OperationPhase::Succeeded));
    assert_eq!(
        output_json(&op)["version"],
        sim.snapshot().running_version.as_str()
    );

    // The Warning Event names the service.
    let events = events_with(&client, ns.name(), "time", "SystemServiceUnsupported").await;
    assert!(
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("SystemServiceUnsupported")
                && e.type_.as_deref() == Some("Warning")),
        "{events:#?}"
    );

    fx.finish().await;
}

async fn put_file(port: u16, path: &str, content: Bytes) {
    let pool = ClientPool::new(
        GnoiSettings {
            insecure: true,
            ..GnoiSettings::default()
        },
        ClientMetrics::default(),
    );
    let mut target = DeviceTarget::new("fixture", "127.0.0.1");
    target.port = Some(port);
    target.transport = Transport::Insecure;
    target.credentials = Some(Credentials {
        username: USER.into(),
        password: PASSWORD.into(),
    });
    pool.get_or_create(&target)
        .unwrap()
        .file_put_bytes(path, 0o644, content)
        .await
        .expect("File.Put of the fixture");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_file_get_spills_to_an_owned_config_map() {
    let fx = Fixture::builder("ops-spill")
        .fleet("c9300-17.18", 1)
        .controllers(settings)
        .start()
        .await;
    let (client, ns, sim) = (fx.client.clone(), fx.namespace(), fx.sim(0));
    let port = sim.addr().port();
    // 200 KiB of text: far over the 64 KiB inline limit.
    let text: String = (0..4000)
        .map(|i| format!("line {i:05} {}\n", "x".repeat(40)))
        .collect();
    assert!(text.len() > 200_000);
    put_file(port, "flash:/cvk/big.log", Bytes::from(text.clone())).await;

    device(&client, ns.name(), "sw", port).await;
    operation(
        &client,
        ns.name(),
        "big",
        "sw",
        "GNOIFileGet",
        json!({"file": {"path": "flash:/cvk/big.log", "maxBytes": 262144}}),
    )
    .await;
    let op = finished(&client, ns.name(), "big").await;
    assert_eq!(
        phase(&op),
        Some(OperationPhase::Succeeded),
        "{:#?}",
        op.status
    );
    let s = op.status.clone().unwrap();
    let uri = format!("configmap://{}/big-output/output", ns.name());
    assert_eq!(s.artifact_uris, vec![uri]);
    let out = &s.outputs[0];
    assert!(out.truncated);
    let preview = out.output.as_deref().unwrap();
    assert!(
        preview.ends_with("<truncated; see artifactURIs>"),
        "{preview}"
    );
    assert!(preview.len() < 4096, "preview of {} bytes", preview.len());

    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns.name());
    let cm = cms.get("big-output").await.unwrap();
    let owner = &cm.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(owner.kind, "DeviceOperation");
    assert_eq!(owner.name, "big");
    assert_eq!(Some(&owner.uid), op.metadata.uid.as_ref());
    assert_eq!(owner.controller, Some(true));
    let full: Value = serde_json::from_str(&cm.data.unwrap()["output"]).unwrap();
    assert_eq!(
        full["content"],
        text.as_str(),
        "the spill holds the whole file"
    );
    assert_eq!(full["bytesRead"], text.len());
    assert_eq!(full["truncated"], false);

    // A ConfigMap of that name that belongs to someone else is never
    // overwritten: the operation fails instead.
    let foreign: ConfigMap = serde_json::from_value(json!({
        "metadata": { "name": "taken-output" }, "data": { "output": "mine" }
    }))
    .unwrap();
    cms.create(&PostParams::default(), &foreign).await.unwrap();
    operation(
        &client,
        ns.name(),
        "taken",
        "sw",
        "GNOIFileGet",
        json!({"file": {"path": "flash:/cvk/big.log", "maxBytes": 262144}}),
    )
    .await;
    let op = finished(&client, ns.name(), "taken").await;
    assert_eq!(phase(&op), Some(OperationPhase::Failed));
    assert_eq!(
        ready_reason(&op.status.unwrap().conditions),
        "ArtifactWriteFailed"
    );
    assert_eq!(
        cms.get("taken-output").await.unwrap().data.unwrap()["output"],
        "mine"
    );

    fx.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_get_output_is_redacted() {
    let fx = Fixture::builder("ops-redact")
        .fleet("c9300-17.18", 1)
        .controllers(settings)
        .start()
        .await;
    let (client, ns, sim) = (fx.client.clone(), fx.namespace(), fx.sim(0));
    let port = sim.addr().port();
    let config = "hostname sw\nenable secret 9 $9$hashhash\nusername cvk privilege 15 password 0 topsecret\nsnmp-server community public-ro RO\nend\n";
    put_file(port, "flash:/cvk/running.cfg", Bytes::from(config)).await;
    device(&client, ns.name(), "sw", port).await;
    operation(
        &client,
        ns.name(),
        "cfg",
        "sw",
        "GNOIFileGet",
        json!({"file": {"path": "flash:/cvk/running.cfg"}}),
    )
    .await;
    let op = finished(&client, ns.name(), "cfg").await;
    assert_eq!(
        phase(&op),
        Some(OperationPhase::Succeeded),
        "{:#?}",
        op.status
    );
    let s = op.status.clone().unwrap();
    assert!(s.outputs[0].redacted);
    assert!(s.message.unwrap().contains("secrets redacted"));
    let out = output_json(&op);
    assert_eq!(out["redacted"], true);
    assert_eq!(
        out["content"],
        "hostname sw\nenable secret 9 <redacted>\nusername cvk privilege 15 password 0 <redacted>\nsnmp-server community <redacted> RO\nend\n"
    );
    let raw = serde_json::to_string(&s.outputs).unwrap();
    for secret in ["hashhash", "topsecret", "public-ro"] {
        assert!(!raw.contains(secret), "{secret} leaked: {raw}");
    }
    fx.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_operations_expire_after_their_ttl() {
    let fx = Fixture::builder("ops-ttl")
        .fleet("c9300-17.18", 1)
        .controllers(settings)
        .device("sw", 0)
        .start()
        .await;
    let (client, ns, sim) = (fx.client.clone(), fx.namespace(), fx.sim(0));

    let _: DeviceOperation = create(
        &client,
        ns.name(),
        json!({
            "apiVersion": "ops.cisco.vk/v1alpha1", "kind": "DeviceOperation",
            "metadata": { "name": "short" },
            "spec": { "deviceRef": { "name": "sw" }, "operation": { "kind": "GNOIOSVerify" },
                      "ttlSecondsAfterFinished": 2 },
        }),
    )
    .await;
    let _: DeviceOperation = create(
        &client,
        ns.name(),
        json!({
            "apiVersion": "ops.cisco.vk/v1alpha1", "kind": "DeviceOperation",
            "metadata": { "name": "kept" },
            "spec": { "deviceRef": { "name": "sw" }, "operation": { "kind": "GNOIOSVerify" } },
        }),
    )
    .await;
    let short = finished(&client, ns.name(), "short").await;
    assert_eq!(phase(&short), Some(OperationPhase::Succeeded));
    let api: Api<DeviceOperation> = Api::namespaced(client.clone(), ns.name());
    assert!(
        api.get_opt("short").await.unwrap().is_some(),
        "deleted before its TTL"
    );
    wait_gone(&api, "short", Duration::from_secs(20)).await;
    let events = events_with(&client, ns.name(), "short", "Expired").await;
    assert!(
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("Expired")),
        "{events:#?}"
    );
    // Without a TTL it stays, and ran once.
    finished(&client, ns.name(), "kept").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(api.get_opt("kept").await.unwrap().is_some());
    assert_eq!(
        sim.journal_for("/gnoi.os.OS/Verify").len(),
        3,
        "probe + two operations"
    );

    fx.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gated_kinds_never_reach_the_device_and_say_so_once() {
    let fx = Fixture::builder("gates")
        .fleet("c9300-17.18", 1)
        .controllers(settings)
        .device("cat9000-5", 0)
        .start()
        .await;
    let (client, ns, sim) = (fx.client.clone(), fx.namespace(), fx.sim(0));
    device_ready(&client, ns.name(), "cat9000-5").await;
    sim.clear_journal();

    let _: IOSXEOperationalAction = create(&client, ns.name(), json!({
        "apiVersion": "ops.cisco.vk/v1alpha1", "kind": "IOSXEOperationalAction",
        "metadata": { "name": "reload" },
        "spec": { "deviceRef": { "name": "cat9000-5" }, "confirm": "cat9000-5",
                  "action": { "kind": "Reboot", "reboot": { "message": "maintenance", "delay": 0 } } },
    })).await;
    let _: IOSXESoftwareUpgrade = create(
        &client,
        ns.name(),
        json!({
            "apiVersion": "ops.cisco.vk/v1alpha1", "kind": "IOSXESoftwareUpgrade",
            "metadata": { "name": "upgrade" },
            "spec": { "deviceRef": { "name": "cat9000-5" },
                      "imageSource": { "localPath": "flash:cat9k_iosxe.17.18.02.SPA.bin" },
                      "targetVersion": "17.18.02" },
        }),
    )
    .await;

    let actions: Api<IOSXEOperationalAction> = Api::namespaced(client.clone(), ns.name());
    let upgrades: Api<IOSXESoftwareUpgrade> = Api::namespaced(client.clone(), ns.name());
    let t = Duration::from_secs(30);
    let a = wait_for(&actions, "reload", t, |o| {
        o.status.as_ref().and_then(|s| s.reason.as_deref()) == Some("WriteClassGateDisabled")
    })
    .await;
    let u = wait_for(&upgrades, "upgrade", t, |o| {
        o.status.as_ref().and_then(|s| s.reason.as_deref()) == Some("SoftwareUpgradeGateDisabled")
    })
    .await;
    let am = a.status.as_ref().unwrap().message.clone().unwrap();
    assert!(
        am.contains("--enable-write-class-gnoi") && am.contains("CISCO_VK_ENABLE_WRITE_CLASS_GNOI"),
        "{am}"
    );
    assert_eq!(
        format!("{:?}", a.status.as_ref().unwrap().phase),
        "Some(Pending)"
    );
    assert_eq!(
        ready_reason(&a.status.as_ref().unwrap().conditions),
        "WriteClassGateDisabled"
    );
    let um = u.status.as_ref().unwrap().message.clone().unwrap();
    assert!(
        um.contains("--enable-iosxesoftwareupgrade")
            && um.contains("CISCO_VK_ENABLE_IOSXE_SOFTWARE_UPGRADE"),
        "{um}"
    );
    assert_eq!(
        ready_reason(&u.status.as_ref().unwrap().conditions),
        "SoftwareUpgradeGateDisabled"
    );

    // Force resyncs; the report is written once and nothing reaches the device.
    for _ in 0..3 {
        actions.patch("reload", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"annotations": {"poke": jiff::Timestamp::now().to_string()}}}))).await.unwrap();
        upgrades.patch("upgrade", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"annotations": {"poke": jiff::Timestamp::now().to_string()}}}))).await.unwrap();
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    assert_eq!(
        actions.get("reload").await.unwrap().status,
        a.status,
        "status rewritten"
    );
    assert_eq!(
        upgrades.get("upgrade").await.unwrap().status,
        u.status,
        "status rewritten"
    );
    for name in ["reload", "upgrade"] {
        let gate_events: Vec<_> = events_until(&client, ns.name(), name, |evs| {
            evs.iter().any(|e| {
                e.reason
                    .as_deref()
                    .is_some_and(|r| r.ends_with("GateDisabled"))
            })
        })
        .await
        .into_iter()
        .filter(|e| {
            e.reason
                .as_deref()
                .is_some_and(|r| r.ends_with("GateDisabled"))
        })
        .collect();
        assert_eq!(gate_events.len(), 1, "{name}: {gate_events:#?}");
        assert_eq!(gate_events[0].type_.as_deref(), Some("Warning"));
    }
    let journal = sim.journal();
    assert!(journal.is_empty(), "the device saw: {journal:#?}");

    fx.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gnoi_disabled_builds_no_client() {
    let fx = Fixture::builder("disabled")
        .fleet("c9300-17.18", 1)
        .controllers(|ns| {
            let mut s = settings(ns);
            s.gnoi.disabled = true;
            s
        })
        .device("sw", 0)
        .start()
        .await;
    let (client, ns, sim) = (fx.client.clone(), fx.namespace(), fx.sim(0));
    operation(&client, ns.name(), "t", "sw", "GNOITime", Value::Null).await;
    let op = finished(&client, ns.name(), "t").await;
    assert_eq!(phase(&op), Some(OperationPhase::Failed));
    let st = op.status.unwrap();
    assert_eq!(ready_reason(&st.conditions), "GNOIDisabled");
    assert!(st.message.unwrap().contains("CISCO_VK_GNOI_DISABLED"));
    let devices: Api<CiscoDevice> = Api::namespaced(client.clone(), ns.name());
    let d = wait_for(&devices, "sw", Duration::from_secs(20), |d| {
        d.status.is_some()
    })
    .await;
    let ds = d.status.unwrap();
    assert_eq!(ds.phase, Some(DevicePhase::Pending));
    assert_eq!(ready_reason(&ds.conditions), "GNOIDisabled");
    assert!(sim.journal().is_empty());
    fx.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_device_scope_leaves_other_devices_alone() {
    let fx = Fixture::builder("scope")
        .fleet("c9300-26.01", 2)
        .controllers(|ns| {
            let mut s = settings(ns);
            s.scope.device = Some("a".into());
            s
        })
        .device("a", 0)
        .device("b", 1)
        .start()
        .await;
    let (client, ns) = (fx.client.clone(), fx.namespace());
    let (a, b) = (fx.sim(0), fx.sim(1));
    operation(&client, ns.name(), "on-a", "a", "GNOIOSVerify", Value::Null).await;
    operation(&client, ns.name(), "on-b", "b", "GNOIOSVerify", Value::Null).await;
    let op = finished(&client, ns.name(), "on-a").await;
    assert_eq!(phase(&op), Some(OperationPhase::Succeeded));
    assert_eq!(
        output_json(&op)["version"],
        a.snapshot().running_version.as_str()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ops: Api<DeviceOperation> = Api::namespaced(client.clone(), ns.name());
    assert_eq!(ops.get("on-b").await.unwrap().status, None);
    let devices: Api<CiscoDevice> = Api::namespaced(client.clone(), ns.name());
    assert_eq!(devices.get("b").await.unwrap().status, None);
    assert!(b.journal().is_empty(), "{:#?}", b.journal());
    fx.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_from_secrets() {
    let cfg = FleetConfig::new(1, Profile::builtin("c9300-17.18").unwrap())
        .credentials(USER, PASSWORD)
        .tls(TlsOptions {
            mtls: true,
            cert_dir: None,
        });
    let mut fx = Fixture::builder("mtls").fleet_config(cfg).start().await;
    let (client, sim) = (fx.client.clone(), fx.sim(0));
    let ns = fx.namespace().name().to_owned();
    let files = fx.fleet().cert_files().unwrap().clone();
    let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap();
    credentials_secret(&client, &ns, "tls-sw").await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let tls: Secret = serde_json::from_value(json!({
        "metadata": { "name": "tls-sw-gnoi" },
        "stringData": { "ca.crt": read(&files.ca_cert), "tls.crt": read(&files.client_cert), "tls.key": read(&files.client_key) },
    })).unwrap();
    secrets.create(&PostParams::default(), &tls).await.unwrap();
    let mut s = settings(&ns);
    s.gnoi.insecure = false;
    fx.start_controllers(s);
    let _: CiscoDevice = create(&client, &ns, json!({
        "apiVersion": "cisco.vk/v1alpha1", "kind": "CiscoDevice",
        "metadata": { "name": "tls-sw" },
        "spec": { "driver": "XE", "address": "127.0.0.1",
                  "credentialSecretRef": { "name": "tls-sw-credentials" },
                  "gnoi": { "port": sim.addr().port(), "transportSecurity": "tls",
                            "tls": { "secretRef": { "name": "tls-sw-gnoi" }, "serverName": "localhost" } } },
    })).await;
    let dev = device_ready(&client, &ns, "tls-sw").await;
    assert_eq!(
        dev.status.unwrap().running_version.as_deref(),
        Some(sim.snapshot().running_version.as_str())
    );

    // Without the client certificate the device refuses the handshake.
    let ca_only: Secret = serde_json::from_value(json!({
        "metadata": { "name": "ca-only" }, "stringData": { "ca.crt": read(&files.ca_cert) },
    }))
    .unwrap();
    secrets
        .create(&PostParams::default(), &ca_only)
        .await
        .unwrap();
    credentials_secret(&client, &ns, "no-cert").await;
    let _: CiscoDevice = create(&client, &ns, json!({
        "apiVersion": "cisco.vk/v1alpha1", "kind": "CiscoDevice",
        "metadata": { "name": "no-cert" },
        "spec": { "driver": "XE", "address": "127.0.0.1",
                  "credentialSecretRef": { "name": "no-cert-credentials" },
                  "gnoi": { "port": sim.addr().port(), "transportSecurity": "tls",
                            "tls": { "secretRef": { "name": "ca-only" }, "serverName": "localhost" } } },
    })).await;
    let devices: Api<CiscoDevice> = Api::namespaced(client.clone(), &ns);
    let d = wait_for(&devices, "no-cert", Duration::from_secs(30), |d| {
        d.status
            .as_ref()
            .and_then(|s| s.phase)
            .is_some_and(|p| p != DevicePhase::Pending)
    })
    .await;
    assert_ne!(d.status.unwrap().phase, Some(DevicePhase::Ready));

    // A missing Secret is a configuration error that names it.
    let _: CiscoDevice = create(
        &client,
        &ns,
        json!({
            "apiVersion": "cisco.vk/v1alpha1", "kind": "CiscoDevice",
            "metadata": { "name": "no-secret" },
            "spec": { "driver": "XE", "address": "127.0.0.1",
                      "credentialSecretRef": { "name": "nowhere" },
                      "gnoi": { "port": sim.addr().port(), "transportSecurity": "tls",
                                "tls": { "secretRef": { "name": "tls-sw-gnoi" } } } },
        }),
    )
    .await;
    let d = wait_for(&devices, "no-secret", Duration::from_secs(30), |d| {
        d.status.is_some()
    })
    .await;
    let st = d.status.unwrap();
    assert_eq!(st.phase, Some(DevicePhase::Error));
    assert_eq!(ready_reason(&st.conditions), "SecretNotFound");
    assert!(st.message.unwrap().contains("\"nowhere\""));
    fx.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_wait_for_their_device_and_unreachable_devices_say_so() {
    let fx = Fixture::builder("ops-wait")
        .fleet("c9300-26.01", 1)
        .controllers(settings)
        .start()
        .await;
    let (client, ns, sim) = (fx.client.clone(), fx.namespace(), fx.sim(0));

    // No device yet: the operation waits, Pending, and says why once.
    operation(
        &client,
        ns.name(),
        "early",
        "late",
        "GNOIOSVerify",
        Value::Null,
    )
    .await;
    let ops: Api<DeviceOperation> = Api::namespaced(client.clone(), ns.name());
    let op = wait_for(&ops, "early", Duration::from_secs(20), |o| {
        o.status.as_ref().and_then(|s| s.phase) == Some(OperationPhase::Pending)
    })
    .await;
    let s = op.status.unwrap();
    assert_eq!(ready_reason(&s.conditions), "NoTransport");
    assert!(s.message.unwrap().contains("\"late\" does not exist"));
    let created = std::time::Instant::now();
    device(&client, ns.name(), "late", sim.addr().port()).await;
    let op = finished(&client, ns.name(), "early").await;
    assert_eq!(
        phase(&op),
        Some(OperationPhase::Succeeded),
        "{:#?}",
        op.status
    );
    // Woken by the device's creation, not by the 10 s retry.
    assert!(
        created.elapsed() < Duration::from_secs(8),
        "took {:?}",
        created.elapsed()
    );
    let waits = events_with(&client, ns.name(), "early", "NoTransport")
        .await
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("NoTransport"))
        .count();
    assert_eq!(waits, 1, "the wait is announced once");

    // Nothing listens on this port: the device is Unreachable and an
    // operation on it fails with the reason.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    device(&client, ns.name(), "gone", closed).await;
    let devices: Api<CiscoDevice> = Api::namespaced(client.clone(), ns.name());
    let d = wait_for(&devices, "gone", Duration::from_secs(30), |d| {
        d.status.is_some()
    })
    .await;
    let st = d.status.unwrap();
    assert_eq!(st.phase, Some(DevicePhase::Unreachable), "{st:#?}");
    assert_eq!(st.reachable, Some(false));
    assert_eq!(st.last_seen, None);
    assert_eq!(ready_reason(&st.conditions), "Unavailable");
    operation(
        &client,
        ns.name(),
        "doomed",
        "gone",
        "GNOITime",
        Value::Null,
    )
    .await;
    let op = finished(&client, ns.name(), "doomed").await;
    assert_eq!(phase(&op), Some(OperationPhase::Failed));
    assert_eq!(ready_reason(&op.status.unwrap().conditions), "Unavailable");

    fx.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fixture_dropped_half_way_deletes_its_namespace() {
    use k8s_openapi::api::core::v1::Namespace;
    let fx = Fixture::builder("fixture-drop")
        .fleet("c9300-17.18", 1)
        .controllers(settings)
        .device("sw", 0)
        .start()
        .await;
    let client = fx.client.clone();
    let name = fx.namespace().name().to_owned();
    device_ready(&client, &name, "sw").await;
    // As a failed assertion would: no finish().
    drop(fx);
    let ns = Api::<Namespace>::all(client).get_opt(&name).await.unwrap();
    assert!(
        ns.is_none_or(|n| n.metadata.deletion_timestamp.is_some()),
        "namespace {name} is still there and not being deleted"
    );
}
