//! The local control plane against itself: what the controller relies on
//! from a real kube-apiserver (CEL, status subresource, watches, conflicts)
//! and a clean shutdown.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use cvk_hil::control_plane::{Binaries, ControlPlaneError, LocalControlPlane};
use cvk_hil::testing::{TestNamespace, install_crds, shared_control_plane, watch_until};
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::watcher;
use kube::{Api, Client};
use serde_json::json;

fn widget_crd() -> CustomResourceDefinition {
    serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": { "name": "widgets.test.cvk.io" },
        "spec": {
            "group": "test.cvk.io",
            "scope": "Namespaced",
            "names": { "plural": "widgets", "singular": "widget", "kind": "Widget" },
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "subresources": { "status": {} },
                "schema": { "openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": {
                            "type": "object",
                            "x-kubernetes-validations": [
                                { "rule": "self == oldSelf", "message": "spec is immutable" }
                            ],
                            "properties": { "size": { "type": "integer" } }
                        },
                        "status": {
                            "type": "object",
                            "properties": { "phase": { "type": "string" } }
                        }
                    }
                }}
            }]
        }
    }))
    .unwrap()
}

async fn widgets(client: &Client, ns: &str) -> Api<DynamicObject> {
    install_crds(client, &[widget_crd()]).await.unwrap();
    let gvk = GroupVersionKind::gvk("test.cvk.io", "v1", "Widget");
    Api::namespaced_with(client.clone(), ns, &ApiResource::from_gvk(&gvk))
}

fn widget(name: &str, size: i64) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "test.cvk.io/v1", "kind": "Widget",
        "metadata": { "name": name }, "spec": { "size": size }
    }))
    .unwrap()
}

#[tokio::test]
async fn serves_the_pinned_kubernetes_version() {
    let client = shared_control_plane().client().await.unwrap();
    let info = client.apiserver_version().await.unwrap();
    let pinned = cvk_hil::control_plane::PinnedVersions::pinned();
    assert_eq!(
        info.git_version, pinned.kubernetes,
        "/version must tell the truth (ldflags)"
    );
}

#[tokio::test]
async fn cel_immutability_rule_refuses_an_update_with_its_message() {
    let client = shared_control_plane().client().await.unwrap();
    let ns = TestNamespace::create(&client, "cel").await.unwrap();
    let api = widgets(&client, ns.name()).await;
    let created = api
        .create(&PostParams::default(), &widget("w1", 1))
        .await
        .unwrap();
    assert_eq!(created.data["spec"]["size"], 1);

    let mut changed = created.clone();
    changed.data["spec"]["size"] = json!(2);
    let err = api
        .replace("w1", &PostParams::default(), &changed)
        .await
        .unwrap_err();
    let kube::Error::Api(status) = err else {
        panic!("expected an API error, got {err:?}")
    };
    assert_eq!(status.code, 422, "{status:?}");
    assert!(
        status.message.contains("spec is immutable"),
        "{}",
        status.message
    );
    // The same object unchanged still updates (the rule is about change).
    api.replace("w1", &PostParams::default(), &created)
        .await
        .unwrap();
    ns.delete().await;
}

#[tokio::test]
async fn status_subresource_is_separate_from_the_main_resource() {
    let client = shared_control_plane().client().await.unwrap();
    let ns = TestNamespace::create(&client, "status").await.unwrap();
    let api = widgets(&client, ns.name()).await;
    api.create(&PostParams::default(), &widget("w2", 3))
        .await
        .unwrap();

    let patched = api
        .patch_status(
            "w2",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Ready"}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.data["status"]["phase"], "Ready");
    assert_eq!(patched.data["spec"]["size"], 3);

    // Status written through the main resource is dropped by the server.
    let via_main = api
        .patch(
            "w2",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Sneaky"}})),
        )
        .await
        .unwrap();
    assert_eq!(via_main.data["status"]["phase"], "Ready");
    ns.delete().await;
}

#[tokio::test]
async fn a_watch_sees_create_update_and_delete() {
    let client = shared_control_plane().client().await.unwrap();
    let ns = TestNamespace::create(&client, "watch").await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns.name());
    let stream = watcher::watcher(api.clone(), watcher::Config::default()).boxed();

    let writer = {
        let api = api.clone();
        tokio::spawn(async move {
            // Give the watch a moment to list before the first change.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let cm: ConfigMap = serde_json::from_value(json!({
                "metadata": { "name": "watched" }, "data": { "k": "1" }
            }))
            .unwrap();
            api.create(&PostParams::default(), &cm).await.unwrap();
            api.patch(
                "watched",
                &PatchParams::default(),
                &Patch::Merge(json!({"data": {"k": "2"}})),
            )
            .await
            .unwrap();
            api.delete("watched", &Default::default()).await.unwrap();
        })
    };
    let events = watch_until(stream, Duration::from_secs(20), |seen| {
        seen.iter().any(|e| matches!(e, watcher::Event::Delete(cm) if cm.metadata.name.as_deref() == Some("watched")))
    })
    .await
    .unwrap();
    writer.await.unwrap();

    let applied: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            watcher::Event::Apply(cm) if cm.metadata.name.as_deref() == Some("watched") => {
                cm.data.as_ref().and_then(|d| d.get("k").cloned())
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        applied,
        vec!["1", "2"],
        "create then update, in order: {events:?}"
    );
    ns.delete().await;
}

#[tokio::test]
async fn an_update_with_a_stale_resource_version_is_a_conflict() {
    let client = shared_control_plane().client().await.unwrap();
    let ns = TestNamespace::create(&client, "conflict").await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns.name());
    let cm: ConfigMap =
        serde_json::from_value(json!({ "metadata": { "name": "cas" }, "data": { "v": "0" } }))
            .unwrap();
    let first = api.create(&PostParams::default(), &cm).await.unwrap();

    let mut a = first.clone();
    a.data.as_mut().unwrap().insert("v".into(), "a".into());
    api.replace("cas", &PostParams::default(), &a)
        .await
        .unwrap();

    let mut b = first; // still carries the first resourceVersion
    b.data.as_mut().unwrap().insert("v".into(), "b".into());
    let err = api
        .replace("cas", &PostParams::default(), &b)
        .await
        .unwrap_err();
    let kube::Error::Api(status) = err else {
        panic!("expected an API error, got {err:?}")
    };
    assert_eq!(status.code, 409, "{status:?}");
    assert_eq!(status.reason, "Conflict");
    assert_eq!(api.get("cas").await.unwrap().data.unwrap()["v"], "a");
    ns.delete().await;
}

fn alive(pid: u32) -> bool {
    // A reaped process has no /proc entry; a zombie would show state Z.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

#[tokio::test]
async fn drop_stops_both_processes_and_removes_the_directory() {
    // Uses the shared control plane's binaries, so it never builds twice.
    let binaries = shared_control_plane().binaries().clone();
    let cp = LocalControlPlane::start_with(binaries).await.unwrap();
    let pids = cp.pids();
    assert_eq!(pids.len(), 2);
    assert!(
        pids.iter().all(|p| alive(*p)),
        "both run before drop: {pids:?}"
    );
    let kubeconfig = tempfile::NamedTempFile::new().unwrap();
    cp.write_kubeconfig(kubeconfig.path()).unwrap();
    let mode = std::fs::metadata(kubeconfig.path())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the kubeconfig holds a private key");
    let api_url = cp.api_url().to_owned();
    let cmdlines: Vec<String> = pids
        .iter()
        .map(|p| {
            std::fs::read_to_string(format!("/proc/{p}/cmdline"))
                .unwrap()
                .replace('\0', " ")
        })
        .collect();
    let dir = cmdlines
        .iter()
        .find_map(|c| c.split(' ').find_map(|w| w.strip_prefix("--data-dir=")))
        .map(|d| Path::new(d).parent().unwrap().to_owned())
        .expect("etcd runs with --data-dir in the control plane directory");
    assert!(dir.is_dir());

    drop(cp);
    assert!(
        pids.iter().all(|p| !alive(*p)),
        "no etcd or kube-apiserver left: {pids:?}"
    );
    assert!(!dir.exists(), "{} removed", dir.display());
    let port: u16 = api_url.rsplit(':').next().unwrap().parse().unwrap();
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "nothing listens on {port}"
    );
}

#[tokio::test]
async fn a_failed_start_reports_the_logs_and_leaves_nothing_running() {
    let dir = tempfile::tempdir().unwrap();
    let fake_etcd = dir.path().join("etcd");
    std::fs::write(
        &fake_etcd,
        "#!/bin/sh\necho 'etcdmain: cannot access data directory: boom' >&2\nexit 3\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake_etcd, std::fs::Permissions::from_mode(0o755)).unwrap();
    let real = shared_control_plane().binaries().clone();
    let binaries = Binaries {
        etcd: fake_etcd,
        ..real
    };

    let err = LocalControlPlane::start_with(binaries).await.unwrap_err();
    let ControlPlaneError::Startup {
        reason,
        etcd_log,
        apiserver_log,
    } = &err
    else {
        panic!("expected a startup error, got {err}");
    };
    // Either the fake etcd's exit is noticed first, or the API server gives
    // up on storage; both are reported with the logs.
    assert!(reason.contains("exited"), "{reason}");
    assert!(
        etcd_log.contains("boom"),
        "the etcd log tail is in the error: {etcd_log}"
    );
    assert!(!apiserver_log.is_empty());
    assert!(err.to_string().contains("--- kube-apiserver log"), "{err}");
}
