//! Certificates (trustpoints) for the gnoi.certificate service: list, add
//! or replace, revoke.

use serde::{Deserialize, Serialize};

use super::Device;
use crate::clock::wall_ns;

/// A certificate (trustpoint).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CertEntry {
    /// Trustpoint name.
    pub id: String,
    /// PEM text.
    pub pem: String,
    /// Last change, ns since the epoch.
    pub modified_ns: u64,
}

impl Device {
    // ---- certificates -------------------------------------------------------

    /// Certificates (trustpoints).
    pub fn certificates(&self) -> Vec<CertEntry> {
        self.lock().certs.values().cloned().collect()
    }

    /// Adds or replaces a certificate.
    pub fn put_certificate(&self, id: &str, pem: String) {
        let mut st = self.lock();
        st.certs.insert(
            id.into(),
            CertEntry {
                id: id.into(),
                pem,
                modified_ns: wall_ns(),
            },
        );
        drop(st);
        self.touch();
    }

    /// Removes certificates; returns (revoked, not found).
    pub fn revoke_certificates(&self, ids: &[String]) -> (Vec<String>, Vec<String>) {
        let mut st = self.lock();
        let (ok, missing) = ids
            .iter()
            .cloned()
            .partition(|id| st.certs.remove(id).is_some());
        drop(st);
        self.touch();
        (ok, missing)
    }
}
