//! IOSXEOperationalAction end to end: the real kube-apiserver, simulated
//! switches over loopback gRPC, the controllers in-process (and, for the
//! crash tests, `cvk-controller run` as a process killed with SIGKILL at the
//! pause points). The simulator's journal is the proof of "at most once":
//! every test counts the mutating RPCs the device received.

mod reconcile_common;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use cvk_controller::crd::IOSXEOperationalAction;
use cvk_controller::crd::action::ActionPhase;
use cvk_controller::lease::{DeviceLocks, LeaseHolder};
use cvk_controller::reconcile::ControllerSettings;
use cvk_controller::reconcile::action::{FINALIZER, ResultDoc};
use cvk_hil::testing::shared_control_plane;
use iosxe_sim::{FaultKind, FaultSpec, Fleet, FleetConfig, FleetHandle, Profile};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::events::v1::Event;
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use kube::{Api, Client, ResourceExt};
use reconcile_common::*;
use serde_json::{Value, json};

fn gate_on(ns: &str) -> ControllerSettings {
    let mut s = settings(ns);
    s.gates.write_class = true;
    s
}

async fn sims(profile: &str, n: usize) -> FleetHandle {
    let cfg = FleetConfig::new(n, Profile::builtin(profile).expect("profile"))
        .credentials(USER, PASSWORD)
        .reboot_ms(500);
    Fleet::start(cfg).await.expect("simulator")
}

fn action_json(name: &str, device: &str, kind: &str, block: &str, args: Value) -> Value {
    json!({
        "apiVersion": "ops.cisco.vk/v1alpha1", "kind": "IOSXEOperationalAction",
        "metadata": { "name": name },
        "spec": { "deviceRef": { "name": device }, "confirm": device,
                  "action": { "kind": kind, block: args } },
    })
}

async fn action(
    client: &Client,
    ns: &str,
    name: &str,
    device: &str,
    kind: &str,
    block: &str,
    args: Value,
) -> IOSXEOperationalAction {
    create(client, ns, action_json(name, device, kind, block, args)).await
}

async fn terminal(client: &Client, ns: &str, name: &str) -> IOSXEOperationalAction {
    let api: Api<IOSXEOperationalAction> = Api::namespaced(client.clone(), ns);
    wait_for(&api, name, Duration::from_secs(120), |a| {
        a.status
            .as_ref()
            .and_then(|s| s.phase)
            .is_some_and(|p| p.is_terminal())
    })
    .await
}

fn phase(a: &IOSXEOperationalAction) -> Option<ActionPhase> {
    a.status.as_ref().and_then(|s| s.phase)
}

fn reason(a: &IOSXEOperationalAction) -> String {
    a.status
        .as_ref()
        .and_then(|s| s.reason.clone())
        .unwrap_or_default()
}

fn message(a: &IOSXEOperationalAction) -> String {
    a.status
        .as_ref()
        .and_then(|s| s.message.clone())
        .unwrap_or_default()
}

fn result_doc(a: &IOSXEOperationalAction) -> ResultDoc {
    let r = a
        .status
        .as_ref()
        .and_then(|s| s.result.clone())
        .unwrap_or_else(|| panic!("{}: no status.result", a.name_any()));
    serde_json::from_str(&r).unwrap_or_else(|e| panic!("status.result is not a result: {e}: {r}"))
}

/// Asserts a terminal phase and reason, the Ready condition, the times and
/// that the Lease and finalizer are gone.
async fn assert_ended(
    client: &Client,
    ns: &str,
    a: &IOSXEOperationalAction,
    want: ActionPhase,
    want_reason: &str,
) {
    let s = a.status.as_ref().expect("status");
    assert_eq!(s.phase, Some(want), "{:#?}", a.status);
    assert_eq!(reason(a), want_reason, "{:#?}", a.status);
    assert_eq!(ready_reason(&s.conditions), want_reason);
    let ready = s.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(
        ready.status,
        if want == ActionPhase::Succeeded {
            "True"
        } else {
            "False"
        }
    );
    assert!(s.completion_time.is_some(), "{:#?}", a.status);
    if want == ActionPhase::Succeeded {
        assert_eq!(s.failure_reason, None);
    } else {
        assert_eq!(s.failure_reason.as_deref(), Some(want_reason));
    }
    // The finalizer goes once the outcome is recorded.
    let api: Api<IOSXEOperationalAction> = Api::namespaced(client.clone(), ns);
    let name = a.name_any();
    wait_for(&api, &name, Duration::from_secs(10), |o| {
        !o.finalizers().iter().any(|f| f == FINALIZER)
    })
    .await;
    let want_type = if want == ActionPhase::Succeeded {
        "Normal"
    } else {
        "Warning"
    };
    let announced = |evs: &[Event]| {
        evs.iter().any(|e| {
            e.reason.as_deref() == Some(want_reason) && e.type_.as_deref() == Some(want_type)
        })
    };
    let evs = events_until(client, ns, &name, announced).await;
    assert!(announced(&evs), "no {want_reason} Event: {evs:#?}");
}

/// A ConfigMap holding `content` under `binaryData["content"]`, as FilePut
/// reads it.
async fn content_config_map(client: &Client, ns: &str, name: &str, content: &[u8]) {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    cms.create(
        &PostParams::default(),
        &ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            binary_data: Some([("content".to_owned(), ByteString(content.to_vec()))].into()),
            ..ConfigMap::default()
        },
    )
    .await
    .unwrap();
}

async fn lease_holder(client: &Client, ns: &str, device: &str) -> Option<LeaseHolder> {
    DeviceLocks::new(client.clone(), ns, "test")
        .holder(ns, device)
        .await
        .expect("lease")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_is_sent_exactly_once() {
    let mut fx = Fixture::builder("act-kinds").start().await;
    let (client, n) = (fx.client.clone(), fx.namespace().name().to_owned());
    let fleet = sims("c9300-17.18", 5).await;
    let names = ["sw-reboot", "sw-cancel", "sw-kill", "sw-file", "sw-reset"];
    for (i, d) in names.iter().enumerate() {
        device(&client, &n, d, fleet.nth(i).unwrap().addr().port()).await;
    }
    let content: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    content_config_map(&client, &n, "startup-bits", &content).await;
    fx.start_controllers(gate_on(&n));

    // Reboot, immediately: the device goes down and comes back.
    let reboot = fleet.nth(0).unwrap();
    action(
        &client,
        &n,
        "reload",
        "sw-reboot",
        "Reboot",
        "reboot",
        json!({ "message": "maintenance window", "delaySeconds": 0, "method": "COLD" }),
    )
    .await;
    // CancelReboot of a reboot scheduled an hour ahead.
    let cancel = fleet.nth(1).unwrap();
    cancel
        .reboot(Duration::from_secs(3600), "operator")
        .unwrap();
    action(
        &client,
        &n,
        "cancel",
        "sw-cancel",
        "CancelReboot",
        "cancelReboot",
        json!({ "message": "not today" }),
    )
    .await;
    // KillProcess by name, restarted.
    let kill = fleet.nth(2).unwrap();
    let old_pid = kill
        .snapshot()
        .processes
        .iter()
        .find(|p| p.name == "nginx")
        .unwrap()
        .pid;
    action(
        &client,
        &n,
        "kill",
        "sw-kill",
        "KillProcess",
        "killProcess",
        json!({ "name": "nginx", "signal": "KILL", "restart": true }),
    )
    .await;
    // FilePut from the ConfigMap.
    let file = fleet.nth(3).unwrap();
    action(&client, &n, "put", "sw-file", "FilePut", "filePut",
        json!({ "path": "flash:/cvk/startup-bits.bin", "configMapName": "startup-bits", "permissions": 384 })).await;
    // FactoryReset.
    let reset = fleet.nth(4).unwrap();
    action(
        &client,
        &n,
        "reset",
        "sw-reset",
        "FactoryReset",
        "factoryReset",
        json!({ "zeroFill": true }),
    )
    .await;

    // Reboot.
    let a = terminal(&client, &n, "reload").await;
    assert_ended(&client, &n, &a, ActionPhase::Succeeded, "Succeeded").await;
    let s = a.status.as_ref().unwrap();
    assert!(s.start_time.is_some());
    assert_eq!(
        s.invocation_id.as_deref(),
        Some(format!("{}/1", a.uid().unwrap()).as_str())
    );
    let doc = result_doc(&a);
    assert_eq!(doc.dispatch.kind, "Reboot");
    assert_eq!(doc.dispatch.request["method"], "COLD");
    assert_eq!(doc.dispatch.reboot_count_before, Some(0));
    let calls_ = reboot.journal_for("/gnoi.system.System/Reboot");
    assert_eq!(calls_.len(), 1, "{calls_:#?}");
    assert_eq!(calls_[0].fields["message"], "maintenance window");
    assert!(
        reboot
            .wait_power(iosxe_sim::Power::Up, Duration::from_secs(10))
            .await
    );
    assert_eq!(reboot.snapshot().reboot.count, 1);

    // CancelReboot.
    let a = terminal(&client, &n, "cancel").await;
    assert_ended(&client, &n, &a, ActionPhase::Succeeded, "Succeeded").await;
    assert_eq!(
        cancel.journal_for("/gnoi.system.System/CancelReboot").len(),
        1
    );
    assert!(!cancel.snapshot().reboot.active);
    assert_eq!(result_doc(&a).dispatch.reboot_active_before, Some(true));

    // KillProcess.
    let a = terminal(&client, &n, "kill").await;
    assert_ended(&client, &n, &a, ActionPhase::Succeeded, "Succeeded").await;
    let k = kill.journal_for("/gnoi.system.System/KillProcess");
    assert_eq!(k.len(), 1, "{k:#?}");
    assert_eq!(k[0].fields["name"], "nginx");
    let new_pid = kill
        .snapshot()
        .processes
        .iter()
        .find(|p| p.name == "nginx")
        .unwrap()
        .pid;
    assert_ne!(old_pid, new_pid, "restarted with a new pid");
    assert_eq!(result_doc(&a).dispatch.request["signal"], "KILL");

    // FilePut: the bytes on the device are the ConfigMap's.
    let a = terminal(&client, &n, "put").await;
    assert_ended(&client, &n, &a, ActionPhase::Succeeded, "Succeeded").await;
    assert_eq!(file.journal_for("/gnoi.file.File/Put").len(), 1);
    let mut reader = file
        .device()
        .open_read("flash:/cvk/startup-bits.bin")
        .unwrap();
    let mut on_device = Vec::new();
    while let Some(chunk) = reader.next_chunk(64 * 1024).unwrap() {
        on_device.extend_from_slice(&chunk);
    }
    assert_eq!(on_device, content);
    let doc = result_doc(&a);
    assert_eq!(doc.dispatch.content_bytes, Some(200_000));
    assert_eq!(doc.dispatch.file_existed_before, Some(false));
    let response = doc.response.unwrap();
    assert_eq!(response["bytesSent"], 200_000);
    assert_eq!(
        response["sha256"].as_str(),
        doc.dispatch.content_sha256.as_deref()
    );
    assert_eq!(response["stat"]["permissions"], 600);

    // FileRemove of the file just written.
    action(
        &client,
        &n,
        "rm",
        "sw-file",
        "FileRemove",
        "fileRemove",
        json!({ "path": "flash:/cvk/startup-bits.bin" }),
    )
    .await;
    let a = terminal(&client, &n, "rm").await;
    assert_ended(&client, &n, &a, ActionPhase::Succeeded, "Succeeded").await;
    assert_eq!(file.journal_for("/gnoi.file.File/Remove").len(), 1);
    assert!(
        file.device()
            .open_read("flash:/cvk/startup-bits.bin")
            .is_err()
    );

    // FactoryReset.
    let a = terminal(&client, &n, "reset").await;
    assert_ended(&client, &n, &a, ActionPhase::Succeeded, "Succeeded").await;
    let r = reset.journal_for("/gnoi.factory_reset.FactoryReset/Start");
    assert_eq!(r.len(), 1, "{r:#?}");
    assert_eq!(r[0].fields["zero_fill"], "true");
    assert_eq!(r[0].fields["retain_certs"], "true");

    // Resyncs never resend: poke every action and count again.
    let api: Api<IOSXEOperationalAction> = Api::namespaced(client.clone(), &n);
    for name in ["reload", "cancel", "kill", "put", "rm", "reset"] {
        api.patch(
            name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"metadata": {"annotations": {"poke": "1"}}})),
        )
        .await
        .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(reboot.journal_for("/gnoi.system.System/Reboot").len(), 1);
    assert_eq!(
        cancel.journal_for("/gnoi.system.System/CancelReboot").len(),
        1
    );
    assert_eq!(kill.journal_for("/gnoi.system.System/KillProcess").len(), 1);
    assert_eq!(file.journal_for("/gnoi.file.File/Put").len(), 1);
    assert_eq!(file.journal_for("/gnoi.file.File/Remove").len(), 1);
    assert_eq!(
        reset
            .journal_for("/gnoi.factory_reset.FactoryReset/Start")
            .len(),
        1
    );
    // Every Lease is released.
    for d in names {
        assert_eq!(lease_holder(&client, &n, d).await, None, "{d}");
    }
    // Running was announced before the outcome.
    let evs = events_with(&client, &n, "reload", "Running").await;
    assert!(
        evs.iter().any(|e| e.reason.as_deref() == Some("Running")
            && e.note
                .as_deref()
                .is_some_and(|m| m.starts_with("Reboot device=sw-reboot"))),
        "{evs:#?}"
    );

    fx.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_server_refuses_mismatched_confirm_wrong_args_and_bad_paths() {
    let fx = Fixture::builder("act-admission").start().await;
    let (client, n) = (fx.client.clone(), fx.namespace().name().to_owned());
    let api: Api<IOSXEOperationalAction> = Api::namespaced(client.clone(), &n);
    let refused = |v: Value| {
        let api = api.clone();
        async move {
            let obj: IOSXEOperationalAction = serde_json::from_value(v).unwrap();
            match api.create(&PostParams::default(), &obj).await {
                Ok(_) => panic!("accepted: {obj:#?}"),
                Err(e) => e.to_string(),
            }
        }
    };
    let mut v = action_json("a", "sw1", "Reboot", "reboot", json!({}));
    v["spec"]["confirm"] = json!("sw2");
    let e = refused(v).await;
    assert!(
        e.contains("spec.confirm must equal spec.deviceRef.name"),
        "{e}"
    );

    let e = refused(action_json(
        "a",
        "sw1",
        "Reboot",
        "killProcess",
        json!({"pid": 5}),
    ))
    .await;
    assert!(
        e.contains("spec.action.reboot must be set when spec.action.kind is Reboot"),
        "{e}"
    );
    let mut v = action_json("a", "sw1", "Reboot", "reboot", json!({}));
    v["spec"]["action"]["fileRemove"] = json!({"path": "flash:x"});
    let e = refused(v).await;
    assert!(e.contains("spec.action.fileRemove must be set"), "{e}");

    let e = refused(action_json(
        "a",
        "sw1",
        "FileRemove",
        "fileRemove",
        json!({"path": "crashinfo:x"}),
    ))
    .await;
    assert!(e.contains("spec.action.fileRemove.path"), "{e}");
    let e = refused(action_json(
        "a",
        "sw1",
        "FilePut",
        "filePut",
        json!({"path": "flash:/a/../b", "configMapName": "c"}),
    ))
    .await;
    assert!(e.contains("no empty, '.' or '..' segments"), "{e}");
    let e = refused(action_json(
        "a",
        "sw1",
        "KillProcess",
        "killProcess",
        json!({"pid": 0}),
    ))
    .await;
    assert!(
        e.contains("needs a non-zero pid or a non-empty name"),
        "{e}"
    );
    fx.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_and_failures_end_with_a_clear_reason_and_send_nothing_else() {
    let mut fx = Fixture::builder("act-refuse").start().await;
    let (client, n) = (fx.client.clone(), fx.namespace().name().to_owned());
    let fleet = sims("c9300-17.18", 2).await;
    let sim = fleet.nth(0).unwrap();
    // A separate device for the UNIMPLEMENTED answer: it marks System
    // unsupported in the capability cache of that device only.
    let unimpl = fleet.nth(1).unwrap();
    let old = sims("c9300-17.14", 1).await;
    let old_sim = old.nth(0).unwrap();
    device(&client, &n, "sw", sim.addr().port()).await;
    device(&client, &n, "old", old_sim.addr().port()).await;
    device(&client, &n, "sw-unimpl", unimpl.addr().port()).await;
    // Nothing listens on this port: a device that is down.
    let down_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    device(&client, &n, "down", down_port).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &n);
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(
            json!({"metadata": {"name": "text-only"}, "data": {"content": "hi"}}),
        )
        .unwrap(),
    )
    .await
    .unwrap();
    unimpl
        .inject(FaultSpec::rpc(
            "/gnoi.system.System/KillProcess",
            FaultKind::Unimplemented,
        ))
        .unwrap();
    fx.start_controllers(gate_on(&n));

    // (name, device, kind, args block, args, phase, reason, text in the message)
    type Case = (&'static str, &'static str, &'static str, &'static str);
    let cases: Vec<(Case, Value, ActionPhase, &str, &str)> = vec![
        (
            ("no-cm", "sw", "FilePut", "filePut"),
            json!({"path": "flash:x.txt", "configMapName": "missing"}),
            ActionPhase::Rejected,
            "ConfigMapNotFound",
            "\"missing\"",
        ),
        (
            ("text-cm", "sw", "FilePut", "filePut"),
            json!({"path": "flash:x.txt", "configMapName": "text-only"}),
            ActionPhase::Rejected,
            "ConfigMapContentMissing",
            "binaryData[\"content\"]",
        ),
        (
            ("no-file", "sw", "FileRemove", "fileRemove"),
            json!({"path": "flash:/nope/missing.cfg"}),
            ActionPhase::Rejected,
            "FileNotFound",
            "flash:/nope/missing.cfg",
        ),
        (
            ("nothing-pending", "sw", "CancelReboot", "cancelReboot"),
            json!({}),
            ActionPhase::Rejected,
            "NoRebootPending",
            "nothing to cancel",
        ),
        (
            ("down", "down", "Reboot", "reboot"),
            json!({}),
            ActionPhase::Rejected,
            "DeviceUnavailable",
            "nothing was sent",
        ),
        (
            ("old-reboot", "old", "Reboot", "reboot"),
            json!({}),
            ActionPhase::Rejected,
            "SystemServiceUnsupported",
            "UNIMPLEMENTED",
        ),
        (
            (
                "unimplemented-kill",
                "sw-unimpl",
                "KillProcess",
                "killProcess",
            ),
            json!({"name": "nginx"}),
            ActionPhase::Failed,
            "SystemServiceUnsupported",
            "refused by the device",
        ),
    ];
    for ((name, dev, kind, block), args, _, _, _) in &cases {
        action(&client, &n, name, dev, kind, block, args.clone()).await;
    }
    for ((name, ..), _, want, want_reason, text) in &cases {
        let a = terminal(&client, &n, name).await;
        assert_ended(&client, &n, &a, *want, want_reason).await;
        assert!(message(&a).contains(text), "{name}: {}", message(&a));
        if *want == ActionPhase::Rejected {
            assert_eq!(
                a.status.as_ref().unwrap().invocation_id,
                None,
                "{name}: a rejected action was never marked"
            );
        }
    }
    // Nothing mutating reached a device, except the one KillProcess the
    // device answered UNIMPLEMENTED.
    for m in [
        "/gnoi.file.File/Put",
        "/gnoi.file.File/Remove",
        "/gnoi.system.System/CancelReboot",
        "/gnoi.system.System/Reboot",
    ] {
        assert_eq!(sim.journal_for(m).len(), 0, "{m}");
    }
    assert_eq!(sim.journal_for("/gnoi.system.System/KillProcess").len(), 0);
    assert_eq!(
        unimpl.journal_for("/gnoi.system.System/KillProcess").len(),
        1
    );
    assert_eq!(old_sim.journal_for("/gnoi.system.System/Reboot").len(), 0);
    assert_eq!(sim.snapshot().reboot.count, 0);
    for d in ["sw", "old", "down", "sw-unimpl"] {
        assert_eq!(lease_holder(&client, &n, d).await, None, "{d}");
    }
    fx.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_holding_the_device_blocks_a_reboot_but_not_a_cancel() {
    let mut fx = Fixture::builder("act-lease").start().await;
    let (client, n) = (fx.client.clone(), fx.namespace().name().to_owned());
    let fleet = sims("c9300-17.18", 1).await;
    let sim = fleet.nth(0).unwrap();
    device(&client, &n, "sw", sim.addr().port()).await;
    let upgrade: cvk_controller::crd::IOSXESoftwareUpgrade = create(
        &client,
        &n,
        json!({
            "apiVersion": "ops.cisco.vk/v1alpha1", "kind": "IOSXESoftwareUpgrade",
            "metadata": { "name": "upgrade" },
            "spec": { "deviceRef": { "name": "sw" },
                      "imageSource": { "localPath": "flash:cat9k_iosxe.17.18.02.SPA.bin" },
                      "targetVersion": "17.18.02" },
        }),
    )
    .await;
    let locks = DeviceLocks::new(client.clone(), &n, "upgrade-controller");
    let holder = LeaseHolder {
        kind: "IOSXESoftwareUpgrade".into(),
        namespace: n.clone(),
        name: "upgrade".into(),
        uid: upgrade.uid().unwrap(),
    };
    assert_eq!(
        locks.acquire(&n, "sw", &holder).await.unwrap(),
        cvk_controller::lease::Acquire::Held
    );
    fx.start_controllers(gate_on(&n));

    action(
        &client,
        &n,
        "reload",
        "sw",
        "Reboot",
        "reboot",
        json!({ "delaySeconds": 3600 }),
    )
    .await;
    let api: Api<IOSXEOperationalAction> = Api::namespaced(client.clone(), &n);
    let a = wait_for(&api, "reload", Duration::from_secs(30), |a| {
        reason(a) == "MutationLeaseBlocked"
    })
    .await;
    assert_eq!(phase(&a), Some(ActionPhase::Pending));
    assert!(
        message(&a).contains("IOSXESoftwareUpgrade/") && message(&a).contains("/upgrade"),
        "{}",
        message(&a)
    );
    // A pending reboot (set on the device directly) can still be cancelled.
    sim.reboot(Duration::from_secs(7200), "someone else")
        .unwrap();
    action(
        &client,
        &n,
        "cancel",
        "sw",
        "CancelReboot",
        "cancelReboot",
        json!({}),
    )
    .await;
    let c = terminal(&client, &n, "cancel").await;
    assert_ended(&client, &n, &c, ActionPhase::Succeeded, "Succeeded").await;
    assert_eq!(sim.journal_for("/gnoi.system.System/CancelReboot").len(), 1);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        sim.journal_for("/gnoi.system.System/Reboot").len(),
        0,
        "no reboot while the upgrade holds the device"
    );
    assert_eq!(
        phase(&api.get("reload").await.unwrap()),
        Some(ActionPhase::Pending)
    );
    assert_eq!(lease_holder(&client, &n, "sw").await, Some(holder.clone()));

    // The upgrade lets go: the reboot goes ahead, once.
    locks.release(&n, "sw", &holder).await.unwrap();
    let a = terminal(&client, &n, "reload").await;
    assert_ended(&client, &n, &a, ActionPhase::Succeeded, "Succeeded").await;
    assert_eq!(sim.journal_for("/gnoi.system.System/Reboot").len(), 1);
    let response = result_doc(&a).response.unwrap();
    assert_eq!(response["rebootStatus"]["active"], true, "{response}");
    assert!(sim.snapshot().reboot.active);
    assert_eq!(lease_holder(&client, &n, "sw").await, None);
    let evs = events_with(&client, &n, "reload", "MutationLeaseBlocked").await;
    assert!(
        evs.iter()
            .any(|e| e.reason.as_deref() == Some("MutationLeaseBlocked")),
        "{evs:#?}"
    );
    fx.finish().await;
}

// ---- crash tests: the controller as a process, killed at a pause point ----

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Proc {
    child: tokio::process::Child,
    metrics: SocketAddr,
}

fn spawn_controller(
    kubeconfig: &std::path::Path,
    ns: &str,
    pause: Option<(&str, &std::path::Path)>,
) -> Proc {
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let health: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_cvk-controller"));
    cmd.arg("run")
        .args(["--metrics-bind-address", &metrics.to_string()])
        .args(["--health-probe-bind-address", &health.to_string()])
        .arg("--enable-write-class-gnoi")
        .env("KUBECONFIG", kubeconfig)
        .env("CISCO_VK_DEVICE_NAMESPACE", ns)
        .env("CISCO_VK_GNOI_INSECURE", "1")
        .env("CVK_LOG_FORMAT", "text")
        .env("LOG_LEVEL", "info")
        .env_remove("CVK_PAUSE_AT")
        .env_remove("CVK_PAUSE_FILE")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    if let Some((point, file)) = pause {
        cmd.env("CVK_PAUSE_AT", point).env("CVK_PAUSE_FILE", file);
    }
    Proc {
        child: cmd.spawn().unwrap(),
        metrics,
    }
}

async fn wait_paused(file: &std::path::Path, point: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if std::fs::read_to_string(file).is_ok_and(|s| s.lines().any(|l| l == point)) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the controller never reached pause point {point}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn sigkill(p: &mut Proc) {
    p.child.start_kill().unwrap(); // SIGKILL
    tokio::time::timeout(Duration::from_secs(10), p.child.wait())
        .await
        .expect("dies at once")
        .unwrap();
}

async fn metrics_text(addr: SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut s) = tokio::net::TcpStream::connect(addr).await {
            let req = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
            if s.write_all(req.as_bytes()).await.is_ok() {
                let mut buf = Vec::new();
                if tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
                    .await
                    .is_ok_and(|r| r.is_ok())
                {
                    return String::from_utf8_lossy(&buf).into_owned();
                }
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no /metrics at {addr}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Kills the controller at `point` while it runs a Reboot, restarts it, and
/// returns the action once terminal (with the simulator for the counts).
async fn reboot_killed_at(
    point: &str,
    prefix: &str,
) -> (IOSXEOperationalAction, FleetHandle, String) {
    let fx = Fixture::builder(prefix).start().await;
    let (client, n) = (fx.client.clone(), fx.namespace().name().to_owned());
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    shared_control_plane()
        .write_kubeconfig(&kubeconfig)
        .unwrap();
    let pause_file = dir.path().join("paused");
    let fleet = sims("c9300-17.18", 1).await;
    let sim = fleet.nth(0).unwrap();
    device(&client, &n, "sw", sim.addr().port()).await;

    let mut first = spawn_controller(&kubeconfig, &n, Some((point, &pause_file)));
    action(
        &client,
        &n,
        "reload",
        "sw",
        "Reboot",
        "reboot",
        json!({ "message": "crash test", "delay": 0 }),
    )
    .await;
    wait_paused(&pause_file, point).await;
    sigkill(&mut first).await;

    // The marker is on record: Running, with the invocation ID.
    let api: Api<IOSXEOperationalAction> = Api::namespaced(client.clone(), &n);
    let a = api.get("reload").await.unwrap();
    let s = a.status.clone().unwrap();
    assert_eq!(s.phase, Some(ActionPhase::Running), "{s:#?}");
    assert_eq!(
        s.invocation_id.as_deref(),
        Some(format!("{}/1", a.uid().unwrap()).as_str())
    );
    assert!(a.finalizers().iter().any(|f| f == FINALIZER));
    let sent_before_restart = sim.journal_for("/gnoi.system.System/Reboot").len();

    let second = spawn_controller(&kubeconfig, &n, None);
    let done = terminal(&client, &n, "reload").await;
    let metrics = metrics_text(second.metrics).await;
    assert_eq!(
        sim.journal_for("/gnoi.system.System/Reboot").len(),
        sent_before_restart,
        "the restarted controller sent the Reboot again"
    );
    // Nothing more later either.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        sim.journal_for("/gnoi.system.System/Reboot").len(),
        sent_before_restart
    );
    let mut second = second;
    sigkill(&mut second).await;
    let ended = api.get("reload").await.unwrap();
    assert!(!ended.finalizers().iter().any(|f| f == FINALIZER));
    assert_eq!(lease_holder(&client, &n, "sw").await, None);
    drop(dir);
    fx.finish().await;
    (done, fleet, metrics)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_the_marker_the_reboot_is_never_sent() {
    let (a, fleet, metrics) = reboot_killed_at("action-after-marker", "act-crash-marker").await;
    let sim = fleet.nth(0).unwrap();
    assert_eq!(sim.journal_for("/gnoi.system.System/Reboot").len(), 0);
    assert_eq!(phase(&a), Some(ActionPhase::Failed), "{:#?}", a.status);
    assert_eq!(reason(&a), "ActionNotApplied");
    assert!(message(&a).contains("not sent again"), "{}", message(&a));
    assert_eq!(result_doc(&a).observed.unwrap()["rebootCount"], 0);
    assert!(
        metrics.contains(
            r#"cisco_vk_iosxe_operational_action_transitions_total{device="sw",kind="Reboot",phase="Failed",reason="ActionNotApplied"} 1"#
        ),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_the_dispatch_the_reboot_is_observed_not_resent() {
    let (a, fleet, metrics) = reboot_killed_at("action-after-dispatch", "act-crash-dispatch").await;
    let sim = fleet.nth(0).unwrap();
    assert_eq!(sim.journal_for("/gnoi.system.System/Reboot").len(), 1);
    assert_eq!(phase(&a), Some(ActionPhase::Succeeded), "{:#?}", a.status);
    assert_eq!(reason(&a), "Succeeded");
    assert!(
        message(&a).contains("read back from the device"),
        "{}",
        message(&a)
    );
    assert_eq!(result_doc(&a).observed.unwrap()["rebootCount"], 1);
    assert_eq!(sim.snapshot().reboot.count, 1);
    assert!(
        metrics.contains(
            r#"cisco_vk_iosxe_operational_action_transitions_total{device="sw",kind="Reboot",phase="Succeeded",reason="Succeeded"} 1"#
        ),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispatched_action_deleted_while_the_controller_is_down_keeps_its_record_until_the_outcome_is_known()
 {
    let fx = Fixture::builder("act-delete").start().await;
    let (client, n) = (fx.client.clone(), fx.namespace().name().to_owned());
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    shared_control_plane()
        .write_kubeconfig(&kubeconfig)
        .unwrap();
    let pause_file = dir.path().join("paused");
    let fleet = sims("c9300-17.18", 1).await;
    let sim = fleet.nth(0).unwrap();
    device(&client, &n, "sw", sim.addr().port()).await;
    let content = b"hostname sw\n!\nend\n".to_vec();
    content_config_map(&client, &n, "cfg", &content).await;

    let mut first = spawn_controller(
        &kubeconfig,
        &n,
        Some(("action-after-dispatch", &pause_file)),
    );
    action(
        &client,
        &n,
        "put",
        "sw",
        "FilePut",
        "filePut",
        json!({ "path": "flash:cvk.cfg", "configMapName": "cfg" }),
    )
    .await;
    wait_paused(&pause_file, "action-after-dispatch").await;
    sigkill(&mut first).await;
    assert_eq!(sim.journal_for("/gnoi.file.File/Put").len(), 1);

    let api: Api<IOSXEOperationalAction> = Api::namespaced(client.clone(), &n);
    api.delete("put", &DeleteParams::default()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let kept = api.get("put").await.expect("kept by its finalizer");
    assert!(kept.metadata.deletion_timestamp.is_some());
    assert_eq!(phase(&kept), Some(ActionPhase::Running));

    let mut second = spawn_controller(&kubeconfig, &n, None);
    wait_gone(&api, "put", Duration::from_secs(60)).await;
    let evs = events_with(&client, &n, "put", "Succeeded").await;
    let succeeded = evs
        .iter()
        .find(|e| e.reason.as_deref() == Some("Succeeded"))
        .unwrap_or_else(|| panic!("no Succeeded Event: {evs:#?}"));
    assert!(
        succeeded
            .note
            .as_deref()
            .is_some_and(|m| m.contains("read back from the device")),
        "{succeeded:#?}"
    );
    assert!(
        evs.iter()
            .any(|e| e.reason.as_deref() == Some("DeletionPending")),
        "{evs:#?}"
    );
    assert_eq!(sim.journal_for("/gnoi.file.File/Put").len(), 1, "sent once");
    assert_eq!(
        sim.journal_for("/gnoi.file.File/Get").len(),
        1,
        "read back once"
    );
    sigkill(&mut second).await;
    assert_eq!(lease_holder(&client, &n, "sw").await, None);
    fx.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_connection_during_dispatch_is_read_back_not_resent() {
    let mut fx = Fixture::builder("act-unclear").start().await;
    let (client, n) = (fx.client.clone(), fx.namespace().name().to_owned());
    let fleet = sims("c9300-17.18", 1).await;
    let sim = fleet.nth(0).unwrap();
    device(&client, &n, "sw", sim.addr().port()).await;
    // The connection dies as the request's first byte moves: the device
    // never runs it, and the controller cannot know that from the answer.
    sim.inject(
        FaultSpec::rpc(
            "/gnoi.system.System/Reboot",
            FaultKind::Cut {
                after_bytes: Some(0),
                probability: None,
                seed: 0,
            },
        )
        .once(),
    )
    .unwrap();
    fx.start_controllers(gate_on(&n));
    action(
        &client,
        &n,
        "reload",
        "sw",
        "Reboot",
        "reboot",
        json!({ "delaySeconds": 3600 }),
    )
    .await;
    let a = terminal(&client, &n, "reload").await;
    assert_ended(&client, &n, &a, ActionPhase::Failed, "ActionNotApplied").await;
    assert!(
        message(&a).contains("no sign of the Reboot"),
        "{}",
        message(&a)
    );
    let sent = sim.journal_for("/gnoi.system.System/Reboot");
    assert_eq!(sent.len(), 1, "sent once, never again: {sent:#?}");
    assert!(!sim.snapshot().reboot.active);
    let evs = events_with(&client, &n, "reload", "Observing").await;
    assert!(
        evs.iter().any(|e| e.reason.as_deref() == Some("Observing")),
        "{evs:#?}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sim.journal_for("/gnoi.system.System/Reboot").len(), 1);
    fx.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_left_by_a_finished_action_is_taken_over_but_not_one_of_a_running_action() {
    let fx = Fixture::builder("act-stale-lease").start().await;
    let (client, n) = (fx.client.clone(), fx.namespace().name().to_owned());
    let a = action(&client, &n, "done", "sw", "Reboot", "reboot", json!({})).await;
    let locks = DeviceLocks::new(client.clone(), &n, "test");
    let held_by_action = LeaseHolder {
        kind: "IOSXEOperationalAction".into(),
        namespace: n.clone(),
        name: "done".into(),
        uid: a.uid().unwrap(),
    };
    let upgrade = LeaseHolder {
        kind: "IOSXESoftwareUpgrade".into(),
        namespace: n.clone(),
        name: "later".into(),
        uid: "u-2".into(),
    };
    use cvk_controller::lease::Acquire;
    assert_eq!(
        locks.acquire(&n, "sw", &held_by_action).await.unwrap(),
        Acquire::Held
    );
    let api: Api<IOSXEOperationalAction> = Api::namespaced(client.clone(), &n);
    let set_phase = |phase: &'static str| {
        let api = api.clone();
        async move {
            api.patch_status(
                "done",
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(json!({"status": {"phase": phase}})),
            )
            .await
            .unwrap();
        }
    };
    set_phase("Running").await;
    assert!(matches!(
        locks.acquire(&n, "sw", &upgrade).await.unwrap(),
        Acquire::Busy(who) if who == format!("IOSXEOperationalAction/{n}/done")
    ));
    set_phase("Succeeded").await;
    assert_eq!(
        locks.acquire(&n, "sw", &upgrade).await.unwrap(),
        Acquire::Held
    );
    assert_eq!(lease_holder(&client, &n, "sw").await, Some(upgrade));
    fx.finish().await;
}
