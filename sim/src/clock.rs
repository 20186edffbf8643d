//! The host wall clock. The journal stamps entries with it and the device
//! model builds its own clock (host clock plus skew) on it.

use std::time::{SystemTime, UNIX_EPOCH};

/// Host wall clock, ns since the Unix epoch.
pub fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}
