//! `kind/`: every manifest parses; the kind manifests apply to a real
//! kube-apiserver (the local control plane, RBAC on); the controller does
//! its work as its own ServiceAccount with nothing but the ClusterRole of
//! `kind/rbac/controller.yaml`; the people roles split by trust level as the
//! specification says.

mod kind_common;

use std::path::Path;
use std::time::Duration;

use cvk_controller::config::Gates;
use cvk_controller::crd::{
    CiscoDevice, DeviceOperation, IOSXEOperationalAction, IOSXESoftwareRollout,
    IOSXESoftwareUpgrade,
};
use cvk_controller::lease::{Acquire, DeviceLocks, LeaseHolder};
use cvk_controller::reconcile::{ControllerSettings, run_controllers};
use cvk_hil::testing::{TestNamespace, install_project_crds, shared_control_plane};
use iosxe_sim::{Fleet, FleetConfig, Profile};
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::events::v1::Event;
use kind_common::*;
use kube::api::{ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const CONTROLLER_SA: &str = "system:serviceaccount:cvk-system:cvk-controller";

fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            // Chart templates are Go templates, not YAML; the chart test
            // renders them with Helm.
            if !p.ends_with("templates") {
                walk(&p, out);
            }
        } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            out.push(p);
        }
    }
}

#[test]
fn every_manifest_under_kind_parses() {
    let mut files = Vec::new();
    walk(&repo().join("kind"), &mut files);
    files.sort();
    let mut objects = 0;
    for f in &files {
        let docs = docs(f);
        assert!(!docs.is_empty(), "{}: no document", f.display());
        let name = f.file_name().unwrap().to_string_lossy();
        if name == "values.yaml" {
            assert!(
                docs[0]["gnoi"].is_object(),
                "{}: no gnoi block",
                f.display()
            );
            continue;
        }
        if name == "Chart.yaml" {
            assert_eq!(docs[0]["apiVersion"], "v2", "{}", f.display());
            continue;
        }
        for (i, d) in docs.iter().enumerate() {
            let at = format!("{} document {i}", f.display());
            assert!(d["apiVersion"].is_string(), "{at}: no apiVersion");
            assert!(d["kind"].is_string(), "{at}: no kind");
            if d["kind"] != "Cluster" {
                assert!(d["metadata"]["name"].is_string(), "{at}: no metadata.name");
            }
            objects += 1;
        }
    }
    // Guard against a walk that finds nothing.
    assert!(files.len() >= 30, "only {} files under kind/", files.len());
    assert!(objects >= 40, "only {objects} objects under kind/");
}

#[test]
fn the_dockerfiles_build_each_binary_locked_and_run_it_as_non_root() {
    for (file, bin) in [
        ("controller.Dockerfile", "cvk-controller"),
        ("sim.Dockerfile", "iosxe-sim"),
    ] {
        let text = std::fs::read_to_string(repo().join("kind/docker").join(file)).unwrap();
        assert_eq!(
            text.matches("\nFROM ").count() + text.starts_with("FROM ") as usize,
            2,
            "{file}: two stages"
        );
        assert!(
            text.contains(&format!(
                "cargo build --release --locked -p {bin} --bin {bin}"
            )),
            "{file}"
        );
        assert!(text.contains("USER 65532:65532"), "{file}: non-root");
        assert!(
            text.contains(&format!("ENTRYPOINT [\"/usr/local/bin/{bin}\"]")),
            "{file}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kind_manifests_apply_to_a_real_api_server() {
    let client = shared_control_plane().client().await.unwrap();
    install_project_crds(&client).await.unwrap();
    let mut all = Vec::new();
    for rel in [
        "rbac/namespace.yaml",
        "rbac/controller.yaml",
        "rbac/users.yaml",
        "controller/central.yaml",
        "controller/per-device.yaml",
        "sim/iosxe-sim.yaml",
        "sim/devices.yaml",
        "e2e/smoke.yaml",
    ] {
        let applied = apply(&client, &kind_docs(rel))
            .await
            .unwrap_or_else(|e| panic!("kind/{rel}: {e}"));
        all.extend(applied);
    }
    assert_eq!(all.len(), 25, "{all:#?}");
    // The devices point at the simulator Service and its ports.
    let devices: Api<CiscoDevice> = Api::namespaced(client.clone(), "cvk-lab");
    let sim1 = devices.get("sim-1").await.unwrap();
    assert_eq!(sim1.spec.address, "iosxe-sim.cvk-system.svc.cluster.local");
    let svc = find(&kind_docs("sim/iosxe-sim.yaml"), "Service", "iosxe-sim").clone();
    let ports: Vec<i64> = svc["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["port"].as_i64().unwrap())
        .collect();
    for d in kind_docs("sim/devices.yaml")
        .iter()
        .filter(|d| d["kind"] == "CiscoDevice")
    {
        let port = d["spec"]["gnoi"]["port"].as_i64().unwrap();
        assert!(ports.contains(&port), "{port} is not a Service port");
    }
    // The per-device controller serves one device; the central one all.
    let per = find(
        &kind_docs("controller/per-device.yaml"),
        "Deployment",
        "sim-0-vk",
    )
    .clone();
    let env = container_env(&per);
    assert_eq!(env["CISCO_VK_DEVICE_NAME"], "sim-0");
    assert_eq!(env["CISCO_VK_DEVICE_NAMESPACE"], "cvk-lab");
    assert_eq!(per["spec"]["strategy"]["type"], "Recreate");
    let central = find(
        &kind_docs("controller/central.yaml"),
        "Deployment",
        "cvk-controller",
    )
    .clone();
    assert_eq!(
        central["spec"]["template"]["spec"]["containers"][0]["args"],
        json!(["run", "--all-namespaces"])
    );
}

/// An admin kubeconfig turned into a client that impersonates `user` in
/// `groups`: every request is authorized as that identity.
async fn impersonating(user: &str, groups: &[&str]) -> Client {
    let cp = shared_control_plane();
    let kubeconfig = Kubeconfig::from_yaml(cp.kubeconfig_yaml()).unwrap();
    let mut config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .unwrap();
    config.auth_info.impersonate = Some(user.to_owned());
    config.auth_info.impersonate_groups = Some(groups.iter().map(|g| (*g).to_owned()).collect());
    Client::try_from(config).unwrap()
}

async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_does_its_work_with_only_its_cluster_role() {
    let admin = shared_control_plane().client().await.unwrap();
    install_project_crds(&admin).await.unwrap();
    apply(&admin, &kind_docs("rbac/namespace.yaml"))
        .await
        .unwrap();
    apply(&admin, &kind_docs("rbac/controller.yaml"))
        .await
        .unwrap();
    let ns = TestNamespace::create(&admin, "rbac-ctl").await.unwrap();
    let ns_name = ns.name().to_owned();
    let sa = impersonating(
        CONTROLLER_SA,
        &[
            "system:serviceaccounts",
            "system:serviceaccounts:cvk-system",
            "system:authenticated",
        ],
    )
    .await;

    // Impersonation is in effect: what the ClusterRole does not grant is
    // refused (listing Secrets, writing a CiscoDevice's spec).
    let e = Api::<Secret>::namespaced(sa.clone(), &ns_name)
        .list(&ListParams::default())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("forbidden"), "{e}");

    let fleet = Fleet::start(
        FleetConfig::new(1, Profile::load("c9300-17.18").unwrap())
            .credentials("cvk", "kind-rbac")
            .reboot_ms(500),
    )
    .await
    .unwrap();
    let sim = fleet.nth(0).unwrap();
    let secret: Secret = serde_json::from_value(json!({
        "metadata": { "name": "sw-credentials" },
        "stringData": { "username": "cvk", "password": "kind-rbac" }
    }))
    .unwrap();
    Api::<Secret>::namespaced(admin.clone(), &ns_name)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let device: CiscoDevice = serde_json::from_value(json!({
        "apiVersion": "cisco.vk/v1alpha1", "kind": "CiscoDevice",
        "metadata": { "name": "sw" },
        "spec": { "driver": "XE", "address": "127.0.0.1",
                  "credentialSecretRef": { "name": "sw-credentials" },
                  "gnoi": { "transportSecurity": "insecure", "port": sim.addr().port() } }
    }))
    .unwrap();
    Api::<CiscoDevice>::namespaced(admin.clone(), &ns_name)
        .create(&PostParams::default(), &device)
        .await
        .unwrap();

    // The controllers, in-process, authenticated as the ServiceAccount.
    let mut settings = ControllerSettings::for_namespace(&ns_name);
    settings.gnoi.insecure = true;
    settings.probe_interval = Duration::from_secs(600);
    // Outputs over 64 bytes spill to a ConfigMap: the ConfigMap verbs are used.
    settings.output_limits.inline_bytes = 64;
    settings.output_limits.preview_bytes = 32;
    let token = CancellationToken::new();
    let task = tokio::spawn(run_controllers(sa.clone(), settings, token.clone()));

    let devices: Api<CiscoDevice> = Api::namespaced(admin.clone(), &ns_name);
    let ready = wait_for("CiscoDevice sw Ready", Duration::from_secs(60), || async {
        let d = devices.get("sw").await.ok()?;
        let phase = d.status.as_ref()?.phase?;
        (format!("{phase:?}") == "Ready").then_some(d)
    })
    .await;
    assert_eq!(ready.status.unwrap().reachable, Some(true));

    // A spilled operation, deleted by its TTL together with its ConfigMap.
    let ops: Api<DeviceOperation> = Api::namespaced(admin.clone(), &ns_name);
    let op: DeviceOperation = serde_json::from_value(json!({
        "apiVersion": "ops.cisco.vk/v1alpha1", "kind": "DeviceOperation",
        "metadata": { "name": "clock" },
        "spec": { "deviceRef": { "name": "sw" }, "operation": { "kind": "GNOITime" },
                  "ttlSecondsAfterFinished": 3 }
    }))
    .unwrap();
    ops.create(&PostParams::default(), &op).await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(admin.clone(), &ns_name);
    let done = wait_for(
        "DeviceOperation clock Succeeded",
        Duration::from_secs(60),
        || async {
            let o = ops.get("clock").await.ok()?;
            let s = o.status.clone()?;
            (format!("{:?}", s.phase?) == "Succeeded").then_some(s)
        },
    )
    .await;
    assert_eq!(
        done.artifact_uris,
        vec![format!("configmap://{ns_name}/clock-output/output")],
        "{done:#?}"
    );
    assert!(cms.get_opt("clock-output").await.unwrap().is_some());
    wait_for(
        "the TTL deletes the operation and its ConfigMap",
        Duration::from_secs(60),
        || async {
            let gone = ops.get_opt("clock").await.ok()?.is_none()
                && cms.get_opt("clock-output").await.ok()?.is_none();
            gone.then_some(())
        },
    )
    .await;

    // A gated kind: status written and a Warning Event published.
    let up: IOSXESoftwareUpgrade = serde_json::from_value(json!({
        "apiVersion": "ops.cisco.vk/v1alpha1", "kind": "IOSXESoftwareUpgrade",
        "metadata": { "name": "up" },
        "spec": { "deviceRef": { "name": "sw" },
                  "imageSource": { "url": "http://127.0.0.1:9/cat9k.bin",
                                   "sha256": "7de3c6875e3c1c96d5920e8542c72b1bcb5d913d99645ef5687f44dd4024cdf4" },
                  "targetVersion": "17.18.02" }
    }))
    .unwrap();
    let ups: Api<IOSXESoftwareUpgrade> = Api::namespaced(admin.clone(), &ns_name);
    ups.create(&PostParams::default(), &up).await.unwrap();
    let events: Api<Event> = Api::namespaced(admin.clone(), &ns_name);
    wait_for(
        "the gate's Warning Event on up",
        Duration::from_secs(60),
        || async {
            let st = ups.get("up").await.ok()?.status?;
            let reason_ok = st
                .conditions
                .iter()
                .any(|c| c.reason == "SoftwareUpgradeGateDisabled");
            let ev = events
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .into_iter()
                .any(|e| {
                    e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("up")
                        && e.reason.as_deref() == Some("SoftwareUpgradeGateDisabled")
                });
            (reason_ok && ev).then_some(())
        },
    )
    .await;

    token.cancel();
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("controllers stop")
        .unwrap();

    // A rollout with the upgrade gate on: the plan ConfigMap, the rollout's
    // status and a child IOSXESoftwareUpgrade (whose own reconcile finds the
    // version already running) are all written as the ServiceAccount.
    let mut settings = ControllerSettings::for_namespace(&ns_name);
    settings.gnoi.insecure = true;
    settings.gates.software_upgrade = true;
    let token = CancellationToken::new();
    let task = tokio::spawn(run_controllers(sa.clone(), settings, token.clone()));
    let running = sim.snapshot().running_version.clone();
    let rollout: IOSXESoftwareRollout = serde_json::from_value(json!({
        "apiVersion": "ops.cisco.vk/v1alpha1", "kind": "IOSXESoftwareRollout",
        "metadata": { "name": "ro" },
        "spec": { "plan": {
            "targets": { "devices": ["sw"] },
            "source": { "preinstalled": {} },
            "targetVersion": running,
            "canaries": [{ "name": "only", "devices": ["sw"] }],
            "health": { "canarySoakSeconds": 0 },
        } }
    }))
    .unwrap();
    let rollouts: Api<IOSXESoftwareRollout> = Api::namespaced(admin.clone(), &ns_name);
    rollouts
        .create(&PostParams::default(), &rollout)
        .await
        .unwrap();
    let done = wait_for(
        "IOSXESoftwareRollout ro Succeeded",
        Duration::from_secs(90),
        || async {
            let st = rollouts.get("ro").await.ok()?.status?;
            (st.phase?.as_str() == "Succeeded").then_some(st)
        },
    )
    .await;
    assert_eq!(done.counts.succeeded, 1, "{done:#?}");
    let plan_cm = done.frozen_plan.unwrap().config_map;
    assert_eq!(plan_cm, "ro-plan");
    assert_eq!(cms.get(&plan_cm).await.unwrap().immutable, Some(true));
    let child = ups.get("ro-sw").await.unwrap();
    assert_eq!(
        child.metadata.owner_references.unwrap()[0].name,
        "ro",
        "the rollout owns its child"
    );
    token.cancel();
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("controllers stop")
        .unwrap();

    // The per-device mutation Lease: create, renew, release.
    let locks = DeviceLocks::new(sa.clone(), &ns_name, "cvk-controller");
    let holder = LeaseHolder {
        kind: "IOSXESoftwareUpgrade".into(),
        namespace: ns_name.clone(),
        name: "up".into(),
        uid: ups.get("up").await.unwrap().metadata.uid.unwrap(),
    };
    for _ in 0..2 {
        let got = locks.acquire(&ns_name, "sw", &holder).await.unwrap();
        assert!(matches!(got, Acquire::Held));
    }
    assert_eq!(
        locks.holder(&ns_name, "sw").await.unwrap(),
        Some(holder.clone())
    );
    locks.release(&ns_name, "sw", &holder).await.unwrap();
    assert_eq!(locks.holder(&ns_name, "sw").await.unwrap(), None);

    // Both mutation gates on: a write-class action and an upgrade do their
    // work as the ServiceAccount (finalizers, the preconditioned status
    // writes that carry the at-most-once markers, the shared Lease).
    ups.delete("up", &Default::default()).await.unwrap();
    wait_for("upgrade up deleted", Duration::from_secs(30), || async {
        ups.get_opt("up").await.ok()?.is_none().then_some(())
    })
    .await;
    let mut settings = ControllerSettings::for_namespace(&ns_name);
    settings.gnoi.insecure = true;
    settings.probe_interval = Duration::from_secs(600);
    settings.gates = Gates {
        write_class: true,
        software_upgrade: true,
    };
    let token = CancellationToken::new();
    let task = tokio::spawn(run_controllers(sa.clone(), settings, token.clone()));

    let actions: Api<IOSXEOperationalAction> = Api::namespaced(admin.clone(), &ns_name);
    let reload: IOSXEOperationalAction = serde_json::from_value(json!({
        "apiVersion": "ops.cisco.vk/v1alpha1", "kind": "IOSXEOperationalAction",
        "metadata": { "name": "reload" },
        "spec": { "deviceRef": { "name": "sw" }, "confirm": "sw",
                  "action": { "kind": "Reboot", "reboot": { "message": "rbac test", "delay": 0 } } }
    }))
    .unwrap();
    actions
        .create(&PostParams::default(), &reload)
        .await
        .unwrap();
    let st = wait_for(
        "IOSXEOperationalAction reload terminal",
        Duration::from_secs(90),
        || async {
            let s = actions.get("reload").await.ok()?.status?;
            let phase = format!("{:?}", s.phase?);
            ["Succeeded", "Failed", "Rejected"]
                .contains(&phase.as_str())
                .then_some((phase, s))
        },
    )
    .await;
    assert_eq!(st.0, "Succeeded", "{:#?}", st.1);
    assert_eq!(
        sim.journal_for("/gnoi.system.System/Reboot").len(),
        1,
        "exactly one Reboot"
    );
    wait_for(
        "reload finalizer released",
        Duration::from_secs(30),
        || async {
            let a = actions.get("reload").await.ok()?;
            a.metadata
                .finalizers
                .unwrap_or_default()
                .is_empty()
                .then_some(())
        },
    )
    .await;

    let running = sim.snapshot().running_version;
    let up2: IOSXESoftwareUpgrade = serde_json::from_value(json!({
        "apiVersion": "ops.cisco.vk/v1alpha1", "kind": "IOSXESoftwareUpgrade",
        "metadata": { "name": "up2" },
        "spec": { "deviceRef": { "name": "sw" },
                  "imageSource": { "preinstalled": {} },
                  "targetVersion": running }
    }))
    .unwrap();
    ups.create(&PostParams::default(), &up2).await.unwrap();
    let st = wait_for(
        "IOSXESoftwareUpgrade up2 terminal",
        Duration::from_secs(90),
        || async {
            let s = ups.get("up2").await.ok()?.status?;
            s.phase?.is_terminal().then_some(s)
        },
    )
    .await;
    assert_eq!(st.phase.map(|p| p.as_str()), Some("Succeeded"), "{st:#?}");
    assert!(sim.journal_for("/gnoi.os.OS/Activate").is_empty());
    wait_for("device Lease released", Duration::from_secs(30), || async {
        locks
            .holder(&ns_name, "sw")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    token.cancel();
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("controllers stop")
        .unwrap();

    fleet.shutdown().await;
    ns.delete().await;
}

/// A user and their groups.
type Who<'a> = (&'a str, &'a [&'a str]);

async fn allowed(
    admin: &Client,
    user: &str,
    groups: &[&str],
    verb: &str,
    resource: &str,
    ns: &str,
) -> bool {
    let (resource, subresource) = resource.split_once('/').unwrap_or((resource, ""));
    let group = match resource {
        "ciscodevices" => "cisco.vk",
        "secrets" | "configmaps" => "",
        _ => "ops.cisco.vk",
    };
    let sar: SubjectAccessReview = serde_json::from_value(json!({
        "spec": {
            "user": user,
            "groups": groups,
            "resourceAttributes": { "namespace": ns, "verb": verb, "group": group,
                                    "resource": resource, "subresource": subresource }
        }
    }))
    .unwrap();
    let r = Api::<SubjectAccessReview>::all(admin.clone())
        .create(&PostParams::default(), &sar)
        .await
        .unwrap();
    r.status.unwrap().allowed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_roles_are_split_by_trust_level() {
    let admin = shared_control_plane().client().await.unwrap();
    install_project_crds(&admin).await.unwrap();
    apply(&admin, &kind_docs("rbac/namespace.yaml"))
        .await
        .unwrap();
    apply(&admin, &kind_docs("rbac/users.yaml")).await.unwrap();
    let engineer = (
        "alice@example.net",
        &["network-engineers", "system:authenticated"][..],
    );
    let upgrader = (
        "upgrade-operator@example.net",
        &["system:authenticated"][..],
    );
    let maintainer = (
        "maintenance-operator@example.net",
        &["system:authenticated"][..],
    );
    let campaigner = (
        "rollout-operator@example.net",
        &["system:authenticated"][..],
    );
    let table: &[(Who, &str, &str, bool)] = &[
        // Read-only users: DeviceOperation only.
        (engineer, "create", "deviceoperations", true),
        (engineer, "watch", "deviceoperations", true),
        (engineer, "patch", "deviceoperations/status", false),
        (engineer, "create", "iosxesoftwareupgrades", false),
        (engineer, "get", "iosxesoftwareupgrades", false),
        (engineer, "create", "iosxeoperationalactions", false),
        (engineer, "get", "secrets", false),
        // Upgrade operators: create/get/watch (and list) IOSXESoftwareUpgrade.
        (upgrader, "create", "iosxesoftwareupgrades", true),
        (upgrader, "get", "iosxesoftwareupgrades", true),
        (upgrader, "watch", "iosxesoftwareupgrades", true),
        (upgrader, "list", "iosxesoftwareupgrades", true),
        (upgrader, "update", "iosxesoftwareupgrades", false),
        (upgrader, "delete", "iosxesoftwareupgrades", false),
        (upgrader, "patch", "iosxesoftwareupgrades/status", false),
        (upgrader, "create", "iosxeoperationalactions", false),
        (upgrader, "create", "deviceoperations", false),
        // Write-class actions: a role of their own.
        (maintainer, "create", "iosxeoperationalactions", true),
        (maintainer, "delete", "iosxeoperationalactions", true),
        (maintainer, "create", "iosxesoftwareupgrades", false),
        (maintainer, "create", "deviceoperations", false),
        // Fleet campaigns: the rollout (patch for control and approval) and
        // reading its children, never creating an upgrade directly.
        (campaigner, "create", "iosxesoftwarerollouts", true),
        (campaigner, "patch", "iosxesoftwarerollouts", true),
        (campaigner, "watch", "iosxesoftwarerollouts", true),
        (campaigner, "get", "iosxesoftwareupgrades", true),
        (campaigner, "create", "iosxesoftwareupgrades", false),
        (campaigner, "delete", "iosxesoftwareupgrades", false),
        (campaigner, "update", "iosxesoftwarerollouts/status", false),
        (upgrader, "create", "iosxesoftwarerollouts", false),
        (engineer, "get", "iosxesoftwarerollouts", false),
    ];
    let mut wrong = Vec::new();
    for ((user, groups), verb, resource, want) in table {
        let got = allowed(&admin, user, groups, verb, resource, "cvk-lab").await;
        if got != *want {
            wrong.push(format!(
                "{user} {verb} {resource}: allowed={got}, want {want}"
            ));
        }
    }
    // The bindings are per namespace: nothing elsewhere.
    assert!(
        !allowed(
            &admin,
            engineer.0,
            engineer.1,
            "create",
            "deviceoperations",
            "default"
        )
        .await
    );
    assert!(wrong.is_empty(), "{wrong:#?}");

    // The controller's ServiceAccount may not create the objects people create.
    apply(&admin, &kind_docs("rbac/controller.yaml"))
        .await
        .unwrap();
    let sa_groups = [
        "system:serviceaccounts",
        "system:serviceaccounts:cvk-system",
    ];
    for (verb, resource, want) in [
        ("update", "ciscodevices/status", true),
        ("update", "iosxesoftwareupgrades/status", true),
        ("update", "deviceoperations/status", true),
        ("patch", "ciscodevices/status", false),
        ("get", "secrets", true),
        ("list", "secrets", false),
        // A rollout's children are created and deleted by the controller.
        ("create", "iosxesoftwareupgrades", true),
        ("delete", "iosxesoftwareupgrades", true),
        ("update", "iosxesoftwarerollouts/status", true),
        ("create", "iosxesoftwarerollouts", false),
        ("patch", "iosxesoftwarerollouts", false),
        ("create", "deviceoperations", false),
        ("update", "ciscodevices", false),
    ] {
        assert_eq!(
            allowed(&admin, CONTROLLER_SA, &sa_groups, verb, resource, "cvk-lab").await,
            want,
            "controller {verb} {resource}"
        );
    }
}
