//! Logs, metrics and the health endpoints of the controller process.
//!
//! * Structured logs through `tracing` (JSON by default, text for humans).
//! * Prometheus metrics (`prometheus-client`) on `/metrics`: one registry per
//!   process; each part of the controller registers its own families.
//! * `/healthz` answers as long as the process serves HTTP; `/readyz` only
//!   once the controllers run and can reach the API server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global tracing subscriber.
pub fn init_logging(format: LogFormat, filter: &str) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(filter).map_err(|e| {
        anyhow::anyhow!("invalid log filter '{filter}' (LOG_LEVEL/--log-level): {e}")
    })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("cannot install the log subscriber: {e}"))
}

/// Labels of the reconcile counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    /// CRD kind.
    pub kind: String,
    /// `ok` or an error category.
    pub outcome: String,
}

/// Labels of `cisco_vk_iosxe_operational_action_transitions_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionTransitionLabels {
    /// Device name.
    pub device: String,
    /// Action kind.
    pub kind: String,
    /// Phase entered.
    pub phase: String,
    /// Reason of the transition.
    pub reason: String,
}

/// Labels of `cisco_vk_device_operation_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    /// Operation kind.
    pub kind: String,
    /// Terminal phase.
    pub phase: String,
}

/// Labels of `cisco_vk_reconcile_duration_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// CRD kind.
    pub kind: String,
}

type ReconcileHistogram = Family<KindLabels, Histogram, fn() -> Histogram>;

fn reconcile_histogram() -> Histogram {
    // 1 ms .. ~65 s
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

/// Controller-level metric families (the device client registers its own).
#[derive(Clone)]
pub struct ControllerMetrics {
    /// Reconciles by kind and outcome, counted when the reconcile ended.
    pub reconciles: Family<ReconcileLabels, Counter>,
    /// How long reconciles took, by kind.
    pub reconcile_seconds: ReconcileHistogram,
    /// DeviceOperation completions.
    pub operations: Family<OperationLabels, Counter>,
    /// IOSXEOperationalAction phase transitions.
    pub action_transitions: Family<ActionTransitionLabels, Counter>,
    /// IOSXESoftwareUpgrade transitions and transfers.
    pub upgrades: UpgradeMetrics,
    /// IOSXESoftwareRollout phase transitions.
    pub rollout_transitions: Family<RolloutTransitionLabels, Counter>,
}

/// Labels of `cisco_vk_iosxe_software_rollout_transitions_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RolloutTransitionLabels {
    /// Phase left.
    pub from: String,
    /// Phase entered.
    pub to: String,
    /// Reason of the transition.
    pub reason: String,
}

impl Default for ControllerMetrics {
    fn default() -> Self {
        Self {
            reconciles: Family::default(),
            reconcile_seconds: Family::new_with_constructor(reconcile_histogram),
            operations: Family::default(),
            action_transitions: Family::default(),
            upgrades: UpgradeMetrics::default(),
            rollout_transitions: Family::default(),
        }
    }
}

/// Labels of `cisco_vk_iosxe_software_upgrade_transitions_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpgradeTransitionLabels {
    /// Device name.
    pub device: String,
    /// Phase entered.
    pub phase: String,
    /// Reason of the transition.
    pub reason: String,
}

/// Labels of the upgrade transfer metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpgradeTransferLabels {
    /// Device name.
    pub device: String,
    /// `validated`, `install_error` or an error category.
    pub outcome: String,
}

type HistogramFamily = Family<UpgradeTransferLabels, Histogram, fn() -> Histogram>;

/// IOSXESoftwareUpgrade metric families: phase transitions, transfer bytes
/// and transfer duration.
#[derive(Clone)]
pub struct UpgradeMetrics {
    /// Phase transitions by device, phase entered and reason.
    pub transitions: Family<UpgradeTransitionLabels, Counter>,
    /// Image bytes sent with OS.Install, by device and outcome.
    pub transfer_bytes: Family<UpgradeTransferLabels, Counter>,
    /// Duration of OS.Install transfers in seconds, by device and outcome.
    pub transfer_seconds: HistogramFamily,
}

fn transfer_histogram() -> Histogram {
    // 0.5 s .. ~4.5 h
    Histogram::new(exponential_buckets(0.5, 2.0, 16))
}

impl Default for UpgradeMetrics {
    fn default() -> Self {
        Self {
            transitions: Family::default(),
            transfer_bytes: Family::default(),
            transfer_seconds: Family::new_with_constructor(transfer_histogram),
        }
    }
}

impl UpgradeMetrics {
    /// Registers the families into `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "cisco_vk_iosxe_software_upgrade_transitions",
            "IOSXESoftwareUpgrade phase transitions",
            self.transitions.clone(),
        );
        registry.register(
            "cisco_vk_iosxe_software_upgrade_transfer_bytes",
            "Image bytes sent to devices with gNOI OS.Install",
            self.transfer_bytes.clone(),
        );
        registry.register(
            "cisco_vk_iosxe_software_upgrade_transfer_duration_seconds",
            "Duration of gNOI OS.Install image transfers",
            self.transfer_seconds.clone(),
        );
    }

    /// Counts a phase transition.
    pub fn transition(&self, device: &str, phase: &str, reason: &str) {
        self.transitions
            .get_or_create(&UpgradeTransitionLabels {
                device: device.to_owned(),
                phase: phase.to_owned(),
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Records one finished transfer attempt.
    pub fn transferred(&self, device: &str, bytes: u64, took: std::time::Duration, outcome: &str) {
        let labels = UpgradeTransferLabels {
            device: device.to_owned(),
            outcome: outcome.to_owned(),
        };
        self.transfer_bytes.get_or_create(&labels).inc_by(bytes);
        self.transfer_seconds
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }
}

impl ControllerMetrics {
    /// Registers the families into `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "cisco_vk_reconcile",
            "Reconciles by kind and outcome",
            self.reconciles.clone(),
        );
        registry.register(
            "cisco_vk_reconcile_duration_seconds",
            "Duration of reconciles by kind",
            self.reconcile_seconds.clone(),
        );
        registry.register(
            "cisco_vk_device_operation",
            "DeviceOperation completions by kind and terminal phase",
            self.operations.clone(),
        );
        registry.register(
            "cisco_vk_iosxe_operational_action_transitions",
            "IOSXEOperationalAction phase transitions",
            self.action_transitions.clone(),
        );
        self.upgrades.register(registry);
        registry.register(
            "cisco_vk_iosxe_software_rollout_transitions",
            "IOSXESoftwareRollout phase transitions",
            self.rollout_transitions.clone(),
        );
    }

    /// Counts a rollout phase transition.
    pub fn rollout_transition(&self, from: &str, to: &str, reason: &str) {
        self.rollout_transitions
            .get_or_create(&RolloutTransitionLabels {
                from: from.to_owned(),
                to: to.to_owned(),
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Counts one finished reconcile and observes how long it took.
    pub fn reconciled(&self, kind: &str, outcome: &str, took: std::time::Duration) {
        self.reconciles
            .get_or_create(&ReconcileLabels {
                kind: kind.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
        self.reconcile_seconds
            .get_or_create(&KindLabels {
                kind: kind.to_owned(),
            })
            .observe(took.as_secs_f64());
    }
}

/// Readiness flag shared between the controllers and `/readyz`.
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>, Arc<std::sync::Mutex<Option<String>>>);

impl Readiness {
    /// Says this replica's part in leader election on `/readyz`
    /// (`leading`, `standby; leader is X`).
    pub fn set_role(&self, role: impl Into<String>) {
        *self.1.lock().unwrap_or_else(|p| p.into_inner()) = Some(role.into());
    }

    fn role(&self) -> Option<String> {
        self.1.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Marks the process ready (or not).
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::SeqCst);
    }

    /// Whether the process is ready.
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

#[derive(Clone)]
struct HttpState {
    registry: Arc<Registry>,
    ready: Readiness,
}

async fn metrics(State(s): State<HttpState>) -> impl IntoResponse {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &s.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn readyz(State(s): State<HttpState>) -> impl IntoResponse {
    let role = s
        .ready
        .role()
        .map(|r| format!(" ({r})"))
        .unwrap_or_default();
    if s.ready.is_ready() {
        (StatusCode::OK, format!("ok{role}"))
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, format!("not ready{role}"))
    }
}

/// The router of both endpoints; exposed for tests.
pub fn router(registry: Arc<Registry>, ready: Readiness) -> (Router, Router) {
    let state = HttpState { registry, ready };
    let metrics = Router::new()
        .route("/metrics", get(metrics))
        .with_state(state.clone());
    let health = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(state);
    (metrics, health)
}

/// Binds both listeners (so a busy port fails startup, not later) and serves
/// them until `shutdown` fires. Returns the bound addresses.
pub async fn serve(
    metrics_addr: SocketAddr,
    health_addr: SocketAddr,
    registry: Arc<Registry>,
    ready: Readiness,
    shutdown: CancellationToken,
) -> anyhow::Result<(SocketAddr, SocketAddr)> {
    let (metrics_router, health_router) = router(registry, ready);
    let metrics_listener = tokio::net::TcpListener::bind(metrics_addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot bind the metrics address {metrics_addr}: {e}"))?;
    let health_listener = tokio::net::TcpListener::bind(health_addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot bind the health probe address {health_addr}: {e}"))?;
    let bound = (
        metrics_listener.local_addr()?,
        health_listener.local_addr()?,
    );
    for (listener, router) in [
        (metrics_listener, metrics_router),
        (health_listener, health_router),
    ] {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let served = axum::serve(listener, router)
                .with_graceful_shutdown(async move { shutdown.cancelled().await })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "HTTP endpoint stopped");
            }
        });
    }
    Ok(bound)
}
