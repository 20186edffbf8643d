//! The IOSXEOperationalAction executor: reads the object, asks the pure
//! [`crate::action`] what to do, and does the I/O (CiscoDevice, finalizer,
//! Lease, baseline read, the one RPC, the read-back), writing each
//! status with a resourceVersion precondition. The decision table, the
//! at-most-once rules and the phases are documented in [`crate::action`].
//! Registered only while the write-class gate is on; otherwise
//! [`super::gate`] reports the gate.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::runtime::controller::Action as KubeAction;
use kube::runtime::events::EventType;
use serde_json::{Value, json};

use super::engine::{
    self, DeviceLookupError, add_finalizer, device_locks, gnoi_client, lease_holder,
    remove_finalizer, update_status, write_status,
};
use super::{Context, ReconcileError, ns_name};

use crate::action::{
    ActionStep, ActionView, Answer, DISPATCH_TIMEOUT, DispatchRecord, Outcome, Reading, Rejection,
    Request, Seen, Windows, build_request, conclude_observed, content_of, error_reason, interpret,
    invocation_id, is_not_found, outcome_status, outcome_window, phase_str, rejected_status,
    running_status, settle_time, sha256_hex, step, waiting_status,
};
use crate::client::{ClientError, DeviceClient, Support};
use crate::crd::action::{
    ActionKind, ActionPhase, IOSXEOperationalAction, IOSXEOperationalActionStatus,
};
use crate::lease::{Acquire, DeviceLocks, LeaseHolder};
use crate::reason::ActionReason;
use crate::telemetry::ActionTransitionLabels;

pub use crate::action::{FINALIZER, ResultDoc};

/// The kind, as it appears in Events, metrics and Lease holders.
pub const KIND: &str = "IOSXEOperationalAction";

/// Pause point right after the Running + invocationID status write.
pub const PAUSE_AFTER_MARKER: &str = "action-after-marker";

/// Pause point right after the RPC returned, before the outcome is written.
pub const PAUSE_AFTER_DISPATCH: &str = "action-after-dispatch";

/// Retry interval while waiting for a device, its target or its Lease.
pub const RETRY_WAIT: Duration = Duration::from_secs(5);

/// Retry interval while observing a dispatched action.
pub const RETRY_OBSERVE: Duration = Duration::from_secs(3);

/// Reads what the device shows about a dispatched action. Never sends the
/// action itself.
pub async fn observe(client: &DeviceClient, kind: ActionKind, rec: &DispatchRecord) -> Reading {
    let path = || {
        rec.request
            .get("path")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    match kind {
        ActionKind::Reboot | ActionKind::CancelReboot | ActionKind::FactoryReset => {
            Reading::Reboot(client.reboot_status().await.map(|s| (s.active, s.count)))
        }
        ActionKind::FilePut => Reading::FileHash(client.file_hash(&path()).await.map(|h| h.sha256)),
        ActionKind::FileRemove => {
            Reading::FileStat(client.file_stat(&path()).await.map(|s| s.len()))
        }
        ActionKind::KillProcess => Reading::Nothing,
    }
}

// ---- status ------------------------------------------------------------

/// How long a marker write whose answer was lost is looked for.
const MARKER_CONFIRM: Duration = Duration::from_secs(60);

/// After a marker write that failed in transport: reads the object until
/// the API server answers (bounded by [`MARKER_CONFIRM`]). The object when
/// it is Running with this invocation (the write landed and nothing was
/// dispatched yet: this process is the only one that dispatches it, as a
/// reconcile that finds a marker only observes); `None` when the write did
/// not land or the API server stayed away.
async fn confirm_marker(
    api: &Api<IOSXEOperationalAction>,
    name: &str,
    invocation: &str,
) -> Option<IOSXEOperationalAction> {
    let deadline = tokio::time::Instant::now() + MARKER_CONFIRM;
    loop {
        match api.get_opt(name).await {
            Ok(Some(o)) => {
                let st = o.status.as_ref();
                let ours = st.and_then(|s| s.invocation_id.as_deref()) == Some(invocation)
                    && st.and_then(|s| s.phase) == Some(ActionPhase::Running);
                return ours.then_some(o);
            }
            Ok(None) => return None,
            Err(e) => {
                if tokio::time::Instant::now() >= deadline {
                    tracing::warn!(action = %name, error = %e,
                        "the marker write's answer was lost and the API server did not answer again in time");
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// Writes the status `make` derives from the fresh object, provided the
/// object still carries `invocation` and is Running; retried on conflicts
/// (bounded). `None` when the object moved on without us, or stayed
/// contended (the next reconcile finds it Running and reads the outcome back
/// from the device).
async fn cas_while_running<F>(
    api: &Api<IOSXEOperationalAction>,
    name: &str,
    invocation: &str,
    mut make: F,
) -> Result<Option<IOSXEOperationalAction>, ReconcileError>
where
    F: FnMut(&IOSXEOperationalActionStatus) -> IOSXEOperationalActionStatus,
{
    update_status(api, name, |fresh| {
        let st = fresh.status.clone().unwrap_or_default();
        let ours = st.invocation_id.as_deref() == Some(invocation)
            && st.phase == Some(ActionPhase::Running);
        ours.then(|| make(&st))
    })
    .await
}

// ---- the reconciler ------------------------------------------------------

struct Env<'a> {
    ctx: &'a Context,
    api: Api<IOSXEOperationalAction>,
    ns: String,
    name: String,
    device: String,
    kind: ActionKind,
}

impl Env<'_> {
    fn holder(&self, obj: &IOSXEOperationalAction) -> LeaseHolder {
        lease_holder(KIND, obj)
    }

    fn locks(&self) -> DeviceLocks {
        device_locks(self.ctx, &self.ns)
    }

    /// Releases the device Lease if this action holds it; `false` when the
    /// API refused (the finalizer then stays, and the next reconcile tries
    /// again).
    async fn release(&self, obj: &IOSXEOperationalAction) -> bool {
        if !self.kind.needs_device_lease() {
            return true;
        }
        match self
            .locks()
            .release(&self.ns, &self.device, &self.holder(obj))
            .await
        {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(action = %self.name, device = %self.device, error = %e,
                    "releasing the device lease failed; retrying");
                false
            }
        }
    }

    /// Releases the Lease, then removes the finalizer; retried later if the
    /// Lease could not be released.
    async fn clean_up(&self, obj: &IOSXEOperationalAction) -> Result<KubeAction, ReconcileError> {
        if !self.release(obj).await {
            return Ok(KubeAction::requeue(RETRY_WAIT));
        }
        remove_finalizer(&self.api, &self.name, FINALIZER).await?;
        Ok(KubeAction::await_change())
    }

    fn count(&self, phase: ActionPhase, reason: ActionReason) {
        self.ctx
            .metrics
            .action_transitions
            .get_or_create(&ActionTransitionLabels {
                device: self.device.clone(),
                kind: self.kind.as_str().to_owned(),
                phase: phase_str(phase).to_owned(),
                reason: reason.as_str().to_owned(),
            })
            .inc();
    }

    /// Counts the transition, logs it and publishes its Event.
    async fn announce(
        &self,
        obj: &IOSXEOperationalAction,
        phase: ActionPhase,
        reason: ActionReason,
        summary: &str,
        message: &str,
    ) {
        self.count(phase, reason);
        tracing::info!(namespace = %self.ns, action = %self.name, kind = %self.kind,
            device = %self.device, phase = phase_str(phase), %reason, %message, "action transition");
        let type_ = match phase {
            ActionPhase::Succeeded | ActionPhase::Running => EventType::Normal,
            _ => EventType::Warning,
        };
        let note = format!("{} device={} {summary}: {message}", self.kind, self.device);
        self.ctx
            .publish(obj, type_, reason.as_str(), "Execute", note)
            .await;
    }

    /// Writes a terminal Rejected status (only over an undispatched object)
    /// and cleans up.
    async fn reject(
        &self,
        obj: &IOSXEOperationalAction,
        r: Rejection,
        summary: &str,
    ) -> Result<KubeAction, ReconcileError> {
        let prev = obj.status.clone().unwrap_or_default();
        let status = rejected_status(&prev, &r, obj.metadata.generation, Timestamp::now());
        if write_status(&self.api, obj, status).await?.is_none() {
            return Ok(KubeAction::requeue(engine::CONFLICT_RETRY));
        }
        self.announce(obj, ActionPhase::Rejected, r.reason, summary, &r.message)
            .await;
        self.clean_up(obj).await
    }

    /// Pending while something the action needs is missing; announced once
    /// per reason and message.
    async fn wait(
        &self,
        obj: &IOSXEOperationalAction,
        reason: ActionReason,
        message: String,
        summary: &str,
    ) -> Result<KubeAction, ReconcileError> {
        let prev = obj.status.clone().unwrap_or_default();
        let same = prev.phase == Some(ActionPhase::Pending)
            && prev.reason.as_deref() == Some(reason.as_str())
            && prev.message.as_deref() == Some(message.as_str());
        if !same {
            let status = waiting_status(
                &prev,
                reason,
                &message,
                obj.metadata.generation,
                Timestamp::now(),
            );
            if write_status(&self.api, obj, status).await?.is_none() {
                return Ok(KubeAction::requeue(engine::CONFLICT_RETRY));
            }
            self.announce(obj, ActionPhase::Pending, reason, summary, &message)
                .await;
        }
        Ok(KubeAction::requeue(RETRY_WAIT))
    }

    async fn client(&self) -> Result<Arc<DeviceClient>, (ActionReason, String)> {
        gnoi_client(self.ctx, &self.ns, &self.device)
            .await
            .map_err(|e| {
                let reason = match &e {
                    DeviceLookupError::Client { source, .. } => error_reason(source),
                    _ => ActionReason::NoTransport,
                };
                (reason, e.to_string())
            })
    }
}

/// Reconciles one IOSXEOperationalAction (write-class gate on).
pub async fn reconcile(
    obj: Arc<IOSXEOperationalAction>,
    ctx: Arc<Context>,
) -> Result<KubeAction, ReconcileError> {
    let (ns, name) = ns_name(obj.as_ref())?;
    let api: Api<IOSXEOperationalAction> = Api::namespaced(ctx.client.clone(), &ns);
    let Some(obj) = api.get_opt(&name).await? else {
        return Ok(KubeAction::await_change());
    };
    let device = obj.spec.device_ref.name.clone();
    engine::record_device(&device);
    let in_scope = ctx.settings.scope.serves_device(&device);
    let env = Env {
        ctx: &ctx,
        api,
        ns,
        name,
        device,
        kind: obj.spec.action.kind,
    };
    match step(&ActionView::of(&obj, in_scope)) {
        ActionStep::OutOfScope | ActionStep::Finished { cleanup: false } => {
            Ok(KubeAction::await_change())
        }
        ActionStep::Finished { cleanup: true } | ActionStep::Abandon => env.clean_up(&obj).await,
        ActionStep::Observe => observe_dispatched(&env, &obj).await,
        ActionStep::Start => start(&env, &obj).await,
    }
}

async fn start(env: &Env<'_>, obj: &IOSXEOperationalAction) -> Result<KubeAction, ReconcileError> {
    let kind = env.kind;
    let request = match build_request(obj) {
        Ok(r) => r,
        Err(r) => return env.reject(obj, r, "").await,
    };
    let summary = request.summary();
    if env.ctx.settings.gnoi.disabled {
        return env
            .reject(
                obj,
                Rejection::new(
                    ActionReason::GnoiDisabled,
                    ClientError::Disabled.to_string(),
                ),
                &summary,
            )
            .await;
    }
    // FilePut content: read and hashed before anything else happens.
    let content = match &request {
        Request::FilePut { config_map, .. } => {
            let cms: Api<ConfigMap> = Api::namespaced(env.ctx.client.clone(), &env.ns);
            match cms.get_opt(config_map).await? {
                None => {
                    return env
                        .reject(
                            obj,
                            Rejection::new(
                                ActionReason::ConfigMapNotFound,
                                format!(
                                    "ConfigMap {config_map:?} (spec.action.filePut.configMapName) does not exist in namespace {:?}; nothing was sent to the device",
                                    env.ns
                                ),
                            ),
                            &summary,
                        )
                        .await;
                }
                Some(cm) => match content_of(&cm, config_map) {
                    Ok(b) => Some(b),
                    Err(r) => return env.reject(obj, r, &summary).await,
                },
            }
        }
        _ => None,
    };

    let client = match env.client().await {
        Ok(c) => c,
        Err((reason, message)) => return env.wait(obj, reason, message, &summary).await,
    };

    // The finalizer comes before the Lease: whatever holds the Lease also
    // holds the finalizer, so a crash anywhere after this point leaves
    // cleanup for the Finished or Abandon step.
    let Some(obj) = add_finalizer(&env.api, obj, FINALIZER).await? else {
        return Ok(KubeAction::requeue(engine::CONFLICT_RETRY));
    };
    let obj = &obj;

    if kind.needs_device_lease() {
        match env
            .locks()
            .acquire(&env.ns, &env.device, &env.holder(obj))
            .await
        {
            Ok(Acquire::Held) => {}
            Ok(Acquire::Busy(who)) => {
                return env
                    .wait(
                        obj,
                        ActionReason::MutationLeaseBlocked,
                        format!(
                            "device {:?} is held by {who}; {kind} waits until it is released",
                            env.device
                        ),
                        &summary,
                    )
                    .await;
            }
            Err(e) => {
                return env
                    .wait(
                        obj,
                        ActionReason::MutationLeaseError,
                        e.to_string(),
                        &summary,
                    )
                    .await;
            }
        }
    }

    // A service the device is known to lack: refused without a call.
    let service = request.service();
    if let Some(s) = client
        .capabilities()
        .iter()
        .find(|s| s.service == service && s.support == Support::Unsupported)
    {
        let reason = ActionReason::ServiceUnsupported(s.service);
        return env
            .reject(
                obj,
                Rejection::new(
                    reason,
                    format!(
                        "the device answered UNIMPLEMENTED for {}; {kind} was not sent",
                        service.proto_name()
                    ),
                ),
                &summary,
            )
            .await;
    }

    // Baseline read: reachability, and what the outcome is compared with.
    let mut rec = DispatchRecord {
        kind: kind.as_str().to_owned(),
        request: request.describe(),
        ..DispatchRecord::default()
    };
    if let Some(b) = &content {
        rec.content_bytes = Some(b.len() as u64);
        rec.content_sha256 = Some(sha256_hex(b));
    }
    if let Err(r) = baseline(&client, &request, &mut rec).await {
        return env.reject(obj, r, &summary).await;
    }

    // The marker: compare-and-swap on resourceVersion.
    let invocation = invocation_id(obj);
    let generation = obj.metadata.generation;
    let prev = obj.status.clone().unwrap_or_default();
    let running = running_status(&prev, &invocation, &rec, generation, Timestamp::now());
    let marked = match write_status(&env.api, obj, running).await {
        // The API server may have stored the marker and lost only the
        // answer: find out before giving up, or the next reconcile would
        // see a marker, take the action for dispatched and observe a
        // device that was never asked (ActionNotApplied).
        Err(ReconcileError::Kube(e)) if !matches!(e, kube::Error::Api(_)) => {
            match confirm_marker(&env.api, &env.name, &invocation).await {
                Some(obj) => Some(obj),
                None => return Err(ReconcileError::Kube(e)),
            }
        }
        other => other?,
    };
    let Some(obj) = marked else {
        // Someone else wrote first; decide again from what they wrote.
        return Ok(KubeAction::requeue(engine::CONFLICT_RETRY));
    };
    crate::pause::point(PAUSE_AFTER_MARKER).await;
    env.announce(
        &obj,
        ActionPhase::Running,
        ActionReason::Running,
        &summary,
        &format!("dispatching (invocation {invocation})"),
    )
    .await;

    let answer =
        match tokio::time::timeout(DISPATCH_TIMEOUT, dispatch(&client, &request, content)).await {
            Ok(a) => a,
            Err(_) => Err(ClientError::DeadlineExceeded {
                rpc: "write-class action",
                after: DISPATCH_TIMEOUT,
            }),
        };
    crate::pause::point(PAUSE_AFTER_DISPATCH).await;
    let outcome = interpret(kind, answer);
    // Kept until written: a failed status write must not lose the answer.
    env.ctx.action_answers.put(&invocation, outcome.clone());
    let written = conclude(env, &obj, &invocation, &summary, outcome, false).await;
    if written.is_ok() {
        env.ctx.action_answers.remove(&invocation);
    }
    written
}

/// Writes an outcome over a Running object carrying `invocation`.
async fn conclude(
    env: &Env<'_>,
    obj: &IOSXEOperationalAction,
    invocation: &str,
    summary: &str,
    outcome: Outcome,
    after_restart: bool,
) -> Result<KubeAction, ReconcileError> {
    let generation = obj.metadata.generation;
    let now = Timestamp::now();
    if matches!(outcome, Outcome::Unclear { .. })
        && obj.status.as_ref().and_then(|s| s.reason.as_deref())
            == Some(ActionReason::Observing.as_str())
    {
        // Already recorded as observing: no write (a write would wake this
        // reconciler again at once); look again after the interval.
        return Ok(KubeAction::requeue(RETRY_OBSERVE));
    }
    let written = cas_while_running(&env.api, &env.name, invocation, |st| {
        outcome_status(st, &outcome, after_restart, generation, now)
    })
    .await?;
    let Some(written) = written else {
        // Finished elsewhere: the next reconcile sees the terminal phase.
        return Ok(KubeAction::requeue(engine::CONFLICT_RETRY));
    };
    match &outcome {
        Outcome::Unclear { message } => {
            env.announce(
                &written,
                ActionPhase::Running,
                ActionReason::Observing,
                summary,
                message,
            )
            .await;
            Ok(KubeAction::requeue(RETRY_OBSERVE))
        }
        Outcome::Succeeded { message, .. } => {
            env.announce(
                &written,
                ActionPhase::Succeeded,
                ActionReason::Succeeded,
                summary,
                message,
            )
            .await;
            env.clean_up(&written).await
        }
        Outcome::Failed {
            reason, message, ..
        } => {
            env.announce(&written, ActionPhase::Failed, *reason, summary, message)
                .await;
            env.clean_up(&written).await
        }
    }
}

/// A Running action found by a reconcile: its dispatch already happened (or
/// may have). Reads the device to learn the outcome; never sends again.
async fn observe_dispatched(
    env: &Env<'_>,
    obj: &IOSXEOperationalAction,
) -> Result<KubeAction, ReconcileError> {
    let st = obj.status.clone().unwrap_or_default();
    let Some(invocation) = st.invocation_id.clone() else {
        // Running without a marker is not something this controller writes;
        // it is still never dispatched.
        let mut fixed = st.clone();
        fixed.invocation_id = Some(invocation_id(obj));
        write_status(&env.api, obj, fixed).await?;
        return Ok(KubeAction::requeue(engine::CONFLICT_RETRY));
    };
    let doc = ResultDoc::parse(&st);
    let summary = doc
        .as_ref()
        .map(|d| match &d.dispatch.request {
            Value::Object(m) => m
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" "),
            _ => String::new(),
        })
        .unwrap_or_default();
    if obj.metadata.deletion_timestamp.is_some() {
        // Repeats are folded into one Event series by the recorder.
        env.ctx
            .publish(
                obj,
                EventType::Warning,
                ActionReason::DeletionPending.as_str(),
                "Delete",
                format!(
                    "{} device={} was dispatched; the object is kept until its outcome is known",
                    env.kind, env.device
                ),
            )
            .await;
    }
    if let Some(outcome) = env.ctx.action_answers.get(&invocation) {
        // This process dispatched it and holds the answer; only the status
        // write failed. Write it now, as if no time had passed.
        let written = conclude(env, obj, &invocation, &summary, outcome, false).await;
        if written.is_ok() {
            env.ctx.action_answers.remove(&invocation);
        }
        return written;
    }
    let started = st
        .start_time
        .as_ref()
        .map(|t| t.0)
        .unwrap_or_else(Timestamp::now);
    let elapsed = Duration::try_from(Timestamp::now().duration_since(started)).unwrap_or_default();
    let seen = match (&doc, env.client().await) {
        (None, _) => Seen::NoRecord,
        (Some(_), Err((_, message))) => Seen::Unreachable(message),
        (Some(doc), Ok(client)) => Seen::Read(
            &doc.dispatch,
            observe(&client, env.kind, &doc.dispatch).await,
        ),
    };
    let windows = Windows {
        settle: settle_time(env.kind, &env.ctx.settings.gnoi.timeouts),
        outcome: outcome_window(env.kind),
    };
    let outcome = conclude_observed(env.kind, &invocation, seen, elapsed, windows);
    conclude(env, obj, &invocation, &summary, outcome, true).await
}

/// Reads the device before dispatch: the reachability check, the
/// preconditions of the kind, and the baseline the outcome is judged
/// against. Nothing here mutates the device.
async fn baseline(
    client: &DeviceClient,
    request: &Request,
    rec: &mut DispatchRecord,
) -> Result<(), Rejection> {
    let refuse = |what: &str, e: ClientError| {
        Rejection::new(
            error_reason(&e),
            format!("{what} before dispatch failed: {e}; nothing was sent"),
        )
    };
    match request {
        Request::Reboot(_) | Request::CancelReboot { .. } => {
            let s = client
                .reboot_status()
                .await
                .map_err(|e| refuse("reading RebootStatus", e))?;
            rec.reboot_count_before = Some(s.count);
            rec.reboot_active_before = Some(s.active);
            match request {
                Request::Reboot(_) if s.active => Err(Rejection::new(
                    ActionReason::RebootAlreadyPending,
                    format!(
                        "a reboot is already pending on the device (reason {:?}, in {}s); cancel it with a CancelReboot action first. Nothing was sent",
                        s.reason,
                        s.wait_nanos / 1_000_000_000
                    ),
                )),
                Request::CancelReboot { .. } if !s.active => Err(Rejection::new(
                    ActionReason::NoRebootPending,
                    "no reboot is pending on the device, so there is nothing to cancel; nothing was sent",
                )),
                _ => Ok(()),
            }
        }
        Request::KillProcess(_) => client
            .time()
            .await
            .map(|_| ())
            .map_err(|e| refuse("reading the device clock", e)),
        Request::FilePut { path, .. } => match client.file_stat(path).await {
            Ok(_) => {
                rec.file_existed_before = Some(true);
                Ok(())
            }
            Err(e) if is_not_found(&e) => {
                rec.file_existed_before = Some(false);
                Ok(())
            }
            Err(e) => Err(refuse(&format!("File.Stat of {path}"), e)),
        },
        Request::FileRemove { path } => match client.file_stat(path).await {
            Ok(_) => {
                rec.file_existed_before = Some(true);
                Ok(())
            }
            Err(e) if is_not_found(&e) => Err(Rejection::new(
                ActionReason::FileNotFound,
                format!(
                    "{path} does not exist on the device (spec.action.fileRemove.path); nothing was removed"
                ),
            )),
            Err(e) => Err(refuse(&format!("File.Stat of {path}"), e)),
        },
        Request::FactoryReset(_) => match client.reboot_status().await {
            Ok(s) => {
                if s.active {
                    return Err(Rejection::new(
                        ActionReason::RebootAlreadyPending,
                        "a reboot is pending on the device; FactoryReset was not sent",
                    ));
                }
                rec.reboot_count_before = Some(s.count);
                rec.reboot_active_before = Some(s.active);
                Ok(())
            }
            // Releases without System still have FactoryReset; the outcome
            // then cannot be read back after a restart.
            Err(ClientError::ServiceUnsupported { .. }) => Ok(()),
            Err(e) => Err(refuse("reading RebootStatus", e)),
        },
    }
}

/// Sends the one RPC and returns what the device answered, as JSON.
async fn dispatch(
    client: &DeviceClient,
    request: &Request,
    content: Option<Vec<u8>>,
) -> Result<Answer, ClientError> {
    match request {
        Request::Reboot(p) => {
            client.reboot(p).await?;
            let mut out = json!({ "accepted": true });
            // A delayed reboot shows up in RebootStatus: record it.
            if !p.delay.is_zero()
                && let Ok(s) = client.reboot_status().await
            {
                out["rebootStatus"] = serde_json::to_value(&s).unwrap_or(Value::Null);
            }
            Ok(Answer::Accepted(out))
        }
        Request::CancelReboot { message } => {
            client.cancel_reboot(message).await?;
            Ok(Answer::Accepted(json!({ "accepted": true })))
        }
        Request::KillProcess(p) => {
            client.kill_process(p).await?;
            Ok(Answer::Accepted(json!({ "accepted": true })))
        }
        Request::FilePut {
            path, permissions, ..
        } => {
            let bytes = content.unwrap_or_default();
            let sha = sha256_hex(&bytes);
            let sent = client
                .file_put_bytes(path, *permissions, bytes::Bytes::from(bytes))
                .await?;
            let mut out = json!({ "bytesSent": sent, "sha256": sha, "path": path });
            if let Ok(stats) = client.file_stat(path).await
                && let Some(s) = stats.first()
            {
                out["stat"] = serde_json::to_value(s).unwrap_or(Value::Null);
            }
            Ok(Answer::Accepted(out))
        }
        Request::FileRemove { path } => {
            client.file_remove(path).await?;
            Ok(Answer::Accepted(json!({ "removed": path })))
        }
        Request::FactoryReset(p) => Ok(Answer::FactoryReset(client.factory_reset(p).await?)),
    }
}
