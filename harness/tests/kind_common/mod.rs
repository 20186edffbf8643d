//! Shared helpers of the tests of `kind/`: reading manifests and applying
//! them to the local control plane with server-side apply, kinds resolved
//! by API discovery.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use kube::api::{DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::{Discovery, Scope};
use kube::{Api, Client};
use serde::Deserialize;
use serde_json::Value;

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every YAML document of a file (null documents dropped), with the path
/// in the panic message of a bad one.
pub fn docs(path: &Path) -> Vec<Value> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .filter(|v| !v.is_null())
        .collect()
}

/// The documents of `kind/<rel>`.
pub fn kind_docs(rel: &str) -> Vec<Value> {
    docs(&repo().join("kind").join(rel))
}

/// The one document of `kind` named `name` among `docs`.
pub fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind}/{name}"))
}

/// Server-side applies `docs` in order (field manager `kind-tests`) and
/// returns `Kind/namespace/name` of each.
pub async fn apply(client: &Client, docs: &[Value]) -> Result<Vec<String>, String> {
    let discovery = Discovery::new(client.clone())
        .run()
        .await
        .map_err(|e| format!("discovery: {e}"))?;
    let mut applied = Vec::new();
    for doc in docs {
        let (group, version) = match doc["apiVersion"].as_str().unwrap_or_default() {
            av if av.contains('/') => av.split_once('/').expect("checked"),
            av => ("", av),
        };
        let kind = doc["kind"].as_str().unwrap_or_default();
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let (ar, caps) = discovery
            .resolve_gvk(&gvk)
            .ok_or_else(|| format!("the API server serves no {gvk:?}"))?;
        let obj: DynamicObject = serde_json::from_value(doc.clone()).map_err(|e| e.to_string())?;
        let name = obj
            .metadata
            .name
            .clone()
            .ok_or("a manifest without a name")?;
        let api: Api<DynamicObject> = if caps.scope == Scope::Namespaced {
            let ns = obj
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into());
            Api::namespaced_with(client.clone(), &ns, &ar)
        } else {
            Api::all_with(client.clone(), &ar)
        };
        api.patch(
            &name,
            &PatchParams::apply("kind-tests"),
            &Patch::Apply(&obj),
        )
        .await
        .map_err(|e| format!("applying {kind}/{name}: {e}"))?;
        applied.push(format!(
            "{kind}/{}/{name}",
            obj.metadata.namespace.as_deref().unwrap_or("")
        ));
    }
    Ok(applied)
}

/// The env of the first container of a Deployment manifest, as
/// name -> value (entries with valueFrom are left out).
pub fn container_env(deployment: &Value) -> std::collections::BTreeMap<String, String> {
    deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            Some((
                e["name"].as_str()?.to_owned(),
                e["value"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

/// The rules of a ClusterRole manifest, normalised (each list sorted) so
/// two spellings of the same grant compare equal.
pub fn rules(role: &Value) -> Vec<Value> {
    let mut out: Vec<Value> = role["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .map(|r| {
            let mut r = r.clone();
            for key in ["apiGroups", "resources", "verbs"] {
                if let Some(list) = r[key].as_array_mut() {
                    list.sort_by_key(|v| v.to_string());
                }
            }
            r
        })
        .collect();
    out.sort_by_key(|v| v.to_string());
    out
}
