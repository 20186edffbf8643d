//! IOSXESoftwareUpgrade end to end: the real local kube-apiserver,
//! simulated Catalyst 9300s over loopback gRPC (short reboots), the
//! controllers in-process (and, for the crash tests, `cvk-controller run`
//! as a process killed with SIGKILL at each phase boundary). Device-side
//! facts come from the simulator's journal and state.

mod reconcile_common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use cvk_controller::crd::IOSXESoftwareUpgrade;
use cvk_controller::crd::upgrade::UpgradePhase;
use cvk_controller::reconcile::ControllerSettings;
use iosxe_sim::device::InstallBegin;
use iosxe_sim::{DeviceHandle, FaultSpec, FleetConfig, ImageSpec, Profile};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};
use reconcile_common::*;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const OLD: &str = "17.18.02.0.4112.1766116039";
const NEW: &str = "17.18.03.0.4200.1770000000";
const TARGET: &str = "17.18.03";
const IMAGE_BYTES: u64 = 600 * 1024;
const ACTIVATE: &str = "/gnoi.os.OS/Activate";

fn upgrade_settings(ns: &str) -> ControllerSettings {
    let mut s = settings(ns);
    s.gates.software_upgrade = true;
    s.upgrade.chunk_bytes = 64 * 1024;
    // A cache of this test's own (namespaces are unique per run).
    s.upgrade.image_cache_dir = std::env::temp_dir().join(format!("cvk-upgrade-cache-{ns}"));
    s
}

/// `n` simulated C9300s that reboot in 400 ms.
fn upgrade_fleet(n: usize) -> FleetConfig {
    FleetConfig::new(n, Profile::builtin("c9300-17.18").unwrap())
        .credentials(USER, PASSWORD)
        .reboot_ms(400)
}

fn image(version: &str) -> Vec<u8> {
    let mut buf = Vec::new();
    ImageSpec::new(version, IMAGE_BYTES)
        .write_to(&mut buf)
        .unwrap();
    buf
}

async fn image_configmap(client: &Client, ns: &str, name: &str, bytes: &[u8]) {
    let cm = ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        binary_data: Some([("image".to_owned(), ByteString(bytes.to_vec()))].into()),
        ..Default::default()
    };
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &cm)
        .await
        .expect("image ConfigMap");
}

async fn upgrade(client: &Client, ns: &str, name: &str, spec: Value) -> IOSXESoftwareUpgrade {
    create(
        client,
        ns,
        json!({
            "apiVersion": "ops.cisco.vk/v1alpha1", "kind": "IOSXESoftwareUpgrade",
            "metadata": { "name": name },
            "spec": spec,
        }),
    )
    .await
}

fn cm_spec(device: &str, extra: Value) -> Value {
    let mut spec = json!({
        "deviceRef": { "name": device },
        "imageSource": { "configMapRef": { "name": "img" } },
        "targetVersion": TARGET,
        "rebootTimeoutSeconds": 60,
    });
    if let (Value::Object(s), Value::Object(e)) = (&mut spec, extra) {
        s.extend(e);
    }
    spec
}

fn phase(u: &IOSXESoftwareUpgrade) -> Option<UpgradePhase> {
    u.status.as_ref().and_then(|s| s.phase)
}

async fn terminal(
    client: &Client,
    ns: &str,
    name: &str,
    timeout: Duration,
) -> IOSXESoftwareUpgrade {
    let api: Api<IOSXESoftwareUpgrade> = Api::namespaced(client.clone(), ns);
    wait_for(&api, name, timeout, |u| {
        phase(u).is_some_and(|p| p.is_terminal())
    })
    .await
}

fn reason(u: &IOSXESoftwareUpgrade) -> String {
    u.status
        .as_ref()
        .and_then(|s| s.reason.clone())
        .unwrap_or_default()
}

fn condition(u: &IOSXESoftwareUpgrade, t: &str) -> (String, String) {
    u.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == t))
        .map(|c| (c.status.clone(), c.reason.clone()))
        .unwrap_or_default()
}

/// The `PhaseTransition` Event notes of `name`, oldest first, once the
/// last of them tells the phase the object is in (or it is gone).
async fn transitions(client: &Client, ns: &str, name: &str) -> Vec<String> {
    let api: Api<IOSXESoftwareUpgrade> = Api::namespaced(client.clone(), ns);
    let phase = api
        .get_opt(name)
        .await
        .expect("get")
        .and_then(|u| u.status.and_then(|s| s.phase))
        .map(|p| serde_json::to_value(p).expect("phase"));
    let phase = phase.as_ref().and_then(Value::as_str).map(str::to_owned);
    let told = |evs: &[k8s_openapi::api::events::v1::Event]| {
        let Some(phase) = &phase else { return true };
        let notes: Vec<String> = evs
            .iter()
            .filter(|e| e.reason.as_deref() == Some("PhaseTransition"))
            .filter_map(|e| e.note.clone())
            .collect();
        notes.iter().any(|n| {
            n.split_once(" → ")
                .is_some_and(|(_, to)| to.starts_with(phase.as_str()))
        })
    };
    let mut evs: Vec<_> = events_until(client, ns, name, told)
        .await
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("PhaseTransition"))
        .collect();
    evs.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
    evs.into_iter().filter_map(|e| e.note).collect()
}

/// The phase sequence the Events tell, from Pending on.
fn phase_sequence(notes: &[String]) -> Vec<String> {
    let mut seq = vec!["Pending".to_owned()];
    for n in notes {
        if let Some((_, rest)) = n.split_once(" → ") {
            seq.push(rest.split(':').next().unwrap_or_default().to_owned());
        }
    }
    seq
}

/// Stages `bytes` on the device as OS.Install would (for localPath).
async fn stage(sim: &DeviceHandle, bytes: &[u8]) -> (String, String) {
    match sim.device().begin_install("", bytes.len() as u64, false) {
        Ok(InstallBegin::Transfer(mut s)) => {
            for c in bytes.chunks(64 * 1024) {
                s.write(bytes::Bytes::copy_from_slice(c))
                    .await
                    .expect("staging write");
            }
            s.finish().await.expect("staging finish")
        }
        Ok(InstallBegin::AlreadyPresent { .. }) => panic!("already staged"),
        Err(e) => panic!("staging: {e:?}"),
    }
}

fn inject(sim: &DeviceHandle, spec: Value) {
    let f: FaultSpec = serde_json::from_value(spec).expect("fault spec");
    sim.inject(f).expect("fault");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configmap_reload_walks_every_phase_with_conditions_and_events() {
    let fx = Fixture::builder("upg-reload")
        .fleet_config(upgrade_fleet(1))
        .controllers(upgrade_settings)
        .start()
        .await;
    let (client, ns, fleet) = (fx.client.clone(), fx.namespace(), fx.fleet());
    let sim = fleet.nth(0).unwrap();
    device(&client, ns.name(), "sw", sim.addr().port()).await;
    image_configmap(&client, ns.name(), "img", &image(NEW)).await;
    upgrade(
        &client,
        ns.name(),
        "up",
        cm_spec("sw", json!({"rollbackOnFailure": false})),
    )
    .await;

    let up = terminal(&client, ns.name(), "up", Duration::from_secs(60)).await;
    let st = up.status.clone().unwrap();
    assert_eq!(st.phase, Some(UpgradePhase::Succeeded), "{st:#?}");
    assert_eq!(st.running_version.as_deref(), Some(NEW));
    assert_eq!(st.previous_version.as_deref(), Some(OLD));
    assert_eq!(st.validated_version.as_deref(), Some(NEW));
    assert_eq!(st.target_version.as_deref(), Some(TARGET));
    assert!(st.activation_requested && st.completion_time.is_some());
    let p = st.transfer_progress.clone().expect("transfer progress");
    assert_eq!(p.total_bytes, Some(IMAGE_BYTES as i64));
    assert_eq!(p.percent, Some(100));
    let digest = hex::encode(Sha256::digest(image(NEW)));
    assert_eq!(st.source_digest, Some(format!("sha256:{digest}")));
    assert_eq!(
        condition(&up, "TransferComplete"),
        ("True".into(), "ImageTransferred".into())
    );
    assert_eq!(
        condition(&up, "ValidationPassed"),
        ("True".into(), "PrefligthOK".into())
    );
    assert_eq!(
        condition(&up, "ActivationComplete"),
        ("True".into(), "OSActivated".into())
    );
    assert_eq!(
        condition(&up, "VerificationPassed"),
        ("True".into(), "VersionMatch".into())
    );
    assert_eq!(
        condition(&up, "Ready"),
        ("True".into(), "VersionMatch".into())
    );
    // Terminal: the finalizer goes (right after the terminal status).
    let api: Api<IOSXESoftwareUpgrade> = Api::namespaced(client.clone(), ns.name());
    wait_for(&api, "up", Duration::from_secs(10), |u| {
        u.metadata.finalizers.as_ref().is_none_or(|f| f.is_empty())
    })
    .await;

    let notes = transitions(&client, ns.name(), "up").await;
    assert_eq!(
        phase_sequence(&notes),
        [
            "Pending",
            "Resolving",
            "Transferring",
            "Validating",
            "Activating",
            "AwaitingReachability",
            "Verifying",
            "Succeeded"
        ],
        "{notes:#?}"
    );
    assert!(
        notes.contains(&"Activating → AwaitingReachability: OS.Activate sent".to_owned()),
        "{notes:#?}"
    );
    assert!(
        notes.contains(&format!("Verifying → Succeeded: running {NEW}")),
        "{notes:#?}"
    );
    assert!(
        notes.contains(&format!(
            "Transferring → Validating: device validated {NEW}"
        )),
        "{notes:#?}"
    );

    // The device: one install of the image, one activation, no reboot RPC.
    let installs = sim.journal_for("/gnoi.os.OS/Install");
    assert_eq!(installs.len(), 1, "{installs:#?}");
    assert_eq!(
        installs[0].fields.get("package_size").map(String::as_str),
        Some(&*IMAGE_BYTES.to_string())
    );
    let activates = sim.journal_for(ACTIVATE);
    assert_eq!(activates.len(), 1, "{activates:#?}");
    assert_eq!(
        activates[0].fields.get("version").map(String::as_str),
        Some(NEW)
    );
    assert_eq!(
        activates[0].fields.get("no_reboot").map(String::as_str),
        Some("false")
    );
    assert!(calls(&sim, "/gnoi.system.System/Reboot").is_empty());
    assert_eq!(sim.snapshot().running_version, NEW);
    // The device lease was released (with the finalizer, at the end).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), ns.name());
    assert!(
        leases
            .get_opt(&cvk_controller::lease::lease_name(ns.name(), "sw"))
            .await
            .unwrap()
            .is_none()
    );
    fx.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_reboot_stages_without_changing_the_running_version() {
    let fx = Fixture::builder("upg-noreboot")
        .fleet_config(upgrade_fleet(1))
        .controllers(upgrade_settings)
        .start()
        .await;
    let (client, ns, fleet) = (fx.client.clone(), fx.namespace(), fx.fleet());
    let sim = fleet.nth(0).unwrap();
    device(&client, ns.name(), "sw", sim.addr().port()).await;
    image_configmap(&client, ns.name(), "img", &image(NEW)).await;
    let boots_before = sim.snapshot().boot_count;
    upgrade(
        &client,
        ns.name(),
        "stage",
        cm_spec(
            "sw",
            json!({"strategy": "NoReboot", "rebootTimeoutSeconds": 0}),
        ),
    )
    .await;
    let up = terminal(&client, ns.name(), "stage", Duration::from_secs(60)).await;
    assert_eq!(
        phase(&up),
        Some(UpgradePhase::Succeeded),
        "{:#?}",
        up.status
    );
    assert_eq!(reason(&up), "StagedForNextReload");
    assert_eq!(
        condition(&up, "ActivationComplete"),
        ("True".into(), "ImageStaged".into())
    );
    assert_eq!(
        up.status.as_ref().unwrap().running_version.as_deref(),
        Some(OLD)
    );
    let a = sim.journal_for(ACTIVATE);
    assert_eq!(a.len(), 1);
    assert_eq!(
        a[0].fields.get("no_reboot").map(String::as_str),
        Some("true")
    );
    let snap = sim.snapshot();
    assert_eq!(snap.running_version, OLD);
    assert_eq!(snap.boot_version.as_deref(), Some(NEW));
    assert_eq!(snap.boot_count, boots_before, "NoReboot must not reload");
    // The later reload runs the staged image.
    sim.reboot(Duration::ZERO, "maintenance window reload")
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while sim.snapshot().running_version != NEW {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the reload did not boot {NEW}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    fx.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_path_is_checked_through_file_get_and_the_spec_example_is_refused() {
    let fx = Fixture::builder("upg-local")
        .fleet_config(upgrade_fleet(2))
        .controllers(upgrade_settings)
        .start()
        .await;
    let (client, ns, fleet) = (fx.client.clone(), fx.namespace(), fx.fleet());
    let (sim, sim3) = (fleet.nth(0).unwrap(), fleet.nth(1).unwrap());
    device(&client, ns.name(), "sw", sim.addr().port()).await;
    let bytes = image(NEW);
    let (version, path) = stage(&sim, &bytes).await;
    assert_eq!(version, NEW);
    let digest = hex::encode(Sha256::digest(&bytes));
    upgrade(
        &client,
        ns.name(),
        "local",
        json!({
            "deviceRef": {"name": "sw"},
            "imageSource": {"localPath": path, "localPathSHA256": digest},
            "targetVersion": TARGET,
            "rebootTimeoutSeconds": 60,
        }),
    )
    .await;
    let up = terminal(&client, ns.name(), "local", Duration::from_secs(60)).await;
    assert_eq!(
        phase(&up),
        Some(UpgradePhase::Succeeded),
        "{:#?}",
        up.status
    );
    assert_eq!(
        condition(&up, "ImageVerified"),
        ("True".into(), "SHA256Match".into())
    );
    assert_eq!(
        condition(&up, "TransferComplete"),
        ("True".into(), "ImageAlreadyPresent".into())
    );
    assert!(!sim.journal_for("/gnoi.file.File/Get").is_empty());
    assert!(sim.journal_for("/gnoi.os.OS/Install").is_empty());
    let seq = phase_sequence(&transitions(&client, ns.name(), "local").await);
    assert!(!seq.contains(&"Transferring".to_owned()), "{seq:?}");

    // The specification's example, applied as published (name and
    // namespace templated): its localPathSHA256 is a shortened
    // "a1b2c3d4e5f6..." rather than a SHA-256, so the controller ends it
    // PreflightFailed (InvalidImageSource) before the device is touched.
    device(&client, ns.name(), "cat9000-3", sim3.addr().port()).await;
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../kind/examples/iosxesoftwareupgrade-localpath.yaml"),
    )
    .unwrap();
    let mut obj: Value = serde_yaml::from_str(&text).unwrap();
    obj["metadata"]["namespace"] = json!(ns.name());
    create::<IOSXESoftwareUpgrade>(&client, ns.name(), obj).await;
    let ex = terminal(
        &client,
        ns.name(),
        "upgrade-cat9000-3-17-18-02",
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(phase(&ex), Some(UpgradePhase::PreflightFailed));
    assert_eq!(reason(&ex), "InvalidImageSource");
    assert!(
        ex.status
            .unwrap()
            .message
            .unwrap()
            .contains("localPathSHA256")
    );
    // Only the CiscoDevice probe talked to it: no install, activation or
    // file read.
    for m in ["/gnoi.os.OS/Install", ACTIVATE, "/gnoi.file.File/"] {
        assert!(calls(&sim3, m).is_empty(), "{m}");
    }
    fx.finish().await;
}

/// ISSU on the simulator: a device whose state says it upgrades in
/// service reports the ISSU path through gNMI
/// (`/system/install/state/issu-state`) after the activation's boot and the
/// upgrade succeeds; one that does not ends Failed `ISSUNotSelected` even
/// though it runs the target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issu_succeeds_only_when_the_device_takes_the_issu_path() {
    let fx = Fixture::builder("upg-issu")
        .fleet_config(upgrade_fleet(2))
        .controllers(upgrade_settings)
        .start()
        .await;
    let (client, ns, fleet) = (fx.client.clone(), fx.namespace(), fx.fleet());
    let (capable, plain) = (fleet.nth(0).unwrap(), fleet.nth(1).unwrap());
    capable
        .apply(iosxe_sim::StatePatch {
            issu_capable: Some(true),
            ..Default::default()
        })
        .unwrap();
    device(&client, ns.name(), "issu", capable.addr().port()).await;
    device(&client, ns.name(), "plain", plain.addr().port()).await;
    image_configmap(&client, ns.name(), "img", &image(NEW)).await;
    for name in ["issu", "plain"] {
        upgrade(
            &client,
            ns.name(),
            name,
            cm_spec(
                name,
                json!({"strategy": "ISSU", "rollbackOnFailure": false}),
            ),
        )
        .await;
    }

    let up = terminal(&client, ns.name(), "issu", Duration::from_secs(90)).await;
    assert_eq!(
        phase(&up),
        Some(UpgradePhase::Succeeded),
        "{:#?}",
        up.status
    );
    assert_eq!(
        condition(&up, "VerificationPassed"),
        ("True".into(), "VersionMatch".into())
    );
    let snap = capable.snapshot();
    assert_eq!(snap.running_version, NEW);
    assert!(snap.last_activation_issu);
    let a = capable.journal_for(ACTIVATE);
    assert_eq!(a.len(), 1);
    assert_ne!(
        a[0].fields.get("no_reboot").map(String::as_str),
        Some("true"),
        "ISSU activates with reboot allowed"
    );

    let failed = terminal(&client, ns.name(), "plain", Duration::from_secs(90)).await;
    assert_eq!(
        phase(&failed),
        Some(UpgradePhase::Failed),
        "{:#?}",
        failed.status
    );
    assert_eq!(reason(&failed), "ISSUNotSelected");
    assert_eq!(
        condition(&failed, "VerificationPassed"),
        ("False".into(), "ISSUNotSelected".into())
    );
    let msg = failed.status.as_ref().unwrap().message.clone().unwrap();
    assert!(msg.contains("ISSU path"), "{msg}");
    // It did boot the target; only the path is wrong.
    let snap = plain.snapshot();
    assert_eq!(snap.running_version, NEW);
    assert!(!snap.last_activation_issu);
    assert_eq!(plain.journal_for(ACTIVATE).len(), 1);
    fx.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn booting_the_old_image_rolls_back_or_fails() {
    let fx = Fixture::builder("upg-rollback")
        .fleet_config(upgrade_fleet(2))
        .controllers(upgrade_settings)
        .start()
        .await;
    let (client, ns, fleet) = (fx.client.clone(), fx.namespace(), fx.fleet());
    let (a, b) = (fleet.nth(0).unwrap(), fleet.nth(1).unwrap());
    device(&client, ns.name(), "sw-a", a.addr().port()).await;
    device(&client, ns.name(), "sw-b", b.addr().port()).await;
    image_configmap(&client, ns.name(), "img", &image(NEW)).await;
    inject(&a, json!({"kind": "boot_old_image", "once": true}));
    inject(&b, json!({"kind": "boot_old_image", "once": true}));
    upgrade(&client, ns.name(), "with", cm_spec("sw-a", json!({}))).await;
    upgrade(
        &client,
        ns.name(),
        "without",
        cm_spec("sw-b", json!({"rollbackOnFailure": false})),
    )
    .await;

    let with = terminal(&client, ns.name(), "with", Duration::from_secs(90)).await;
    assert_eq!(
        phase(&with),
        Some(UpgradePhase::RolledBack),
        "{:#?}",
        with.status
    );
    assert_eq!(
        with.status.as_ref().unwrap().running_version.as_deref(),
        Some(OLD)
    );
    let acts = a.journal_for(ACTIVATE);
    assert_eq!(acts.len(), 2, "{acts:#?}");
    assert_eq!(acts[1].fields.get("version").map(String::as_str), Some(OLD));
    let seq = phase_sequence(&transitions(&client, ns.name(), "with").await);
    assert!(
        seq.ends_with(&[
            "Verifying".into(),
            "RollingBack".into(),
            "RolledBack".into()
        ]),
        "{seq:?}"
    );
    assert_eq!(condition(&with, "VerificationPassed").1, "VersionMismatch");

    let without = terminal(&client, ns.name(), "without", Duration::from_secs(90)).await;
    assert_eq!(
        phase(&without),
        Some(UpgradePhase::Failed),
        "{:#?}",
        without.status
    );
    assert_eq!(reason(&without), "VersionMismatch");
    assert_eq!(b.journal_for(ACTIVATE).len(), 1);
    assert_eq!(b.snapshot().running_version, OLD);
    fx.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_reached_through_their_faults() {
    let fx = Fixture::builder("upg-faults")
        .fleet_config(upgrade_fleet(6))
        .controllers(upgrade_settings)
        .start()
        .await;
    let (client, ns, fleet) = (fx.client.clone(), fx.namespace(), fx.fleet());
    image_configmap(&client, ns.name(), "img", &image(NEW)).await;
    let mut sims = Vec::new();
    for i in 0..6 {
        let sim = fleet.nth(i).unwrap();
        device(&client, ns.name(), &format!("sw{i}"), sim.addr().port()).await;
        sims.push(sim);
    }
    // 0: the reboot never ends.
    inject(&sims[0], json!({"kind": "endless_reboot"}));
    upgrade(
        &client,
        ns.name(),
        "endless",
        cm_spec("sw0", json!({"rebootTimeoutSeconds": 4})),
    )
    .await;
    // 1: the image lands damaged.
    inject(&sims[1], json!({"kind": "corrupt_image", "once": true}));
    upgrade(&client, ns.name(), "corrupt", cm_spec("sw1", json!({}))).await;
    // 2: one interrupted transfer, recovered by a retry.
    inject(
        &sims[2],
        json!({"method": "/gnoi.os.OS/Install", "kind": "cut", "after_bytes": 200000, "once": true}),
    );
    upgrade(&client, ns.name(), "retry", cm_spec("sw2", json!({}))).await;
    // 3: the same interruption under Abort.
    inject(
        &sims[3],
        json!({"method": "/gnoi.os.OS/Install", "kind": "cut", "after_bytes": 200000, "once": true}),
    );
    upgrade(
        &client,
        ns.name(),
        "abort",
        cm_spec("sw3", json!({"resumePolicy": "Abort"})),
    )
    .await;
    // 4: flash full.
    inject(&sims[4], json!({"kind": "flash_full"}));
    upgrade(&client, ns.name(), "full", cm_spec("sw4", json!({}))).await;
    // 5: gNOI OS not implemented.
    inject(
        &sims[5],
        json!({"method": "gnoi.os.OS", "kind": "unimplemented"}),
    );
    upgrade(&client, ns.name(), "unimpl", cm_spec("sw5", json!({}))).await;

    let expect = [
        ("endless", UpgradePhase::RebootTimeout, "RebootTimeout", 1),
        (
            "corrupt",
            UpgradePhase::ValidationFailed,
            "ImageIntegrityFailed",
            0,
        ),
        ("retry", UpgradePhase::Succeeded, "VersionMatch", 1),
        ("abort", UpgradePhase::Failed, "TransferInterrupted", 0),
        (
            "full",
            UpgradePhase::PreflightFailed,
            "InsufficientFlash",
            0,
        ),
        (
            "unimpl",
            UpgradePhase::PreflightFailed,
            "OSServiceUnsupported",
            0,
        ),
    ];
    for (i, (name, want, why, activates)) in expect.into_iter().enumerate() {
        let up = terminal(&client, ns.name(), name, Duration::from_secs(90)).await;
        assert_eq!(phase(&up), Some(want), "{name}: {:#?}", up.status);
        assert_eq!(reason(&up), why, "{name}: {:#?}", up.status);
        assert_eq!(sims[i].journal_for(ACTIVATE).len(), activates, "{name}");
    }
    let retry = terminal(&client, ns.name(), "retry", Duration::from_secs(5)).await;
    assert_eq!(retry.status.as_ref().unwrap().retry_count, Some(1));
    let seq = phase_sequence(&transitions(&client, ns.name(), "retry").await);
    assert!(seq.contains(&"TransferInterrupted".to_owned()), "{seq:?}");
    assert_eq!(sims[2].journal_for("/gnoi.os.OS/Install").len(), 2);
    assert_eq!(sims[1].snapshot().running_version, OLD);
    fx.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_locks_and_deletion() {
    let fx = Fixture::builder("upg-window")
        .fleet_config(upgrade_fleet(2))
        .controllers(upgrade_settings)
        .start()
        .await;
    let (client, ns, fleet) = (fx.client.clone(), fx.namespace(), fx.fleet());
    let (a, b) = (fleet.nth(0).unwrap(), fleet.nth(1).unwrap());
    device(&client, ns.name(), "sw-a", a.addr().port()).await;
    device(&client, ns.name(), "sw-b", b.addr().port()).await;
    image_configmap(&client, ns.name(), "img", &image(NEW)).await;
    let api: Api<IOSXESoftwareUpgrade> = Api::namespaced(client.clone(), ns.name());

    // A window that opens in a few seconds: Pending until then.
    let opens = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(5);
    upgrade(
        &client,
        ns.name(),
        "later",
        cm_spec(
            "sw-a",
            json!({"maintenanceWindow": {"notBefore": opens.to_string()}}),
        ),
    )
    .await;
    let waiting = wait_for(&api, "later", Duration::from_secs(20), |u| {
        reason(u) == "MaintenanceWindowNotOpen"
    })
    .await;
    assert_eq!(phase(&waiting), Some(UpgradePhase::Pending));
    assert!(a.journal_for("/gnoi.os.OS/").is_empty());
    let done = terminal(&client, ns.name(), "later", Duration::from_secs(60)).await;
    assert_eq!(
        phase(&done),
        Some(UpgradePhase::Succeeded),
        "{:#?}",
        done.status
    );
    // metav1.Time keeps whole seconds.
    let opens_s = opens.as_second();
    assert!(done.status.unwrap().start_time.unwrap().0.as_second() >= opens_s);

    // A closed window fails before anything is sent.
    let closed = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(60);
    upgrade(
        &client,
        ns.name(),
        "closed",
        cm_spec(
            "sw-b",
            json!({"maintenanceWindow": {"notAfter": closed.to_string()}}),
        ),
    )
    .await;
    let up = terminal(&client, ns.name(), "closed", Duration::from_secs(20)).await;
    assert_eq!(reason(&up), "MaintenanceWindowExpired");
    assert_eq!(phase(&up), Some(UpgradePhase::PreflightFailed));

    // A stalled transfer holds the device: a second upgrade waits on the
    // Lease; deleting the first cancels it and the device is untouched.
    inject(
        &b,
        json!({"method": "/gnoi.os.OS/Install", "kind": "stall", "after_bytes": 100000}),
    );
    upgrade(&client, ns.name(), "stalled", cm_spec("sw-b", json!({}))).await;
    wait_for(&api, "stalled", Duration::from_secs(30), |u| {
        phase(u) == Some(UpgradePhase::Transferring)
    })
    .await;
    upgrade(&client, ns.name(), "second", cm_spec("sw-b", json!({}))).await;
    let second = wait_for(&api, "second", Duration::from_secs(30), |u| {
        reason(u) == "DeviceLocked"
    })
    .await;
    assert!(second.status.unwrap().message.unwrap().contains("stalled"));
    api.delete("stalled", &DeleteParams::default())
        .await
        .unwrap();
    wait_gone(&api, "stalled", Duration::from_secs(30)).await;
    assert!(b.journal_for(ACTIVATE).is_empty());
    assert_eq!(b.snapshot().running_version, OLD);
    let evs = transitions(&client, ns.name(), "stalled").await;
    assert!(
        evs.iter()
            .any(|n| n.starts_with("Transferring → Cancelled")),
        "{evs:#?}"
    );
    // The lock is free again. The device still holds the stalled install
    // session, so the second upgrade waits for it (never sending an
    // Install over it) until a reload clears it.
    b.clear_faults();
    let busy = wait_for(&api, "second", Duration::from_secs(30), |u| {
        reason(u) == "InstallInProgress"
    })
    .await;
    assert_eq!(phase(&busy), Some(UpgradePhase::Resolving));
    assert_eq!(b.journal_for("/gnoi.os.OS/Install").len(), 1);
    b.reboot(Duration::ZERO, "clear the stuck install").unwrap();
    let second = terminal(&client, ns.name(), "second", Duration::from_secs(60)).await;
    assert_eq!(
        phase(&second),
        Some(UpgradePhase::Succeeded),
        "{:#?}",
        second.status
    );
    fx.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_source_streams_verifies_the_digest_and_retries() {
    let fx = Fixture::builder("upg-http")
        .fleet_config(upgrade_fleet(3))
        .controllers(upgrade_settings)
        .start()
        .await;
    let (client, ns, fleet) = (fx.client.clone(), fx.namespace(), fx.fleet());
    let dir = tempfile::tempdir().unwrap();
    const OTHER: &str = "17.18.04.0.4300.1771000000";
    std::fs::write(dir.path().join("new.bin"), image(NEW)).unwrap();
    std::fs::write(dir.path().join("other.bin"), image(OTHER)).unwrap();
    let http =
        iosxe_sim::image_servers::HttpServer::start(dir.path(), "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
    let sims: Vec<_> = (0..3).map(|i| fleet.nth(i).unwrap()).collect();
    for (i, sim) in sims.iter().enumerate() {
        device(&client, ns.name(), &format!("sw{i}"), sim.addr().port()).await;
    }
    let sha = |b: &[u8]| hex::encode(Sha256::digest(b));
    let url_spec = |dev: &str, file: &str, digest: String, target: &str| {
        json!({
            "deviceRef": {"name": dev},
            "imageSource": {"url": http.url(file), "sha256": digest},
            "targetVersion": target,
            "rebootTimeoutSeconds": 60,
        })
    };
    upgrade(
        &client,
        ns.name(),
        "ok",
        url_spec("sw0", "new.bin", sha(&image(NEW)), TARGET),
    )
    .await;
    // A digest the bytes do not have (and no cached image has: the cache
    // is content-addressed, so a known digest would be served from it).
    upgrade(
        &client,
        ns.name(),
        "bad",
        url_spec("sw1", "other.bin", sha(b"some other bytes"), "17.18.04"),
    )
    .await;
    let ok = terminal(&client, ns.name(), "ok", Duration::from_secs(60)).await;
    assert_eq!(
        phase(&ok),
        Some(UpgradePhase::Succeeded),
        "{:#?}",
        ok.status
    );
    let notes = transitions(&client, ns.name(), "ok").await;
    assert!(
        notes.contains(&"Transferring → Validating: image hash verified".to_owned()),
        "{notes:#?}"
    );
    let bad = terminal(&client, ns.name(), "bad", Duration::from_secs(60)).await;
    assert_eq!(
        phase(&bad),
        Some(UpgradePhase::ValidationFailed),
        "{:#?}",
        bad.status
    );
    assert_eq!(reason(&bad), "SourceDigestMismatch");
    assert!(sims[1].journal_for(ACTIVATE).is_empty());
    assert!(
        !sims[1].snapshot().staged.iter().any(|i| i.version == OTHER),
        "a wrong image must not be staged"
    );

    // A download cut once is retried; the retry completes.
    http.faults().cut_next(200_000, 1);
    upgrade(
        &client,
        ns.name(),
        "cut",
        url_spec("sw2", "other.bin", sha(&image(OTHER)), "17.18.04"),
    )
    .await;
    let cut = terminal(&client, ns.name(), "cut", Duration::from_secs(90)).await;
    assert_eq!(
        phase(&cut),
        Some(UpgradePhase::Succeeded),
        "{:#?}",
        cut.status
    );
    assert_eq!(cut.status.as_ref().unwrap().retry_count, Some(1));
    assert_eq!(sims[2].snapshot().running_version, OTHER);
    fx.finish().await;
}

/// Reads a walkthrough manifest of `kind/examples` and points it at this
/// test: namespace, device and (the published URL and digest name a real
/// 1.2 GB image on a cluster TFTP service) a loopback server's URL and the
/// generated image's digest. Everything else is as published.
fn example(file: &str, ns: &str, device: &str, url: &str, sha256: &str) -> Value {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../kind/examples")
            .join(file),
    )
    .unwrap();
    let mut obj: Value = serde_yaml::from_str(&text).unwrap();
    obj["metadata"]["namespace"] = json!(ns);
    obj["spec"]["deviceRef"]["name"] = json!(device);
    obj["spec"]["imageSource"]["url"] = json!(url);
    obj["spec"]["imageSource"]["sha256"] = json!(sha256);
    obj
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_walkthrough_manifests_reload_and_noreboot() {
    let fx = Fixture::builder("upg-walk")
        .fleet_config(upgrade_fleet(2))
        .controllers(upgrade_settings)
        .start()
        .await;
    let (client, ns, fleet) = (fx.client.clone(), fx.namespace(), fx.fleet());
    let (s4, s5) = (fleet.nth(0).unwrap(), fleet.nth(1).unwrap());
    device(&client, ns.name(), "cat9000-4", s4.addr().port()).await;
    device(&client, ns.name(), "cat9000-5", s5.addr().port()).await;
    // The walkthrough's target is 26.01.01; the device reports the build.
    const BUILD: &str = "26.01.01.0.340";
    let dir = tempfile::tempdir().unwrap();
    let bytes = image(BUILD);
    std::fs::create_dir_all(dir.path().join("images")).unwrap();
    std::fs::write(
        dir.path().join("images/cat9k_iosxe.26.01.01.SPA.bin"),
        &bytes,
    )
    .unwrap();
    // Served over TFTP like the published manifests (same path), by the
    // loopback TFTP server of the simulator crate.
    let tftp =
        iosxe_sim::image_servers::TftpServer::start(dir.path(), "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
    let url = tftp.url("images/cat9k_iosxe.26.01.01.SPA.bin");
    assert!(url.starts_with("tftp://127.0.0.1:"), "{url}");
    let digest = hex::encode(Sha256::digest(&bytes));

    let reload = example(
        "iosxesoftwareupgrade-tftp.yaml",
        ns.name(),
        "cat9000-4",
        &url,
        &digest,
    );
    create::<IOSXESoftwareUpgrade>(&client, ns.name(), reload).await;
    let stage = example(
        "iosxesoftwareupgrade-noreboot.yaml",
        ns.name(),
        "cat9000-5",
        &url,
        &digest,
    );
    create::<IOSXESoftwareUpgrade>(&client, ns.name(), stage).await;

    let up = terminal(
        &client,
        ns.name(),
        "upgrade-cat9000-4-26-01-01",
        Duration::from_secs(90),
    )
    .await;
    assert_eq!(
        phase(&up),
        Some(UpgradePhase::Succeeded),
        "{:#?}",
        up.status
    );
    let st = up.status.clone().unwrap();
    assert_eq!(st.target_version.as_deref(), Some("26.01.01"));
    assert_eq!(st.running_version.as_deref(), Some(BUILD));
    for (t, r) in [
        ("TransferComplete", "ImageTransferred"),
        ("ValidationPassed", "PrefligthOK"),
        ("ActivationComplete", "OSActivated"),
        ("VerificationPassed", "VersionMatch"),
    ] {
        assert_eq!(condition(&up, t), ("True".into(), r.into()), "{t}");
    }
    let notes = transitions(&client, ns.name(), "upgrade-cat9000-4-26-01-01").await;
    assert_eq!(
        phase_sequence(&notes),
        [
            "Pending",
            "Resolving",
            "Transferring",
            "Validating",
            "Activating",
            "AwaitingReachability",
            "Verifying",
            "Succeeded"
        ],
        "{notes:#?}"
    );
    for n in [
        "Transferring → Validating: image hash verified".to_owned(),
        "Activating → AwaitingReachability: OS.Activate sent".to_owned(),
        format!("Verifying → Succeeded: running {BUILD}"),
    ] {
        assert!(notes.contains(&n), "{n} missing from {notes:#?}");
    }

    let staged = terminal(
        &client,
        ns.name(),
        "upgrade-cat9000-5-26-01-01",
        Duration::from_secs(90),
    )
    .await;
    assert_eq!(
        phase(&staged),
        Some(UpgradePhase::Succeeded),
        "{:#?}",
        staged.status
    );
    assert_eq!(reason(&staged), "StagedForNextReload");
    assert_eq!(s5.snapshot().running_version, OLD);
    assert_eq!(s5.snapshot().boot_version.as_deref(), Some(BUILD));
    // The bytes came over TFTP: at least one complete download of the
    // image (the digest cache may let the second object share it).
    assert!(tftp.stats().completed() >= 1, "no complete TFTP download");
    assert!(tftp.stats().bytes() >= bytes.len() as u64);
    fx.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_global_transfer_limit_serialises_transfers() {
    let fx = Fixture::builder("upg-limit")
        .fleet_config(upgrade_fleet(3))
        .controllers(|ns| {
            let mut settings = upgrade_settings(ns);
            settings.upgrade.max_concurrent_transfers = 1;
            settings
        })
        .start()
        .await;
    let (client, ns, fleet) = (fx.client.clone(), fx.namespace(), fx.fleet());
    image_configmap(&client, ns.name(), "img", &image(NEW)).await;
    let sims: Vec<_> = (0..3).map(|i| fleet.nth(i).unwrap()).collect();
    for (i, sim) in sims.iter().enumerate() {
        // Slow installs, so that overlapping transfers would show.
        inject(
            sim,
            json!({"method": "/gnoi.os.OS/Install", "kind": "latency", "ms": 700}),
        );
        device(&client, ns.name(), &format!("sw{i}"), sim.addr().port()).await;
        upgrade(
            &client,
            ns.name(),
            &format!("up{i}"),
            cm_spec(&format!("sw{i}"), json!({})),
        )
        .await;
    }
    let mut spans = Vec::new();
    for (i, sim) in sims.iter().enumerate() {
        let up = terminal(
            &client,
            ns.name(),
            &format!("up{i}"),
            Duration::from_secs(90),
        )
        .await;
        assert_eq!(
            phase(&up),
            Some(UpgradePhase::Succeeded),
            "{:#?}",
            up.status
        );
        let inst = sim.journal_for("/gnoi.os.OS/Install");
        assert_eq!(inst.len(), 1);
        let start = inst[0].time_ns;
        spans.push((start, start + inst[0].duration_ms * 1_000_000));
    }
    spans.sort();
    for w in spans.windows(2) {
        assert!(
            w[1].0 >= w[0].1,
            "transfers overlapped with a limit of 1: {spans:?}"
        );
    }
    fx.finish().await;
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn_controller(
    kubeconfig: &Path,
    ns: &str,
    device: &str,
    pause: Option<(&str, &Path)>,
) -> tokio::process::Child {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_cvk-controller"));
    cmd.arg("run")
        .args([
            "--metrics-bind-address",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .args([
            "--health-probe-bind-address",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .args(["--namespace", ns, "--device", device])
        .args(["--install-chunk-bytes", "65536"])
        .env("KUBECONFIG", kubeconfig)
        .env("CISCO_VK_GNOI_INSECURE", "1")
        .env("CISCO_VK_ENABLE_IOSXE_SOFTWARE_UPGRADE", "1")
        .env("CVK_LOG_FORMAT", "text")
        .env("LOG_LEVEL", "warn")
        .env_remove("CVK_PAUSE_AT")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    if let Some((point, file)) = pause {
        cmd.env("CVK_PAUSE_AT", point).env("CVK_PAUSE_FILE", file);
    }
    cmd.spawn().expect("cvk-controller")
}

/// Kills the controller with SIGKILL at every phase boundary and at both
/// activation points; the restarted controller finishes the upgrade, and the
/// device never sees OS.Activate twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_every_boundary_activates_at_most_once() {
    let points_len = 8;
    let fx = Fixture::builder("upg-crash")
        .fleet_config(upgrade_fleet(points_len))
        .start()
        .await;
    let (client, ns, fleet) = (fx.client.clone(), fx.namespace(), fx.fleet());
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    cvk_hil::testing::shared_control_plane()
        .write_kubeconfig(&kubeconfig)
        .unwrap();
    let points = [
        ("upgrade-enter-Resolving", UpgradePhase::Succeeded),
        ("upgrade-enter-Transferring", UpgradePhase::Succeeded),
        ("upgrade-enter-Validating", UpgradePhase::Succeeded),
        // Activating is written together with the marker, before
        // OS.Activate goes out: after the restart it is observed, not
        // replayed, so the device never reloads.
        ("upgrade-enter-Activating", UpgradePhase::RebootTimeout),
        (
            "upgrade-after-activation-marker",
            UpgradePhase::RebootTimeout,
        ),
        ("upgrade-after-activate", UpgradePhase::Succeeded),
        (
            "upgrade-enter-AwaitingReachability",
            UpgradePhase::Succeeded,
        ),
        ("upgrade-enter-Verifying", UpgradePhase::Succeeded),
    ];
    assert_eq!(points.len(), points_len);
    image_configmap(&client, ns.name(), "img", &image(NEW)).await;
    let runs = points.iter().enumerate().map(|(i, (point, want))| {
        let (client, ns, dir, kubeconfig) = (
            client.clone(),
            ns.name().to_owned(),
            dir.path().to_owned(),
            kubeconfig.clone(),
        );
        let sim = fleet.nth(i).unwrap();
        async move {
            let dev = format!("sw{i}");
            device(&client, &ns, &dev, sim.addr().port()).await;
            let file = dir.join(format!("pause-{i}"));
            let mut first = spawn_controller(&kubeconfig, &ns, &dev, Some((point, &file)));
            let name = format!("crash{i}");
            upgrade(
                &client,
                &ns,
                &name,
                cm_spec(&dev, json!({"rebootTimeoutSeconds": 12})),
            )
            .await;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
            while !std::fs::read_to_string(&file).is_ok_and(|s| s.contains(point)) {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{point}: never reached"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            first.start_kill().unwrap();
            first.wait().await.unwrap();
            let mut second = spawn_controller(&kubeconfig, &ns, &dev, None);
            let up = terminal(&client, &ns, &name, Duration::from_secs(120)).await;
            second.start_kill().unwrap();
            second.wait().await.unwrap();
            let activates = sim.journal_for(ACTIVATE).len();
            (point.to_string(), phase(&up), *want, activates, up.status)
        }
    });
    for (point, got, want, activates, status) in futures::future::join_all(runs).await {
        assert_eq!(got, Some(want), "{point}: {status:#?}");
        assert!(activates <= 1, "{point}: {activates} OS.Activate calls");
        let expected = usize::from(want != UpgradePhase::RebootTimeout);
        assert_eq!(activates, expected, "{point}");
    }
    fx.finish().await;
}
