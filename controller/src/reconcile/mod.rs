//! The reconcilers and the runtime that drives them.
//!
//! ```text
//!  run(RunArgs) ── logs, /metrics, /healthz, /readyz, SIGINT/SIGTERM
//!    └─ run_controllers(client, settings, shutdown)
//!         ├─ CiscoDevice          device::reconcile     probe -> status, requeue
//!         ├─ DeviceOperation      operation::reconcile  observe -> step -> execute -> status
//!         ├─ IOSXEOperationalAction  action::reconcile  (write-class gate on; at most once)
//!         │                          gate::reconcile    (while the write-class gate is off)
//!         ├─ IOSXESoftwareUpgrade    upgrade::reconcile (gate on) / gate::reconcile (gate off)
//!         └─ IOSXESoftwareRollout    rollout::reconcile (gate on; not with --device) / gate::reconcile
//!  shared: Context { kube client, ClientPool (capability cache), Recorder, metrics }
//! ```
//!
//! Every reconciler follows the same shape: read the object fresh from the
//! API (the watch cache may lag behind the reconciler's own last write),
//! decide with a pure function, run the decided I/O, and write status with
//! [`engine::write_status`]: the whole status replaced, the object's
//! resourceVersion as precondition, one field manager, so a status is always
//! decided on the object it overwrites and a field the controller stops
//! setting disappears. [`engine`] holds everything else the kinds share
//! (finalizer, device lookup, Lease identity, metrics, spans, backoff). Events are published only when a phase or
//! reason changes, never on a resync that changes nothing.
//!
//! Scope: one namespace (`--namespace`, default the pod's), every namespace
//! (`--all-namespaces`), or one device (`--device NAME`: the CiscoDevice
//! watch is narrowed by field selector and operations for other devices are
//! left untouched, for the per-device pod of the specification).

pub mod action;
pub mod device;
pub mod engine;
pub mod gate;
pub mod operation;
pub mod rollout;
pub mod target;
pub mod upgrade;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::NamespaceResourceScope;
use kube::runtime::controller::{self, Action as KubeAction, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use prometheus_client::registry::Registry;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use crate::client::cli::{CliMetrics, CliPool, CliSettings};
use crate::client::{ClientMetrics, ClientPool, GnoiSettings};
use crate::config::{Gate, Gates, RunArgs};
use crate::crd::rollout::ROLLOUT_UID_LABEL;
use crate::crd::{
    CiscoDevice, DeviceOperation, IOSXEOperationalAction, IOSXESoftwareRollout,
    IOSXESoftwareUpgrade,
};
use crate::telemetry::{ControllerMetrics, Readiness};

/// Field manager of every status write, and the Event reporter.
pub const MANAGER: &str = "cvk-controller";

/// How long the rollout controller gathers triggers (child and device
/// changes) before it decides again: a fleet's probes arrive all the time.
pub const ROLLOUT_DEBOUNCE: Duration = Duration::from_millis(500);

/// Default of [`ControllerSettings::shutdown_grace`].
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What the controllers serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// The namespace served; `None` for every namespace.
    pub namespace: Option<String>,
    /// Only this CiscoDevice (and operations that name it).
    pub device: Option<String>,
}

impl Scope {
    /// Whether an object naming device `name` is served.
    pub fn serves_device(&self, name: &str) -> bool {
        self.device.as_deref().is_none_or(|d| d == name)
    }
}

/// Settings of [`run_controllers`].
#[derive(Debug, Clone)]
pub struct ControllerSettings {
    /// Namespace and device scope.
    pub scope: Scope,
    /// The runtime gates.
    pub gates: Gates,
    /// The gNOI client settings (`CISCO_VK_GNOI_*`, deadlines, cache TTL).
    pub gnoi: GnoiSettings,
    /// How often a CiscoDevice is probed again.
    pub probe_interval: Duration,
    /// Identity in Events (the pod name).
    pub identity: String,
    /// Limits of DeviceOperation outputs.
    pub output_limits: crate::operation::OutputLimits,
    /// Namespace of the per-device mutation Leases (`--lease-namespace`,
    /// `CONFIG_LEASE_NAMESPACE`); `None` keeps each Lease in its device's
    /// namespace.
    pub lease_namespace: Option<String>,
    /// IOSXESoftwareUpgrade transfers (chunk size, concurrency, image cap).
    pub upgrade: upgrade::UpgradeSettings,
    /// How long reconciles in flight may run on after shutdown was asked
    /// for, before they are abandoned.
    pub shutdown_grace: Duration,
    /// The device CLI class (SSH): deadlines, idle close, sessions per
    /// device.
    pub cli: CliSettings,
    /// Namespaces allowed to run ConfigDiff (`None`: all).
    pub configdiff_allowed_namespaces: Option<Vec<String>>,
}

impl ControllerSettings {
    /// Defaults for one namespace: gates off, secure gNOI, 60 s probes.
    pub fn for_namespace(namespace: impl Into<String>) -> Self {
        Self {
            scope: Scope {
                namespace: Some(namespace.into()),
                device: None,
            },
            gates: Gates::default(),
            gnoi: GnoiSettings::default(),
            probe_interval: Duration::from_secs(60),
            identity: MANAGER.to_owned(),
            output_limits: crate::operation::OutputLimits::default(),
            lease_namespace: None,
            upgrade: upgrade::UpgradeSettings::default(),
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            cli: CliSettings::default(),
            configdiff_allowed_namespaces: None,
        }
    }

    /// Whether DeviceOperations in `namespace` may run ConfigDiff.
    pub fn configdiff_allowed(&self, namespace: &str) -> bool {
        self.configdiff_allowed_namespaces
            .as_ref()
            .is_none_or(|list| {
                list.iter()
                    .map(|n| n.trim())
                    .any(|n| n == "*" || n == namespace)
            })
    }

    /// Namespace of the mutation Lease of a device in `device_namespace`.
    pub fn lease_namespace_for(&self, device_namespace: &str) -> String {
        self.lease_namespace
            .clone()
            .unwrap_or_else(|| device_namespace.to_owned())
    }

    /// From the flags of `cvk-controller run`; `default_namespace` is the
    /// client's (in-cluster or kubeconfig) namespace.
    pub fn from_run_args(args: &RunArgs, default_namespace: &str) -> Result<Self, ScopeError> {
        if args.all_namespaces && args.namespace.is_some() {
            return Err(ScopeError(
                "--all-namespaces and --namespace exclude each other",
            ));
        }
        if args.all_namespaces && args.device.is_some() {
            return Err(ScopeError(
                "--device serves one device of one namespace; it cannot be combined with --all-namespaces",
            ));
        }
        if args.device.as_deref().is_some_and(str::is_empty) {
            return Err(ScopeError("--device must name a CiscoDevice"));
        }
        let namespace = if args.all_namespaces {
            None
        } else {
            Some(
                args.namespace
                    .clone()
                    .unwrap_or_else(|| default_namespace.to_owned()),
            )
        };
        Ok(Self {
            scope: Scope {
                namespace,
                device: args.device.clone(),
            },
            gates: args.gates(),
            gnoi: GnoiSettings {
                insecure: args.gnoi_insecure,
                port: args.gnoi_port,
                disabled: args.gnoi_disabled,
                capability_ttl: Duration::from_secs(args.capability_cache_ttl_seconds),
                ..GnoiSettings::default()
            },
            probe_interval: args.probe_interval(),
            identity: args.identity(),
            output_limits: crate::operation::OutputLimits::default(),
            lease_namespace: args.lease_namespace.clone(),
            upgrade: upgrade::UpgradeSettings {
                chunk_bytes: args.install_chunk_bytes as usize,
                max_concurrent_transfers: args.max_concurrent_transfers as usize,
                max_image_bytes: args.upgrade_max_image_bytes,
                image_cache_dir: args.image_cache_dir.clone(),
                allow_insecure_ssh: args.allow_insecure_ssh,
            },
            shutdown_grace: Duration::from_secs(args.shutdown_grace_seconds),
            cli: CliSettings {
                command_timeout: Duration::from_secs(args.cli_command_timeout_seconds.max(1)),
                ..CliSettings::default()
            },
            configdiff_allowed_namespaces: args.configdiff_allowed_namespaces.clone(),
        })
    }
}

/// Flags that cannot be combined.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct ScopeError(pub &'static str);

/// What a reconcile can fail with (it is then retried with backoff).
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The API server refused or failed a request.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// A status could not be serialized.
    #[error("serializing status: {0}")]
    Serialize(#[from] serde_json::Error),
    /// The object lacks a namespace or name.
    #[error("object without {0}")]
    MissingMetadata(&'static str),
}

impl ReconcileError {
    /// Stable snake_case category (metric label).
    pub fn category(&self) -> &'static str {
        match self {
            Self::Kube(kube::Error::Api(s)) if s.is_conflict() => "conflict",
            Self::Kube(_) => "kube",
            Self::Serialize(_) => "serialize",
            Self::MissingMetadata(_) => "missing_metadata",
        }
    }
}

/// State shared by every reconciler.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// Settings.
    pub settings: ControllerSettings,
    /// Device clients and the capability cache.
    pub pool: Arc<ClientPool>,
    /// Device CLI sessions (the CLI class).
    pub cli: CliPool,
    /// Controller metrics.
    pub metrics: ControllerMetrics,
    recorder: Recorder,
    /// Upgrade transfers that outlive one reconcile.
    pub(crate) upgrades: upgrade::Runtime,
    /// Answers of dispatched actions not yet written to their status.
    pub(crate) action_answers: action::PendingAnswers,
    /// Device key -> (generation, when the next probe is due), so that the
    /// status write a probe causes does not cause another probe.
    probes: Mutex<HashMap<String, (Option<i64>, Instant)>>,
    /// Consecutive failed reconciles per object (the error backoff).
    pub(crate) failures: engine::Failures,
}

impl Context {
    /// A context with its own client pool.
    pub fn new(
        client: Client,
        settings: ControllerSettings,
        metrics: ControllerMetrics,
        client_metrics: ClientMetrics,
        cli_metrics: CliMetrics,
    ) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: MANAGER.to_owned(),
                instance: Some(settings.identity.clone()),
            },
        );
        Self {
            pool: Arc::new(ClientPool::new(settings.gnoi.clone(), client_metrics)),
            cli: CliPool::new(settings.cli.clone(), cli_metrics),
            upgrades: upgrade::Runtime::new(settings.upgrade.clone()),
            action_answers: action::PendingAnswers::default(),
            client,
            settings,
            metrics,
            recorder,
            probes: Mutex::new(HashMap::new()),
            failures: engine::Failures::default(),
        }
    }

    /// Publishes an Event about `obj`; a failure is logged, never raised
    /// (an Event is a courtesy, status is the record).
    pub async fn publish<K>(
        &self,
        obj: &K,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) where
        K: Resource<DynamicType = ()>,
    {
        let ev = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(crate::conditions::truncate_utf8(&note, 1000).to_owned()),
            action: action.to_owned(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &obj.object_ref(&())).await {
            tracing::warn!(object = %obj.meta().name.as_deref().unwrap_or_default(), error = %e,
                "publishing an Event failed");
        }
    }

    pub(crate) fn last_probe(&self, key: &str) -> Option<(Option<i64>, Instant)> {
        self.probes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .copied()
    }

    pub(crate) fn record_probe(&self, key: &str, generation: Option<i64>, next_in: Duration) {
        self.probes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.to_owned(), (generation, Instant::now() + next_in));
    }

    pub(crate) fn forget_probe(&self, key: &str) {
        self.probes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }
}

/// Namespace and name of a namespaced object.
pub(crate) fn ns_name<K: Resource>(obj: &K) -> Result<(String, String), ReconcileError> {
    let ns = obj
        .meta()
        .namespace
        .clone()
        .ok_or(ReconcileError::MissingMetadata("namespace"))?;
    let name = obj
        .meta()
        .name
        .clone()
        .ok_or(ReconcileError::MissingMetadata("name"))?;
    Ok((ns, name))
}

fn api_for<K>(client: &Client, scope: &Scope) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>,
{
    match &scope.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// A kind a controller can drive.
pub trait DrivenKind:
    Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static
{
}

impl<K> DrivenKind for K where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static
{
}

async fn drive<K, F, Fut>(
    controller: Controller<K>,
    reconcile: F,
    ctx: Arc<Context>,
    shutdown: CancellationToken,
    abort: CancellationToken,
) where
    K: DrivenKind,
    F: FnMut(Arc<K>, Arc<Context>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<KubeAction, ReconcileError>> + Send + 'static,
{
    let kind = K::kind(&()).into_owned();
    let grace = ctx.settings.shutdown_grace;
    tracing::info!(%kind, "controller started");
    let graceful = shutdown.clone();
    let runs = controller
        .graceful_shutdown_on(async move { graceful.cancelled_owned().await })
        .run(
            engine::instrument(reconcile),
            engine::error_policy::<K>,
            ctx,
        )
        .for_each(|res| {
            if let Err(e) = res {
                tracing::debug!(error = %e, "controller event");
            }
            futures::future::ready(())
        });
    // kube-runtime's graceful shutdown waits for every reconcile in flight
    // and, while a watch has not finished its first list (an API server that
    // refuses or drops the list), waits for that store forever. Both are
    // bounded here: after the grace period the stream is dropped, which
    // aborts the reconciles still running at their next await point, the same
    // as a process kill at that point, which the at-most-once markers are
    // built for.
    tokio::select! {
        () = runs => tracing::info!(%kind, "controller stopped"),
        () = async {
            shutdown.cancelled().await;
            tokio::time::sleep(grace).await;
        } => tracing::warn!(%kind, grace = ?grace,
            "reconciles still running after the shutdown grace period; abandoning them"),
        () = abort.cancelled() => tracing::warn!(%kind, "stopped at once (leadership lost)"),
    }
}

/// [`drive`] over every object of kind `K` in scope, with no other trigger.
async fn drive_all<K, F, Fut>(
    ctx: &Arc<Context>,
    reconcile: F,
    shutdown: &CancellationToken,
    abort: &CancellationToken,
) where
    K: DrivenKind + Resource<Scope = NamespaceResourceScope>,
    F: FnMut(Arc<K>, Arc<Context>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<KubeAction, ReconcileError>> + Send + 'static,
{
    let api = api_for::<K>(&ctx.client, &ctx.settings.scope);
    drive(
        Controller::new(api, watcher::Config::default()),
        reconcile,
        ctx.clone(),
        shutdown.clone(),
        abort.clone(),
    )
    .await;
}

/// Runs every controller of `ctx.settings` until `shutdown` fires; a
/// reconcile in flight is allowed to finish. A gated kind runs its full
/// reconciler while its gate is on, and the gate reporter while it is off.
pub async fn run_with_context(ctx: Arc<Context>, shutdown: CancellationToken) {
    run_fenced(ctx, shutdown, CancellationToken::new()).await;
}

/// [`run_with_context`], and when `abort` fires every reconcile in flight is
/// abandoned at once, without the grace period (a leader that lost its
/// Lease must stop before a standby can take over).
pub async fn run_fenced(ctx: Arc<Context>, shutdown: CancellationToken, abort: CancellationToken) {
    let client = ctx.client.clone();
    let scope = ctx.settings.scope.clone();

    let mut device_cfg = watcher::Config::default();
    if let Some(d) = &scope.device {
        device_cfg = device_cfg.fields(&format!("metadata.name={d}"));
    }
    let device_controller =
        Controller::new(api_for::<CiscoDevice>(&client, &scope), device_cfg.clone());
    // The rollout reconciler reads devices and upgrades from the stores of
    // their own controllers: one watch and one copy of each.
    let device_store = device_controller.store();
    let devices = drive(
        device_controller,
        device::reconcile,
        ctx.clone(),
        shutdown.clone(),
        abort.clone(),
    );
    // Operations also wake up when their device changes, so one waiting
    // for a device that did not exist yet starts as soon as it does.
    let op_controller = Controller::new(
        api_for::<DeviceOperation>(&client, &scope),
        watcher::Config::default(),
    );
    let op_store = op_controller.store();
    let op_controller = op_controller.watches(
        api_for::<CiscoDevice>(&client, &scope),
        device_cfg.clone(),
        move |dev: CiscoDevice| {
            let (ns, name) = (dev.namespace(), dev.name_any());
            op_store
                .state()
                .into_iter()
                .filter(|op| op.namespace() == ns && op.spec.device_ref.name == name)
                // Finished ones stay finished: no need to wake them.
                .filter(|op| {
                    !op.status.as_ref().is_some_and(|st| {
                        st.phase.is_some_and(|p| p.is_terminal())
                            && st.observed_generation == op.metadata.generation
                    })
                })
                .map(|op| ObjectRef::from_obj(op.as_ref()))
                .collect::<Vec<_>>()
        },
    );
    let operations = drive(
        op_controller,
        operation::reconcile,
        ctx.clone(),
        shutdown.clone(),
        abort.clone(),
    );
    let gates = ctx.settings.gates;
    let actions = async {
        if gates.is_enabled(Gate::WriteClass) {
            drive_all::<IOSXEOperationalAction, _, _>(&ctx, action::reconcile, &shutdown, &abort)
                .await;
        } else {
            drive_all::<IOSXEOperationalAction, _, _>(
                &ctx,
                gate::reconcile::<IOSXEOperationalAction>,
                &shutdown,
                &abort,
            )
            .await;
        }
    };
    let upgrade_controller = Controller::new(
        api_for::<IOSXESoftwareUpgrade>(&client, &scope),
        watcher::Config::default(),
    );
    let upgrade_store = upgrade_controller.store();
    let upgrades = async {
        if gates.is_enabled(Gate::SoftwareUpgrade) {
            drive(
                upgrade_controller,
                upgrade::reconcile,
                ctx.clone(),
                shutdown.clone(),
                abort.clone(),
            )
            .await;
        } else {
            drive(
                upgrade_controller,
                gate::reconcile::<IOSXESoftwareUpgrade>,
                ctx.clone(),
                shutdown.clone(),
                abort.clone(),
            )
            .await;
        }
    };
    let rollouts = async {
        // A fleet kind: a controller scoped to one device does not run it.
        if scope.device.is_some() {
            return;
        }
        if !gates.is_enabled(Gate::SoftwareUpgrade) {
            drive_all::<IOSXESoftwareRollout, _, _>(
                &ctx,
                gate::reconcile::<IOSXESoftwareRollout>,
                &shutdown,
                &abort,
            )
            .await;
            return;
        }
        let caches = Arc::new(rollout::Caches::new(upgrade_store, device_store));
        let children_cfg = watcher::Config::default().labels(ROLLOUT_UID_LABEL);
        let controller = Controller::new(
            api_for::<IOSXESoftwareRollout>(&client, &scope),
            watcher::Config::default(),
        )
        .with_config(controller::Config::default().debounce(ROLLOUT_DEBOUNCE));
        let store = controller.store();
        let controller = controller
            .owns(
                api_for::<IOSXESoftwareUpgrade>(&client, &scope),
                children_cfg,
            )
            .watches(
                api_for::<CiscoDevice>(&client, &scope),
                watcher::Config::default(),
                move |dev: CiscoDevice| {
                    let ns = dev.namespace();
                    store
                        .state()
                        .into_iter()
                        .filter(|r| r.namespace() == ns)
                        .filter(|r| {
                            !r.status
                                .as_ref()
                                .and_then(|s| s.phase)
                                .is_some_and(|p| p.is_terminal())
                        })
                        .map(|r| ObjectRef::from_obj(r.as_ref()))
                        .collect::<Vec<_>>()
                },
            );
        drive(
            controller,
            move |obj, ctx| rollout::reconcile(obj, ctx, caches.clone()),
            ctx.clone(),
            shutdown.clone(),
            abort.clone(),
        )
        .await;
    };
    futures::join!(devices, operations, actions, upgrades, rollouts);
    // Transfers run in tasks of their own; none outlives the controllers, so
    // a replica that took over finds no second sender on the device.
    ctx.upgrades.cancel_all();
}

/// Runs the controllers with a fresh [`Context`] (metrics not exported)
/// until `shutdown` fires. This is what in-process tests and the scenario
/// runner call.
pub async fn run_controllers(
    client: Client,
    settings: ControllerSettings,
    shutdown: CancellationToken,
) {
    let ctx = Arc::new(Context::new(
        client,
        settings,
        ControllerMetrics::default(),
        ClientMetrics::default(),
        CliMetrics::default(),
    ));
    run_with_context(ctx, shutdown).await;
}

/// Why `cvk-controller run` stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// No usable kubeconfig or in-cluster configuration.
    #[error("Kubernetes client configuration: {0}")]
    Client(#[from] kube::Error),
    /// Conflicting flags.
    #[error(transparent)]
    Scope(#[from] ScopeError),
    /// The metrics or health endpoints could not start.
    #[error("telemetry endpoints: {0}")]
    Telemetry(String),
    /// Installing the signal handlers failed.
    #[error("signal handlers: {0}")]
    Signals(#[from] std::io::Error),
    /// Leader election settings that cannot work.
    #[error("{0}")]
    LeaderElection(String),
    /// This replica led and lost the Lease (no renew within the deadline, or
    /// another replica took it); it stopped reconciling at once and exits so
    /// that it starts again as a standby.
    #[error("leader election lost: {0}")]
    LeadershipLost(String),
}

impl RunError {
    /// Stable snake_case category.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Client(_) => "client",
            Self::Scope(_) => "scope",
            Self::Telemetry(_) => "telemetry",
            Self::Signals(_) => "signals",
            Self::LeaderElection(_) => "leader_election",
            Self::LeadershipLost(_) => "leadership_lost",
        }
    }
}

/// Cancels `token` on the first SIGINT or SIGTERM.
pub fn cancel_on_signals(token: CancellationToken) -> Result<(), std::io::Error> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        let which = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
            () = token.cancelled() => return,
        };
        tracing::info!(
            signal = which,
            "shutting down: finishing reconciles in flight"
        );
        token.cancel();
    });
    Ok(())
}

/// `cvk-controller run`: telemetry endpoints, the kube client (in-cluster
/// or `KUBECONFIG`), the controllers, graceful shutdown on SIGINT/SIGTERM.
/// Logging must be installed by the caller.
pub async fn run(args: RunArgs) -> Result<(), RunError> {
    let client = Client::try_default().await?;
    let settings = ControllerSettings::from_run_args(&args, client.default_namespace())?;
    tracing::info!(scope = ?settings.scope, gates = ?settings.gates,
        gnoi_insecure = settings.gnoi.insecure, gnoi_port = ?settings.gnoi.port,
        gnoi_disabled = settings.gnoi.disabled,
        configdiff_allowed_namespaces = ?settings.configdiff_allowed_namespaces,
        cli_command_timeout_s = args.cli_command_timeout_seconds, "starting cvk-controller");

    let shutdown = CancellationToken::new();
    cancel_on_signals(shutdown.clone())?;

    let metrics = ControllerMetrics::default();
    let client_metrics = ClientMetrics::default();
    let cli_metrics = CliMetrics::default();
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    client_metrics.register(&mut registry);
    cli_metrics.register(&mut registry);
    let leader_gauge = prometheus_client::metrics::gauge::Gauge::<i64>::default();
    registry.register(
        "cvk_leader",
        "1 while this replica leads (or runs without leader election), 0 while it waits as a standby",
        leader_gauge.clone(),
    );
    let ready = Readiness::default();
    let (metrics_addr, health_addr) = crate::telemetry::serve(
        args.metrics_bind_address,
        args.health_probe_bind_address,
        Arc::new(registry),
        ready.clone(),
        shutdown.clone(),
    )
    .await
    .map_err(|e| RunError::Telemetry(e.to_string()))?;
    tracing::info!(%metrics_addr, %health_addr, "serving /metrics, /healthz and /readyz");

    let election = if args.leader_elect {
        let timings = args.leader_timings();
        timings.validate().map_err(RunError::LeaderElection)?;
        let namespace = args
            .leader_election_namespace
            .clone()
            .or_else(|| {
                std::env::var("POD_NAMESPACE")
                    .ok()
                    .filter(|n| !n.is_empty())
            })
            .unwrap_or_else(|| client.default_namespace().to_owned());
        Some(crate::leader::ElectionConfig {
            namespace,
            name: args.leader_election_id.clone(),
            identity: settings.identity.clone(),
            timings,
        })
    } else {
        None
    };
    let ctx = Arc::new(Context::new(
        client.clone(),
        settings,
        metrics,
        client_metrics,
        cli_metrics,
    ));
    // The readiness loop ends with the work: a replica that lost the Lease
    // must exit (and be restarted as a candidate), not wait for SIGTERM.
    let work_done = shutdown.child_token();
    let readiness = {
        let (client, ready, shutdown) = (client.clone(), ready.clone(), work_done.clone());
        async move {
            // Ready once the API server answers; re-checked so a lost API
            // server shows on /readyz.
            loop {
                let ok = client.apiserver_version().await.is_ok();
                ready.set(ok && !shutdown.is_cancelled());
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_secs(if ok { 30 } else { 2 })) => {}
                }
            }
            ready.set(false);
        }
    };
    let work = async {
        let result = match election {
            None => {
                leader_gauge.set(1);
                run_with_context(ctx, shutdown.clone()).await;
                Ok(())
            }
            Some(config) => {
                lead_then_run(
                    client.clone(),
                    config,
                    ctx,
                    shutdown.clone(),
                    &ready,
                    &leader_gauge,
                )
                .await
            }
        };
        work_done.cancel();
        result
    };
    let (result, ()) = futures::join!(work, readiness);
    tracing::info!("cvk-controller stopped");
    result
}

/// In-process replica with leader election (tests, and embedding): a fresh
/// [`Context`] whose controllers run only while this replica holds the
/// election Lease. Returns when `shutdown` fires (after releasing the
/// Lease), or with [`RunError::LeadershipLost`].
pub async fn run_elected(
    client: Client,
    settings: ControllerSettings,
    election: crate::leader::ElectionConfig,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    election
        .timings
        .validate()
        .map_err(RunError::LeaderElection)?;
    let ctx = Arc::new(Context::new(
        client.clone(),
        settings,
        ControllerMetrics::default(),
        ClientMetrics::default(),
        CliMetrics::default(),
    ));
    let gauge = prometheus_client::metrics::gauge::Gauge::<i64>::default();
    lead_then_run(
        client,
        election,
        ctx,
        shutdown,
        &Readiness::default(),
        &gauge,
    )
    .await
}

/// Waits for the leader Lease, runs the controllers while it is held, and
/// releases it after they stopped on SIGTERM. A lost Lease stops the
/// controllers at once and ends in [`RunError::LeadershipLost`].
async fn lead_then_run(
    client: Client,
    config: crate::leader::ElectionConfig,
    ctx: Arc<Context>,
    shutdown: CancellationToken,
    ready: &Readiness,
    gauge: &prometheus_client::metrics::gauge::Gauge<i64>,
) -> Result<(), RunError> {
    let mut elector = crate::leader::Elector::new(client, config.clone());
    gauge.set(0);
    ready.set_role("standby");
    tracing::info!(lease = %config.name, namespace = %config.namespace, identity = %config.identity,
        "leader election: waiting for the Lease");
    let mut last_leader = String::new();
    let won = elector
        .acquire(&shutdown, |leader| {
            if leader != last_leader {
                tracing::info!(%leader, "leader election: standing by");
                last_leader = leader.to_owned();
            }
            ready.set_role(format!("standby; leader is {leader}"));
        })
        .await;
    if !won {
        return Ok(());
    }
    gauge.set(1);
    ready.set_role("leading");
    tracing::info!(lease = %config.name, "leader election: leading");
    let stop = shutdown.child_token();
    let abort = CancellationToken::new();
    let stopped = CancellationToken::new();
    let renewing = async {
        let still_leader = elector.keep_renewing(&stopped).await;
        if !still_leader {
            gauge.set(0);
            ready.set_role("lost the lease");
            abort.cancel();
            stop.cancel();
        }
        still_leader
    };
    // The controllers stop on SIGTERM (graceful) or at once when the Lease
    // is lost; the renewals go on until the controllers have stopped.
    let controllers = async {
        run_fenced(ctx, stop.clone(), abort.clone()).await;
        stopped.cancel();
    };
    let (still_leader, ()) = futures::join!(renewing, controllers);
    if !still_leader {
        return Err(RunError::LeadershipLost(format!(
            "Lease {}/{} not renewed within {:?}",
            config.namespace, config.name, config.timings.renew_deadline
        )));
    }
    match elector.release().await {
        Ok(true) => tracing::info!(lease = %config.name, "leader election: Lease released"),
        Ok(false) => {
            tracing::warn!(lease = %config.name, "leader election: the Lease was no longer ours")
        }
        Err(e) => tracing::warn!(error = %e, "leader election: releasing the Lease failed"),
    }
    gauge.set(0);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    fn settings(args: &[&str]) -> Result<ControllerSettings, ScopeError> {
        let mut all = vec!["cvk-controller"];
        all.extend_from_slice(args);
        let a = Cli::try_parse_from(all).unwrap().run;
        ControllerSettings::from_run_args(&a, "pod-ns")
    }

    #[test]
    fn scope_from_flags() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.scope.namespace.as_deref(), Some("pod-ns"));
        assert_eq!(s.scope.device, None);
        let s = settings(&["--namespace", "lab", "--device", "cat9000-4"]).unwrap();
        assert_eq!(s.scope.namespace.as_deref(), Some("lab"));
        assert!(s.scope.serves_device("cat9000-4"));
        assert!(!s.scope.serves_device("cat9000-5"));
        let s = settings(&["--all-namespaces"]).unwrap();
        assert_eq!(s.scope.namespace, None);
        assert!(s.scope.serves_device("anything"));
        assert!(settings(&["--all-namespaces", "--device", "x"]).is_err());
        assert!(settings(&["--all-namespaces", "--namespace", "x"]).is_err());
    }

    #[test]
    fn gnoi_settings_follow_the_flags() {
        let s = settings(&[
            "--gnoi-insecure",
            "--gnoi-port",
            "57400",
            "--gnoi-disabled=true",
            "--capability-cache-ttl-seconds",
            "30",
            "--enable-write-class-gnoi",
        ])
        .unwrap();
        assert!(s.gnoi.insecure && s.gnoi.disabled);
        assert_eq!(s.gnoi.port, Some(57400));
        assert_eq!(s.gnoi.capability_ttl, Duration::from_secs(30));
        assert!(s.gates.write_class && !s.gates.software_upgrade);
    }
}
