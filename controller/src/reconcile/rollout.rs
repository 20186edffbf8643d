//! The IOSXESoftwareRollout reconciler (registered while the software
//! upgrade gate is on, in a controller not scoped to one device).
//!
//! It never talks to a device. Each reconcile reads the rollout fresh,
//! freezes the plan once (targets resolved from the CiscoDevice cache,
//! waves formed by [`crate::rollout::freeze`], kept in an immutable
//! ConfigMap `<rollout>-plan` owned by the rollout), observes the children
//! and devices from the controller's caches (no API list per reconcile),
//! calls the pure [`crate::rollout::step`], writes the status it returns
//! with a resourceVersion precondition, publishes its Events, and only then
//! creates or deletes children. A child is an IOSXESoftwareUpgrade named
//! `<rollout>-<device>` with the rollout as controlling owner: deleting the
//! rollout deletes its children, whose own finalizer stops each one safely.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, ObjectMeta};
use kube::runtime::controller::Action as KubeAction;
use kube::runtime::events::EventType;
use kube::runtime::reflector::Store;
use kube::{Api, Resource, ResourceExt};
use sha2::{Digest, Sha256};

use super::engine::{self, post_params, write_status};
use super::{Context, ReconcileError, ns_name};
use crate::crd::common::DeviceRef;
use crate::crd::rollout::{
    FrozenPlan, IOSXESoftwareRolloutStatus, PLAN_KEY, ROLLOUT_NAME_LABEL, ROLLOUT_UID_LABEL,
    RolloutPhase, WAVE_ANNOTATION,
};
use crate::crd::upgrade::{DEFAULT_MAX_RETRIES, ResumePolicy};
use crate::crd::{
    CiscoDevice, IOSXESoftwareRollout, IOSXESoftwareUpgrade, IOSXESoftwareUpgradeSpec,
};
use crate::reason::{PHASE_TRANSITION, RolloutReason};
use crate::rollout::{Action, ChildObs, DeviceInfo, DeviceObs, Observation, Plan, freeze, step};

/// Kind name in metrics and logs.
pub const KIND: &str = "IOSXESoftwareRollout";

/// The caches the rollout reconciler reads (the stores of the upgrade and
/// device controllers), and the frozen plans it has loaded (by rollout UID).
pub struct Caches {
    /// Every IOSXESoftwareUpgrade served (children are told by their label).
    pub upgrades: Store<IOSXESoftwareUpgrade>,
    /// Every CiscoDevice served.
    pub devices: Store<CiscoDevice>,
    plans: Mutex<HashMap<String, (String, Arc<Plan>)>>,
}

impl Caches {
    /// Caches over the two stores.
    pub fn new(upgrades: Store<IOSXESoftwareUpgrade>, devices: Store<CiscoDevice>) -> Self {
        Self {
            upgrades,
            devices,
            plans: Mutex::new(HashMap::new()),
        }
    }

    fn plan(&self, uid: &str, hash: &str) -> Option<Arc<Plan>> {
        let plans = self.plans.lock().unwrap_or_else(|p| p.into_inner());
        plans
            .get(uid)
            .filter(|(h, _)| h == hash)
            .map(|(_, p)| p.clone())
    }

    fn keep_plan(&self, uid: &str, hash: &str, plan: Arc<Plan>) {
        self.plans
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(uid.to_owned(), (hash.to_owned(), plan));
    }

    fn forget_plan(&self, uid: &str) {
        self.plans
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(uid);
    }
}

/// The child of `device` in rollout `rollout`: `<rollout>-<device>`, or,
/// when that is longer than an object name may be, its first 240
/// characters and a hash of the whole.
pub fn child_name(rollout: &str, device: &str) -> String {
    let full = format!("{rollout}-{device}");
    if full.len() <= 253 {
        return full;
    }
    let digest = hex::encode(Sha256::digest(full.as_bytes()));
    let head = full[..240].trim_end_matches(['-', '.']);
    format!("{head}-{}", &digest[..12])
}

/// The plan ConfigMap of rollout `name`.
pub fn plan_config_map_name(name: &str) -> String {
    child_name(name, "plan")
}

/// A label value naming the rollout (cut to 63 characters).
fn name_label(name: &str) -> String {
    let cut = &name[..name.len().min(63)];
    cut.trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_owned()
}

fn api_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

/// Reconciles one rollout.
pub async fn reconcile(
    obj: Arc<IOSXESoftwareRollout>,
    ctx: Arc<Context>,
    caches: Arc<Caches>,
) -> Result<KubeAction, ReconcileError> {
    let (ns, name) = ns_name(obj.as_ref())?;
    let api: Api<IOSXESoftwareRollout> = Api::namespaced(ctx.client.clone(), &ns);
    let Some(ro) = api.get_opt(&name).await? else {
        if let Some(uid) = obj.uid() {
            caches.forget_plan(&uid);
        }
        return Ok(KubeAction::await_change());
    };
    let uid = ro.uid().unwrap_or_default();
    let previous = ro.status.clone().unwrap_or_default();
    if ro.metadata.deletion_timestamp.is_some()
        || previous.phase.is_some_and(RolloutPhase::is_terminal)
    {
        caches.forget_plan(&uid);
        return Ok(KubeAction::await_change());
    }
    // The caches must have listed once, or a child created before a
    // restart would look absent.
    if caches.upgrades.wait_until_ready().await.is_err()
        || caches.devices.wait_until_ready().await.is_err()
    {
        return Ok(KubeAction::requeue(engine::BACKOFF_MAX));
    }
    let now = Timestamp::now();
    let mut status = previous.clone();
    let mut frozen_note = None;
    let plan = match status.frozen_plan.clone() {
        Some(fp) => match caches.plan(&uid, &fp.hash) {
            Some(p) => p,
            None => match load_plan(&ctx, &ns, &fp).await? {
                Ok(p) => {
                    let p = Arc::new(p);
                    caches.keep_plan(&uid, &fp.hash, p.clone());
                    p
                }
                Err(why) => {
                    return fail(&ctx, &api, &ro, RolloutReason::PlanUnavailable, why, now).await;
                }
            },
        },
        None => {
            let devices: Vec<DeviceInfo> = caches
                .devices
                .state()
                .iter()
                .filter(|d| d.namespace().as_deref() == Some(ns.as_str()))
                .map(|d| DeviceInfo {
                    name: d.name_any(),
                    labels: d.labels().clone(),
                })
                .collect();
            let plan = match freeze(&ro.spec.plan, &devices) {
                Ok(p) => p,
                Err(e) => {
                    return fail(&ctx, &api, &ro, e.reason(), e.to_string(), now).await;
                }
            };
            let (plan, hash, cm) = match store_plan(&ctx, &ro, &ns, plan).await? {
                Stored::Plan(plan, hash, cm) => (plan, hash, cm),
                Stored::Refused(why) => {
                    return fail(&ctx, &api, &ro, RolloutReason::PlanUnavailable, why, now).await;
                }
                Stored::Wait(why) => {
                    tracing::info!(rollout = %name, %why, "waiting to freeze the plan");
                    return Ok(KubeAction::requeue(PLAN_WAIT));
                }
            };
            let plan = Arc::new(plan);
            caches.keep_plan(&uid, &hash, plan.clone());
            frozen_note = Some(format!(
                "plan frozen: {} targets in {} waves ({}), hash {hash}, ConfigMap {cm}",
                plan.target_count(),
                plan.waves.len(),
                plan.waves
                    .iter()
                    .map(|w| format!("{} {}", w.name, w.devices.len()))
                    .take(6)
                    .collect::<Vec<_>>()
                    .join(", ")
                    + if plan.waves.len() > 6 { ", ..." } else { "" }
            ));
            status.frozen_plan = Some(FrozenPlan {
                hash,
                config_map: cm,
                targets: plan.target_count() as i32,
                waves: plan.waves.len() as i32,
                created_at: Some(Time(now)),
            });
            plan
        }
    };
    let hash = status
        .frozen_plan
        .as_ref()
        .map(|f| f.hash.clone())
        .unwrap_or_default();

    let children: HashMap<String, ChildObs> = caches
        .upgrades
        .state()
        .iter()
        .filter(|u| {
            u.namespace().as_deref() == Some(ns.as_str())
                && u.labels().get(ROLLOUT_UID_LABEL) == Some(&uid)
        })
        .map(|u| {
            let st = u.status.clone().unwrap_or_default();
            (
                u.spec.device_ref.name.clone(),
                ChildObs {
                    name: u.name_any(),
                    phase: st.phase,
                    reason: st.failure_reason.or(st.reason),
                    completion_time: st.completion_time.map(|t| t.0),
                    deleting: u.metadata.deletion_timestamp.is_some(),
                },
            )
        })
        .collect();
    let devices: HashMap<String, DeviceObs> = caches
        .devices
        .state()
        .iter()
        .filter(|d| d.namespace().as_deref() == Some(ns.as_str()))
        .map(|d| {
            let st = d.status.clone().unwrap_or_default();
            (
                d.name_any(),
                DeviceObs {
                    phase: st.phase,
                    running_version: st.running_version,
                    boot_time: st.boot_time.map(|t| t.0),
                    last_seen: st.last_seen.map(|t| t.0),
                },
            )
        })
        .collect();
    let naming = |device: &str| child_name(&name, device);
    let obs = Observation {
        plan: &plan,
        plan_hash: &hash,
        children: &children,
        devices: &devices,
        child_name: &naming,
    };
    let mut d = step(&ro.spec, ro.metadata.generation, &status, obs, now);
    if let Some(note) = frozen_note {
        d.notes.insert(
            0,
            crate::rollout::Note {
                warning: false,
                reason: RolloutReason::PlanFrozen,
                action: "Freeze".to_owned(),
                message: note,
            },
        );
    }
    if d.status != previous {
        let transition = previous.phase != d.status.phase;
        if write_status(&api, &ro, d.status.clone()).await?.is_none() {
            return Ok(KubeAction::requeue(engine::CONFLICT_RETRY));
        }
        if transition {
            ctx.metrics.rollout_transition(
                previous.phase.map_or("", RolloutPhase::as_str),
                d.status.phase.map_or("", RolloutPhase::as_str),
                d.status.reason.as_deref().unwrap_or_default(),
            );
            tracing::info!(rollout = %name, from = ?previous.phase, to = ?d.status.phase,
                reason = d.status.reason.as_deref().unwrap_or_default(), "rollout phase");
        }
    }
    for note in &d.notes {
        let kind = if note.warning {
            EventType::Warning
        } else {
            EventType::Normal
        };
        let action = crate::conditions::truncate_utf8(&note.action, 128);
        ctx.publish(
            &ro,
            kind,
            note.reason.as_str(),
            action,
            note.message.clone(),
        )
        .await;
    }
    execute(&ctx, &ro, &ns, &d.actions).await?;
    Ok(d.requeue
        .map_or_else(KubeAction::await_change, KubeAction::requeue))
}

/// Creates and deletes children, after the status that counts them was
/// written.
async fn execute(
    ctx: &Context,
    ro: &IOSXESoftwareRollout,
    ns: &str,
    actions: &[Action],
) -> Result<(), ReconcileError> {
    let upgrades: Api<IOSXESoftwareUpgrade> = Api::namespaced(ctx.client.clone(), ns);
    for a in actions {
        match a {
            Action::CreateChild { device, wave } => {
                let child = child_upgrade(ro, ns, device, wave);
                match upgrades.create(&post_params(), &child).await {
                    Ok(_) => {
                        tracing::info!(rollout = %ro.name_any(), %device, %wave,
                            upgrade = %child.name_any(), "child upgrade created");
                    }
                    Err(e) if api_code(&e) == Some(409) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Action::DeleteChild { name } => {
                match upgrades.delete(name, &DeleteParams::background()).await {
                    Ok(_) => tracing::info!(rollout = %ro.name_any(), upgrade = %name,
                        "child upgrade deleted (cancel)"),
                    Err(e) if api_code(&e) == Some(404) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    Ok(())
}

/// The child IOSXESoftwareUpgrade of `device`.
pub fn child_upgrade(
    ro: &IOSXESoftwareRollout,
    ns: &str,
    device: &str,
    wave: &str,
) -> IOSXESoftwareUpgrade {
    let plan = &ro.spec.plan;
    let name = ro.name_any();
    let mut up = IOSXESoftwareUpgrade::new(
        &child_name(&name, device),
        IOSXESoftwareUpgradeSpec {
            device_ref: DeviceRef::new(device),
            image_source: plan.source.image_source(),
            target_version: plan.target_version.clone(),
            strategy: plan.strategy,
            rollback_on_failure: plan.rollback_on_failure,
            resume_policy: ResumePolicy::default(),
            max_retries: DEFAULT_MAX_RETRIES,
            reboot_timeout_seconds: plan.reboot_timeout_seconds,
            install_timeout_seconds: plan.install_timeout_seconds,
            maintenance_window: plan.maintenance_window.as_ref().map(|w| w.upgrade_window()),
        },
    );
    up.metadata.namespace = Some(ns.to_owned());
    up.metadata.labels = Some(BTreeMap::from([
        (ROLLOUT_UID_LABEL.to_owned(), ro.uid().unwrap_or_default()),
        (ROLLOUT_NAME_LABEL.to_owned(), name_label(&name)),
    ]));
    up.metadata.annotations = Some(BTreeMap::from([(
        WAVE_ANNOTATION.to_owned(),
        wave.to_owned(),
    )]));
    up.metadata.owner_references = ro.controller_owner_ref(&()).map(|o| vec![o]);
    up
}

/// How long to wait for the plan ConfigMap of an earlier rollout of the same
/// name to be garbage-collected.
const PLAN_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// What became of the frozen plan.
enum Stored {
    /// Stored (or adopted): the plan, its hash, the ConfigMap's name.
    Plan(Plan, String, String),
    /// The ConfigMap's name is taken by something else.
    Refused(String),
    /// The name is held by an earlier rollout's ConfigMap that the garbage
    /// collector will remove.
    Wait(String),
}

/// Writes the frozen plan to its immutable ConfigMap, or adopts the one a
/// previous pass of this rollout wrote (a controller killed between the
/// ConfigMap and the status): the plan is frozen once.
async fn store_plan(
    ctx: &Context,
    ro: &IOSXESoftwareRollout,
    ns: &str,
    plan: Plan,
) -> Result<Stored, ReconcileError> {
    let cms: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
    let cm_name = plan_config_map_name(&ro.name_any());
    let uid = ro.uid().unwrap_or_default();
    let hash = plan.hash(&ro.spec.plan);
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some(cm_name.clone()),
            namespace: Some(ns.to_owned()),
            labels: Some(BTreeMap::from([(
                ROLLOUT_UID_LABEL.to_owned(),
                uid.clone(),
            )])),
            annotations: Some(BTreeMap::from([(
                "ops.cisco.vk/plan-hash".to_owned(),
                hash.clone(),
            )])),
            owner_references: ro.controller_owner_ref(&()).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        immutable: Some(true),
        data: Some(BTreeMap::from([(
            PLAN_KEY.to_owned(),
            serde_json::to_string(&plan)?,
        )])),
        ..ConfigMap::default()
    };
    match cms.create(&post_params(), &cm).await {
        Ok(_) => Ok(Stored::Plan(plan, hash, cm_name)),
        Err(e) if api_code(&e) == Some(409) => {
            let existing = cms.get(&cm_name).await?;
            if existing.labels().get(ROLLOUT_UID_LABEL) != Some(&uid) {
                let earlier_rollout = existing
                    .owner_references()
                    .iter()
                    .any(|o| o.kind == "IOSXESoftwareRollout" && o.name == ro.name_any());
                return Ok(if earlier_rollout {
                    Stored::Wait(format!(
                        "ConfigMap {cm_name} belongs to an earlier rollout of this name and is being garbage-collected"
                    ))
                } else {
                    Stored::Refused(format!(
                        "ConfigMap {cm_name} exists and does not belong to this rollout; delete it or rename the rollout"
                    ))
                });
            }
            Ok(match parse_plan(&existing, &cm_name)? {
                Ok(stored) => {
                    let hash = stored.hash(&ro.spec.plan);
                    Stored::Plan(stored, hash, cm_name)
                }
                Err(why) => Stored::Refused(why),
            })
        }
        Err(e) => Err(e.into()),
    }
}

fn parse_plan(cm: &ConfigMap, name: &str) -> Result<Result<Plan, String>, ReconcileError> {
    let Some(text) = cm.data.as_ref().and_then(|d| d.get(PLAN_KEY)) else {
        return Ok(Err(format!("ConfigMap {name} has no {PLAN_KEY}")));
    };
    Ok(serde_json::from_str(text).map_err(|e| format!("ConfigMap {name}: {PLAN_KEY}: {e}")))
}

/// Reads the frozen plan back (a restarted controller).
async fn load_plan(
    ctx: &Context,
    ns: &str,
    fp: &FrozenPlan,
) -> Result<Result<Plan, String>, ReconcileError> {
    let cms: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
    match cms.get_opt(&fp.config_map).await? {
        Some(cm) => parse_plan(&cm, &fp.config_map),
        None => Ok(Err(format!(
            "the frozen plan's ConfigMap {} is gone; the campaign cannot go on",
            fp.config_map
        ))),
    }
}

/// Ends the campaign Failed before (or without) a plan.
async fn fail(
    ctx: &Context,
    api: &Api<IOSXESoftwareRollout>,
    ro: &IOSXESoftwareRollout,
    reason: RolloutReason,
    message: String,
    now: Timestamp,
) -> Result<KubeAction, ReconcileError> {
    let previous = ro.status.clone().unwrap_or_default();
    let mut s: IOSXESoftwareRolloutStatus = previous.clone();
    s.phase = Some(RolloutPhase::Failed);
    s.reason = Some(reason.into());
    s.message = Some(message.clone());
    s.observed_generation = ro.metadata.generation;
    s.completion_time.get_or_insert(Time(now));
    crate::conditions::set_ready(
        &mut s.conditions,
        false,
        reason.as_str(),
        &message,
        ro.metadata.generation,
        now,
    );
    if write_status(api, ro, s).await?.is_none() {
        return Ok(KubeAction::requeue(engine::CONFLICT_RETRY));
    }
    ctx.publish(
        ro,
        EventType::Warning,
        PHASE_TRANSITION,
        &format!(
            "{}ToFailed",
            previous.phase.map_or("None", RolloutPhase::as_str)
        ),
        match previous.phase {
            Some(p) => format!("{} → Failed: {reason}: {message}", p.as_str()),
            None => format!("Failed: {reason}: {message}"),
        },
    )
    .await;
    Ok(KubeAction::await_change())
}
