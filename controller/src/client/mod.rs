//! The gNOI/gNMI device client: a library with no Kubernetes types.
//!
//! ```text
//!  ClientPool ── device key ──> DeviceClient ──┬─ ClassControl      (unary gNOI, gNMI Get/Capabilities)
//!   │  shared CapabilityCache, ClientMetrics   ├─ ClassTelemetry    (gNMI Subscribe)
//!   │                                          └─ ClassBulkTransfer (OS.Install, File.Put/Get)
//!   └─ GnoiSettings (CISCO_VK_GNOI_INSECURE / _PORT / _DISABLED, deadlines, backoff, TTL)
//! ```
//!
//! * **Pool.** [`ClientPool::get_or_create`] returns the [`DeviceClient`] of a
//!   [`DeviceTarget`], building it on first use and rebuilding it (and
//!   forgetting the device's capability entries) when the target's
//!   connection parameters change. With `CISCO_VK_GNOI_DISABLED` no client
//!   is built: [`ClientError::Disabled`].
//! * **Workload classes.** Each device has three separate HTTP/2 connections,
//!   one per [`WorkloadClass`], connected lazily on first use, so an image
//!   upload never queues a reboot-status probe behind it
//!   ([`GnoiSettings::single_channel`] shares one connection instead, the
//!   benchmarks' baseline). Connect failures
//!   back off exponentially per class ([`ConnectionState`]).
//! * **Security.** Plaintext or TLS/mTLS per the port and transport rules of
//!   [`settings`]; credentials go as `username`/`password` metadata on every
//!   call.
//! * **Deadlines.** Every unary RPC has a deadline (sent as `grpc-timeout`
//!   and enforced locally); streaming RPCs have an idle/progress timeout
//!   instead ([`Timeouts`]).
//! * **Capability cache.** An UNIMPLEMENTED answer marks the service
//!   unsupported for the TTL; calls then fail fast with
//!   [`ClientError::ServiceUnsupported`] without touching the network
//!   ([`capability`]); [`DeviceClient::capabilities`] is a snapshot for
//!   status.
//! * **Paths.** File RPCs validate IOS-XE paths first ([`paths`]).
//! * **Metrics.** [`ClientMetrics`] counts RPCs by service and outcome
//!   (`ok` or [`ClientError::category`]).
//!
//! Typed calls, by service: [`system`] (time, ping, traceroute, reboot,
//! reboot status, cancel reboot, kill process), [`file`] (get, get_hash,
//! stat, put, remove), [`os`] (install, activate, verify), [`cert`]
//! (certificates, can-generate-CSR), [`factory_reset`] and [`gnmi`]
//! (capabilities, get, subscribe). Results are plain structs that serialize
//! to JSON (camelCase) for DeviceOperation outputs.
//!
//! A `DeviceClient` must be created inside a Tokio runtime (its channels
//! spawn their connection tasks there).

pub mod capability;
pub mod cert;
pub mod cli;
mod conn;
mod error;
pub mod factory_reset;
pub mod file;
pub mod gnmi;
pub mod known_hosts;
pub mod metrics;
pub mod os;
pub mod paths;
pub mod settings;
pub mod system;
mod tls;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

pub use capability::{CapabilityCache, CapabilitySnapshot, ServiceSupport, Support};
pub use conn::{ConnectionState, EndpointPlan};
pub use error::{ClientError, ErrorClass};
pub use metrics::ClientMetrics;
pub use paths::{DevicePath, PathError};
pub use settings::{
    Credentials, DeviceTarget, GnoiSettings, SettingsError, Timeouts, TlsMaterial, Transport,
};

use capability::Check;
use conn::ClassState;

/// The gRPC services the client calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum GnoiService {
    /// `gnoi.system.System`.
    System,
    /// `gnoi.file.File`.
    File,
    /// `gnoi.os.OS`.
    Os,
    /// `gnoi.certificate.CertificateManagement`.
    Cert,
    /// `gnoi.factory_reset.FactoryReset`.
    FactoryReset,
    /// `gnmi.gNMI`.
    Gnmi,
}

impl GnoiService {
    /// Every service, in a fixed order.
    pub const ALL: [GnoiService; 6] = [
        GnoiService::System,
        GnoiService::File,
        GnoiService::Os,
        GnoiService::Cert,
        GnoiService::FactoryReset,
        GnoiService::Gnmi,
    ];

    /// Fully qualified proto service name.
    pub fn proto_name(self) -> &'static str {
        match self {
            GnoiService::System => "gnoi.system.System",
            GnoiService::File => "gnoi.file.File",
            GnoiService::Os => "gnoi.os.OS",
            GnoiService::Cert => "gnoi.certificate.CertificateManagement",
            GnoiService::FactoryReset => "gnoi.factory_reset.FactoryReset",
            GnoiService::Gnmi => "gnmi.gNMI",
        }
    }

    /// Short snake_case name, the `service` metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            GnoiService::System => "system",
            GnoiService::File => "file",
            GnoiService::Os => "os",
            GnoiService::Cert => "cert",
            GnoiService::FactoryReset => "factory_reset",
            GnoiService::Gnmi => "gnmi",
        }
    }
}

impl fmt::Display for GnoiService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.proto_name())
    }
}

/// The connection classes of the specification's connection model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum WorkloadClass {
    /// Unary gNOI and gNMI Get/Capabilities.
    Control,
    /// gNMI Subscribe streams.
    Telemetry,
    /// OS.Install, File.Put, File.Get.
    BulkTransfer,
}

impl WorkloadClass {
    /// Every class.
    pub const ALL: [WorkloadClass; 3] = [
        WorkloadClass::Control,
        WorkloadClass::Telemetry,
        WorkloadClass::BulkTransfer,
    ];

    fn index(self) -> usize {
        match self {
            WorkloadClass::Control => 0,
            WorkloadClass::Telemetry => 1,
            WorkloadClass::BulkTransfer => 2,
        }
    }
}

impl fmt::Display for WorkloadClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WorkloadClass::Control => "ClassControl",
            WorkloadClass::Telemetry => "ClassTelemetry",
            WorkloadClass::BulkTransfer => "ClassBulkTransfer",
        })
    }
}

/// Static description of one RPC: service, method and class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rpc {
    pub(crate) service: GnoiService,
    pub(crate) method: &'static str,
    /// `package.Service/Method`, for messages.
    pub(crate) path: &'static str,
    pub(crate) class: WorkloadClass,
}

macro_rules! rpc {
    ($name:ident, $svc:ident, $method:literal, $path:literal, $class:ident) => {
        pub(crate) const $name: Rpc = Rpc {
            service: GnoiService::$svc,
            method: $method,
            path: $path,
            class: WorkloadClass::$class,
        };
    };
}

/// Every RPC the controller uses, with its class (the connection model
/// table of the specification).
pub(crate) mod rpcs {
    use super::{GnoiService, Rpc, WorkloadClass};
    rpc!(
        SYSTEM_TIME,
        System,
        "Time",
        "gnoi.system.System/Time",
        Control
    );
    rpc!(
        SYSTEM_PING,
        System,
        "Ping",
        "gnoi.system.System/Ping",
        Control
    );
    rpc!(
        SYSTEM_TRACEROUTE,
        System,
        "Traceroute",
        "gnoi.system.System/Traceroute",
        Control
    );
    rpc!(
        SYSTEM_REBOOT,
        System,
        "Reboot",
        "gnoi.system.System/Reboot",
        Control
    );
    rpc!(
        SYSTEM_REBOOT_STATUS,
        System,
        "RebootStatus",
        "gnoi.system.System/RebootStatus",
        Control
    );
    rpc!(
        SYSTEM_CANCEL_REBOOT,
        System,
        "CancelReboot",
        "gnoi.system.System/CancelReboot",
        Control
    );
    rpc!(
        SYSTEM_KILL_PROCESS,
        System,
        "KillProcess",
        "gnoi.system.System/KillProcess",
        Control
    );
    rpc!(FILE_GET, File, "Get", "gnoi.file.File/Get", BulkTransfer);
    rpc!(FILE_PUT, File, "Put", "gnoi.file.File/Put", BulkTransfer);
    rpc!(FILE_STAT, File, "Stat", "gnoi.file.File/Stat", Control);
    rpc!(
        FILE_REMOVE,
        File,
        "Remove",
        "gnoi.file.File/Remove",
        Control
    );
    rpc!(
        OS_INSTALL,
        Os,
        "Install",
        "gnoi.os.OS/Install",
        BulkTransfer
    );
    rpc!(OS_ACTIVATE, Os, "Activate", "gnoi.os.OS/Activate", Control);
    rpc!(OS_VERIFY, Os, "Verify", "gnoi.os.OS/Verify", Control);
    rpc!(
        CERT_GET,
        Cert,
        "GetCertificates",
        "gnoi.certificate.CertificateManagement/GetCertificates",
        Control
    );
    rpc!(
        CERT_CAN_GENERATE_CSR,
        Cert,
        "CanGenerateCSR",
        "gnoi.certificate.CertificateManagement/CanGenerateCSR",
        Control
    );
    rpc!(
        FACTORY_RESET_START,
        FactoryReset,
        "Start",
        "gnoi.factory_reset.FactoryReset/Start",
        Control
    );
    rpc!(
        GNMI_CAPABILITIES,
        Gnmi,
        "Capabilities",
        "gnmi.gNMI/Capabilities",
        Control
    );
    rpc!(GNMI_GET, Gnmi, "Get", "gnmi.gNMI/Get", Control);
    rpc!(
        GNMI_SUBSCRIBE,
        Gnmi,
        "Subscribe",
        "gnmi.gNMI/Subscribe",
        Telemetry
    );
}

/// Largest message the client decodes on the control and telemetry classes
/// (gNMI Get of a full native config is several MiB on a loaded switch).
pub(crate) const MAX_DECODE_CONTROL: usize = 64 * 1024 * 1024;
/// Largest message on the bulk class: 4 MiB content chunks plus framing.
pub(crate) const MAX_MESSAGE_BULK: usize = 4 * 1024 * 1024 + 64 * 1024;

/// The client of one device; see the module docs. Cheap to share behind
/// an `Arc` (the pool hands out `Arc<DeviceClient>`).
pub struct DeviceClient {
    target: DeviceTarget,
    plan: EndpointPlan,
    settings: Arc<GnoiSettings>,
    channels: [Channel; 3],
    classes: [Arc<ClassState>; 3],
    capabilities: Arc<CapabilityCache>,
    metrics: ClientMetrics,
    credentials: Option<(
        MetadataValue<tonic::metadata::Ascii>,
        MetadataValue<tonic::metadata::Ascii>,
    )>,
}

impl fmt::Debug for DeviceClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceClient")
            .field("device", &self.target.name)
            .field("endpoint", &self.plan.to_string())
            .finish_non_exhaustive()
    }
}

impl DeviceClient {
    /// Builds the client of `target` (no connection is made yet). Fails on
    /// a disabled client, an unusable address, bad TLS material or
    /// credentials that gRPC metadata cannot carry.
    pub fn new(
        target: DeviceTarget,
        settings: Arc<GnoiSettings>,
        capabilities: Arc<CapabilityCache>,
        metrics: ClientMetrics,
    ) -> Result<Self, ClientError> {
        if settings.disabled {
            return Err(ClientError::Disabled);
        }
        let plan = EndpointPlan::resolve(&target, &settings)?;
        let credentials = match &target.credentials {
            None => None,
            Some(c) => {
                let user = MetadataValue::try_from(c.username.as_str()).map_err(|_| {
                    ClientError::InvalidTarget(format!(
                        "device {:?}: the username must be visible ASCII to travel as gRPC metadata",
                        target.name
                    ))
                })?;
                let pass = MetadataValue::try_from(c.password.as_str()).map_err(|_| {
                    ClientError::InvalidTarget(format!(
                        "device {:?}: the password must be visible ASCII to travel as gRPC metadata",
                        target.name
                    ))
                })?;
                Some((user, pass))
            }
        };
        let classes = WorkloadClass::ALL
            .map(|c| Arc::new(ClassState::new(c, &settings.timeouts, metrics.clone())));
        let channels: [Channel; 3] = if settings.single_channel {
            // One connection for every class (bulk window sizes, so
            // transfers are not slowed); its connects are counted on the
            // control class.
            let shared = conn::build_channel(
                &plan,
                &target,
                &settings,
                WorkloadClass::BulkTransfer,
                classes[WorkloadClass::Control.index()].clone(),
            )?;
            [shared.clone(), shared.clone(), shared]
        } else {
            let mut channels = Vec::with_capacity(3);
            for class in WorkloadClass::ALL {
                channels.push(conn::build_channel(
                    &plan,
                    &target,
                    &settings,
                    class,
                    classes[class.index()].clone(),
                )?);
            }
            channels
                .try_into()
                .map_err(|_| ClientError::Protocol("channel count".into()))?
        };
        Ok(Self {
            target,
            plan,
            settings,
            channels,
            classes,
            capabilities,
            metrics,
            credentials,
        })
    }

    /// The target this client was built for.
    pub fn target(&self) -> &DeviceTarget {
        &self.target
    }

    /// The resolved endpoint (host, port, TLS).
    pub fn endpoint(&self) -> &EndpointPlan {
        &self.plan
    }

    /// The settings in force.
    pub fn settings(&self) -> &GnoiSettings {
        &self.settings
    }

    /// Connection state of one class.
    pub fn connection_state(&self, class: WorkloadClass) -> ConnectionState {
        self.classes[class.index()].snapshot()
    }

    /// What is known about each service of this device.
    pub fn capabilities(&self) -> CapabilitySnapshot {
        self.capabilities.snapshot(&self.target.name)
    }

    pub(crate) fn channel(&self, class: WorkloadClass) -> Channel {
        self.channels[class.index()].clone()
    }

    /// Capability and backoff checks before any network traffic.
    pub(crate) fn preflight(&self, rpc: Rpc) -> Result<(), ClientError> {
        match self.capabilities.check(&self.target.name, rpc.service) {
            Check::Proceed => {}
            Check::Expired => self.metrics.capability(rpc.service, "expired"),
            Check::Unsupported(detail) => {
                self.metrics.capability(rpc.service, "fail_fast");
                let err = ClientError::ServiceUnsupported {
                    service: rpc.service,
                    detail,
                };
                self.metrics.rpc_done(rpc.service, err.category());
                return Err(err);
            }
        }
        let class = &self.classes[rpc.class.index()];
        if let Some(left) = class.backoff_remaining() {
            self.metrics.lease_event(rpc.class, "backoff");
            let err = ClientError::Unavailable {
                message: format!(
                    "{} of {} backs off after connect failures: {}",
                    rpc.class,
                    self.plan,
                    class.last_error().unwrap_or_default()
                ),
                retry_after: Some(left),
            };
            self.metrics.rpc_done(rpc.service, err.category());
            return Err(err);
        }
        Ok(())
    }

    /// Wraps `msg` with credentials and, for unary calls, `grpc-timeout`.
    pub(crate) fn request<T>(&self, msg: T, deadline: Option<Duration>) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        if let Some((user, pass)) = &self.credentials {
            req.metadata_mut().insert("username", user.clone());
            req.metadata_mut().insert("password", pass.clone());
        }
        if let Some(d) = deadline {
            req.set_timeout(d);
        }
        req
    }

    /// Maps a status and records what it says about the service.
    pub(crate) fn status_error(
        &self,
        rpc: Rpc,
        deadline: Duration,
        status: &tonic::Status,
    ) -> ClientError {
        let err = error::from_status(rpc.service, rpc.method, rpc.path, deadline, status);
        match &err {
            ClientError::ServiceUnsupported { detail, .. } => {
                let before = self.capabilities.record(
                    &self.target.name,
                    rpc.service,
                    Support::Unsupported,
                    detail,
                );
                if before != Support::Unsupported {
                    self.metrics.capability(rpc.service, "learned_unsupported");
                }
                tracing::info!(device = %self.target.name, service = %rpc.service,
                    "device answered UNIMPLEMENTED; service marked unsupported for {:?}",
                    self.capabilities.ttl());
            }
            // An application-level answer proves the service exists.
            ClientError::Rpc { .. } => self.mark_supported(rpc),
            _ => {}
        }
        err
    }

    /// Records that `rpc`'s service answered.
    pub(crate) fn mark_supported(&self, rpc: Rpc) {
        let before =
            self.capabilities
                .record(&self.target.name, rpc.service, Support::Supported, "");
        if before != Support::Supported {
            self.metrics.capability(rpc.service, "learned_supported");
        }
    }

    /// Counts a finished RPC.
    pub(crate) fn finish<T>(&self, rpc: Rpc, result: &Result<T, ClientError>) {
        let outcome = match result {
            Ok(_) => "ok",
            Err(e) => e.category(),
        };
        self.metrics.rpc_done(rpc.service, outcome);
        if let Err(e) = result {
            tracing::debug!(device = %self.target.name, rpc = rpc.path, error = %e, "device RPC failed");
        }
    }

    /// Runs one unary RPC with the class deadline, metrics and capability
    /// bookkeeping. `call` gets the class channel and the prepared request.
    pub(crate) async fn unary<Req, Resp, F, Fut>(
        &self,
        rpc: Rpc,
        deadline: Duration,
        msg: Req,
        call: F,
    ) -> Result<Resp, ClientError>
    where
        F: FnOnce(Channel, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
    {
        self.preflight(rpc)?;
        let req = self.request(msg, Some(deadline));
        let result = match tokio::time::timeout(deadline, call(self.channel(rpc.class), req)).await
        {
            Err(_) => Err(ClientError::DeadlineExceeded {
                rpc: rpc.path,
                after: deadline,
            }),
            Ok(Ok(resp)) => {
                self.mark_supported(rpc);
                Ok(resp.into_inner())
            }
            Ok(Err(status)) => Err(self.status_error(rpc, deadline, &status)),
        };
        self.finish(rpc, &result);
        result
    }

    /// Opens a server-streaming (or bidi) RPC: preflight, then waits at most
    /// `idle` for the response headers. On error the RPC is counted as
    /// finished; on success the caller calls [`finish`](Self::finish) when
    /// the stream is done.
    pub(crate) async fn open_stream<Req, Resp, F, Fut>(
        &self,
        rpc: Rpc,
        idle: Duration,
        req: tonic::Request<Req>,
        call: F,
    ) -> Result<tonic::Streaming<Resp>, ClientError>
    where
        F: FnOnce(Channel, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<tonic::Streaming<Resp>>, tonic::Status>>,
    {
        self.preflight(rpc)?;
        let result = match tokio::time::timeout(idle, call(self.channel(rpc.class), req)).await {
            Err(_) => Err(ClientError::DeadlineExceeded {
                rpc: rpc.path,
                after: idle,
            }),
            Ok(Ok(resp)) => {
                self.mark_supported(rpc);
                return Ok(resp.into_inner());
            }
            Ok(Err(status)) => Err(self.status_error(rpc, idle, &status)),
        };
        self.finish(rpc, &result);
        result
    }

    /// The next message of a response stream, waiting at most `idle`.
    pub(crate) async fn next_message<Resp>(
        &self,
        rpc: Rpc,
        idle: Duration,
        stream: &mut tonic::Streaming<Resp>,
    ) -> Result<Option<Resp>, ClientError> {
        match tokio::time::timeout(idle, stream.message()).await {
            Err(_) => Err(ClientError::DeadlineExceeded {
                rpc: rpc.path,
                after: idle,
            }),
            Ok(Ok(msg)) => Ok(msg),
            Ok(Err(status)) => Err(self.status_error(rpc, idle, &status)),
        }
    }
}

/// Device key -> client, with the shared capability cache and metrics.
pub struct ClientPool {
    settings: Arc<GnoiSettings>,
    capabilities: Arc<CapabilityCache>,
    metrics: ClientMetrics,
    clients: Mutex<HashMap<String, Arc<DeviceClient>>>,
}

impl fmt::Debug for ClientPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientPool")
            .field("settings", &self.settings)
            .field("devices", &self.len())
            .finish()
    }
}

impl ClientPool {
    /// An empty pool.
    pub fn new(settings: GnoiSettings, metrics: ClientMetrics) -> Self {
        Self {
            capabilities: Arc::new(CapabilityCache::new(settings.capability_ttl)),
            settings: Arc::new(settings),
            metrics,
            clients: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<DeviceClient>>> {
        // Inserts and removes are single operations; a poisoned map is intact.
        self.clients.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The client of `target`, built on first use and rebuilt when the
    /// target's connection parameters (address, port, transport, TLS,
    /// credentials) changed. Calls in flight on a replaced client finish on
    /// its connections.
    pub fn get_or_create(&self, target: &DeviceTarget) -> Result<Arc<DeviceClient>, ClientError> {
        if self.settings.disabled {
            return Err(ClientError::Disabled);
        }
        let mut clients = self.lock();
        if let Some(existing) = clients.get(&target.name) {
            if existing.target() == target {
                return Ok(existing.clone());
            }
            tracing::info!(device = %target.name, "device connection parameters changed; rebuilding its gNOI client");
            self.capabilities.forget_device(&target.name);
        }
        let client = Arc::new(DeviceClient::new(
            target.clone(),
            self.settings.clone(),
            self.capabilities.clone(),
            self.metrics.clone(),
        )?);
        clients.insert(target.name.clone(), client.clone());
        Ok(client)
    }

    /// Drops the client of a device that no longer exists, and its cache
    /// entries.
    pub fn remove(&self, name: &str) -> bool {
        self.capabilities.forget_device(name);
        self.lock().remove(name).is_some()
    }

    /// Capability snapshot of a device (all `Unknown` for an unknown one).
    pub fn capabilities(&self, name: &str) -> CapabilitySnapshot {
        self.capabilities.snapshot(name)
    }

    /// The shared capability cache.
    pub fn capability_cache(&self) -> &Arc<CapabilityCache> {
        &self.capabilities
    }

    /// The settings.
    pub fn settings(&self) -> &GnoiSettings {
        &self.settings
    }

    /// The metrics.
    pub fn metrics(&self) -> &ClientMetrics {
        &self.metrics
    }

    /// Number of devices with a client.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no device has a client.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(WorkloadClass::Control.to_string(), "ClassControl");
        assert_eq!(WorkloadClass::Telemetry.to_string(), "ClassTelemetry");
        assert_eq!(WorkloadClass::BulkTransfer.to_string(), "ClassBulkTransfer");
        assert_eq!(GnoiService::Os.to_string(), "gnoi.os.OS");
        for r in [
            rpcs::SYSTEM_TIME,
            rpcs::FILE_GET,
            rpcs::OS_INSTALL,
            rpcs::CERT_GET,
            rpcs::FACTORY_RESET_START,
            rpcs::GNMI_SUBSCRIBE,
        ] {
            assert_eq!(r.path, format!("{}/{}", r.service.proto_name(), r.method));
        }
    }

    #[test]
    fn disabled_builds_nothing() {
        let pool = ClientPool::new(
            GnoiSettings {
                disabled: true,
                ..Default::default()
            },
            ClientMetrics::default(),
        );
        let e = pool
            .get_or_create(&DeviceTarget::new("d", "127.0.0.1"))
            .unwrap_err();
        assert!(matches!(e, ClientError::Disabled));
        assert!(pool.is_empty());
    }
}
