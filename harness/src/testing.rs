//! Test support: one local control plane per test binary, shared by its
//! tests; each test works in a namespace of its own; the project's CRDs are
//! installed and Established before use.
//!
//! ```no_run
//! # async fn t() {
//! let cp = cvk_hil::testing::shared_control_plane();
//! let client = cp.client().await.unwrap();
//! cvk_hil::testing::install_project_crds(&client).await.unwrap();
//! let ns = cvk_hil::testing::TestNamespace::create(&client, "upgrade").await.unwrap();
//! // ... objects in ns.name() ...
//! ns.delete().await;
//! # }
//! ```

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Api, Client};
use rand::Rng;

use crate::control_plane::LocalControlPlane;

/// The field manager the test support applies with.
const FIELD_MANAGER: &str = "cvk-hil";

/// The control plane shared by every test of this binary, started on first
/// use. Its processes end with the test process (PDEATHSIG).
///
/// # Panics
/// When it cannot start; the message carries both logs' last lines.
pub fn shared_control_plane() -> &'static LocalControlPlane {
    static SHARED: OnceLock<Result<LocalControlPlane, String>> = OnceLock::new();
    let started = SHARED.get_or_init(|| {
        // Started on a thread of its own with its own runtime: the calling
        // test's runtime ends with the test, the control plane must not.
        std::thread::spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(LocalControlPlane::start())
                .map_err(|e| e.to_string())
        })
        .join()
        .unwrap_or_else(|_| Err("the control plane start thread panicked".into()))
    });
    match started {
        Ok(cp) => cp,
        Err(e) => panic!("local control plane: {e}"),
    }
}

/// `kind/crds/` of this checkout: the generated CRDs.
pub fn project_crds_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../kind/crds")
}

/// Applies every CRD in `kind/crds/` (server-side apply, so repeated calls
/// and concurrent tests are fine) and waits until each is Established.
pub async fn install_project_crds(client: &Client) -> anyhow::Result<Vec<String>> {
    install_crds_from(client, &project_crds_dir()).await
}

/// Applies every `*.yaml` CRD in `dir` and waits until each is Established.
pub async fn install_crds_from(client: &Client, dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    paths.sort();
    let mut crds = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(&path)?;
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value = serde_yaml::Value::deserialize(doc)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            if value.is_null() {
                continue;
            }
            let crd: CustomResourceDefinition = serde_yaml::from_value(value)
                .map_err(|e| anyhow::anyhow!("{}: not a CRD: {e}", path.display()))?;
            crds.push(crd);
        }
    }
    install_crds(client, &crds).await
}

use serde::Deserialize as _;

/// Applies the given CRDs and waits until each is Established (30 s each).
pub async fn install_crds(
    client: &Client,
    crds: &[CustomResourceDefinition],
) -> anyhow::Result<Vec<String>> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut names = Vec::new();
    for crd in crds {
        let name = crd
            .metadata
            .name
            .clone()
            .ok_or_else(|| anyhow::anyhow!("a CRD without a name"))?;
        api.patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(crd),
        )
        .await
        .map_err(|e| anyhow::anyhow!("applying CRD {name}: {e}"))?;
        names.push(name);
    }
    for name in &names {
        tokio::time::timeout(
            Duration::from_secs(30),
            await_condition(api.clone(), name, conditions::is_crd_established()),
        )
        .await
        .map_err(|_| anyhow::anyhow!("CRD {name} was not Established within 30s"))??;
    }
    Ok(names)
}

/// `n` random lowercase alphanumerics, for names that must not collide
/// with another test's.
pub fn random_suffix(n: usize) -> String {
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(n)
        .map(|c| (c as char).to_ascii_lowercase())
        .collect()
}

/// A namespace for one test, with a random suffix. Delete it at the end of
/// the test with [`TestNamespace::delete`]; the control plane has no
/// namespace controller, so it stays Terminating, out of every other test's
/// way.
pub struct TestNamespace {
    name: String,
    client: Client,
}

impl TestNamespace {
    /// Creates `<prefix>-<6 random lowercase alphanumerics>`.
    pub async fn create(client: &Client, prefix: &str) -> anyhow::Result<Self> {
        let name = format!("{prefix}-{}", random_suffix(6));
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": { "name": name, "labels": { "app.kubernetes.io/managed-by": "cvk-hil-tests" } }
        }))?;
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .map_err(|e| anyhow::anyhow!("creating namespace {name}: {e}"))?;
        Ok(Self {
            name,
            client: client.clone(),
        })
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Deletes the namespace. Errors are logged, not raised: cleanup must
    /// not hide the test's own result.
    pub async fn delete(self) {
        let api = Api::<Namespace>::all(self.client.clone());
        if let Err(e) = api.delete(&self.name, &DeleteParams::default()).await {
            tracing::warn!(namespace = %self.name, error = %e, "deleting test namespace");
        }
    }
}

/// Collects the events of a watch stream until `done` returns true or the
/// timeout passes (then an error).
pub async fn watch_until<K, F>(
    stream: impl futures::Stream<Item = Result<K, kube::runtime::watcher::Error>>,
    timeout: Duration,
    mut done: F,
) -> anyhow::Result<Vec<K>>
where
    F: FnMut(&[K]) -> bool,
{
    let mut seen = Vec::new();
    let mut stream = std::pin::pin!(stream.into_stream());
    tokio::time::timeout(timeout, async {
        while let Some(item) = stream.next().await {
            seen.push(item?);
            if done(&seen) {
                return Ok::<_, anyhow::Error>(());
            }
        }
        anyhow::bail!("the watch ended")
    })
    .await
    .map_err(|_| anyhow::anyhow!("timed out after {timeout:?}"))??;
    Ok(seen)
}
