//! The per-device mutation lock: one `coordination.k8s.io/v1` Lease per
//! CiscoDevice, shared by write-class actions and software upgrades, so that
//! two objects (or two controllers) never mutate one device at once.
//!
//! The holder is the *object* doing the mutation (`Kind/namespace/name/uid`),
//! not the controller process: a controller that restarts keeps the lock for
//! the object it was working on, and a second controller serving the same
//! device sees the device as busy. Every write is a compare-and-swap on the
//! Lease's resourceVersion. A lock whose holder object no longer exists (it
//! was force-deleted past its finalizer) is taken over; so is one that was not
//! renewed within its duration, a safety net measured in hours because an
//! IOS-XE reload plus an install can legitimately take a long time; and so is
//! one held by an IOSXEOperationalAction that is already terminal.

use std::fmt;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{DeleteParams, ObjectMeta, PostParams, Preconditions};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::{Api, Client};

/// How long an unrenewed lock protects a device (as upstream: 26 h).
pub const SAFETY_TTL_SECONDS: i32 = 26 * 3600;

/// Label on every device Lease, for `kubectl get lease -l`.
pub const LEASE_LABEL: &str = "cisco.vk/device-mutation";

/// Annotation naming the controller instance that last wrote the Lease.
pub const CONTROLLER_ANNOTATION: &str = "cisco.vk/controller";

/// The object holding (or asking for) a device lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseHolder {
    /// `IOSXESoftwareUpgrade` or `IOSXEOperationalAction`.
    pub kind: String,
    /// Namespace of the object.
    pub namespace: String,
    /// Name of the object.
    pub name: String,
    /// UID of the object (a recreated object with the same name is another
    /// holder).
    pub uid: String,
}

impl LeaseHolder {
    /// Parses `Kind/namespace/name/uid`.
    pub fn parse(s: &str) -> Option<Self> {
        let mut it = s.splitn(4, '/');
        let (kind, namespace, name, uid) = (it.next()?, it.next()?, it.next()?, it.next()?);
        if [kind, namespace, name, uid].iter().any(|p| p.is_empty()) {
            return None;
        }
        Some(Self {
            kind: kind.into(),
            namespace: namespace.into(),
            name: name.into(),
            uid: uid.into(),
        })
    }
}

impl fmt::Display for LeaseHolder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}/{}",
            self.kind, self.namespace, self.name, self.uid
        )
    }
}

/// Outcome of [`DeviceLocks::acquire`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquire {
    /// The caller holds the lock (new, renewed, or taken over).
    Held,
    /// Another object holds it; the string is its `Kind/namespace/name`.
    Busy(String),
}

/// Errors talking to the API server about Leases.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// The API server refused or failed a request.
    #[error("device lease {lease}: {source}")]
    Api {
        /// Lease name.
        lease: String,
        /// Cause.
        #[source]
        source: kube::Error,
    },
    /// Lost a compare-and-swap race too many times in a row.
    #[error("device lease {0}: too many concurrent updates, try again")]
    Contended(String),
}

impl LeaseError {
    /// Stable category for metrics and reasons.
    pub fn category(&self) -> &'static str {
        match self {
            LeaseError::Api { .. } => "lease_api_error",
            LeaseError::Contended(_) => "lease_contended",
        }
    }
}

/// Device locks of one lease namespace.
#[derive(Clone)]
pub struct DeviceLocks {
    client: Client,
    api: Api<Lease>,
    controller: String,
}

/// Name of the Lease guarding `device` in `device_namespace`. Device names are
/// DNS subdomains, so the result is a valid object name; the namespace is part
/// of it because the lease namespace may be shared by several device
/// namespaces.
pub fn lease_name(device_namespace: &str, device: &str) -> String {
    let name = format!("cvk-device-{device_namespace}-{device}");
    if name.len() <= 253 {
        return name;
    }
    // Keep names unique when truncating.
    use sha2::{Digest, Sha256};
    let digest = hex::encode(&Sha256::digest(name.as_bytes())[..8]);
    format!("{}-{digest}", &name[..253 - 17])
}

impl DeviceLocks {
    /// Locks stored in `namespace`, written by `controller`.
    pub fn new(client: Client, namespace: &str, controller: &str) -> Self {
        Self {
            api: Api::namespaced(client.clone(), namespace),
            client,
            controller: controller.to_owned(),
        }
    }

    /// Takes, renews or reports the lock of `device` for `holder`.
    pub async fn acquire(
        &self,
        device_namespace: &str,
        device: &str,
        holder: &LeaseHolder,
    ) -> Result<Acquire, LeaseError> {
        let name = lease_name(device_namespace, device);
        let me = holder.to_string();
        // A bounded number of compare-and-swap rounds: each failed round means
        // someone else wrote the Lease in between, and re-reading settles it.
        for _ in 0..5 {
            let existing = self
                .api
                .get_opt(&name)
                .await
                .map_err(|e| self.err(&name, e))?;
            let Some(mut lease) = existing else {
                match self
                    .api
                    .create(
                        &PostParams::default(),
                        &self.new_lease(&name, device_namespace, device, &me),
                    )
                    .await
                {
                    Ok(_) => return Ok(Acquire::Held),
                    Err(kube::Error::Api(s)) if s.code == 409 => continue,
                    Err(e) => return Err(self.err(&name, e)),
                }
            };
            let spec = lease.spec.get_or_insert_with(Default::default);
            let current = spec.holder_identity.clone().unwrap_or_default();
            let takeover = if current.is_empty() || current == me {
                false
            } else if self.expired(spec) || !self.holder_exists(&current).await {
                true
            } else {
                let who = LeaseHolder::parse(&current)
                    .map(|h| format!("{}/{}/{}", h.kind, h.namespace, h.name))
                    .unwrap_or(current);
                return Ok(Acquire::Busy(who));
            };
            let now = MicroTime(Timestamp::now());
            if current != me {
                spec.acquire_time = Some(now.clone());
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            }
            if takeover {
                tracing::warn!(lease = %name, previous = %current, holder = %me, "taking over a stale device lease");
            }
            spec.holder_identity = Some(me.clone());
            spec.renew_time = Some(now);
            spec.lease_duration_seconds = Some(SAFETY_TTL_SECONDS);
            lease
                .metadata
                .annotations
                .get_or_insert_with(Default::default)
                .insert(CONTROLLER_ANNOTATION.into(), self.controller.clone());
            // `replace` carries the resourceVersion we read: a conflict means
            // another writer won this round.
            match self
                .api
                .replace(&name, &PostParams::default(), &lease)
                .await
            {
                Ok(_) => return Ok(Acquire::Held),
                Err(kube::Error::Api(s)) if s.code == 409 => continue,
                Err(e) => return Err(self.err(&name, e)),
            }
        }
        Err(LeaseError::Contended(name))
    }

    /// Releases the lock if `holder` holds it; a lock held by someone else, or
    /// no lock at all, is left alone.
    pub async fn release(
        &self,
        device_namespace: &str,
        device: &str,
        holder: &LeaseHolder,
    ) -> Result<(), LeaseError> {
        let name = lease_name(device_namespace, device);
        let me = holder.to_string();
        for _ in 0..5 {
            let Some(lease) = self
                .api
                .get_opt(&name)
                .await
                .map_err(|e| self.err(&name, e))?
            else {
                return Ok(());
            };
            let held_by_me = lease
                .spec
                .as_ref()
                .and_then(|s| s.holder_identity.as_deref())
                == Some(me.as_str());
            if !held_by_me {
                return Ok(());
            }
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    resource_version: lease.metadata.resource_version.clone(),
                    uid: lease.metadata.uid.clone(),
                }),
                ..DeleteParams::default()
            };
            match self.api.delete(&name, &dp).await {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
                Err(kube::Error::Api(s)) if s.code == 409 => continue,
                Err(e) => return Err(self.err(&name, e)),
            }
        }
        Err(LeaseError::Contended(name))
    }

    /// Who holds the lock of `device`, if anyone.
    pub async fn holder(
        &self,
        device_namespace: &str,
        device: &str,
    ) -> Result<Option<LeaseHolder>, LeaseError> {
        let name = lease_name(device_namespace, device);
        let lease = self
            .api
            .get_opt(&name)
            .await
            .map_err(|e| self.err(&name, e))?;
        Ok(lease
            .and_then(|l| l.spec)
            .and_then(|s| s.holder_identity)
            .and_then(|h| LeaseHolder::parse(&h)))
    }

    fn new_lease(&self, name: &str, device_namespace: &str, device: &str, me: &str) -> Lease {
        let now = MicroTime(Timestamp::now());
        Lease {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                labels: Some(
                    [
                        (LEASE_LABEL.to_owned(), "true".to_owned()),
                        ("cisco.vk/device".to_owned(), device.to_owned()),
                        (
                            "cisco.vk/device-namespace".to_owned(),
                            device_namespace.to_owned(),
                        ),
                    ]
                    .into(),
                ),
                annotations: Some(
                    [(CONTROLLER_ANNOTATION.to_owned(), self.controller.clone())].into(),
                ),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(me.to_owned()),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                lease_duration_seconds: Some(SAFETY_TTL_SECONDS),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        }
    }

    fn expired(&self, spec: &LeaseSpec) -> bool {
        let Some(renewed) = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) else {
            return true;
        };
        let ttl = i64::from(spec.lease_duration_seconds.unwrap_or(SAFETY_TTL_SECONDS));
        Timestamp::now().as_second() > renewed.0.as_second() + ttl
    }

    /// Whether the object named by a holder string still exists with the same
    /// UID. Unknown formats and API errors count as "exists": never steal a
    /// lock on a guess.
    async fn holder_exists(&self, holder: &str) -> bool {
        let Some(h) = LeaseHolder::parse(holder) else {
            return true;
        };
        let (group, plural) = match h.kind.as_str() {
            "IOSXESoftwareUpgrade" => ("ops.cisco.vk", "iosxesoftwareupgrades"),
            "IOSXEOperationalAction" => ("ops.cisco.vk", "iosxeoperationalactions"),
            _ => return true,
        };
        let gvk = GroupVersionKind::gvk(group, "v1alpha1", &h.kind);
        let ar = ApiResource::from_gvk_with_plural(&gvk, plural);
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), &h.namespace, &ar);
        match api.get_opt(&h.name).await {
            Ok(Some(obj)) if obj.metadata.uid.as_deref() == Some(h.uid.as_str()) => {
                // A write-class action holds a device only until it is
                // terminal; one that ended without releasing (a crash
                // between its last status write and the release) no longer
                // does.
                !(h.kind == "IOSXEOperationalAction"
                    && obj.data["status"]["phase"]
                        .as_str()
                        .is_some_and(|p| matches!(p, "Succeeded" | "Failed" | "Rejected")))
            }
            Ok(Some(_)) => false,
            Ok(None) => false,
            Err(e) => {
                tracing::warn!(holder = %holder, error = %e, "cannot check the device lease holder; treating it as alive");
                true
            }
        }
    }

    fn err(&self, lease: &str, source: kube::Error) -> LeaseError {
        LeaseError::Api {
            lease: lease.to_owned(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holder_round_trip() {
        let h = LeaseHolder {
            kind: "IOSXESoftwareUpgrade".into(),
            namespace: "default".into(),
            name: "upgrade-cat9000-4".into(),
            uid: "0b7e9c1a-1111-2222-3333-444455556666".into(),
        };
        assert_eq!(LeaseHolder::parse(&h.to_string()), Some(h));
        assert_eq!(LeaseHolder::parse("a/b/c"), None);
        assert_eq!(LeaseHolder::parse("a//c/d"), None);
    }

    #[test]
    fn lease_names_are_bounded_and_distinct() {
        assert_eq!(
            lease_name("default", "cat9000-4"),
            "cvk-device-default-cat9000-4"
        );
        let long_a = "a".repeat(250);
        let mut long_b = long_a.clone();
        long_b.push('b');
        let (na, nb) = (lease_name("ns", &long_a), lease_name("ns", &long_b));
        assert!(na.len() <= 253 && nb.len() <= 253);
        assert_ne!(na, nb);
    }
}
