//! Which gNOI services each device supports, learned from its answers.
//!
//! gNMI Capabilities does not list gNOI services, so support is observed:
//! an UNIMPLEMENTED answer marks the service unsupported, any other answer
//! from the service (success or an application error) marks it supported.
//! Within the TTL an unsupported entry makes calls fail fast with
//! `ServiceUnsupported` without touching the network; after it the next call
//! probes the device again. The cache lives in memory only, so a restart
//! forgets it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use super::GnoiService;

/// What is known about one service on one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Support {
    /// The device answered a call of this service.
    Supported,
    /// The device answered UNIMPLEMENTED.
    Unsupported,
    /// Never called, or the last entry expired.
    Unknown,
}

/// One service's entry in a [`CapabilitySnapshot`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSupport {
    /// The service.
    pub service: GnoiService,
    /// Current knowledge.
    pub support: Support,
    /// When it was observed (wall clock), `None` for `Unknown`.
    pub observed_at: Option<SystemTime>,
}

/// All six services of one device, in [`GnoiService::ALL`] order.
pub type CapabilitySnapshot = Vec<ServiceSupport>;

#[derive(Debug, Clone, Copy)]
struct Entry {
    support: Support,
    at: Instant,
    wall: SystemTime,
}

/// Outcome of [`CapabilityCache::check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Check {
    /// Call the device.
    Proceed,
    /// An unexpired UNIMPLEMENTED answer: fail fast with this detail.
    Unsupported(String),
    /// The unsupported entry expired just now; call the device.
    Expired,
}

/// The shared cache, keyed by (device key, service).
#[derive(Debug)]
pub struct CapabilityCache {
    ttl: Duration,
    entries: Mutex<HashMap<(String, GnoiService), (Entry, String)>>,
}

impl CapabilityCache {
    /// A cache whose unsupported entries live for `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The TTL of unsupported entries.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, GnoiService), (Entry, String)>> {
        // A panic while holding this lock cannot leave the map half-written
        // (every write is a single insert/remove), so poisoning is ignored.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn check(&self, device: &str, service: GnoiService) -> Check {
        let mut map = self.lock();
        let key = (device.to_owned(), service);
        match map.get(&key) {
            Some((e, detail)) if e.support == Support::Unsupported => {
                if e.at.elapsed() < self.ttl {
                    Check::Unsupported(detail.clone())
                } else {
                    map.remove(&key);
                    Check::Expired
                }
            }
            _ => Check::Proceed,
        }
    }

    /// Records an answer from `service`; returns the previous knowledge.
    pub(crate) fn record(
        &self,
        device: &str,
        service: GnoiService,
        support: Support,
        detail: &str,
    ) -> Support {
        let entry = Entry {
            support,
            at: Instant::now(),
            wall: SystemTime::now(),
        };
        self.lock()
            .insert((device.to_owned(), service), (entry, detail.to_owned()))
            .map(|(e, _)| e.support)
            .unwrap_or(Support::Unknown)
    }

    /// Knowledge about every service of `device`; expired unsupported
    /// entries read as `Unknown`.
    pub fn snapshot(&self, device: &str) -> CapabilitySnapshot {
        let map = self.lock();
        GnoiService::ALL
            .iter()
            .map(|&service| match map.get(&(device.to_owned(), service)) {
                Some((e, _)) if e.support == Support::Unsupported && e.at.elapsed() >= self.ttl => {
                    ServiceSupport {
                        service,
                        support: Support::Unknown,
                        observed_at: None,
                    }
                }
                Some((e, _)) => ServiceSupport {
                    service,
                    support: e.support,
                    observed_at: Some(e.wall),
                },
                None => ServiceSupport {
                    service,
                    support: Support::Unknown,
                    observed_at: None,
                },
            })
            .collect()
    }

    /// Forgets everything about `device` (its connection parameters
    /// changed, so it may be another box).
    pub fn forget_device(&self, device: &str) {
        self.lock().retain(|(d, _), _| d != device);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsupported_expires_supported_does_not() {
        let c = CapabilityCache::new(Duration::from_millis(50));
        assert_eq!(c.check("d", GnoiService::System), Check::Proceed);
        assert_eq!(
            c.record("d", GnoiService::System, Support::Unsupported, "no"),
            Support::Unknown
        );
        c.record("d", GnoiService::Os, Support::Supported, "");
        assert_eq!(
            c.check("d", GnoiService::System),
            Check::Unsupported("no".into())
        );
        assert_eq!(c.check("other", GnoiService::System), Check::Proceed);
        let snap = c.snapshot("d");
        assert_eq!(snap.len(), GnoiService::ALL.len());
        let sys = snap
            .iter()
            .find(|s| s.service == GnoiService::System)
            .unwrap();
        assert_eq!(sys.support, Support::Unsupported);
        assert!(sys.observed_at.is_some());
        std::thread::sleep(Duration::from_millis(60));
        let sys = c
            .snapshot("d")
            .into_iter()
            .find(|s| s.service == GnoiService::System)
            .unwrap();
        assert_eq!(sys.support, Support::Unknown);
        assert_eq!(c.check("d", GnoiService::System), Check::Expired);
        assert_eq!(c.check("d", GnoiService::System), Check::Proceed);
        assert_eq!(c.check("d", GnoiService::Os), Check::Proceed);
        let os = c
            .snapshot("d")
            .into_iter()
            .find(|s| s.service == GnoiService::Os)
            .unwrap();
        assert_eq!(os.support, Support::Supported);
        c.forget_device("d");
        assert!(
            c.snapshot("d")
                .iter()
                .all(|s| s.support == Support::Unknown)
        );
    }
}
