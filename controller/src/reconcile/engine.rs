//! The reconcile engine: the Kubernetes plumbing every kind shares.
//!
//! A kind's reconciler reads its object fresh, decides with a pure function
//! and runs the decided I/O; everything around that lives here, once:
//!
//! * [`instrument`]: a span per reconcile (`kind`, `namespace`, `name`, and
//!   `device` once the kind records it), the outcome counted after the work
//!   (`cisco_vk_reconcile_total{kind,outcome}`, `ok` or the error's
//!   category) and its duration (`cisco_vk_reconcile_duration_seconds`).
//! * [`error_policy`]: the requeue after a failed reconcile. A conflict is
//!   retried at once (someone wrote the object; decide again on the fresh
//!   one), another API failure backs off per object, doubling from 1 s to
//!   60 s, and a permanent error (an object without a name, a status that
//!   cannot be serialized) is not retried until the object changes.
//! * [`write_status`]: the one status writer. It replaces the status of the
//!   object as read, with that object's resourceVersion as precondition and
//!   [`MANAGER`] as field manager, so a status is always decided on the
//!   object it overwrites and a field the controller stops setting
//!   disappears. A conflict is `Ok(None)`: the caller decides again.
//!   [`update_status`] re-reads and re-decides until the write lands or the
//!   decision says the object moved on.
//! * [`add_finalizer`] / [`drop_finalizer`] / [`remove_finalizer`]: the
//!   controller's finalizer, written with the same precondition.
//! * [`gnoi_client`]: the CiscoDevice lookup and the pooled device client of
//!   a device-bound kind; [`lease_holder`] and [`device_locks`]: the holder
//!   identity of the per-device Lease.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::controller::Action as KubeAction;
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tracing::Instrument;

use super::target::{TargetError, resolve_target};
use super::{Context, MANAGER, ReconcileError};
use crate::client::{ClientError, DeviceClient};
use crate::crd::{
    CiscoDevice, CiscoDeviceStatus, DeviceOperation, DeviceOperationStatus, IOSXEOperationalAction,
    IOSXEOperationalActionStatus, IOSXESoftwareRollout, IOSXESoftwareRolloutStatus,
    IOSXESoftwareUpgrade, IOSXESoftwareUpgradeStatus,
};
use crate::lease::{DeviceLocks, LeaseHolder};

/// A kind whose status the controller writes.
pub trait HasStatus:
    Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + std::fmt::Debug
{
    /// The status type.
    type Status: Clone + Serialize + DeserializeOwned + Default;
    /// The status as stored.
    fn status_ref(&self) -> Option<&Self::Status>;
    /// The status slot.
    fn status_slot(&mut self) -> &mut Option<Self::Status>;
}

macro_rules! has_status {
    ($($kind:ty => $status:ty),* $(,)?) => {$(
        impl HasStatus for $kind {
            type Status = $status;
            fn status_ref(&self) -> Option<&$status> {
                self.status.as_ref()
            }
            fn status_slot(&mut self) -> &mut Option<$status> {
                &mut self.status
            }
        }
    )*};
}

has_status! {
    CiscoDevice => CiscoDeviceStatus,
    DeviceOperation => DeviceOperationStatus,
    IOSXEOperationalAction => IOSXEOperationalActionStatus,
    IOSXESoftwareUpgrade => IOSXESoftwareUpgradeStatus,
    IOSXESoftwareRollout => IOSXESoftwareRolloutStatus,
}

// ---- status and finalizer writes ----------------------------------------

/// Create parameters with [`MANAGER`] as field manager.
pub(crate) fn post_params() -> PostParams {
    PostParams {
        dry_run: false,
        field_manager: Some(MANAGER.to_owned()),
    }
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

/// Replaces the status of `obj` as read: its resourceVersion is the
/// precondition, [`MANAGER`] the field manager. `Ok(None)` when the object
/// changed since it was read (409); the caller decides again on a fresh
/// copy.
pub async fn write_status<K: HasStatus>(
    api: &Api<K>,
    obj: &K,
    status: K::Status,
) -> Result<Option<K>, ReconcileError> {
    let mut next = obj.clone();
    next.meta_mut().managed_fields = None;
    *next.status_slot() = Some(status);
    match api
        .replace_status(&obj.name_any(), &post_params(), &next)
        .await
    {
        Ok(written) => Ok(Some(written)),
        Err(e) if is_conflict(&e) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// How many times [`update_status`] re-reads a contended object.
const UPDATE_ATTEMPTS: usize = 5;

/// Reads `name` fresh and writes the status `decide` derives from it, again
/// on a conflict (bounded). `decide` returns `None` when the fresh object
/// no longer wants this write (it moved on without us). `Ok(None)` when the
/// object is gone, moved on, or stayed contended.
pub async fn update_status<K, F>(
    api: &Api<K>,
    name: &str,
    mut decide: F,
) -> Result<Option<K>, ReconcileError>
where
    K: HasStatus,
    F: FnMut(&K) -> Option<K::Status>,
{
    for _ in 0..UPDATE_ATTEMPTS {
        let Some(fresh) = api.get_opt(name).await? else {
            return Ok(None);
        };
        let Some(status) = decide(&fresh) else {
            return Ok(None);
        };
        if let Some(written) = write_status(api, &fresh, status).await? {
            return Ok(Some(written));
        }
    }
    tracing::warn!(kind = %K::kind(&()), object = %name,
        "status kept changing under the controller; the next reconcile decides again");
    Ok(None)
}

/// Merge patch of `metadata.finalizers` with the object's resourceVersion
/// as precondition. `Ok(None)` when the object changed (409) or is gone.
async fn patch_finalizers<K>(
    api: &Api<K>,
    obj: &K,
    finalizers: Vec<String>,
) -> Result<Option<K>, ReconcileError>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let patch = json!({
        "metadata": {
            "resourceVersion": obj.resource_version(),
            "finalizers": finalizers,
        }
    });
    match api
        .patch(
            &obj.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(o) => Ok(Some(o)),
        Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Whether `obj` carries `finalizer`.
pub fn has_finalizer<K: Resource>(obj: &K, finalizer: &str) -> bool {
    obj.meta()
        .finalizers
        .as_ref()
        .is_some_and(|l| l.iter().any(|f| f == finalizer))
}

/// Adds `finalizer` to `obj` as read. The object as written (itself when the
/// finalizer was there already); `None` when it changed in between.
pub async fn add_finalizer<K>(
    api: &Api<K>,
    obj: &K,
    finalizer: &str,
) -> Result<Option<K>, ReconcileError>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    if has_finalizer(obj, finalizer) {
        return Ok(Some(obj.clone()));
    }
    let mut list = obj.finalizers().to_vec();
    list.push(finalizer.to_owned());
    patch_finalizers(api, obj, list).await
}

/// Removes `finalizer` from `obj` as read. The object as written (itself
/// when the finalizer was not there); `None` when it changed in between or
/// is gone (a deleted object whose last finalizer went).
pub async fn drop_finalizer<K>(
    api: &Api<K>,
    obj: &K,
    finalizer: &str,
) -> Result<Option<K>, ReconcileError>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    if !has_finalizer(obj, finalizer) {
        return Ok(Some(obj.clone()));
    }
    let list = obj
        .finalizers()
        .iter()
        .filter(|f| *f != finalizer)
        .cloned()
        .collect();
    patch_finalizers(api, obj, list).await
}

/// Removes `finalizer` from the fresh object, re-reading on conflicts
/// (bounded); done when the object is gone or no longer carries it.
pub async fn remove_finalizer<K>(
    api: &Api<K>,
    name: &str,
    finalizer: &str,
) -> Result<(), ReconcileError>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    for _ in 0..UPDATE_ATTEMPTS {
        let Some(fresh) = api.get_opt(name).await? else {
            return Ok(());
        };
        if !has_finalizer(&fresh, finalizer) {
            return Ok(());
        }
        if drop_finalizer(api, &fresh, finalizer).await?.is_some() {
            return Ok(());
        }
    }
    Ok(())
}

// ---- device lookup and the device Lease ---------------------------------

/// Why a device-bound kind cannot reach its device.
#[derive(Debug, thiserror::Error)]
pub enum DeviceLookupError {
    /// Reading the CiscoDevice failed.
    #[error("reading CiscoDevice {device:?}: {source}")]
    Api {
        /// The device name.
        device: String,
        /// The API error.
        source: kube::Error,
    },
    /// No CiscoDevice of that name.
    #[error("CiscoDevice {device:?} does not exist in namespace {namespace:?}")]
    Missing {
        /// The device name.
        device: String,
        /// Its namespace.
        namespace: String,
    },
    /// The CiscoDevice's address, Secrets or TLS settings cannot be used.
    #[error("CiscoDevice {device:?} cannot be reached: {source}")]
    Unresolvable {
        /// The device name.
        device: String,
        /// What is wrong.
        source: TargetError,
    },
    /// The device client cannot be built from the target.
    #[error("CiscoDevice {device:?}: {source}")]
    Client {
        /// The device name.
        device: String,
        /// The client's refusal.
        source: ClientError,
    },
}

/// Reads CiscoDevice `device` in `ns`.
pub async fn read_device(
    ctx: &Context,
    ns: &str,
    device: &str,
) -> Result<CiscoDevice, DeviceLookupError> {
    let devices: Api<CiscoDevice> = Api::namespaced(ctx.client.clone(), ns);
    match devices.get_opt(device).await {
        Ok(Some(d)) => Ok(d),
        Ok(None) => Err(DeviceLookupError::Missing {
            device: device.to_owned(),
            namespace: ns.to_owned(),
        }),
        Err(source) => Err(DeviceLookupError::Api {
            device: device.to_owned(),
            source,
        }),
    }
}

/// The pooled gNOI/gNMI client of CiscoDevice `device` in `ns`.
pub async fn gnoi_client(
    ctx: &Context,
    ns: &str,
    device: &str,
) -> Result<Arc<DeviceClient>, DeviceLookupError> {
    let dev = read_device(ctx, ns, device).await?;
    let target = resolve_target(&ctx.client, ns, device, &dev.spec, &ctx.settings.gnoi)
        .await
        .map_err(|source| DeviceLookupError::Unresolvable {
            device: device.to_owned(),
            source,
        })?;
    ctx.pool
        .get_or_create(&target)
        .map_err(|source| DeviceLookupError::Client {
            device: device.to_owned(),
            source,
        })
}

/// The holder identity of the device Lease for `obj` of kind `kind`.
pub fn lease_holder<K: Resource>(kind: &str, obj: &K) -> LeaseHolder {
    let meta = obj.meta();
    LeaseHolder {
        kind: kind.to_owned(),
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
    }
}

/// The device Leases of objects in namespace `ns`.
pub fn device_locks(ctx: &Context, ns: &str) -> DeviceLocks {
    DeviceLocks::new(
        ctx.client.clone(),
        &ctx.settings.lease_namespace_for(ns),
        &ctx.settings.identity,
    )
}

// ---- the loop around a reconcile -----------------------------------------

fn object_key<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    format!(
        "{}/{}/{}",
        K::kind(&()),
        obj.meta().namespace.as_deref().unwrap_or_default(),
        obj.meta().name.as_deref().unwrap_or_default()
    )
}

/// Shortest wait before an object whose reconcile failed is tried again.
pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Longest wait between tries of an object whose reconciles keep failing.
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Wait after a conflict (the object changed under the reconcile).
pub const CONFLICT_RETRY: Duration = Duration::from_millis(200);

/// When to try again after the `failures`-th consecutive failure with
/// `err`; `None`: not until the object changes.
pub fn retry_after(err: &ReconcileError, failures: u32) -> Option<Duration> {
    match err {
        ReconcileError::MissingMetadata(_) | ReconcileError::Serialize(_) => None,
        ReconcileError::Kube(kube::Error::Api(s)) if s.is_conflict() => Some(CONFLICT_RETRY),
        ReconcileError::Kube(_) => {
            let doublings = failures.saturating_sub(1).min(16);
            Some(BACKOFF_MIN.saturating_mul(1 << doublings).min(BACKOFF_MAX))
        }
    }
}

/// The requeue after a failed reconcile (see [`retry_after`]).
pub(crate) fn error_policy<K: Resource<DynamicType = ()>>(
    obj: Arc<K>,
    err: &ReconcileError,
    ctx: Arc<Context>,
) -> KubeAction {
    let failures = ctx.failures.fail(&object_key(obj.as_ref()));
    match retry_after(err, failures) {
        Some(after) => {
            tracing::warn!(kind = %K::kind(&()), object = %obj.name_any(), error = %err,
                failures, retry_in = ?after, "reconcile failed; retrying");
            KubeAction::requeue(after)
        }
        None => {
            tracing::error!(kind = %K::kind(&()), object = %obj.name_any(), error = %err,
                "reconcile failed permanently; not retried until the object changes");
            KubeAction::await_change()
        }
    }
}

/// Wraps a kind's reconcile function: a span per reconcile, the outcome
/// counted after the work and its duration observed, and the failure count
/// of the object reset by a success.
pub(crate) fn instrument<K, F, Fut>(
    mut reconcile: F,
) -> impl FnMut(
    Arc<K>,
    Arc<Context>,
) -> futures::future::BoxFuture<'static, Result<KubeAction, ReconcileError>>
where
    K: Resource<DynamicType = ()> + Send + Sync + 'static,
    F: FnMut(Arc<K>, Arc<Context>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<KubeAction, ReconcileError>> + Send + 'static,
{
    move |obj: Arc<K>, ctx: Arc<Context>| {
        let kind = K::kind(&()).into_owned();
        let key = object_key(obj.as_ref());
        let span = tracing::info_span!(
            "reconcile",
            kind = %kind,
            namespace = obj.meta().namespace.as_deref().unwrap_or_default(),
            name = obj.meta().name.as_deref().unwrap_or_default(),
            device = tracing::field::Empty,
        );
        let work = reconcile(obj, ctx.clone());
        Box::pin(
            async move {
                let started = Instant::now();
                let result = work.await;
                let outcome = match &result {
                    Ok(_) => {
                        ctx.failures.succeed(&key);
                        "ok"
                    }
                    Err(e) => e.category(),
                };
                ctx.metrics.reconciled(&kind, outcome, started.elapsed());
                result
            }
            .instrument(span),
        )
    }
}

/// Records the device of the reconcile in progress on its span.
pub fn record_device(device: &str) {
    tracing::Span::current().record("device", device);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16, reason: &str) -> ReconcileError {
        ReconcileError::Kube(kube::Error::Api(
            kube::core::Status::failure("x", reason)
                .with_code(code)
                .boxed(),
        ))
    }

    #[test]
    fn failures_back_off_by_kind_of_error() {
        let conflict = api_error(409, "Conflict");
        let unavailable = api_error(503, "ServiceUnavailable");
        let permanent = ReconcileError::MissingMetadata("name");
        let cases: [(&ReconcileError, u32, Option<Duration>); 8] = [
            (&conflict, 1, Some(CONFLICT_RETRY)),
            (&conflict, 9, Some(CONFLICT_RETRY)),
            (&unavailable, 1, Some(Duration::from_secs(1))),
            (&unavailable, 2, Some(Duration::from_secs(2))),
            (&unavailable, 4, Some(Duration::from_secs(8))),
            (&unavailable, 7, Some(BACKOFF_MAX)),
            (&unavailable, u32::MAX, Some(BACKOFF_MAX)),
            (&permanent, 1, None),
        ];
        for (err, n, want) in cases {
            assert_eq!(retry_after(err, n), want, "{err} after {n} failures");
        }
    }
}
