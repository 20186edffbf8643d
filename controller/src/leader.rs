//! Leader election for `cvk-controller run --leader-elect`: one
//! `coordination.k8s.io/v1` Lease names the replica that reconciles; the
//! others wait as standbys.
//!
//! The algorithm is client-go's (`leaderelection.LeaderElector`), written on
//! the Lease API so that every acquire, renew and release is a
//! compare-and-swap: a create, or a replace carrying the resourceVersion that
//! was read, so two candidates can never both win one term.
//!
//! * A standby takes the Lease only after it has seen the same record (holder
//!   and renew time) unchanged for `lease_duration` on its own monotonic
//!   clock, so clocks that disagree between nodes do not matter.
//! * The leader renews every `retry_period`. If no renew succeeded for
//!   `renew_deadline` (shorter than `lease_duration`), it has lost the lease:
//!   it is fenced before any standby can take over.
//! * On SIGTERM the leader stops its controllers, then releases the Lease
//!   (empty holder), so a standby takes over at its next retry instead of
//!   after a full lease duration.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Timings of the election (controller-runtime's defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timings {
    /// How long a standby waits on an unchanged record before taking over.
    pub lease_duration: Duration,
    /// How long the leader keeps leading without a successful renew.
    pub renew_deadline: Duration,
    /// How often candidates try to acquire and the leader renews.
    pub retry_period: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

impl Timings {
    /// Checks the ordering client-go requires:
    /// `lease_duration > renew_deadline > retry_period > 0`.
    pub fn validate(&self) -> Result<(), String> {
        if self.retry_period.is_zero() {
            return Err("leader election: the retry period must be above zero".into());
        }
        if self.renew_deadline <= self.retry_period {
            return Err(format!(
                "leader election: the renew deadline ({:?}) must be longer than the retry period ({:?})",
                self.renew_deadline, self.retry_period
            ));
        }
        if self.lease_duration <= self.renew_deadline {
            return Err(format!(
                "leader election: the lease duration ({:?}) must be longer than the renew deadline ({:?})",
                self.lease_duration, self.renew_deadline
            ));
        }
        Ok(())
    }
}

/// Where the election Lease lives and who this candidate is.
#[derive(Debug, Clone)]
pub struct ElectionConfig {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This replica's identity (the pod name).
    pub identity: String,
    /// The timings.
    pub timings: Timings,
}

/// What a standby saw of the Lease, and when it last changed.
#[derive(Debug, Clone, PartialEq)]
struct Observed {
    holder: Option<String>,
    renew: Option<MicroTime>,
    transitions: i32,
    changed_at: Instant,
}

/// One attempt's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// This candidate holds the Lease now.
    Leading,
    /// Another identity holds a live Lease.
    Standby {
        /// Who leads.
        leader: String,
    },
}

/// A candidate for the election Lease.
pub struct Elector {
    api: Api<Lease>,
    config: ElectionConfig,
    observed: Option<Observed>,
}

fn now() -> MicroTime {
    MicroTime(Timestamp::now())
}

impl Elector {
    /// A candidate on `client`.
    pub fn new(client: Client, config: ElectionConfig) -> Self {
        Self {
            api: Api::namespaced(client, &config.namespace),
            config,
            observed: None,
        }
    }

    fn spec(&self, acquire_time: Option<MicroTime>, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.config.identity.clone()),
            lease_duration_seconds: Some(self.config.timings.lease_duration.as_secs().max(1) as i32),
            acquire_time,
            renew_time: Some(now()),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// One try to acquire or renew. A conflict (someone else wrote in
    /// between) is an ordinary "not this time".
    pub async fn try_acquire_or_renew(&mut self) -> Result<Attempt, kube::Error> {
        let existing = match self.api.get_opt(&self.config.name).await? {
            Some(l) => l,
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.config.name.clone()),
                        namespace: Some(self.config.namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(self.spec(Some(now()), 0)),
                };
                return match self.api.create(&PostParams::default(), &lease).await {
                    Ok(_) => Ok(Attempt::Leading),
                    Err(kube::Error::Api(e)) if e.code == 409 => self.standby_after_race(),
                    Err(e) => Err(e),
                };
            }
        };
        let spec = existing.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let transitions = spec.lease_transitions.unwrap_or(0);
        let record = (holder.clone(), spec.renew_time.clone(), transitions);
        let changed = self
            .observed
            .as_ref()
            .is_none_or(|o| (o.holder.clone(), o.renew.clone(), o.transitions) != record);
        if changed {
            self.observed = Some(Observed {
                holder: record.0.clone(),
                renew: record.1.clone(),
                transitions,
                changed_at: Instant::now(),
            });
        }
        let observed_at = self
            .observed
            .as_ref()
            .map(|o| o.changed_at)
            .unwrap_or_else(Instant::now);
        let me = holder.as_deref() == Some(self.config.identity.as_str());
        if let Some(h) = &holder
            && !me
        {
            // Live until this candidate has seen the record unchanged for a
            // whole lease duration (the holder's own duration if it set one).
            let duration = spec
                .lease_duration_seconds
                .filter(|s| *s > 0)
                .map(|s| Duration::from_secs(s as u64))
                .unwrap_or(self.config.timings.lease_duration);
            if observed_at.elapsed() < duration {
                return Ok(Attempt::Standby { leader: h.clone() });
            }
        }
        let (acquire_time, transitions) = if me {
            (spec.acquire_time.clone(), transitions)
        } else {
            (Some(now()), transitions + 1)
        };
        let mut lease = existing;
        lease.spec = Some(self.spec(acquire_time, transitions));
        // `replace` sends the resourceVersion that was read: the API server
        // refuses it with 409 if anyone wrote since.
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(written) => {
                let s = written.spec.unwrap_or_default();
                self.observed = Some(Observed {
                    holder: s.holder_identity,
                    renew: s.renew_time,
                    transitions: s.lease_transitions.unwrap_or(0),
                    changed_at: Instant::now(),
                });
                Ok(Attempt::Leading)
            }
            Err(kube::Error::Api(e)) if e.code == 409 => self.standby_after_race(),
            Err(e) => Err(e),
        }
    }

    fn standby_after_race(&mut self) -> Result<Attempt, kube::Error> {
        // Someone else wrote first; look again at the next retry.
        self.observed = None;
        Ok(Attempt::Standby {
            leader: "(another candidate)".into(),
        })
    }

    /// Waits until this candidate leads, or `stop` fires (`false`).
    /// `on_standby` is told who leads after each attempt that lost.
    pub async fn acquire(
        &mut self,
        stop: &CancellationToken,
        mut on_standby: impl FnMut(&str),
    ) -> bool {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(Attempt::Leading) => return true,
                Ok(Attempt::Standby { leader }) => on_standby(&leader),
                Err(e) => tracing::warn!(error = %e, lease = %self.config.name,
                    "leader election: reading or writing the Lease failed"),
            }
            tokio::select! {
                () = stop.cancelled() => return false,
                () = tokio::time::sleep(self.config.timings.retry_period) => {}
            }
        }
    }

    /// Renews every retry period until `stop` fires (returns `true`: still
    /// the leader, now free to release) or no renew succeeded within the
    /// renew deadline (returns `false`: leadership lost, stop at once).
    /// Each attempt is bounded by the time left before the deadline, so a
    /// hung API call cannot stretch it.
    pub async fn keep_renewing(&mut self, stop: &CancellationToken) -> bool {
        let timings = self.config.timings;
        let mut last_ok = Instant::now();
        loop {
            tokio::select! {
                () = stop.cancelled() => return true,
                () = tokio::time::sleep(timings.retry_period) => {}
            }
            let deadline = last_ok + timings.renew_deadline;
            let attempt = tokio::select! {
                () = stop.cancelled() => return true,
                r = tokio::time::timeout_at(deadline, self.try_acquire_or_renew()) => r,
            };
            match attempt {
                Ok(Ok(Attempt::Leading)) => last_ok = Instant::now(),
                Ok(Ok(Attempt::Standby { leader })) => {
                    tracing::error!(%leader, "leader election: another replica holds the Lease");
                    return false;
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "leader election: renewing the Lease failed")
                }
                Err(_) => {}
            }
            if Instant::now() >= deadline {
                tracing::error!(deadline = ?timings.renew_deadline,
                    "leader election: no renew within the renew deadline; stepping down");
                return false;
            }
        }
    }

    /// Gives the Lease up (empty holder) if this candidate still holds it,
    /// with the resourceVersion precondition; a Lease someone else holds is
    /// left alone.
    pub async fn release(&mut self) -> Result<bool, kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
            return Ok(false);
        };
        let mut spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(false);
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(now());
        lease.spec = Some(spec);
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timings_follow_client_go_ordering() {
        assert!(Timings::default().validate().is_ok());
        let bad = Timings {
            renew_deadline: Duration::from_secs(15),
            ..Timings::default()
        };
        assert!(bad.validate().unwrap_err().contains("lease duration"));
        let bad = Timings {
            retry_period: Duration::from_secs(10),
            ..Timings::default()
        };
        assert!(bad.validate().unwrap_err().contains("retry period"));
        let bad = Timings {
            retry_period: Duration::ZERO,
            ..Timings::default()
        };
        assert!(bad.validate().unwrap_err().contains("above zero"));
    }
}
