//! A kind cluster the way users run the product: the project's images, the
//! Helm chart, the controller in a pod under its own ServiceAccount, a
//! simulated fleet behind cluster Services — built and started with no
//! container registry.
//!
//! `cvk-hil cluster kind up` runs, in order, each step printing progress:
//!
//! 1. `kind/host/docker.sh up`: a Docker engine that can run kind's
//!    privileged nodes (the one that answers, checked; else a private
//!    dockerd this command starts and `down` stops);
//! 2. `kind/node/build.sh`: the node image and its parts from Go modules and
//!    Debian packages, cached under `~/.cache/cvk/kind` (about 45 minutes the
//!    first time on two cores, seconds after that);
//! 3. `kind/docker/build-images.sh`: `cvk-controller:dev` and
//!    `iosxe-sim:dev` on local Debian bases;
//! 4. `kind create cluster` from `kind/cluster.yaml` (reused when it runs on
//!    the same node image), `kind load docker-image`;
//! 5. the chart `kind/chart/cisco-vk` with real Helm (Helm's Go library,
//!    `kind/chart/tools/helm.py`): two leader-elected controller replicas
//!    serving the namespace `cvk-lab`, insecure gNxI, the upgrade gate on,
//!    the write-class gate off;
//! 6. the fleet (`kind/sim/`): four simulated switches in one pod behind the
//!    Service `iosxe-sim`, the image servers behind `cvk-images-headless`,
//!    the CiscoDevices with their credential Secret and the known-hosts
//!    Secret made from the simulator's host keys.
//!
//! `down` deletes the cluster and the `kind` Docker network, and stops the
//! engine `up` started; the caches stay. The cluster's state (kubeconfig,
//! what was loaded) is in `~/.cache/cvk/kind/cluster-cvk/`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use tokio::process::Command;

/// The cluster's name (`kind/cluster.yaml`).
pub const CLUSTER_NAME: &str = "cvk";
/// The namespace of the controller, the fleet and the image servers.
pub const SYSTEM_NAMESPACE: &str = "cvk-system";
/// The namespace the in-cluster controller serves: the fleet's CiscoDevices.
pub const LAB_NAMESPACE: &str = "cvk-lab";
/// The Helm release.
pub const RELEASE: &str = "cvk";
/// The simulator's control API, published on the host by `kind/cluster.yaml`.
pub const SIM_CONTROL: &str = "http://127.0.0.1:30080";
/// The simulator Service's DNS name: the CiscoDevices' address.
pub const SIM_SERVICE_DNS: &str = "iosxe-sim.cvk-system.svc.cluster.local";
/// The image servers' headless Service.
pub const IMAGES_SERVICE_DNS: &str = "cvk-images-headless.cvk-system.svc.cluster.local";
/// The project's images, as the chart and `kind/sim` name them.
pub const IMAGES: [&str; 2] = ["cvk-controller:dev", "iosxe-sim:dev"];

/// Where things are.
#[derive(Debug, Clone)]
pub struct Paths {
    /// The repository (scripts, chart, manifests).
    pub repo: PathBuf,
    /// `${CVK_CACHE_DIR:-~/.cache/cvk}`.
    pub cache: PathBuf,
}

impl Paths {
    /// The repository this binary was built from and the cache of the
    /// environment.
    pub fn from_env() -> anyhow::Result<Self> {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .context("the harness crate has no parent directory")?
            .to_path_buf();
        let cache = match std::env::var_os("CVK_CACHE_DIR") {
            Some(d) => PathBuf::from(d),
            None => PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?)
                .join(".cache/cvk"),
        };
        Ok(Self { repo, cache })
    }

    fn state_dir(&self) -> PathBuf {
        self.cache
            .join("kind")
            .join(format!("cluster-{CLUSTER_NAME}"))
    }

    fn state_file(&self) -> PathBuf {
        self.state_dir().join("state.json")
    }
}

/// A running cluster, as `up` left it (`state.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KindCluster {
    /// Admin kubeconfig for the host (API server on 127.0.0.1).
    pub kubeconfig: PathBuf,
    /// The engine the node runs on.
    pub docker_host: String,
    /// The node image it was created from.
    pub node_image: String,
    /// The kind and kubectl binaries.
    pub kind: PathBuf,
    pub kubectl: PathBuf,
    /// Image IDs loaded into the node, by image.
    #[serde(default)]
    pub loaded: BTreeMap<String, String>,
    /// Seconds each step of the last `up` took.
    #[serde(default)]
    pub timings: Vec<(String, f64)>,
}

impl KindCluster {
    /// The cluster `up` left, if its node is running.
    pub async fn existing(paths: &Paths) -> anyhow::Result<Self> {
        let file = paths.state_file();
        let text = std::fs::read_to_string(&file).with_context(|| {
            format!(
                "no kind cluster: {} is missing; run `cvk-hil cluster kind up` first",
                file.display()
            )
        })?;
        let c: Self =
            serde_json::from_str(&text).with_context(|| format!("reading {}", file.display()))?;
        let running = c
            .docker(["inspect", "-f", "{{.State.Running}}", &node_container()])
            .await
            .unwrap_or_default();
        if running.trim() != "true" {
            bail!(
                "the kind cluster {CLUSTER_NAME} is not running (container {} not running); run `cvk-hil cluster kind up`",
                node_container()
            );
        }
        Ok(c)
    }

    /// The kubeconfig's text.
    pub fn kubeconfig_yaml(&self) -> anyhow::Result<String> {
        std::fs::read_to_string(&self.kubeconfig)
            .with_context(|| format!("reading {}", self.kubeconfig.display()))
    }

    async fn docker<I, S>(&self, args: I) -> anyhow::Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        output(
            Command::new("docker")
                .env("DOCKER_HOST", &self.docker_host)
                .args(args),
        )
        .await
    }

    /// `kubectl --kubeconfig ... ARGS`, its stdout.
    pub async fn kubectl<I, S>(&self, args: I) -> anyhow::Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        output(
            Command::new(&self.kubectl)
                .arg("--kubeconfig")
                .arg(&self.kubeconfig)
                .args(args),
        )
        .await
    }
}

fn node_container() -> String {
    format!("{CLUSTER_NAME}-control-plane")
}

/// Runs `cmd`, its stderr passed through (progress), and returns its stdout;
/// a failure names the command and its exit status.
async fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let shown = format!("{:?}", cmd.as_std());
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .output()
        .await
        .with_context(|| format!("starting {shown}"))?;
    if !out.status.success() {
        bail!("{shown} failed ({})", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Key=value lines (the build scripts' reports).
fn fields(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

fn progress(line: impl AsRef<str>) {
    eprintln!("[kind] {}", line.as_ref());
}

/// Free bytes on the filesystem holding `dir` (or its nearest existing
/// parent).
fn free_bytes(dir: &Path) -> anyhow::Result<u64> {
    let mut at = dir.to_path_buf();
    while !at.exists() {
        at = at
            .parent()
            .context("no existing parent directory")?
            .to_path_buf();
    }
    let st = rustix::fs::statvfs(&at).with_context(|| format!("statvfs {}", at.display()))?;
    Ok(st.f_bavail * st.f_frsize)
}

/// What `up` installs (Helm values and fleet); the defaults are the
/// documented set-up.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// Helm values (JSON), merged over the chart's defaults.
    pub values: serde_json::Value,
}

impl Default for UpOptions {
    fn default() -> Self {
        Self {
            values: serde_json::json!({
                "image": { "repository": "cvk-controller", "tag": "dev", "pullPolicy": "Never" },
                "manager": { "leaderElect": true, "probeIntervalSeconds": 15 },
                "gnoi": { "insecure": true, "enableSoftwareUpgrade": true, "enableWriteClass": false },
                "allNamespaces": false,
                "watchNamespace": LAB_NAMESPACE,
            }),
        }
    }
}

/// Brings the cluster up (or checks and refreshes the one that runs); see
/// the module documentation.
pub async fn up(paths: &Paths, opts: &UpOptions) -> anyhow::Result<KindCluster> {
    let started = Instant::now();
    let mut timings: Vec<(String, f64)> = Vec::new();
    let mut timed = |name: &str, since: Instant| {
        let s = since.elapsed().as_secs_f64();
        progress(format!("{name}: {s:.1} s"));
        timings.push((name.to_owned(), s));
    };
    std::fs::create_dir_all(paths.state_dir())
        .with_context(|| format!("creating {}", paths.state_dir().display()))?;
    let need = if std::fs::read_dir(paths.cache.join("kind"))
        .map(|d| {
            d.flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("tools-"))
        })
        .unwrap_or(false)
    {
        3u64 << 30
    } else {
        12u64 << 30
    };
    let free = free_bytes(&paths.cache)?;
    if free < need {
        bail!(
            "only {:.1} GiB free under {}; the kind build needs {} GiB (Go caches, root filesystems, images); free some space or set CVK_CACHE_DIR",
            free as f64 / f64::from(1u32 << 30),
            paths.cache.display(),
            need >> 30
        );
    }

    let t = Instant::now();
    progress("Docker engine (kind/host/docker.sh up)");
    let docker_host = output(
        Command::new("bash")
            .arg(paths.repo.join("kind/host/docker.sh"))
            .arg("up"),
    )
    .await?
    .lines()
    .last()
    .context("kind/host/docker.sh up printed no DOCKER_HOST")?
    .trim()
    .to_owned();
    timed("docker engine", t);

    let t = Instant::now();
    progress("node image and its parts (kind/node/build.sh; cached after the first build)");
    let report = fields(
        &output(
            Command::new("bash")
                .arg(paths.repo.join("kind/node/build.sh"))
                .env("DOCKER_HOST", &docker_host),
        )
        .await?,
    );
    let node_image = report
        .get("node-image")
        .context("kind/node/build.sh printed no node-image")?
        .clone();
    let kind = PathBuf::from(report.get("kind").context("no kind= line")?);
    let kubectl = PathBuf::from(report.get("kubectl").context("no kubectl= line")?);
    timed("node image", t);

    let t = Instant::now();
    progress("project images (kind/docker/build-images.sh)");
    output(
        Command::new("bash")
            .arg(paths.repo.join("kind/docker/build-images.sh"))
            .arg("dev")
            .current_dir(&paths.repo)
            .env("DOCKER_HOST", &docker_host),
    )
    .await?;
    timed("project images", t);

    let mut cluster = KindCluster {
        kubeconfig: paths.state_dir().join("kubeconfig"),
        docker_host,
        node_image,
        kind,
        kubectl,
        loaded: BTreeMap::new(),
        timings: Vec::new(),
    };
    let previous: Option<KindCluster> = std::fs::read_to_string(paths.state_file())
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());

    let t = Instant::now();
    let kind_cmd = |c: &KindCluster| {
        let mut cmd = Command::new(&c.kind);
        cmd.env("DOCKER_HOST", &c.docker_host);
        cmd
    };
    let clusters = output(kind_cmd(&cluster).arg("get").arg("clusters")).await?;
    let exists = clusters.lines().any(|l| l.trim() == CLUSTER_NAME);
    let running_image = cluster
        .docker(["inspect", "-f", "{{.Config.Image}}", &node_container()])
        .await
        .ok()
        .map(|s| s.trim().to_owned());
    let running = cluster
        .docker(["inspect", "-f", "{{.State.Running}}", &node_container()])
        .await
        .map(|s| s.trim() == "true")
        .unwrap_or(false);
    let mut reuse = exists
        && running
        && running_image.as_deref() == Some(cluster.node_image.as_str())
        && cluster.kubeconfig.exists();
    // A node that came back after its engine restarted may hold a cluster
    // that does not answer: only one whose API server is ready is reused.
    if reuse
        && cluster
            .kubectl(["get", "--raw=/readyz", "--request-timeout=10s"])
            .await
            .is_err()
    {
        progress(format!(
            "cluster {CLUSTER_NAME} runs but its API server is not ready: re-creating it"
        ));
        reuse = false;
    }
    if reuse {
        progress(format!(
            "cluster {CLUSTER_NAME} runs on {}: reused",
            cluster.node_image
        ));
    } else {
        if exists {
            progress(format!(
                "cluster {CLUSTER_NAME} exists but is stopped, not ready or on another node image: deleting it"
            ));
            output(
                kind_cmd(&cluster)
                    .args(["delete", "cluster", "--name", CLUSTER_NAME])
                    .arg("--kubeconfig")
                    .arg(&cluster.kubeconfig),
            )
            .await?;
        }
        progress(format!(
            "creating cluster {CLUSTER_NAME} from kind/cluster.yaml on {}",
            cluster.node_image
        ));
        output(
            kind_cmd(&cluster)
                .args(["create", "cluster", "--name", CLUSTER_NAME, "--image"])
                .arg(&cluster.node_image)
                .arg("--config")
                .arg(paths.repo.join("kind/cluster.yaml"))
                .arg("--kubeconfig")
                .arg(&cluster.kubeconfig)
                .args(["--wait", "180s"]),
        )
        .await?;
    }
    timed("cluster", t);

    let t = Instant::now();
    progress("loading the project's images into the node");
    output(
        kind_cmd(&cluster)
            .args(["load", "docker-image", "--name", CLUSTER_NAME])
            .args(IMAGES),
    )
    .await?;
    for image in IMAGES {
        let id = cluster
            .docker(["image", "inspect", "-f", "{{.Id}}", image])
            .await?;
        cluster
            .loaded
            .insert(image.to_owned(), id.trim().to_owned());
    }
    timed("image load", t);

    let t = Instant::now();
    progress("namespaces, then the chart kind/chart/cisco-vk with Helm");
    cluster
        .kubectl([
            "apply",
            "--server-side",
            "-f",
            &paths
                .repo
                .join("kind/rbac/namespace.yaml")
                .to_string_lossy(),
        ])
        .await?;
    let helm_lib =
        output(Command::new("bash").arg(paths.repo.join("kind/chart/tools/install-helm-sdk.sh")))
            .await?
            .lines()
            .last()
            .and_then(|l| l.strip_prefix("helm engine: "))
            .map(|l| l.trim_end_matches(" (cached)").to_owned())
            .context("install-helm-sdk.sh printed no library path")?;
    output(
        Command::new("python3")
            .arg(paths.repo.join("kind/chart/tools/helm.py"))
            .args(["upgrade", "--lib", &helm_lib, "--kubeconfig"])
            .arg(&cluster.kubeconfig)
            .args([
                "--namespace",
                SYSTEM_NAMESPACE,
                "--release",
                RELEASE,
                "--chart",
            ])
            .arg(paths.repo.join("kind/chart/cisco-vk"))
            .args(["--values", &opts.values.to_string()]),
    )
    .await?;
    timed("chart", t);

    let t = Instant::now();
    progress("the simulated fleet and the image servers (kind/sim)");
    for f in ["kind/sim/iosxe-sim.yaml", "kind/sim/images.yaml"] {
        cluster
            .kubectl([
                "apply",
                "--server-side",
                "-f",
                &paths.repo.join(f).to_string_lossy(),
            ])
            .await?;
    }
    // Pods keep the image they started with; new images with the same tag
    // need a restart.
    let changed = previous
        .as_ref()
        .is_some_and(|p| p.loaded != cluster.loaded);
    if changed && reuse {
        progress("the images changed since the last `up`: restarting the pods");
        for d in ["deploy/iosxe-sim", "deploy/cvk-images"] {
            cluster
                .kubectl(["-n", SYSTEM_NAMESPACE, "rollout", "restart", d])
                .await?;
        }
        let controller = controller_deployment(&cluster).await?;
        cluster
            .kubectl(["-n", SYSTEM_NAMESPACE, "rollout", "restart", &controller])
            .await?;
    }
    let controller = controller_deployment(&cluster).await?;
    for d in ["deploy/iosxe-sim", "deploy/cvk-images", controller.as_str()] {
        cluster
            .kubectl([
                "-n",
                SYSTEM_NAMESPACE,
                "rollout",
                "status",
                d,
                "--timeout=240s",
            ])
            .await
            .with_context(|| format!("waiting for {d} in {SYSTEM_NAMESPACE}"))?;
    }
    cluster
        .kubectl([
            "apply",
            "--server-side",
            "-f",
            &paths.repo.join("kind/sim/devices.yaml").to_string_lossy(),
        ])
        .await?;
    write_known_hosts(&cluster).await?;
    timed("fleet", t);

    cluster.timings = timings;
    std::fs::write(
        paths.state_file(),
        serde_json::to_string_pretty(&cluster).context("encoding the state")?,
    )
    .with_context(|| format!("writing {}", paths.state_file().display()))?;
    progress(format!(
        "cluster {CLUSTER_NAME} is up in {:.0} s; kubeconfig: {}",
        started.elapsed().as_secs_f64(),
        cluster.kubeconfig.display()
    ));
    Ok(cluster)
}

/// The chart's central Deployment (`deploy/<release>-cisco-vk...`).
pub async fn controller_deployment(c: &KindCluster) -> anyhow::Result<String> {
    let names = c
        .kubectl([
            "-n",
            SYSTEM_NAMESPACE,
            "get",
            "deploy",
            "-l",
            "app.kubernetes.io/component=central",
            "-o",
            "name",
        ])
        .await?;
    names
        .lines()
        .next()
        .map(|l| l.trim().replace("deployment.apps/", "deploy/"))
        .context("the chart rendered no central controller Deployment")
}

/// The Secret `sim-known-hosts` in the lab namespace: each simulated
/// switch's SSH host key (from the simulator's `/ready`) under the name and
/// port the CiscoDevices use, so the CLI pins the keys of this pod's
/// switches.
pub async fn write_known_hosts(c: &KindCluster) -> anyhow::Result<()> {
    let ready = http_get_json(&format!("{SIM_CONTROL}/ready")).await?;
    let mut lines = Vec::new();
    for d in ready["devices"]
        .as_array()
        .context("/ready has no devices")?
    {
        let name = d["name"].as_str().unwrap_or("?");
        let known = d["ssh_known_hosts"]
            .as_str()
            .with_context(|| format!("{name} serves no SSH CLI"))?;
        let port = d["ssh_port"]
            .as_u64()
            .with_context(|| format!("{name} has no ssh_port"))?;
        // `[127.0.0.1]:PORT ssh-ed25519 AAAA...`: keep the key.
        let key = known
            .split_once(' ')
            .map(|(_, k)| k)
            .with_context(|| format!("{name}: bad known_hosts line {known:?}"))?;
        lines.push(format!("[{SIM_SERVICE_DNS}]:{port} {key}"));
    }
    let manifest = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": { "name": "sim-known-hosts", "namespace": LAB_NAMESPACE },
        "type": "Opaque",
        "stringData": { "knownHosts": lines.join("\n") + "\n" },
    });
    let file = tempfile::NamedTempFile::new().context("a temporary file")?;
    std::fs::write(file.path(), manifest.to_string()).context("writing the Secret")?;
    c.kubectl([
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        &file.path().to_string_lossy(),
    ])
    .await?;
    progress(format!(
        "Secret {LAB_NAMESPACE}/sim-known-hosts: {} host keys",
        lines.len()
    ));
    Ok(())
}

/// GET on the host-published simulator control API, with retries while the
/// NodePort comes up (at most 30 s).
pub async fn http_get_json(url: &str) -> anyhow::Result<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = Command::new("curl")
            .args(["-fsS", "--max-time", "5", url])
            .stdin(Stdio::null())
            .output()
            .await
            .context("running curl")?;
        if out.status.success() {
            return serde_json::from_slice(&out.stdout).with_context(|| format!("{url}: not JSON"));
        }
        if Instant::now() > deadline {
            bail!(
                "GET {url} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Deletes the cluster and its Docker network and stops the engine `up`
/// started; caches stay.
pub async fn down(paths: &Paths) -> anyhow::Result<()> {
    let state: Option<KindCluster> = std::fs::read_to_string(paths.state_file())
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    if let Some(c) = &state {
        let docker_up = c.docker(["version"]).await.is_ok();
        if docker_up {
            progress(format!("deleting cluster {CLUSTER_NAME}"));
            output(
                Command::new(&c.kind)
                    .env("DOCKER_HOST", &c.docker_host)
                    .args(["delete", "cluster", "--name", CLUSTER_NAME])
                    .arg("--kubeconfig")
                    .arg(&c.kubeconfig),
            )
            .await?;
            // kind leaves its network (a bridge) behind.
            if c.docker(["network", "inspect", "kind"]).await.is_ok() {
                c.docker(["network", "rm", "kind"]).await?;
                progress("removed the Docker network kind");
            }
        } else {
            progress("the Docker engine does not answer: nothing to delete in it");
        }
    } else {
        progress("no cluster state: nothing to delete");
    }
    output(
        Command::new("bash")
            .arg(paths.repo.join("kind/host/docker.sh"))
            .arg("down"),
    )
    .await?;
    let _ = std::fs::remove_file(paths.state_file());
    let _ = std::fs::remove_file(paths.state_dir().join("kubeconfig"));
    progress("down");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_reports_parse_into_fields() {
        let f = fields(
            "node-image=cvk-local/kind-node:v1.36.3-abc\nkind=/c/kind\nnoise\nkubectl=/c/kubectl\n",
        );
        assert_eq!(f["node-image"], "cvk-local/kind-node:v1.36.3-abc");
        assert_eq!(f["kind"], "/c/kind");
        assert_eq!(f["kubectl"], "/c/kubectl");
        assert_eq!(f.len(), 3);
    }

    #[test]
    fn free_bytes_reads_the_nearest_existing_parent() {
        let dir = tempfile::tempdir().unwrap();
        let free = free_bytes(&dir.path().join("not/yet/there")).unwrap();
        assert!(free > 0);
    }
}
