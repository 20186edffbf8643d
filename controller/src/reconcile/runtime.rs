//! The runtime: starts the controller of every kind on a shared
//! [`Context`], drives them until shutdown (bounded by the grace), and the
//! `cvk-controller run` entry point with its endpoints, signals and leader
//! election.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::NamespaceResourceScope;
use kube::runtime::controller::{self, Action as KubeAction, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use prometheus_client::registry::Registry;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use super::context::{Context, ControllerSettings, ReconcileError, Scope, ScopeError};
use super::{action, device, engine, gate, operation, rollout, upgrade};
use crate::client::ClientMetrics;
use crate::client::cli::CliMetrics;
use crate::config::{Gate, RunArgs};
use crate::crd::rollout::ROLLOUT_UID_LABEL;
use crate::crd::{
    CiscoDevice, DeviceOperation, IOSXEOperationalAction, IOSXESoftwareRollout,
    IOSXESoftwareUpgrade,
};
use crate::telemetry::{ControllerMetrics, Readiness};

/// How long the rollout controller gathers triggers (child and device
/// changes) before it decides again: a fleet's probes arrive all the time.
pub const ROLLOUT_DEBOUNCE: Duration = Duration::from_millis(500);

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
