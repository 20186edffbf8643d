//! Runs one scenario: devices from the target, a namespace in the cluster,
//! the controller as a subprocess with the scenario's gates, the resources
//! applied, faults injected on the timeline, every phase change watched,
//! then the expectations checked.
//!
//! ```text
//!  prepare devices ─► namespace + Secrets + CiscoDevices ─► controller process
//!        │                                                       │
//!        └─ timeline (after / when phase) ─► inject faults       ▼
//!  apply resources ─► watch objects (every phase, in order) ─► expectations
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Event, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::{ApiCapabilities, ApiResource, Discovery, Scope};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use serde_json::json;
use tokio::process::{Child, Command};

use super::model::{Expectation, LoadedScenario, PhaseTrigger, SshTrust};
use super::target::{PreparedDevice, Target, release};
use super::template::Vars;
use crate::testing::TestNamespace;

/// Phases after which an object does not change any more.
pub const TERMINAL_PHASES: &[&str] = &[
    "Succeeded",
    "Failed",
    "PreflightFailed",
    "ValidationFailed",
    "RolledBack",
    "RebootTimeout",
    "Cancelled",
    "Rejected",
];

const FIELD_MANAGER: &str = "cvk-hil";

/// How to start the controller: a program and the arguments before the
/// scenario's own (`cvk-hil controller` re-executes this binary).
#[derive(Debug, Clone)]
pub struct ControllerCommand {
    pub program: PathBuf,
    pub args: Vec<String>,
}

impl ControllerCommand {
    /// `<program> <args> run` for one namespace, with the gates given, the
    /// insecure gNOI listener allowed (simulators), ephemeral metrics and
    /// health ports, text logs with the controller at debug, and its output
    /// appended to `log`.
    pub(crate) fn command(
        &self,
        kubeconfig: &Path,
        ns: &str,
        write_class: bool,
        software_upgrade: bool,
        log: &Path,
    ) -> Result<Command, String> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| format!("controller log {}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let gate = |on: bool| if on { "1" } else { "0" };
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .arg("run")
            .env("KUBECONFIG", kubeconfig)
            .env("CISCO_VK_DEVICE_NAMESPACE", ns)
            .env("CISCO_VK_ENABLE_WRITE_CLASS_GNOI", gate(write_class))
            .env(
                "CISCO_VK_ENABLE_IOSXE_SOFTWARE_UPGRADE",
                gate(software_upgrade),
            )
            .env("CISCO_VK_GNOI_INSECURE", "1")
            .env("CVK_METRICS_BIND_ADDRESS", "127.0.0.1:0")
            .env("CVK_HEALTH_PROBE_BIND_ADDRESS", "127.0.0.1:0")
            .env("CVK_LOG_FORMAT", "text")
            .env("LOG_LEVEL", "info,cvk_controller=debug")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true);
        Ok(cmd)
    }
}

/// Settings shared by every scenario of a run.
#[derive(Clone)]
pub struct RunContext {
    /// Admin kubeconfig of the cluster.
    pub kubeconfig: String,
    pub target: Target,
    pub controller: ControllerCommand,
    /// Where logs of failed scenarios are kept.
    pub artifacts: PathBuf,
    /// Live progress lines.
    pub progress: Arc<dyn Fn(String) + Send + Sync>,
}

/// How a scenario ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Passed,
    Failed(Vec<String>),
    Skipped(String),
}

/// The record of one scenario.
#[derive(Debug, Clone)]
pub struct ScenarioResult {
    pub name: String,
    pub path: PathBuf,
    pub outcome: Outcome,
    pub duration: Duration,
    /// Every phase each watched object showed, in order.
    pub phases: BTreeMap<String, Vec<String>>,
    /// Logs kept for a failed scenario.
    pub logs: Option<PathBuf>,
}

/// Why a scenario is skipped on this target, if it is.
pub fn skip_reason(target: &Target, s: &LoadedScenario) -> Option<String> {
    match target {
        Target::Sim => None,
        Target::Hardware {
            allow_destructive, ..
        } => {
            if !s.has_tag("hardware-safe") {
                Some("not tagged hardware-safe".into())
            } else if s.has_tag("destructive") && !allow_destructive {
                Some("destructive: needs --allow-destructive".into())
            } else {
                None
            }
        }
    }
}

/// Runs one scenario to its end.
pub async fn run(ctx: &RunContext, s: &LoadedScenario) -> ScenarioResult {
    let started = Instant::now();
    let name = s.scenario.name.clone();
    let mut result = ScenarioResult {
        name: name.clone(),
        path: s.path.clone(),
        outcome: Outcome::Passed,
        duration: Duration::ZERO,
        phases: BTreeMap::new(),
        logs: None,
    };
    if let Some(reason) = skip_reason(&ctx.target, s) {
        result.outcome = Outcome::Skipped(reason);
        return result;
    }
    let log_dir = ctx.artifacts.join(&name);
    let _ = std::fs::remove_dir_all(&log_dir);
    let outcome = match std::fs::create_dir_all(&log_dir) {
        Ok(()) => {
            let budget = s.scenario.timeout;
            match tokio::time::timeout(budget, run_inner(ctx, s, &log_dir, &mut result)).await {
                Ok(Ok(failures)) if failures.is_empty() => Outcome::Passed,
                Ok(Ok(failures)) => Outcome::Failed(failures),
                Ok(Err(e)) => Outcome::Failed(vec![e]),
                Err(_) => Outcome::Failed(vec![format!("scenario timeout {budget:?} reached")]),
            }
        }
        Err(e) => Outcome::Failed(vec![format!("creating {}: {e}", log_dir.display())]),
    };
    result.duration = started.elapsed();
    if outcome == Outcome::Passed {
        let _ = std::fs::remove_dir_all(&log_dir);
    } else {
        result.logs = Some(log_dir);
    }
    result.outcome = outcome;
    result
}

/// Shared between the watchers and the main loop.
#[derive(Default)]
struct Observed {
    phases: HashMap<String, Vec<String>>,
    latest: HashMap<String, DynamicObject>,
    reached_at: HashMap<(String, String), Duration>,
}

async fn run_inner(
    ctx: &RunContext,
    s: &LoadedScenario,
    log_dir: &Path,
    result: &mut ScenarioResult,
) -> Result<Vec<String>, String> {
    let sc = &s.scenario;
    let say = |line: String| (ctx.progress)(format!("[{}] {line}", sc.name));
    let client = crate::control_plane::client_from_kubeconfig(&ctx.kubeconfig)
        .await
        .map_err(|e| e.to_string())?;

    let devices = ctx.target.prepare(&sc.devices).await?;
    let ns = TestNamespace::create(&client, &format!("hil-{}", truncate(&sc.name, 40)))
        .await
        .map_err(|e| e.to_string())?;
    say(format!(
        "namespace {}, {} device(s)",
        ns.name(),
        devices.len()
    ));

    let outcome = async {
        let mut vars = Vars::default();
        vars.set("namespace", ns.name());
        for (k, v) in ctx.target.vars() {
            vars.set(k, v);
        }
        for d in &devices {
            create_device(&client, ns.name(), d).await?;
            let p = format!("devices.{}", d.name);
            vars.set(format!("{p}.name"), d.name.clone());
            vars.set(format!("{p}.address"), d.address.clone());
            vars.set(format!("{p}.port"), d.port.to_string());
            if let Some(v) = &d.version {
                vars.set(format!("{p}.version"), v.clone());
            }
            if let Some(port) = d.ssh_port {
                vars.set(format!("{p}.sshPort"), port.to_string());
            }
            if let Some(sim) = &d.sim {
                // Quoted (a JSON string is a YAML double-quoted scalar), so
                // the multi-line text can stand as any YAML value.
                let text = iosxe_sim::cli::running_config(&sim.handle.snapshot());
                vars.set(
                    format!("{p}.runningConfig"),
                    serde_json::Value::String(text).to_string(),
                );
            }
        }
        let images = serve_images(s, &client, ns.name(), &devices, log_dir, &mut vars).await?;
        let ca_file = images.as_ref().map(|i| i.ca_file.as_path());
        let mut controller = Controller {
            child: start_controller(ctx, s, ns.name(), log_dir, ca_file).await?,
            start: Box::new(|| start_controller(ctx, s, ns.name(), log_dir, ca_file).boxed()),
        };
        let checked = drive(
            s,
            &client,
            ns.name(),
            &devices,
            &vars,
            &mut controller,
            result,
            &say,
        )
        .await;
        stop_controller(&mut controller.child).await;
        checked
    }
    .await;

    ns.delete().await;
    release(devices).await;
    outcome
}

fn truncate(s: &str, n: usize) -> &str {
    s[..s.len().min(n)].trim_end_matches('-')
}

/// The CiscoDevice's `spec.ssh` for the scenario's host-key trust, with its
/// known_hosts Secret created; none when the switch serves no CLI or its
/// key is not known.
async fn ssh_spec(
    secrets: &Api<Secret>,
    d: &PreparedDevice,
) -> Result<Option<serde_json::Value>, String> {
    let Some(port) = d.ssh_port else {
        return Ok(None);
    };
    let known_hosts = match d.ssh_trust {
        SshTrust::Insecure => {
            return Ok(Some(
                json!({ "port": port, "insecureAcceptAnyHostKey": true }),
            ));
        }
        SshTrust::Known => match &d.known_hosts {
            Some(k) => k.clone(),
            None => return Ok(None),
        },
        SshTrust::Wrong => {
            let (_, public) = iosxe_sim::image_servers::ssh::generate_ed25519();
            let host = if port == 22 {
                d.address.clone()
            } else {
                format!("[{}]:{port}", d.address)
            };
            format!("{host} {public}\n")
        }
    };
    let name = format!("{}-ssh-known-hosts", d.name);
    let secret =
        json!({ "metadata": { "name": name }, "stringData": { "knownHosts": known_hosts } });
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(secret).map_err(|e| e.to_string())?,
        )
        .await
        .map_err(|e| format!("creating Secret {name}: {e}"))?;
    Ok(Some(
        json!({ "port": port, "knownHostsSecretRef": { "name": name } }),
    ))
}

pub(crate) async fn create_device(
    client: &Client,
    ns: &str,
    d: &PreparedDevice,
) -> Result<(), String> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let mut data = BTreeMap::new();
    if let Some(u) = &d.username {
        data.insert("username".to_owned(), u.clone());
    }
    if let Some(p) = &d.password {
        data.insert("password".to_owned(), p.clone());
    }
    if let Some(e) = &d.enable_secret {
        data.insert("enableSecret".to_owned(), e.clone());
    }
    let cred = format!("{}-credentials", d.name);
    let secret = json!({ "metadata": { "name": cred }, "stringData": data });
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(secret).map_err(|e| e.to_string())?,
        )
        .await
        .map_err(|e| format!("creating Secret {cred}: {e}"))?;
    let mut gnoi =
        json!({ "port": d.port, "transportSecurity": if d.tls { "tls" } else { "insecure" } });
    if d.tls {
        let tls_name = format!("{}-gnoi-tls", d.name);
        let ca = d
            .ca_pem
            .clone()
            .ok_or_else(|| format!("{}: TLS without a CA", d.name))?;
        let secret = json!({ "metadata": { "name": tls_name }, "stringData": { "ca.crt": ca } });
        secrets
            .create(
                &PostParams::default(),
                &serde_json::from_value(secret).map_err(|e| e.to_string())?,
            )
            .await
            .map_err(|e| format!("creating Secret {tls_name}: {e}"))?;
        let mut tls = json!({ "secretRef": { "name": tls_name } });
        if let Some(sn) = &d.server_name {
            tls["serverName"] = json!(sn);
        }
        gnoi["tls"] = tls;
    }
    let mut device = json!({
        "apiVersion": "cisco.vk/v1alpha1",
        "kind": "CiscoDevice",
        "metadata": { "name": d.name, "labels": d.labels },
        "spec": {
            "driver": "XE",
            "address": d.address,
            "credentialSecretRef": { "name": cred },
            "gnoi": gnoi,
        }
    });
    if let Some(ssh) = ssh_spec(&secrets, d).await? {
        device["spec"]["ssh"] = ssh;
    }
    let gvk = GroupVersionKind::gvk("cisco.vk", "v1alpha1", "CiscoDevice");
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), ns, &ApiResource::from_gvk(&gvk));
    let obj: DynamicObject = serde_json::from_value(device).map_err(|e| e.to_string())?;
    api.create(&PostParams::default(), &obj)
        .await
        .map_err(|e| format!("creating CiscoDevice {}: {e}", d.name))?;
    Ok(())
}

async fn start_controller(
    ctx: &RunContext,
    s: &LoadedScenario,
    ns: &str,
    log_dir: &Path,
    https_ca: Option<&Path>,
) -> Result<Child, String> {
    let kubeconfig = log_dir.join("kubeconfig");
    crate::control_plane::write_private(&kubeconfig, &ctx.kubeconfig).map_err(|e| e.to_string())?;
    let log = log_dir.join("controller.log");
    let _ = std::fs::remove_file(&log);
    let c = &s.scenario.controller;
    let mut cmd =
        ctx.controller
            .command(&kubeconfig, ns, c.write_class, c.software_upgrade, &log)?;
    if let Some(ca) = https_ca {
        // The image client trusts the native roots, which rustls-native-certs
        // reads from SSL_CERT_FILE when it is set: the HTTPS server's CA.
        cmd.env("SSL_CERT_FILE", ca);
    }
    cmd.envs(&c.env);
    cmd.spawn().map_err(|e| {
        format!(
            "starting the controller {}: {e}",
            ctx.controller.program.display()
        )
    })
}

/// The controller process of a scenario, and how to start it again.
struct Controller<'a> {
    child: Child,
    start: Box<dyn Fn() -> futures::future::BoxFuture<'a, Result<Child, String>> + 'a>,
}

impl Controller<'_> {
    /// SIGKILL, reaped, then a new process with the same command: a crash
    /// and the restart a kubelet would do.
    async fn kill_and_restart(&mut self) -> Result<(), String> {
        self.child
            .kill()
            .await
            .map_err(|e| format!("killing the controller: {e}"))?;
        self.child = (self.start)().await?;
        Ok(())
    }
}

async fn stop_controller(child: &mut Child) {
    if let Some(pid) = child.id() {
        // SIGTERM first: the controller shuts down gracefully.
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status();
        if tokio::time::timeout(Duration::from_secs(5), child.wait())
            .await
            .is_ok()
        {
            return;
        }
    }
    let _ = child.kill().await;
}

/// Resolves `Kind` (and apiVersion where known) to an API resource.
struct Resolver {
    discovery: Discovery,
}

impl Resolver {
    async fn new(client: &Client) -> Result<Self, String> {
        let discovery = Discovery::new(client.clone())
            .filter(&["", "ops.cisco.vk", "cisco.vk"])
            .run()
            .await
            .map_err(|e| format!("API discovery: {e}"))?;
        Ok(Self { discovery })
    }

    fn by_kind(&self, kind: &str) -> Result<(ApiResource, ApiCapabilities), String> {
        self.discovery
            .groups()
            .flat_map(|g| g.recommended_resources())
            .find(|(ar, _)| ar.kind == kind)
            .ok_or_else(|| format!("the cluster serves no kind {kind:?}"))
    }
}

#[allow(clippy::too_many_arguments)]
async fn drive(
    s: &LoadedScenario,
    client: &Client,
    ns: &str,
    devices: &[PreparedDevice],
    vars: &Vars,
    controller: &mut Controller<'_>,
    result: &mut ScenarioResult,
    say: &(dyn Fn(String) + Sync),
) -> Result<Vec<String>, String> {
    let sc = &s.scenario;
    let resolver = Resolver::new(client).await?;
    let start = Instant::now();
    let observed = Arc::new(Mutex::new(Observed::default()));

    // Watch every kind the expectations and triggers name.
    let mut kinds: Vec<String> = sc
        .expect
        .iter()
        .filter_map(|e| e.object.as_ref())
        .chain(
            sc.timeline
                .iter()
                .filter_map(|t| t.when.as_ref().map(|w| &w.object)),
        )
        .chain(
            sc.resources
                .iter()
                .filter_map(|r| r.when.as_ref().map(|w| &w.object)),
        )
        .map(|o| {
            o.split_once('/')
                .map(|(k, _)| k.to_owned())
                .unwrap_or_default()
        })
        .collect();
    kinds.sort();
    kinds.dedup();
    let (progress_tx, mut progress_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    // Each watcher reports once its initial list is done: nothing is applied
    // before every watch is established, so no transition can happen before
    // a watch sees it.
    let (listed_tx, mut listed_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let mut watchers = Vec::new();
    for kind in &kinds {
        let (ar, _) = resolver.by_kind(kind)?;
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
        let observed = observed.clone();
        let tx = progress_tx.clone();
        let listed = listed_tx.clone();
        let kind = kind.clone();
        watchers.push(tokio::spawn(watch_phases(
            api, kind, observed, tx, listed, start,
        )));
    }
    drop(progress_tx);
    drop(listed_tx);
    if let Err(e) = wait_for_initial_lists(&kinds, &mut listed_rx, WATCH_LIST_TIMEOUT).await {
        for w in &watchers {
            w.abort();
        }
        return Err(e);
    }

    let mut pending_resources: Vec<usize> = (0..sc.resources.len()).collect();
    let mut pending_steps: Vec<usize> = (0..sc.timeline.len()).collect();
    let reached = |o: &Observed, t: &PhaseTrigger| {
        o.phases
            .get(&t.object)
            .is_some_and(|p| p.contains(&t.phase))
    };
    let outcome = loop {
        while let Ok(line) = progress_rx.try_recv() {
            say(line);
        }
        let elapsed = start.elapsed();
        // Timeline steps whose time has come; they go first, so a resource
        // that waits for the same moment sees what the step changed.
        let mut fire = Vec::new();
        {
            let o = observed.lock().expect("observed");
            pending_steps.retain(|&i| {
                let t = &sc.timeline[i];
                let ready = t.after.is_some_and(|a| elapsed >= a)
                    || t.when.as_ref().is_some_and(|w| reached(&o, w));
                if ready {
                    fire.push(i);
                }
                !ready
            });
        }
        for i in fire {
            let step = &sc.timeline[i];
            if step.kill_controller {
                controller
                    .kill_and_restart()
                    .await
                    .map_err(|e| format!("timeline[{i}]: {e}"))?;
                say(format!(
                    "timeline[{i}]: controller SIGKILLed and started again"
                ));
                continue;
            }
            let dev = devices
                .iter()
                .find(|d| d.name == step.device)
                .expect("validated device");
            let Some(sim) = &dev.sim else {
                say(format!(
                    "timeline[{i}]: timeline steps need the sim target; skipped"
                ));
                continue;
            };
            if let Some(r) = &step.reboot {
                sim.reboot(r).map_err(|e| format!("timeline[{i}]: {e}"))?;
                say(format!("timeline[{i}]: rebooting {}", dev.name));
            } else if step.clear_faults {
                sim.handle.clear_faults();
                say(format!("timeline[{i}]: cleared faults on {}", dev.name));
            } else if let Some(state) = &step.state {
                let patch: iosxe_sim::StatePatch = serde_json::from_value(state.clone())
                    .map_err(|e| format!("timeline[{i}].state: {e}"))?;
                sim.handle
                    .apply(patch)
                    .map_err(|e| format!("timeline[{i}].state: {e}"))?;
                say(format!("timeline[{i}]: state {state} on {}", dev.name));
            } else if let Some(f) = &step.inject {
                sim.inject(f).map_err(|e| format!("timeline[{i}]: {e}"))?;
                say(format!("timeline[{i}]: injected {f} on {}", dev.name));
            }
        }
        // Resources whose time has come.
        let mut due = Vec::new();
        {
            let o = observed.lock().expect("observed");
            pending_resources.retain(|&i| {
                let r = &sc.resources[i];
                let ready = r.after.is_none_or(|a| elapsed >= a)
                    && r.when.as_ref().is_none_or(|w| reached(&o, w))
                    && r.when_called.as_ref().is_none_or(|c| called(devices, c));
                if ready {
                    due.push(i);
                }
                !ready
            });
        }
        for i in due {
            let objects = observed.clone();
            let lookup = move |key: &str| status_field(&objects.lock().expect("observed"), key);
            apply_resource(client, &resolver, ns, s, i, vars, &lookup).await?;
            say(format!("applied resources[{i}]"));
        }
        if pending_resources.is_empty()
            && all_settled(&sc.expect, &observed.lock().expect("observed"))
        {
            break Ok(());
        }
        if watchers.iter().any(|w| w.is_finished()) {
            break Err("a watch ended unexpectedly".to_owned());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    while let Ok(line) = progress_rx.try_recv() {
        say(line);
    }
    // Journal counts settle a moment after the last phase change.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for w in &watchers {
        w.abort();
    }
    outcome?;

    let events = Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .map_err(|e| format!("listing events: {e}"))?
        .items;
    let mut failures = Vec::new();
    {
        let mut o = observed.lock().expect("observed");
        merge_phase_transitions(&mut o.phases, &events);
        result.phases = o
            .phases
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (i, e) in sc.expect.iter().enumerate() {
            check(i, e, &o, &events, devices, vars, &mut failures);
        }
    }
    for (i, e) in sc.expect.iter().enumerate() {
        if let Some(c) = &e.config_map {
            check_config_map(i, c, client, ns, &mut failures).await;
        }
    }
    Ok(failures)
}

async fn check_config_map(
    i: usize,
    c: &super::model::ConfigMapExpectation,
    client: &Client,
    ns: &str,
    failures: &mut Vec<String>,
) {
    let cm = match Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get_opt(&c.name)
        .await
    {
        Ok(Some(cm)) => cm,
        Ok(None) => {
            failures.push(format!("expect[{i}]: no ConfigMap {}", c.name));
            return;
        }
        Err(e) => {
            failures.push(format!("expect[{i}]: reading ConfigMap {}: {e}", c.name));
            return;
        }
    };
    let Some(value) = cm.data.as_ref().and_then(|d| d.get(&c.key)) else {
        failures.push(format!(
            "expect[{i}]: ConfigMap {} has no key {:?}",
            c.name, c.key
        ));
        return;
    };
    if let Some(min) = c.min_bytes
        && value.len() < min
    {
        failures.push(format!(
            "expect[{i}]: ConfigMap {} key {} holds {} bytes, want at least {min}",
            c.name,
            c.key,
            value.len()
        ));
    }
    if let Some(want) = &c.contains
        && !value.contains(want.as_str())
    {
        failures.push(format!(
            "expect[{i}]: ConfigMap {} key {} does not contain {want:?}",
            c.name, c.key
        ));
    }
}

/// Whether the device of `c` has received a call of its method (never on
/// hardware: no journal to read).
fn called(devices: &[PreparedDevice], c: &super::model::CallTrigger) -> bool {
    devices
        .iter()
        .find(|d| d.name == c.device)
        .and_then(|d| d.sim.as_ref())
        .is_some_and(|sim| sim.journal_count(&c.method) > 0)
}

/// Records every phase each object of `kind` shows, in order, for the
/// scenario's expectations and triggers. Sends `kind` on `listed` once the
/// initial list is done.
///
/// The list is served from the API server's watch cache (`resourceVersion=0`,
/// no limit): while that cache is initializing (a CRD's first requests) such
/// a list is not answered from etcd (the API server holds it, or refuses it
/// with 429 and it is retried with backoff), so the initial list completes
/// only once the cache can serve the watch that follows from the list's
/// resourceVersion. Measured on a CRD created a moment before: this list
/// answers after about 1 s, the default list after 40 ms. A list answered by
/// etcd (the default most-recent, paged list) can return a resourceVersion
/// older than the cache's start; the watch from it then ends in 410 and a re-list that
/// delivers only the present state, losing phases that lasted less than the
/// gap (a FactoryReset's Running, 15 ms).
async fn watch_phases(
    api: Api<DynamicObject>,
    kind: String,
    observed: Arc<Mutex<Observed>>,
    tx: tokio::sync::mpsc::UnboundedSender<String>,
    listed: tokio::sync::mpsc::UnboundedSender<String>,
    start: Instant,
) {
    let mut config = watcher::Config::default().any_semantic();
    config.page_size = None;
    let mut stream = watcher::watcher(api, config).default_backoff().boxed();
    let mut lists = 0u32;
    while let Some(ev) = stream.next().await {
        let obj = match ev {
            Ok(watcher::Event::Apply(o)) | Ok(watcher::Event::InitApply(o)) => o,
            Ok(watcher::Event::Init) => {
                lists += 1;
                if lists > 1 {
                    // A re-list delivers only the present state:
                    // a phase that lasted less than the gap is
                    // known only from the Events from here on.
                    let _ = tx.send(format!(
                        "watch on {kind} re-listed ({:.1}s)",
                        start.elapsed().as_secs_f64()
                    ));
                }
                continue;
            }
            Ok(watcher::Event::InitDone) => {
                let _ = listed.send(kind.clone());
                continue;
            }
            Ok(watcher::Event::Delete(_)) => continue,
            Err(e) => {
                let _ = tx.send(format!(
                    "watch on {kind}: {e} ({:.1}s)",
                    start.elapsed().as_secs_f64()
                ));
                continue;
            }
        };
        let key = format!("{kind}/{}", obj.metadata.name.clone().unwrap_or_default());
        let phase = obj.data["status"]["phase"].as_str().map(str::to_owned);
        let mut o = observed.lock().expect("observed");
        if let Some(phase) = phase {
            let seen = o.phases.entry(key.clone()).or_default();
            if seen.last() != Some(&phase) {
                let from = seen.last().cloned().unwrap_or_else(|| "-".into());
                seen.push(phase.clone());
                let t = start.elapsed();
                o.reached_at
                    .entry((key.clone(), phase.clone()))
                    .or_insert(t);
                let _ = tx.send(format!("{key}: {from} → {phase} ({:.1}s)", t.as_secs_f64()));
            }
        }
        o.latest.insert(key, obj);
    }
}

/// How long the watches may take to list before the scenario gives up.
const WATCH_LIST_TIMEOUT: Duration = Duration::from_secs(30);

/// Waits until every kind in `kinds` has reported its initial list done.
async fn wait_for_initial_lists(
    kinds: &[String],
    listed: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    timeout: Duration,
) -> Result<(), String> {
    let mut waiting: Vec<&String> = kinds.iter().collect();
    let deadline = tokio::time::Instant::now() + timeout;
    while !waiting.is_empty() {
        match tokio::time::timeout_at(deadline, listed.recv()).await {
            Ok(Some(kind)) => waiting.retain(|k| **k != kind),
            Ok(None) => return Err("a watch ended before its initial list".to_owned()),
            Err(_) => {
                return Err(format!(
                    "the watch of {} did not finish its initial list within {timeout:?}",
                    waiting
                        .iter()
                        .map(|k| k.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
    }
    Ok(())
}

/// One `PhaseTransition` Event: `from → to: why`, and when it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PhaseTransitionEvent {
    object: String,
    from: String,
    to: String,
    at: Option<MicroTime>,
}

/// The phase transitions the controller announced, from the Events' notes
/// (`Transferring → Validating: image hash verified`).
fn phase_transition_events(events: &[Event]) -> Vec<PhaseTransitionEvent> {
    let mut out: Vec<PhaseTransitionEvent> = events
        .iter()
        .filter(|e| e.reason.as_deref() == Some(cvk_controller::reason::PHASE_TRANSITION))
        .filter_map(|e| {
            let kind = e.involved_object.kind.as_deref()?;
            let name = e.involved_object.name.as_deref()?;
            let msg = e.message.as_deref()?;
            let (head, _) = msg.split_once(": ").unwrap_or((msg, ""));
            let (from, to) = head.split_once(" → ")?;
            let at = e
                .event_time
                .clone()
                .or_else(|| e.first_timestamp.as_ref().map(|t| MicroTime(t.0)));
            Some(PhaseTransitionEvent {
                object: format!("{kind}/{name}"),
                from: from.trim().to_owned(),
                to: to.trim().to_owned(),
                at,
            })
        })
        .collect();
    // A stable sort keeps the API server's order for equal times.
    out.sort_by_key(|t| t.at.as_ref().map(|m| m.0));
    out
}

/// Completes each object's watched phases with the transitions its Events
/// announced: a watch that re-listed after a dropped connection can miss a
/// phase that lasted a moment, the Events do not. The Events' chain is used
/// only when it is consistent (each `from` the previous `to`) and contains
/// every watched phase in order; otherwise the watch stays the record.
fn merge_phase_transitions(phases: &mut HashMap<String, Vec<String>>, events: &[Event]) {
    let mut chains: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut broken: Vec<String> = Vec::new();
    for t in phase_transition_events(events) {
        let chain = chains.entry(t.object.clone()).or_default();
        match chain.last() {
            None => chain.extend([t.from, t.to]),
            Some(last) if *last == t.from => chain.push(t.to),
            Some(_) => broken.push(t.object),
        }
    }
    for (object, chain) in chains {
        if broken.contains(&object) {
            continue;
        }
        let watched = phases.entry(object).or_default();
        if is_subsequence(watched, &chain) {
            *watched = chain;
        } else if let Some(start) = watched.iter().position(|p| *p == chain[0])
            && is_subsequence(&watched[start..], &chain)
        {
            // The watch saw phases before the first announced transition
            // (a phase written without an Event): keep that prefix.
            watched.truncate(start);
            watched.extend(chain);
        }
    }
}

fn all_settled(expect: &[Expectation], o: &Observed) -> bool {
    expect
        .iter()
        .filter_map(|e| e.object.as_ref().map(|obj| (obj, e)))
        .all(|(obj, e)| {
            let Some(seen) = o.phases.get(obj) else {
                return false;
            };
            let last = seen.last().map(String::as_str).unwrap_or_default();
            match &e.terminal {
                Some(t) => last == t || TERMINAL_PHASES.contains(&last),
                None => {
                    TERMINAL_PHASES.contains(&last)
                        || is_subsequence(&e.phases, seen) && !e.phases.is_empty()
                }
            }
        })
}

async fn apply_resource(
    client: &Client,
    resolver: &Resolver,
    ns: &str,
    s: &LoadedScenario,
    i: usize,
    vars: &Vars,
    objects: &dyn Fn(&str) -> Option<String>,
) -> Result<(), String> {
    let r = &s.scenario.resources[i];
    if let Some(target) = &r.delete {
        let (kind, name) = target.split_once('/').expect("validated: Kind/name");
        let (ar, _) = resolver
            .by_kind(kind)
            .map_err(|e| format!("resources[{i}]: {e}"))?;
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
        api.delete(name, &kube::api::DeleteParams::default())
            .await
            .map_err(|e| format!("resources[{i}]: deleting {target}: {e}"))?;
        return Ok(());
    }
    let text = match (&r.inline, &r.file) {
        (Some(t), _) => t.clone(),
        (None, Some(f)) => {
            let path = s.path.parent().unwrap_or(Path::new(".")).join(f);
            std::fs::read_to_string(&path)
                .map_err(|e| format!("resources[{i}].file {}: {e}", path.display()))?
        }
        (None, None) => unreachable!("validated: one of inline, file or delete"),
    };
    let text = vars
        .render_with(&text, objects)
        .map_err(|e| format!("resources[{i}]: {e}"))?;
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let value: serde_json::Value =
            serde::Deserialize::deserialize(doc).map_err(|e| format!("resources[{i}]: {e}"))?;
        if value.is_null() {
            continue;
        }
        let mut obj: DynamicObject =
            serde_json::from_value(value).map_err(|e| format!("resources[{i}]: {e}"))?;
        let kind = obj
            .types
            .as_ref()
            .map(|t| t.kind.clone())
            .unwrap_or_default();
        let name = obj
            .metadata
            .name
            .clone()
            .ok_or_else(|| format!("resources[{i}]: a {kind} without metadata.name"))?;
        let (ar, caps) = resolver
            .by_kind(&kind)
            .map_err(|e| format!("resources[{i}]: {e}"))?;
        let api: Api<DynamicObject> = if caps.scope == Scope::Namespaced {
            obj.metadata.namespace = Some(ns.to_owned());
            Api::namespaced_with(client.clone(), ns, &ar)
        } else {
            Api::all_with(client.clone(), &ar)
        };
        let applied = api
            .patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&obj),
            )
            .await;
        match (applied, &r.refused) {
            (Ok(_), None) => {}
            (Err(e), None) => {
                return Err(format!("resources[{i}]: applying {kind}/{name}: {e}"));
            }
            (Ok(_), Some(want)) => {
                return Err(format!(
                    "resources[{i}]: the API server accepted {kind}/{name}; it must refuse it ({want:?})"
                ));
            }
            (Err(e), Some(want)) => {
                let msg = e.to_string();
                if !msg.contains(want.as_str()) {
                    return Err(format!(
                        "resources[{i}]: {kind}/{name} was refused, but the message does not contain {want:?}: {msg}"
                    ));
                }
            }
        }
    }
    Ok(())
}

/// A template key `status.<Kind>/<name>.<path>`: a field of the status of
/// an object the scenario watches, as last seen (a rollout's
/// `status.IOSXESoftwareRollout/ro.frozenPlan.hash` for its approval).
fn status_field(o: &Observed, key: &str) -> Option<String> {
    let rest = key.strip_prefix("status.")?;
    let (kind, rest) = rest.split_once('/')?;
    let (name, path) = rest.split_once('.')?;
    let obj = o.latest.get(&format!("{kind}/{name}"))?;
    let mut v = &obj.data["status"];
    for part in path.split('.') {
        v = match part.parse::<usize>() {
            Ok(n) => &v[n],
            Err(_) => &v[part],
        };
    }
    match v {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

fn is_subsequence(want: &[String], seen: &[String]) -> bool {
    let mut it = seen.iter();
    want.iter().all(|w| it.any(|s| s == w))
}

fn check(
    i: usize,
    e: &Expectation,
    o: &Observed,
    events: &[Event],
    devices: &[PreparedDevice],
    vars: &Vars,
    failures: &mut Vec<String>,
) {
    // Expected texts may use the manifests' template keys
    // (`Version {{ image.version }}` on hardware).
    let render = |text: &str, what: String, failures: &mut Vec<String>| match vars.render(text) {
        Ok(t) => Some(t),
        Err(err) => {
            failures.push(format!("expect[{i}].{what}: {err}"));
            None
        }
    };
    if let Some(j) = &e.journal {
        let dev = devices
            .iter()
            .find(|d| d.name == j.device)
            .expect("validated device");
        let Some(sim) = &dev.sim else {
            // Lab switches keep no journal this runner can read.
            return;
        };
        let n = if j.exact {
            sim.journal_count_exact(&j.method)
        } else {
            sim.journal_count(&j.method)
        };
        let ok = j.count.is_none_or(|c| n == c)
            && j.min.is_none_or(|m| n >= m)
            && j.max.is_none_or(|m| n <= m);
        if !ok {
            failures.push(format!(
                "expect[{i}]: {} saw {n} call(s) of {} (want {})",
                j.device,
                j.method,
                describe_bounds(j.count, j.min, j.max)
            ));
        }
        return;
    }
    if let Some(u) = &e.unavailable {
        let mut journals = Vec::new();
        for name in &u.devices {
            let dev = devices
                .iter()
                .find(|d| &d.name == name)
                .expect("validated device");
            let Some(sim) = &dev.sim else {
                // Lab switches keep no journal this runner can read.
                return;
            };
            journals.push((name.as_str(), sim.handle.journal()));
        }
        let (most, when) = most_unavailable(&journals);
        if most > u.max || u.min.is_some_and(|m| most < m) {
            failures.push(format!(
                "expect[{i}]: at most {most} of {:?} were unavailable at once{} (want {})",
                u.devices,
                when.map(|w| format!(" ({})", w.join(", ")))
                    .unwrap_or_default(),
                describe_bounds(None, u.min, Some(u.max))
            ));
        }
        return;
    }
    let Some(obj) = e.object.as_deref() else {
        // A configMap expectation, checked by check_config_map.
        return;
    };
    let seen = o.phases.get(obj).cloned().unwrap_or_default();
    if !is_subsequence(&e.phases, &seen) {
        failures.push(format!(
            "expect[{i}]: {obj} phases {seen:?} do not include {:?} in order",
            e.phases
        ));
    }
    for p in &e.never_phases {
        if seen.contains(p) {
            failures.push(format!("expect[{i}]: {obj} showed phase {p} ({seen:?})"));
        }
    }
    if let Some(t) = &e.terminal {
        if seen.last() != Some(t) {
            failures.push(format!(
                "expect[{i}]: {obj} ended in {:?}, want {t} (phases {seen:?})",
                seen.last()
            ));
        }
        if let (Some(within), Some(at)) = (e.within, o.reached_at.get(&(obj.to_owned(), t.clone())))
            && *at > within
        {
            failures.push(format!(
                "expect[{i}]: {obj} reached {t} after {at:?}, want within {within:?}"
            ));
        }
    }
    let Some(latest) = o.latest.get(obj) else {
        failures.push(format!("expect[{i}]: {obj} was never seen"));
        return;
    };
    let status = &latest.data["status"];
    for c in &e.conditions {
        let found = status["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|x| x["type"] == c.type_.as_str()));
        match found {
            None => failures.push(format!("expect[{i}]: {obj} has no condition {}", c.type_)),
            Some(x) => {
                if x["status"] != c.status.as_str() {
                    failures.push(format!(
                        "expect[{i}]: {obj} condition {} is {}, want {}",
                        c.type_, x["status"], c.status
                    ));
                }
                if let Some(r) = &c.reason
                    && x["reason"] != r.as_str()
                {
                    failures.push(format!(
                        "expect[{i}]: {obj} condition {} reason {}, want {r}",
                        c.type_, x["reason"]
                    ));
                }
            }
        }
    }
    for (path, want) in &e.status {
        let mut v = status;
        for part in path.split('.') {
            v = match part.parse::<usize>() {
                Ok(n) => &v[n],
                Err(_) => &v[part],
            };
        }
        let text = match v {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Null => {
                failures.push(format!("expect[{i}]: {obj} has no status.{path}"));
                continue;
            }
            other => other.to_string(),
        };
        let Some(want) = render(want, format!("status.{path}"), failures) else {
            continue;
        };
        if !text.contains(want.as_str()) {
            failures.push(format!(
                "expect[{i}]: {obj} status.{path} is {text:?}, want it to contain {want:?}"
            ));
        }
    }
    let name = obj.split_once('/').map(|(_, n)| n).unwrap_or_default();
    for (k, ev) in e.events.iter().enumerate() {
        let message = match &ev.message {
            Some(m) => match render(m, format!("events[{k}].message"), failures) {
                Some(m) => Some(m),
                None => continue,
            },
            None => None,
        };
        let hit = events.iter().any(|x| {
            x.involved_object.name.as_deref() == Some(name)
                && x.reason.as_deref() == Some(ev.reason.as_str())
                && message.as_ref().is_none_or(|m| {
                    x.message
                        .as_deref()
                        .unwrap_or_default()
                        .contains(m.as_str())
                })
        });
        if !hit {
            failures.push(format!(
                "expect[{i}]: no Event {}{} on {obj}",
                ev.reason,
                message
                    .as_ref()
                    .map(|m| format!(" containing {m:?}"))
                    .unwrap_or_default()
            ));
        }
    }
}

/// The most devices unavailable at once, and which they were, from their
/// journals: a device is unavailable from the arrival of an OS.Activate to
/// the arrival of the first call it answered OK after it answered (or
/// dropped) the Activate, or to the end of the journal. A call answered in
/// the simulator's short grace before the reload would end the span early,
/// so this can count low, never high.
fn most_unavailable(
    journals: &[(&str, Vec<iosxe_sim::JournalEntry>)],
) -> (usize, Option<Vec<String>>) {
    let mut edges: Vec<(u64, i32, &str)> = Vec::new();
    for (name, journal) in journals {
        for a in journal
            .iter()
            .filter(|e| e.method == "/gnoi.os.OS/Activate")
        {
            let answered = a.time_ns + a.duration_ms * 1_000_000;
            let back = journal
                .iter()
                .filter(|e| e.time_ns > answered && e.code == "OK")
                .map(|e| e.time_ns)
                .min()
                .unwrap_or(u64::MAX);
            edges.push((a.time_ns, 1, name));
            edges.push((back, -1, name));
        }
    }
    // At one instant an end goes before a start.
    edges.sort_by_key(|&(t, d, _)| (t, d));
    let mut now: Vec<&str> = Vec::new();
    let mut most = 0;
    let mut when = None;
    for (_, d, name) in edges {
        if d > 0 {
            now.push(name);
            if now.len() > most {
                most = now.len();
                when = Some(now.iter().map(|n| n.to_string()).collect());
            }
        } else if let Some(k) = now.iter().position(|n| *n == name) {
            now.remove(k);
        }
    }
    (most, when)
}

fn describe_bounds(count: Option<usize>, min: Option<usize>, max: Option<usize>) -> String {
    let mut parts = Vec::new();
    if let Some(c) = count {
        parts.push(format!("exactly {c}"));
    }
    if let Some(m) = min {
        parts.push(format!("at least {m}"));
    }
    if let Some(m) = max {
        parts.push(format!("at most {m}"));
    }
    parts.join(", ")
}

/// The loopback servers of a scenario's images; they stop when dropped.
struct ImageServing {
    _servers: iosxe_sim::image_servers::ImageServers,
    _https: iosxe_sim::image_servers::HttpServer,
    /// The CA of the HTTPS server (PEM file), handed to the controller as
    /// `SSL_CERT_FILE`: the trust store its https client loads.
    ca_file: PathBuf,
}

/// The Secret named by `{{ images.<name>.urlSecret }}`: the FTP and SSH
/// servers' user and password and the SSH server's known_hosts line.
const IMAGE_SOURCE_SECRET: &str = "cvk-hil-image-source";

/// Largest image a `configMapRef` source can carry: the API server refuses
/// a ConfigMap whose data and keys exceed 1 MiB.
const MAX_CONFIGMAP_IMAGE: u64 = 1024 * 1024 - "image".len() as u64;

/// Whether any resource of the scenario (inline or file) uses `key`.
fn resources_use(s: &LoadedScenario, key: &str) -> bool {
    s.scenario
        .resources
        .iter()
        .any(|r| match (&r.inline, &r.file) {
            (Some(t), _) => t.contains(key),
            (None, Some(f)) => {
                let path = s.path.parent().unwrap_or(Path::new(".")).join(f);
                std::fs::read_to_string(path).is_ok_and(|t| t.contains(key))
            }
            (None, None) => false,
        })
}

/// Generates the scenario's images under `<log_dir>/images`, serves them on
/// loopback over HTTP, HTTPS, TFTP, FTP, SFTP and SCP until the returned
/// servers are dropped (a few milliseconds to start), creates the
/// `urlSecret` Secret and, for an image a resource names by
/// `images.<name>.configMap`, a ConfigMap with the image in
/// `binaryData["image"]`; stages each image on the simulators its
/// `stagedOn` names; sets the `images.<name>.*` template keys (`url`,
/// `httpsUrl`, `tftpUrl`, `ftpUrl`, `sftpUrl`, `scpUrl`, `urlSecret`,
/// `configMap`, `sha256`, `version`, `size`, and `localPath` for a staged
/// one).
async fn serve_images(
    s: &LoadedScenario,
    client: &Client,
    ns: &str,
    devices: &[PreparedDevice],
    log_dir: &Path,
    vars: &mut Vars,
) -> Result<Option<ImageServing>, String> {
    use iosxe_sim::image_servers::{HttpServer, ImageServers, ImageServersConfig};
    let images = &s.scenario.images;
    if images.is_empty() {
        return Ok(None);
    }
    let dir = log_dir.join("images");
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let mut files = Vec::new();
    for img in images {
        let file = format!("{}.bin", img.name);
        let path = dir.join(&file);
        let out = std::fs::File::create(&path)
            .map_err(|e| format!("images.{}: creating {}: {e}", img.name, path.display()))?;
        let sha256 = iosxe_sim::ImageSpec::new(img.version.clone(), img.size)
            .write_to(std::io::BufWriter::new(out))
            .map_err(|e| format!("images.{}: {e}", img.name))?;
        files.push((img, file, sha256));
    }
    let mut cfg = ImageServersConfig::loopback(&dir);
    cfg.username = "cvk-hil".into();
    cfg.password = format!("{:032x}", rand::random::<u128>());
    cfg.ftp_anonymous = false;
    let servers = ImageServers::start(cfg.clone())
        .await
        .map_err(|e| format!("starting the image servers: {e}"))?;
    let https = HttpServer::start_tls(&dir, ([127, 0, 0, 1], 0).into())
        .await
        .map_err(|e| format!("starting the image HTTPS server: {e}"))?;
    let ca_file = log_dir.join("image-https-ca.pem");
    std::fs::write(&ca_file, https.ca_pem().unwrap_or_default())
        .map_err(|e| format!("writing {}: {e}", ca_file.display()))?;
    let secret = json!({
        "metadata": { "name": IMAGE_SOURCE_SECRET },
        "stringData": {
            "username": cfg.username,
            "password": cfg.password,
            "knownHosts": servers.ssh.known_hosts_line(),
        },
    });
    Api::<Secret>::namespaced(client.clone(), ns)
        .create(
            &PostParams::default(),
            &serde_json::from_value(secret).map_err(|e| e.to_string())?,
        )
        .await
        .map_err(|e| format!("creating Secret {IMAGE_SOURCE_SECRET}: {e}"))?;
    for (img, file, sha256) in files {
        let p = format!("images.{}", img.name);
        vars.set(format!("{p}.url"), servers.http.url(&file));
        vars.set(format!("{p}.httpsUrl"), https.url(&file));
        vars.set(format!("{p}.tftpUrl"), servers.tftp.url(&file));
        vars.set(format!("{p}.ftpUrl"), servers.ftp.url(&file));
        vars.set(format!("{p}.sftpUrl"), servers.ssh.sftp_url(&file));
        vars.set(format!("{p}.scpUrl"), servers.ssh.scp_url(&file));
        vars.set(format!("{p}.urlSecret"), IMAGE_SOURCE_SECRET);
        vars.set(format!("{p}.sha256"), sha256);
        vars.set(format!("{p}.version"), img.version.clone());
        vars.set(format!("{p}.size"), img.size.to_string());
        if resources_use(s, &format!("{p}.configMap")) {
            let name = image_config_map(client, ns, img, &dir.join(&file)).await?;
            vars.set(format!("{p}.configMap"), name);
        }
        for name in &img.staged_on {
            let path = stage_image(&dir.join(&file), name, devices)
                .await
                .map_err(|e| format!("images.{}.stagedOn {name}: {e}", img.name))?;
            vars.set(format!("{p}.localPath"), path);
        }
    }
    Ok(Some(ImageServing {
        _servers: servers,
        _https: https,
        ca_file,
    }))
}

/// Creates the ConfigMap `image-<name>` holding the image file in
/// `binaryData["image"]` (a `configMapRef` source); returns its name.
async fn image_config_map(
    client: &Client,
    ns: &str,
    img: &super::model::ImageDecl,
    file: &Path,
) -> Result<String, String> {
    use base64::Engine as _;
    if img.size > MAX_CONFIGMAP_IMAGE {
        return Err(format!(
            "images.{}.configMap: size {} is over the {MAX_CONFIGMAP_IMAGE} bytes a ConfigMap can hold",
            img.name, img.size
        ));
    }
    let bytes = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let name = format!("image-{}", img.name);
    let cm = json!({
        "metadata": { "name": name },
        "binaryData": { "image": base64::engine::general_purpose::STANDARD.encode(bytes) },
    });
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .create(
            &PostParams::default(),
            &serde_json::from_value(cm).map_err(|e| e.to_string())?,
        )
        .await
        .map_err(|e| {
            format!(
                "images.{}.configMap: creating ConfigMap {name}: {e}",
                img.name
            )
        })?;
    Ok(name)
}

/// Writes an image file onto a simulated device's flash through the
/// simulator's install path (as OS.Install would); returns its path there.
async fn stage_image(
    file: &Path,
    device: &str,
    devices: &[PreparedDevice],
) -> Result<String, String> {
    use std::io::Read;
    let sim = devices
        .iter()
        .find(|d| d.name == device)
        .ok_or_else(|| format!("device {device:?} is not in devices"))?
        .sim
        .as_ref()
        .ok_or("staging an image needs the simulator (sim target)")?;
    let size = std::fs::metadata(file)
        .map_err(|e| format!("{}: {e}", file.display()))?
        .len();
    let mut session = match sim.handle.device().begin_install("", size, false) {
        Ok(iosxe_sim::device::InstallBegin::Transfer(s)) => s,
        Ok(iosxe_sim::device::InstallBegin::AlreadyPresent { version, .. }) => {
            return Err(format!("{version} is already on the device"));
        }
        Err(e) => return Err(format!("{e:?}")),
    };
    let mut f = std::fs::File::open(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| format!("{}: {e}", file.display()))?;
        if n == 0 {
            break;
        }
        session
            .write(bytes::Bytes::copy_from_slice(&buf[..n]))
            .await
            .map_err(|e| format!("{e:?}"))?;
    }
    let (_, path) = session.finish().await.map_err(|e| format!("{e:?}"))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(method: &str, at_ms: u64, took_ms: u64, code: &str) -> iosxe_sim::JournalEntry {
        iosxe_sim::JournalEntry {
            seq: 0,
            time_ns: at_ms * 1_000_000,
            device: String::new(),
            method: method.into(),
            fields: Default::default(),
            code: code.into(),
            message: String::new(),
            duration_ms: took_ms,
        }
    }

    #[test]
    fn unavailability_spans_activate_to_the_next_answer() {
        const ACT: &str = "/gnoi.os.OS/Activate";
        const VERIFY: &str = "/gnoi.os.OS/Verify";
        // a: down 100..600; b: down 700..1200 (one at a time).
        let a = vec![
            entry(VERIFY, 50, 1, "OK"),
            entry(ACT, 100, 2, "OK"),
            entry(VERIFY, 600, 1, "OK"),
        ];
        let b = vec![entry(ACT, 700, 2, "OK"), entry(VERIFY, 1200, 1, "OK")];
        let (most, _) = most_unavailable(&[("a", a.clone()), ("b", b)]);
        assert_eq!(most, 1);
        // c: down 500..900 overlaps a.
        let c = vec![
            entry(ACT, 500, 2, "OK"),
            entry(VERIFY, 510, 1, "UNAVAILABLE"),
            entry(VERIFY, 900, 1, "OK"),
        ];
        let (most, when) = most_unavailable(&[("a", a.clone()), ("c", c)]);
        assert_eq!(most, 2);
        assert_eq!(when.unwrap(), ["a", "c"]);
        // A device that never answered again stays down to the end.
        let d = vec![entry(ACT, 5000, 0, "DROPPED")];
        let e = vec![entry(ACT, 9000, 2, "OK"), entry(VERIFY, 9100, 1, "OK")];
        assert_eq!(most_unavailable(&[("d", d), ("e", e)]).0, 2);
        // Back-to-back: an end at the instant of a start is not an overlap.
        let f = vec![entry(ACT, 600, 0, "OK"), entry(VERIFY, 700, 1, "OK")];
        assert_eq!(most_unavailable(&[("a", a), ("f", f)]).0, 1);
    }

    #[test]
    fn subsequence_allows_gaps_but_keeps_order() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(is_subsequence(
            &s(&["Pending", "Succeeded"]),
            &s(&["Pending", "Running", "Succeeded"])
        ));
        assert!(!is_subsequence(
            &s(&["Succeeded", "Pending"]),
            &s(&["Pending", "Running", "Succeeded"])
        ));
        assert!(!is_subsequence(
            &s(&["Failed"]),
            &s(&["Pending", "Succeeded"])
        ));
        assert!(is_subsequence(&[], &s(&["Pending"])));
    }

    fn transition(name: &str, note: &str, at: &str) -> Event {
        Event {
            involved_object: k8s_openapi::api::core::v1::ObjectReference {
                kind: Some("IOSXESoftwareUpgrade".into()),
                name: Some(name.into()),
                ..Default::default()
            },
            reason: Some("PhaseTransition".into()),
            message: Some(note.into()),
            event_time: Some(MicroTime(at.parse().expect("timestamp"))),
            ..Default::default()
        }
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn events_fill_in_phases_the_watch_missed() {
        let key = "IOSXESoftwareUpgrade/up";
        let mut phases = HashMap::from([(
            key.to_owned(),
            strings(&["Pending", "Transferring", "Succeeded"]),
        )]);
        // Listed out of order: the times decide.
        let events = vec![
            transition(
                "up",
                "Transferring → Validating: image hash verified",
                "2026-12-03T10:00:02.000002Z",
            ),
            transition(
                "up",
                "Pending → Transferring: lease acquired",
                "2026-12-03T10:00:01.000001Z",
            ),
            transition(
                "up",
                "Validating → Succeeded: running 17.18",
                "2026-12-03T10:00:03.000003Z",
            ),
            transition(
                "other",
                "Pending → Failed: x",
                "2026-12-03T10:00:00.000001Z",
            ),
        ];
        merge_phase_transitions(&mut phases, &events);
        assert_eq!(
            phases[key],
            strings(&["Pending", "Transferring", "Validating", "Succeeded"])
        );
        assert_eq!(
            phases["IOSXESoftwareUpgrade/other"],
            strings(&["Pending", "Failed"])
        );
    }

    #[test]
    fn events_that_contradict_the_watch_leave_it_alone() {
        let key = "IOSXESoftwareUpgrade/up";
        let watched = strings(&["Pending", "Transferring", "Failed"]);
        let mut phases = HashMap::from([(key.to_owned(), watched.clone())]);
        // A chain that does not contain the watched Failed.
        let events = vec![
            transition("up", "Pending → Transferring: a", "2026-12-03T10:00:01Z"),
            transition("up", "Transferring → Succeeded: b", "2026-12-03T10:00:02Z"),
        ];
        merge_phase_transitions(&mut phases, &events);
        assert_eq!(phases[key], watched);
        // A broken chain (a `from` that is not the previous `to`).
        let events = vec![
            transition("up", "Pending → Transferring: a", "2026-12-03T10:00:01Z"),
            transition("up", "Validating → Failed: b", "2026-12-03T10:00:02Z"),
        ];
        merge_phase_transitions(&mut phases, &events);
        assert_eq!(phases[key], watched);
    }

    #[test]
    fn a_prefix_seen_only_by_the_watch_is_kept() {
        let key = "IOSXESoftwareUpgrade/up";
        let mut phases = HashMap::from([(
            key.to_owned(),
            strings(&["Pending", "Transferring", "Validating"]),
        )]);
        let events = vec![
            transition("up", "Transferring → Validating: a", "2026-12-03T10:00:01Z"),
            transition("up", "Validating → Activating: b", "2026-12-03T10:00:02Z"),
        ];
        merge_phase_transitions(&mut phases, &events);
        assert_eq!(
            phases[key],
            strings(&["Pending", "Transferring", "Validating", "Activating"])
        );
    }

    /// The phase watch on a kind whose CRD was created a moment ago (its
    /// watch cache still initializing, as for the suite's first scenarios)
    /// reports listed only when the watch that follows cannot miss a write:
    /// two status writes 0 ms apart right after the list are both seen.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn phase_watch_on_a_new_crd_sees_every_phase() {
        use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
        let cp = crate::testing::shared_control_plane();
        let client = cp.client().await.expect("client");
        let ns = TestNamespace::create(&client, "phase-watch")
            .await
            .expect("namespace");
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        for round in 0..4 {
            // After a letter: kind and plural must start with one.
            let suffix = crate::testing::random_suffix(6);
            let plural = format!("probes{suffix}{round}");
            let kind = format!("Probe{suffix}{round}");
            let group = "watch.test.cvk";
            let crd: CustomResourceDefinition = serde_json::from_value(json!({
                "apiVersion": "apiextensions.k8s.io/v1",
                "kind": "CustomResourceDefinition",
                "metadata": { "name": format!("{plural}.{group}") },
                "spec": {
                    "group": group,
                    "scope": "Namespaced",
                    "names": { "plural": plural, "kind": kind, "singular": plural.clone() },
                    "versions": [{
                        "name": "v1", "served": true, "storage": true,
                        "subresources": { "status": {} },
                        "schema": { "openAPIV3Schema": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": true
                        } }
                    }]
                }
            }))
            .expect("crd");
            crate::testing::install_crds(&client, &[crd])
                .await
                .expect("install");
            let ar = ApiResource {
                group: group.into(),
                version: "v1".into(),
                api_version: format!("{group}/v1"),
                kind: kind.clone(),
                plural: plural.clone(),
            };
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns.name(), &ar);
            let observed = Arc::new(Mutex::new(Observed::default()));
            let (tx, mut progress) = tokio::sync::mpsc::unbounded_channel();
            let (listed_tx, mut listed) = tokio::sync::mpsc::unbounded_channel();
            let watch = tokio::spawn(watch_phases(
                api.clone(),
                kind.clone(),
                observed.clone(),
                tx,
                listed_tx,
                Instant::now(),
            ));
            wait_for_initial_lists(
                std::slice::from_ref(&kind),
                &mut listed,
                Duration::from_secs(30),
            )
            .await
            .expect("listed");
            let obj: DynamicObject = serde_json::from_value(json!({
                "apiVersion": format!("{group}/v1"), "kind": kind,
                "metadata": { "name": "p" }
            }))
            .expect("object");
            api.create(&PostParams::default(), &obj)
                .await
                .expect("create");
            for phase in ["Running", "Succeeded"] {
                api.patch_status(
                    "p",
                    &PatchParams::default(),
                    &Patch::Merge(json!({ "status": { "phase": phase } })),
                )
                .await
                .expect("status");
            }
            let key = format!("{kind}/p");
            let deadline = Instant::now() + Duration::from_secs(10);
            let seen = loop {
                let seen = observed
                    .lock()
                    .expect("observed")
                    .phases
                    .get(&key)
                    .cloned()
                    .unwrap_or_default();
                if seen.last().map(String::as_str) == Some("Succeeded") || Instant::now() > deadline
                {
                    break seen;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            watch.abort();
            let mut lines = Vec::new();
            while let Ok(l) = progress.try_recv() {
                lines.push(l);
            }
            assert_eq!(
                seen,
                strings(&["Running", "Succeeded"]),
                "round {round}: {lines:?}"
            );
            let _ = crds
                .delete(&format!("{plural}.{group}"), &Default::default())
                .await;
        }
        ns.delete().await;
    }

    #[tokio::test]
    async fn scenario_waits_for_every_initial_list() {
        let kinds = strings(&["A", "B"]);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        tx.send("B".to_owned()).unwrap();
        tx.send("A".to_owned()).unwrap();
        wait_for_initial_lists(&kinds, &mut rx, Duration::from_secs(1))
            .await
            .expect("both listed");
        tx.send("A".to_owned()).unwrap();
        let err = wait_for_initial_lists(&kinds, &mut rx, Duration::from_millis(50))
            .await
            .expect_err("B never lists");
        assert!(err.contains("watch of B"), "{err}");
        drop(tx);
        let err = wait_for_initial_lists(&kinds, &mut rx, Duration::from_secs(1))
            .await
            .expect_err("channel closed");
        assert!(err.contains("ended"), "{err}");
    }
}
