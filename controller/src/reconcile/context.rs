//! The state every reconciler shares ([`Context`]) and the settings it is
//! built from. Below every kind: the kinds and the runtime use it, it uses
//! none of them (the per-kind state it carries lives in
//! [`crate::action`], [`crate::operation`] and [`super::transfers`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource};

use crate::client::cli::{CliMetrics, CliPool, CliSettings};
use crate::client::{ClientMetrics, ClientPool, GnoiSettings};
use crate::config::{Gates, RunArgs};
use crate::telemetry::ControllerMetrics;

/// Field manager of every status write, and the Event reporter.
pub const MANAGER: &str = "cvk-controller";

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

/// Settings of [`super::run_controllers`].
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
    pub upgrade: super::transfers::UpgradeSettings,
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
            upgrade: super::transfers::UpgradeSettings::default(),
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
            upgrade: super::transfers::UpgradeSettings {
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
    pub(crate) upgrades: super::transfers::Runtime,
    /// Answers of dispatched actions not yet written to their status.
    pub(crate) action_answers: crate::action::PendingAnswers,
    /// Device key -> (generation, when the next probe is due), so that the
    /// status write a probe causes does not cause another probe.
    probes: Mutex<HashMap<String, (Option<i64>, Instant)>>,
    /// Consecutive failed reconciles per object (the error backoff).
    pub(crate) failures: Failures,
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
            upgrades: super::transfers::Runtime::new(settings.upgrade.clone()),
            action_answers: crate::action::PendingAnswers::default(),
            client,
            settings,
            metrics,
            recorder,
            probes: Mutex::new(HashMap::new()),
            failures: Failures::default(),
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

/// Consecutive failures per object, for the backoff of [`error_policy`].
#[derive(Default)]
pub(crate) struct Failures(Mutex<HashMap<String, u32>>);

impl Failures {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts one more failure of `key`; the count so far.
    pub(crate) fn fail(&self, key: &str) -> u32 {
        let mut m = self.lock();
        let n = m.entry(key.to_owned()).or_insert(0);
        *n = n.saturating_add(1);
        *n
    }

    pub(crate) fn succeed(&self, key: &str) {
        self.lock().remove(key);
    }
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

    #[test]
    fn a_success_resets_the_backoff() {
        let f = Failures::default();
        assert_eq!(f.fail("a"), 1);
        assert_eq!(f.fail("a"), 2);
        assert_eq!(f.fail("b"), 1);
        f.succeed("a");
        assert_eq!(f.fail("a"), 1);
        assert_eq!(f.fail("b"), 2);
    }
}
