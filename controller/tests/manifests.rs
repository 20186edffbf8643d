//! The manifests under `kind/` against the real local kube-apiserver with
//! the checked-in CRDs installed:
//!
//! * every example manifest (`kind/examples/*.yaml`, the specification's
//!   examples among them) is accepted unchanged, with strict field
//!   validation, so no field is silently pruned;
//! * every document of `kind/examples/invalid/*.yaml` is refused, with the
//!   message its `# expect:` line gives;
//! * the spec-immutability rules refuse an update;
//! * the checked-in CRDs are exactly what `cvk-controller crds` renders.

use std::path::{Path, PathBuf};

use cvk_controller::crd::{
    CiscoDevice, DeviceOperation, IOSXEOperationalAction, IOSXESoftwareRollout,
    IOSXESoftwareUpgrade,
};
use cvk_hil::testing::{TestNamespace, install_project_crds, shared_control_plane};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde::Deserialize;
use serde_json::json;

fn kind_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../kind")
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

/// A YAML document with the comment lines that precede it.
struct Doc {
    file: String,
    comments: Vec<String>,
    value: serde_json::Value,
}

impl Doc {
    fn directive(&self, key: &str) -> Option<String> {
        let prefix = format!("# {key}:");
        self.comments
            .iter()
            .find_map(|c| c.strip_prefix(&prefix).map(|v| v.trim().to_owned()))
    }

    fn name(&self) -> String {
        format!(
            "{} {}/{}",
            self.file,
            self.value["kind"].as_str().unwrap_or("?"),
            self.value["metadata"]["name"].as_str().unwrap_or("?")
        )
    }
}

fn documents(path: &Path) -> Vec<Doc> {
    let text = std::fs::read_to_string(path).unwrap();
    let file = path.file_name().unwrap().to_string_lossy().into_owned();
    let mut docs = Vec::new();
    for chunk in text.split("\n---") {
        let comments: Vec<String> = chunk
            .lines()
            .map(str::trim_end)
            .filter(|l| l.starts_with('#'))
            .map(str::to_owned)
            .collect();
        let value = serde_yaml::Value::deserialize(serde_yaml::Deserializer::from_str(chunk))
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        if value.is_null() {
            continue;
        }
        docs.push(Doc {
            file: file.clone(),
            comments,
            value: serde_json::to_value(value).unwrap(),
        });
    }
    docs
}

fn resource_of(kind: &str) -> ApiResource {
    match kind {
        "CiscoDevice" => ApiResource::erase::<CiscoDevice>(&()),
        "DeviceOperation" => ApiResource::erase::<DeviceOperation>(&()),
        "IOSXEOperationalAction" => ApiResource::erase::<IOSXEOperationalAction>(&()),
        "IOSXESoftwareUpgrade" => ApiResource::erase::<IOSXESoftwareUpgrade>(&()),
        "IOSXESoftwareRollout" => ApiResource::erase::<IOSXESoftwareRollout>(&()),
        other => panic!("an example of an unexpected kind {other}"),
    }
}

/// Server-side apply, dry run, strict field validation: what
/// `kubectl apply --server-side --dry-run=server` does.
async fn dry_run_apply(client: &Client, ns: &str, doc: &Doc) -> Result<(), kube::Error> {
    let obj: DynamicObject = serde_json::from_value(doc.value.clone()).unwrap();
    let ar = resource_of(doc.value["kind"].as_str().unwrap());
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
    let name = obj.metadata.name.clone().unwrap();
    api.patch(
        &name,
        &PatchParams::apply("cvk-manifest-test")
            .dry_run()
            .validation_strict(),
        &Patch::Apply(&obj),
    )
    .await
    .map(|_| ())
}

async fn ensure_namespace(client: &Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    if api.get_opt(name).await.unwrap().is_none() {
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        match api.create(&PostParams::default(), &ns).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => panic!("namespace {name}: {e}"),
        }
    }
}

#[tokio::test]
async fn every_example_manifest_is_accepted_unchanged() {
    let client = shared_control_plane().client().await.unwrap();
    install_project_crds(&client).await.unwrap();
    let files = yaml_files(&kind_dir().join("examples"));
    let mut kinds = std::collections::BTreeSet::new();
    let mut count = 0;
    for file in &files {
        for doc in documents(file) {
            let ns = doc.value["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_owned();
            ensure_namespace(&client, &ns).await;
            if let Err(e) = dry_run_apply(&client, &ns, &doc).await {
                panic!("{} was refused: {e}", doc.name());
            }
            kinds.insert(doc.value["kind"].as_str().unwrap().to_owned());
            count += 1;
        }
    }
    // The check is strict: a field the schema does not know is an error,
    // not a silent prune.
    let mut pruned = documents(&kind_dir().join("examples/iosxeoperationalaction-reload.yaml"))
        .pop()
        .unwrap();
    pruned.value["spec"]["action"]["reboot"]["delayMinutes"] = json!(1);
    let e = dry_run_apply(&client, "default", &pruned)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("delayMinutes"), "{e}");

    // The specification's three upgrades and its reload, two devices and
    // one operation per gNOI kind.
    assert!(count >= 15, "only {count} example documents");
    assert_eq!(kinds.len(), cvk_controller::crd::all().len(), "{kinds:?}");
    for spec_example in [
        "iosxesoftwareupgrade-tftp.yaml",
        "iosxesoftwareupgrade-localpath.yaml",
        "iosxesoftwareupgrade-noreboot.yaml",
        "iosxeoperationalaction-reload.yaml",
    ] {
        assert!(
            files.iter().any(|f| f.ends_with(spec_example)),
            "{spec_example} is missing"
        );
    }
}

#[tokio::test]
async fn every_invalid_manifest_is_refused_with_its_message() {
    let client = shared_control_plane().client().await.unwrap();
    install_project_crds(&client).await.unwrap();
    let ns = TestNamespace::create(&client, "invalid").await.unwrap();
    let files = yaml_files(&kind_dir().join("examples/invalid"));
    assert_eq!(
        files.len(),
        cvk_controller::crd::all().len(),
        "one file per kind: {files:?}"
    );
    let mut failures = Vec::new();
    let mut count = 0;
    for file in &files {
        for doc in documents(file) {
            let expect = doc
                .directive("expect")
                .unwrap_or_else(|| panic!("{} has no # expect: line", doc.name()));
            let check = doc.directive("check").unwrap_or_default();
            assert!(
                check == "cel" || check == "schema",
                "{}: # check: must be cel or schema, got {check:?}",
                doc.name()
            );
            count += 1;
            match dry_run_apply(&client, ns.name(), &doc).await {
                Ok(()) => failures.push(format!("{}: accepted", doc.name())),
                Err(kube::Error::Api(e)) => {
                    if e.code != 422 || !e.message.contains(&expect) {
                        failures.push(format!(
                            "{}: refused with {} {:?}, expected {expect:?}",
                            doc.name(),
                            e.code,
                            e.message
                        ));
                    }
                }
                Err(e) => failures.push(format!("{}: {e}", doc.name())),
            }
        }
    }
    ns.delete().await;
    assert!(count >= 40, "only {count} invalid documents");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn action_and_upgrade_specs_are_immutable() {
    let client = shared_control_plane().client().await.unwrap();
    install_project_crds(&client).await.unwrap();
    let ns = TestNamespace::create(&client, "immutable").await.unwrap();
    let actions: Api<IOSXEOperationalAction> = Api::namespaced(client.clone(), ns.name());
    let a: IOSXEOperationalAction = serde_json::from_value(json!({
        "apiVersion": "ops.cisco.vk/v1alpha1", "kind": "IOSXEOperationalAction",
        "metadata": { "name": "reload" },
        "spec": { "deviceRef": { "name": "sw" }, "confirm": "sw",
                  "action": { "kind": "Reboot", "reboot": { "delaySeconds": 60 } } },
    }))
    .unwrap();
    actions.create(&PostParams::default(), &a).await.unwrap();
    let e = actions
        .patch(
            "reload",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"action": {"reboot": {"delaySeconds": 0}}}})),
        )
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("spec is immutable: an IOSXEOperationalAction cannot be changed"),
        "{e}"
    );

    let upgrades: Api<IOSXESoftwareUpgrade> = Api::namespaced(client.clone(), ns.name());
    let u: IOSXESoftwareUpgrade = serde_json::from_value(json!({
        "apiVersion": "ops.cisco.vk/v1alpha1", "kind": "IOSXESoftwareUpgrade",
        "metadata": { "name": "up" },
        "spec": { "deviceRef": { "name": "sw" },
                  "imageSource": { "localPath": "flash:cat9k_iosxe.17.18.02.SPA.bin" },
                  "targetVersion": "17.18.02" },
    }))
    .unwrap();
    upgrades.create(&PostParams::default(), &u).await.unwrap();
    let e = upgrades
        .patch(
            "up",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"targetVersion": "17.18.03"}})),
        )
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("spec is immutable: an IOSXESoftwareUpgrade cannot be changed"),
        "{e}"
    );
    ns.delete().await;
}

#[test]
fn checked_in_crds_match_the_generated_ones() {
    let dir = kind_dir().join("crds");
    let crds = cvk_controller::crd::all();
    let files = yaml_files(&dir);
    assert_eq!(files.len(), crds.len(), "{files:?}");
    for crd in &crds {
        let path = dir.join(cvk_controller::crd::file_name(crd));
        let checked_in =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let generated = cvk_controller::crd::to_yaml(crd).unwrap();
        assert!(
            checked_in == generated,
            "{} is stale: run `cargo run -p cvk-controller -- crds --out-dir kind/crds`",
            path.display()
        );
    }
}
