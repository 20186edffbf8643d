//! The Helm chart `kind/chart/cisco-vk`, rendered and installed by Helm's
//! own engine (Helm's Go library from the `helm-sdkpy` wheel, driven by
//! `kind/chart/tools/helm.py`; `.ci/run` installs it with
//! `kind/chart/tools/install-helm-sdk.sh`) into the real local control
//! plane. The objects are then read back from the API server: the `gnoi.*`
//! values must arrive as the specification's environment variables, and
//! the controller started with exactly that environment must report the
//! same settings.
//!
//! Without the engine the tests fail under CI (`CI=true`) and are skipped
//! with a message elsewhere.

mod kind_common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use cvk_hil::testing::{TestNamespace, install_project_crds, shared_control_plane};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleBinding};
use kind_common::*;
use kube::Api;
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;

const HELM_SDKPY_VERSION: &str = "0.1.32";

/// The Helm engine, or None (skip) outside CI.
fn engine() -> Option<PathBuf> {
    let lib = std::env::var_os("CVK_HELM_SDK_LIB")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(format!(
                ".cache/cvk/helm-sdkpy-{HELM_SDKPY_VERSION}/libhelm_sdkpy.so"
            ))
        });
    if lib.is_file() {
        return Some(lib);
    }
    let msg = format!(
        "the Helm engine {} is missing: run `bash kind/chart/tools/install-helm-sdk.sh`",
        lib.display()
    );
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("{msg}");
    }
    eprintln!("SKIPPED: {msg}");
    None
}

fn chart() -> PathBuf {
    repo().join("kind/chart/cisco-vk")
}

/// `helm install` (no wait) of the chart; Ok(rendered manifests) or
/// Err(Helm's message).
async fn helm_install(
    lib: &PathBuf,
    ns: &str,
    release: &str,
    values: Value,
) -> Result<Vec<Value>, String> {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, shared_control_plane().kubeconfig_yaml()).unwrap();
    let out = tokio::process::Command::new("python3")
        .arg(repo().join("kind/chart/tools/helm.py"))
        .arg("install")
        .arg("--lib")
        .arg(lib)
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["--namespace", ns, "--release", release, "--chart"])
        .arg(chart())
        .args(["--values", &values.to_string()])
        .output()
        .await
        .expect("running python3");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let release: Value = serde_json::from_slice(&out.stdout).expect("release JSON");
    assert_eq!(release["info"]["status"], "deployed", "{release:#}");
    let manifest = release["manifest"].as_str().expect("manifest").to_owned();
    Ok(serde_yaml::Deserializer::from_str(&manifest)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|v: &Value| !v.is_null())
        .collect())
}

fn env_of(d: &Deployment) -> BTreeMap<String, String> {
    container_env(&serde_json::to_value(d).unwrap())
}

const GNOI_VARS: [&str; 6] = [
    "CISCO_VK_GNOI_INSECURE",
    "CISCO_VK_GNOI_PORT",
    "CISCO_VK_GNOI_DISABLED",
    "CISCO_VK_ENABLE_IOSXE_SOFTWARE_UPGRADE",
    "CISCO_VK_ENABLE_WRITE_CLASS_GNOI",
    "CISCO_VK_UPGRADE_MAX_IMAGE_BYTES",
];

#[test]
fn the_chart_carries_the_generated_crds_unchanged() {
    let names = |dir: PathBuf| {
        let mut v: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let generated = names(repo().join("kind/crds"));
    assert_eq!(generated.len(), 5, "{generated:?}");
    assert_eq!(names(chart().join("crds")), generated);
    for f in &generated {
        let a = std::fs::read(repo().join("kind/crds").join(f)).unwrap();
        let b = std::fs::read(chart().join("crds").join(f)).unwrap();
        assert!(
            a == b,
            "kind/chart/cisco-vk/crds/{f} differs from kind/crds/{f}: cp kind/crds/*.yaml kind/chart/cisco-vk/crds/"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defaults_render_a_central_controller_with_every_gate_off() {
    let Some(lib) = engine() else { return };
    let client = shared_control_plane().client().await.unwrap();
    // Installed first, so concurrent installs find them and skip crds/.
    install_project_crds(&client).await.unwrap();
    let ns = TestNamespace::create(&client, "chart-defaults")
        .await
        .unwrap();
    let rendered = helm_install(&lib, ns.name(), "central", json!({}))
        .await
        .unwrap();

    let deploys: Api<Deployment> = Api::namespaced(client.clone(), ns.name());
    let d = deploys.get("central-cisco-vk").await.unwrap();
    let env = env_of(&d);
    for var in GNOI_VARS {
        assert!(
            !env.contains_key(var),
            "{var} rendered by default: {env:#?}"
        );
    }
    let spec = d.spec.as_ref().unwrap();
    assert_eq!(
        spec.strategy.as_ref().unwrap().type_.as_deref(),
        Some("RollingUpdate")
    );
    let pod = spec.template.spec.as_ref().unwrap();
    assert_eq!(
        pod.service_account_name.as_deref(),
        Some("central-cisco-vk")
    );
    let c = &pod.containers[0];
    assert_eq!(c.args.clone().unwrap(), ["run", "--all-namespaces"]);
    assert_eq!(c.image.as_deref(), Some("cvk-controller:0.1.0"));
    assert_eq!(env["CVK_METRICS_BIND_ADDRESS"], "0.0.0.0:8080");
    assert_eq!(
        c.security_context
            .as_ref()
            .unwrap()
            .read_only_root_filesystem,
        Some(true)
    );

    // RBAC: cluster-wide binding, and the same grants as kind/rbac.
    let crb = Api::<ClusterRoleBinding>::all(client.clone())
        .get("central-cisco-vk")
        .await
        .unwrap();
    assert_eq!(
        crb.subjects.unwrap()[0].namespace.as_deref(),
        Some(ns.name())
    );
    Api::<ClusterRole>::all(client.clone())
        .get("central-cisco-vk")
        .await
        .unwrap();
    let kind_rbac = kind_docs("rbac/controller.yaml");
    assert_eq!(
        rules(find(&rendered, "ClusterRole", "central-cisco-vk")),
        rules(find(&kind_rbac, "ClusterRole", "cvk-controller")),
        "the chart's controller role and kind/rbac/controller.yaml differ"
    );
    let users = kind_docs("rbac/users.yaml");
    for role in [
        "cvk-operations-user",
        "cvk-software-upgrade-operator",
        "cvk-write-class-operator",
        "cvk-software-rollout-operator",
    ] {
        assert_eq!(
            rules(find(&rendered, "ClusterRole", role)),
            rules(find(&users, "ClusterRole", role)),
            "{role}"
        );
    }
    ns.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gnoi_values_render_into_the_spec_environment_of_per_device_pods() {
    let Some(lib) = engine() else { return };
    let client = shared_control_plane().client().await.unwrap();
    // Installed first, so concurrent installs find them and skip crds/.
    install_project_crds(&client).await.unwrap();
    let ns = TestNamespace::create(&client, "chart-gnoi").await.unwrap();
    let lab = TestNamespace::create(&client, "chart-lab").await.unwrap();
    let locks = TestNamespace::create(&client, "chart-locks").await.unwrap();
    let values = json!({
        "gnoi": {
            "insecure": true, "port": 57400, "disabled": true,
            "enableSoftwareUpgrade": true, "enableWriteClass": true,
            "softwareUpgrade": { "maxImageBytes": 1073741824u64 }
        },
        "perDevice": { "devices": ["cat9000-4", "cat9000-5"], "namespace": lab.name() },
        "leaseNamespace": locks.name(),
        "image": { "repository": "registry.example.net/cvk-controller", "tag": "1.2.3" },
        "rbac": { "userRoles": false },
        "manager": { "logFormat": "text" },
        "opsPolicy": { "configDiffAllowedNamespaces": ["network-audit", "noc"] },
        "cli": { "commandTimeoutSeconds": 45 },
    });
    helm_install(&lib, ns.name(), "perdev", values)
        .await
        .unwrap();

    let deploys: Api<Deployment> = Api::namespaced(client.clone(), ns.name());
    assert!(
        deploys.get_opt("perdev-cisco-vk").await.unwrap().is_none(),
        "no central pod in per-device mode"
    );
    for device in ["cat9000-4", "cat9000-5"] {
        let d = deploys.get(&format!("{device}-vk")).await.unwrap();
        let env = env_of(&d);
        let want = [
            ("CISCO_VK_GNOI_INSECURE", "1"),
            ("CISCO_VK_GNOI_PORT", "57400"),
            ("CISCO_VK_GNOI_DISABLED", "1"),
            ("CISCO_VK_ENABLE_IOSXE_SOFTWARE_UPGRADE", "1"),
            ("CISCO_VK_ENABLE_WRITE_CLASS_GNOI", "1"),
            ("CISCO_VK_UPGRADE_MAX_IMAGE_BYTES", "1073741824"),
            ("CISCO_VK_DEVICE_NAME", device),
            ("CISCO_VK_DEVICE_NAMESPACE", lab.name()),
            ("CONFIG_LEASE_NAMESPACE", locks.name()),
            ("CVK_OPS_CONFIGDIFF_ALLOWED_NAMESPACES", "network-audit,noc"),
            ("CVK_CLI_COMMAND_TIMEOUT_SECONDS", "45"),
        ];
        for (k, v) in want {
            assert_eq!(
                env.get(k).map(String::as_str),
                Some(v),
                "{device}: {k} in {env:#?}"
            );
        }
        let spec = d.spec.as_ref().unwrap();
        // A mutation gate is on: old and new pods never overlap.
        assert_eq!(
            spec.strategy.as_ref().unwrap().type_.as_deref(),
            Some("Recreate")
        );
        let c = &spec.template.spec.as_ref().unwrap().containers[0];
        assert_eq!(
            c.image.as_deref(),
            Some("registry.example.net/cvk-controller:1.2.3")
        );
        assert_eq!(c.args.clone().unwrap(), ["run"]);
    }
    // Namespaced bindings where the devices and the Leases are, no
    // cluster-wide one.
    for n in [lab.name(), locks.name()] {
        Api::<RoleBinding>::namespaced(client.clone(), n)
            .get("perdev-cisco-vk")
            .await
            .unwrap();
    }
    assert!(
        Api::<ClusterRoleBinding>::all(client.clone())
            .get_opt("perdev-cisco-vk")
            .await
            .unwrap()
            .is_none()
    );

    // The controller started with exactly the rendered environment reports
    // the settings the values asked for.
    let d = deploys.get("cat9000-4-vk").await.unwrap();
    let mut env = env_of(&d);
    // Tests listen on loopback only.
    env.insert("CVK_METRICS_BIND_ADDRESS".into(), "127.0.0.1:0".into());
    env.insert("CVK_HEALTH_PROBE_BIND_ADDRESS".into(), "127.0.0.1:0".into());
    env.insert("CVK_LOG_FORMAT".into(), "json".into());
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, shared_control_plane().kubeconfig_yaml()).unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_cvk-hil"))
        .args(["controller", "run"])
        .env_clear()
        .envs(&env)
        .env("KUBECONFIG", &kubeconfig)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut errs = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let started = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let line = tokio::select! {
                l = lines.next_line() => l,
                l = errs.next_line() => l,
            }
            .unwrap();
            let Some(line) = line else {
                panic!("the controller exited before starting")
            };
            if line.contains("starting cvk-controller") {
                break line;
            }
        }
    })
    .await
    .expect("the controller's start line within 30s");
    let _ = child.kill().await;
    let start: Value = serde_json::from_str(&started).unwrap_or_else(|e| panic!("{e}: {started}"));
    let f = if start["fields"].is_object() {
        &start["fields"]
    } else {
        &start
    };
    assert_eq!(f["gnoi_insecure"], true, "{start:#}");
    assert_eq!(f["cli_command_timeout_s"], 45, "{start:#}");
    assert!(
        f["configdiff_allowed_namespaces"]
            .as_str()
            .is_some_and(|v| v.contains("network-audit") && v.contains("noc")),
        "{start:#}"
    );
    assert_eq!(f["gnoi_disabled"], true, "{start:#}");
    let text = start.to_string();
    assert!(text.contains("57400"), "{text}");
    assert!(
        text.contains("write_class: true") && text.contains("software_upgrade: true"),
        "{text}"
    );
    assert!(
        text.contains("cat9000-4") && text.contains(lab.name()),
        "{text}"
    );

    ns.delete().await;
    lab.delete().await;
    locks.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_gnoi_port_fails_the_install_with_the_value_named() {
    let Some(lib) = engine() else { return };
    let client = shared_control_plane().client().await.unwrap();
    // Installed first, so concurrent installs find them and skip crds/.
    install_project_crds(&client).await.unwrap();
    let ns = TestNamespace::create(&client, "chart-bad").await.unwrap();
    let e = helm_install(
        &lib,
        ns.name(),
        "badport",
        json!({ "gnoi": { "port": 70000 }, "rbac": { "userRoles": false } }),
    )
    .await
    .unwrap_err();
    assert!(
        e.contains("gnoi.port: 70000 is not a TCP port (1-65535)"),
        "{e}"
    );
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), ns.name());
    assert!(deploys.get_opt("badport-cisco-vk").await.unwrap().is_none());
    ns.delete().await;
}

#[test]
fn the_chart_lints_without_warnings() {
    let Some(lib) = engine() else { return };
    let out = std::process::Command::new("python3")
        .arg(repo().join("kind/chart/tools/helm.py"))
        .arg("lint")
        .arg("--lib")
        .arg(&lib)
        .arg("--chart")
        .arg(chart())
        .output()
        .expect("running python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: Value = serde_json::from_slice(&out.stdout).expect("lint JSON");
    assert_eq!(result["TotalChartsLinted"], 1, "{result:#}");
    // Helm's severities: 1 info, 2 warning, 3 error.
    let serious: Vec<&Value> = result["Messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["Severity"].as_i64().unwrap_or(3) >= 2)
        .collect();
    assert!(serious.is_empty(), "{serious:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_central_controller_can_be_scoped_to_one_namespace() {
    let Some(lib) = engine() else { return };
    let client = shared_control_plane().client().await.unwrap();
    install_project_crds(&client).await.unwrap();
    let ns = TestNamespace::create(&client, "chart-scoped")
        .await
        .unwrap();
    let lab = TestNamespace::create(&client, "chart-scoped-lab")
        .await
        .unwrap();
    let values = json!({
        "allNamespaces": false,
        "watchNamespace": lab.name(),
        "rbac": { "userRoles": false },
    });
    helm_install(&lib, ns.name(), "scoped", values)
        .await
        .unwrap();
    let d = Api::<Deployment>::namespaced(client.clone(), ns.name())
        .get("scoped-cisco-vk")
        .await
        .unwrap();
    let env = env_of(&d);
    assert_eq!(
        env.get("CISCO_VK_DEVICE_NAMESPACE").map(String::as_str),
        Some(lab.name())
    );
    let c = &d.spec.unwrap().template.spec.unwrap().containers[0];
    assert_eq!(c.args.clone().unwrap(), ["run"]);
    Api::<RoleBinding>::namespaced(client.clone(), lab.name())
        .get("scoped-cisco-vk")
        .await
        .unwrap();
    assert!(
        Api::<ClusterRoleBinding>::all(client.clone())
            .get_opt("scoped-cisco-vk")
            .await
            .unwrap()
            .is_none()
    );
    ns.delete().await;
    lab.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_election_runs_two_replicas_with_the_lease_in_the_release_namespace() {
    let Some(lib) = engine() else { return };
    let client = shared_control_plane().client().await.unwrap();
    install_project_crds(&client).await.unwrap();
    let ns = TestNamespace::create(&client, "chart-leader")
        .await
        .unwrap();
    let lab = TestNamespace::create(&client, "chart-leader-lab")
        .await
        .unwrap();
    let values = json!({
        "allNamespaces": false,
        "watchNamespace": lab.name(),
        "manager": { "leaderElect": true },
        "rbac": { "userRoles": false },
    });
    helm_install(&lib, ns.name(), "ha", values).await.unwrap();
    let d = Api::<Deployment>::namespaced(client.clone(), ns.name())
        .get("ha-cisco-vk")
        .await
        .unwrap();
    let env = env_of(&d);
    assert_eq!(env.get("CVK_LEADER_ELECT").map(String::as_str), Some("1"));
    assert_eq!(
        env.get("CVK_LEADER_ELECTION_NAMESPACE").map(String::as_str),
        Some(ns.name())
    );
    let spec = d.spec.unwrap();
    assert_eq!(spec.replicas, Some(2));
    assert_eq!(
        spec.strategy.and_then(|s| s.type_).as_deref(),
        Some("RollingUpdate")
    );
    // The ClusterRole (leases get/create/update) is bound where the Lease
    // lives as well as where the devices are.
    for n in [lab.name(), ns.name()] {
        Api::<RoleBinding>::namespaced(client.clone(), n)
            .get("ha-cisco-vk")
            .await
            .unwrap_or_else(|e| panic!("RoleBinding in {n}: {e}"));
    }
    ns.delete().await;
    lab.delete().await;
}
