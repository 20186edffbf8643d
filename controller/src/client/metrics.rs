//! Prometheus metrics of the device client (names as upstream):
//!
//! * `cisco_vk_gnoi_rpc_total{service,outcome}`: every RPC the client
//!   finished, `outcome` = `ok` or [`ClientError::category`].
//! * `cisco_vk_gnoi_capability_cache_total{service,result}`: cache
//!   decisions; `result` is `fail_fast` (answered from the cache),
//!   `learned_unsupported`, `learned_supported` or `expired`.
//! * `cisco_vk_devicegrpc_lease_events_total{class,event}`: connection events
//!   per workload class; `event` is `connect`, `connect_error` or `backoff`
//!   (a call refused because the class is backing off).
//!
//! [`ClientError::category`]: super::ClientError::category

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::{GnoiService, WorkloadClass};

/// Labels of `cisco_vk_gnoi_rpc_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    /// Short service name (`system`, `file`, `os`, ...).
    pub service: String,
    /// `ok` or an error category.
    pub outcome: String,
}

/// Labels of `cisco_vk_gnoi_capability_cache_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CapabilityLabels {
    /// Short service name.
    pub service: String,
    /// Cache decision.
    pub result: String,
}

/// Labels of `cisco_vk_devicegrpc_lease_events_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LeaseEventLabels {
    /// `ClassControl`, `ClassTelemetry` or `ClassBulkTransfer`.
    pub class: String,
    /// Event name.
    pub event: String,
}

/// The client's metric families; cheap to clone (shared counters).
#[derive(Clone, Default, Debug)]
pub struct ClientMetrics {
    /// RPCs by service and outcome.
    pub rpc: Family<RpcLabels, Counter>,
    /// Capability cache decisions.
    pub capability_cache: Family<CapabilityLabels, Counter>,
    /// Connection events by class.
    pub lease_events: Family<LeaseEventLabels, Counter>,
}

impl ClientMetrics {
    /// Registers the families into `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "cisco_vk_gnoi_rpc",
            "gNOI/gNMI RPCs by service and outcome",
            self.rpc.clone(),
        );
        registry.register(
            "cisco_vk_gnoi_capability_cache",
            "gNOI capability cache decisions by service and result",
            self.capability_cache.clone(),
        );
        registry.register(
            "cisco_vk_devicegrpc_lease_events",
            "Device gRPC connection events by workload class",
            self.lease_events.clone(),
        );
    }

    pub(crate) fn rpc_done(&self, service: GnoiService, outcome: &str) {
        self.rpc
            .get_or_create(&RpcLabels {
                service: service.as_str().to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    pub(crate) fn capability(&self, service: GnoiService, result: &str) {
        self.capability_cache
            .get_or_create(&CapabilityLabels {
                service: service.as_str().to_owned(),
                result: result.to_owned(),
            })
            .inc();
    }

    pub(crate) fn lease_event(&self, class: WorkloadClass, event: &str) {
        self.lease_events
            .get_or_create(&LeaseEventLabels {
                class: class.to_string(),
                event: event.to_owned(),
            })
            .inc();
    }

    /// Current value of `cisco_vk_gnoi_rpc_total{service,outcome}`.
    pub fn rpc_count(&self, service: GnoiService, outcome: &str) -> u64 {
        self.rpc
            .get_or_create(&RpcLabels {
                service: service.as_str().to_owned(),
                outcome: outcome.to_owned(),
            })
            .get()
    }

    /// Current value of `cisco_vk_gnoi_capability_cache_total{service,result}`.
    pub fn capability_count(&self, service: GnoiService, result: &str) -> u64 {
        self.capability_cache
            .get_or_create(&CapabilityLabels {
                service: service.as_str().to_owned(),
                result: result.to_owned(),
            })
            .get()
    }
}
