//! Objects of a gated kind while its gate is off.
//!
//! IOSXEOperationalAction needs `--enable-write-class-gnoi`
//! (`CISCO_VK_ENABLE_WRITE_CLASS_GNOI`), IOSXESoftwareUpgrade needs
//! `--enable-iosxesoftwareupgrade` (`CISCO_VK_ENABLE_IOSXE_SOFTWARE_UPGRADE`),
//! and so does IOSXESoftwareRollout.
//! While the gate is off the object is still watched, but nothing reaches
//! the device: this reconciler has no device client at all. It writes, once,
//! phase Pending with the gate's reason and a message naming the flag, the
//! variable and the Helm value that turn it on, the Ready condition False
//! with the same reason, and one Warning Event. Later resyncs find the
//! report in place and do nothing. Objects that already finished (under an
//! earlier controller with the gate on) are left as they are.

use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::runtime::controller::Action as KubeAction;
use kube::runtime::events::EventType;
use kube::{Api, Resource};
use serde::Serialize;

use super::engine::{self, HasStatus, write_status};
use super::{Context, DrivenKind, ReconcileError, ns_name};
use crate::conditions::{self, DesiredCondition};
use crate::config::Gate;
use crate::crd::common::{ConditionStatus, READY_CONDITION};
use crate::crd::{IOSXEOperationalAction, IOSXESoftwareRollout, IOSXESoftwareUpgrade};

/// What the gate reconciler needs to know about an object's status.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GateView {
    /// The object reached a terminal phase.
    pub terminal: bool,
    /// status.reason.
    pub reason: Option<String>,
    /// status.observedGeneration.
    pub observed_generation: Option<i64>,
    /// status.conditions.
    pub conditions: Vec<Condition>,
}

/// A kind that only runs behind a gate.
pub trait GatedKind: DrivenKind + Resource<Scope = NamespaceResourceScope> + HasStatus {
    /// The gate that must be on.
    const GATE: Gate;
    /// spec.deviceRef.name; `None` for a fleet kind (served only by a
    /// controller that is not scoped to one device).
    fn device_name(&self) -> Option<&str>;
    /// The status fields the decision reads.
    fn gate_view(&self) -> GateView;
}

/// `GatedKind` for a kind whose status has `phase` (with `is_terminal`),
/// `reason`, `observedGeneration` and `conditions`.
macro_rules! gated_kind {
    ($kind:ty, $gate:expr, |$obj:ident| $device:expr) => {
        impl GatedKind for $kind {
            const GATE: Gate = $gate;
            fn device_name(&self) -> Option<&str> {
                let $obj = self;
                $device
            }
            fn gate_view(&self) -> GateView {
                let s = self.status.clone().unwrap_or_default();
                GateView {
                    terminal: s.phase.is_some_and(|p| p.is_terminal()),
                    reason: s.reason,
                    observed_generation: s.observed_generation,
                    conditions: s.conditions,
                }
            }
        }
    };
}

gated_kind!(IOSXEOperationalAction, Gate::WriteClass, |a| Some(
    &a.spec.device_ref.name
));
gated_kind!(IOSXESoftwareUpgrade, Gate::SoftwareUpgrade, |u| Some(
    &u.spec.device_ref.name
));
// A fleet kind: served only by a controller not scoped to one device.
gated_kind!(IOSXESoftwareRollout, Gate::SoftwareUpgrade, |_r| None);

/// The decision for one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateStep {
    /// Another controller serves the object's device.
    OutOfScope,
    /// Finished before the gate was turned off: left alone.
    Finished,
    /// The report for this generation is already in status.
    AlreadyReported,
    /// Write the report and emit the Event.
    Report,
}

/// Decides what to do with an object of a gated kind whose gate is off.
pub fn step(gate: Gate, view: &GateView, generation: Option<i64>, in_scope: bool) -> GateStep {
    if !in_scope {
        GateStep::OutOfScope
    } else if view.terminal {
        GateStep::Finished
    } else if view.reason.as_deref() == Some(gate.reason())
        && view.observed_generation == generation
    {
        GateStep::AlreadyReported
    } else {
        GateStep::Report
    }
}

/// The status written while the gate is off (the same fields on both
/// kinds).
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GateStatus {
    /// Always Pending.
    pub phase: &'static str,
    /// The generation reported on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The gate's reason.
    pub reason: &'static str,
    /// Which gate is off and how to turn it on.
    pub message: &'static str,
    /// Ready False with the gate's reason.
    pub conditions: Vec<Condition>,
}

/// The report for `gate`, merged into the object's current conditions.
pub fn gate_status(
    gate: Gate,
    view: &GateView,
    generation: Option<i64>,
    now: Timestamp,
) -> GateStatus {
    let mut conds = view.conditions.clone();
    conditions::merge(
        &mut conds,
        DesiredCondition::new(
            READY_CONDITION,
            ConditionStatus::False,
            gate.reason(),
            gate.disabled_message(),
        ),
        generation,
        now,
    );
    GateStatus {
        phase: "Pending",
        observed_generation: generation,
        reason: gate.reason(),
        message: gate.disabled_message(),
        conditions: conds,
    }
}

/// The object's status with the report's fields replaced and every other
/// field kept (an object stopped mid-way keeps its markers and progress for
/// when the gate is turned on again).
pub fn overlay<K: HasStatus>(obj: &K, report: &GateStatus) -> Result<K::Status, ReconcileError> {
    let mut status = serde_json::to_value(obj.status_ref().cloned().unwrap_or_default())?;
    if let (Some(fields), serde_json::Value::Object(report)) =
        (status.as_object_mut(), serde_json::to_value(report)?)
    {
        fields.extend(report);
    }
    Ok(serde_json::from_value(status)?)
}

/// Reconciles one object of a gated kind while its gate is off.
pub async fn reconcile<K: GatedKind>(
    obj: Arc<K>,
    ctx: Arc<Context>,
) -> Result<KubeAction, ReconcileError> {
    let (ns, name) = ns_name(obj.as_ref())?;
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &ns);
    let Some(fresh) = api.get_opt(&name).await? else {
        return Ok(KubeAction::await_change());
    };
    let view = fresh.gate_view();
    let generation = fresh.meta().generation;
    let scope = &ctx.settings.scope;
    let in_scope = fresh
        .device_name()
        .map_or(scope.device.is_none(), |d| scope.serves_device(d));
    let decision = step(K::GATE, &view, generation, in_scope);
    if decision != GateStep::Report {
        return Ok(KubeAction::await_change());
    }
    if let Some(device) = fresh.device_name() {
        engine::record_device(device);
    }
    let report = gate_status(K::GATE, &view, generation, Timestamp::now());
    if write_status(&api, &fresh, overlay(&fresh, &report)?)
        .await?
        .is_none()
    {
        return Ok(KubeAction::requeue(engine::CONFLICT_RETRY));
    }
    tracing::info!(kind = %K::kind(&()), namespace = %ns, %name, reason = K::GATE.reason(),
        "gate is off; nothing sent to the device");
    ctx.publish(
        &fresh,
        EventType::Warning,
        K::GATE.reason(),
        "GateCheck",
        K::GATE.disabled_message().to_owned(),
    )
    .await;
    Ok(KubeAction::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_once_per_generation_and_leaves_finished_objects() {
        let g = Gate::WriteClass;
        let fresh = GateView::default();
        assert_eq!(step(g, &fresh, Some(1), true), GateStep::Report);
        assert_eq!(step(g, &fresh, Some(1), false), GateStep::OutOfScope);

        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let s = gate_status(g, &fresh, Some(1), now);
        let reported = GateView {
            terminal: false,
            reason: Some(s.reason.to_owned()),
            observed_generation: s.observed_generation,
            conditions: s.conditions.clone(),
        };
        assert_eq!(step(g, &reported, Some(1), true), GateStep::AlreadyReported);
        assert_eq!(step(g, &reported, Some(2), true), GateStep::Report);
        // The other gate's report is not this gate's.
        assert_eq!(
            step(Gate::SoftwareUpgrade, &reported, Some(1), true),
            GateStep::Report
        );
        let done = GateView {
            terminal: true,
            ..GateView::default()
        };
        assert_eq!(step(g, &done, Some(1), true), GateStep::Finished);
    }

    #[test]
    fn the_report_keeps_the_rest_of_the_status() {
        let mut obj: IOSXEOperationalAction = serde_json::from_value(serde_json::json!({
            "apiVersion": "ops.cisco.vk/v1alpha1",
            "kind": "IOSXEOperationalAction",
            "metadata": { "name": "a", "namespace": "ns", "generation": 2 },
            "spec": { "deviceRef": { "name": "sw" }, "confirm": "sw",
                      "action": { "kind": "Reboot" } },
        }))
        .unwrap();
        obj.status = Some(crate::crd::IOSXEOperationalActionStatus {
            invocation_id: Some("inv-1".into()),
            message: Some("was running".into()),
            observed_generation: Some(1),
            ..Default::default()
        });
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let report = gate_status(Gate::WriteClass, &obj.gate_view(), Some(2), now);
        let s = overlay(&obj, &report).unwrap();
        assert_eq!(s.invocation_id.as_deref(), Some("inv-1"));
        assert_eq!(s.phase, Some(crate::crd::action::ActionPhase::Pending));
        assert_eq!(s.observed_generation, Some(2));
        assert_eq!(s.reason.as_deref(), Some(Gate::WriteClass.reason()));
        assert_eq!(
            s.message.as_deref(),
            Some(Gate::WriteClass.disabled_message())
        );
        assert_eq!(s.conditions.len(), 1);
    }

    #[test]
    fn the_report_names_the_gate_and_how_to_turn_it_on() {
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let s = gate_status(Gate::SoftwareUpgrade, &GateView::default(), Some(3), now);
        assert_eq!(s.phase, "Pending");
        assert_eq!(s.reason, "SoftwareUpgradeGateDisabled");
        assert!(s.message.contains("--enable-iosxesoftwareupgrade"));
        assert!(s.message.contains("CISCO_VK_ENABLE_IOSXE_SOFTWARE_UPGRADE"));
        assert_eq!(s.conditions.len(), 1);
        assert_eq!(s.conditions[0].type_, "Ready");
        assert_eq!(s.conditions[0].status, "False");
        assert_eq!(s.conditions[0].reason, "SoftwareUpgradeGateDisabled");
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["observedGeneration"], 3);
    }
}
