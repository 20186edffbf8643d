//! Pause points: a test hook for crash-consistency tests.
//!
//! The at-most-once promises of the write-class actions and the software
//! upgrade ("a Running action is never dispatched twice", "the activation
//! marker is observed, never replayed") are only worth something if they
//! survive a controller killed at the worst moment. Tests prove them by
//! stopping the controller *exactly* at a named point and sending it SIGKILL
//! there.
//!
//! `CVK_PAUSE_AT` holds a comma-separated list of point names (for example
//! `action-after-marker,upgrade-after-activation-marker`). When a reconciler
//! reaches a listed point, [`point`] logs `pause point reached: <name>` at
//! WARN, appends `<name>\n` to the file named by `CVK_PAUSE_FILE` (if set),
//! and then never returns: the reconcile task waits forever, holding its
//! place, until the process is killed. Points not listed cost one lookup in
//! a set that is read once per process.
//!
//! Unset (the production default) nothing ever pauses.

use std::collections::HashSet;
use std::io::Write;
use std::sync::OnceLock;

/// Environment variable listing the points to pause at.
pub const PAUSE_AT_ENV: &str = "CVK_PAUSE_AT";

/// Environment variable naming a file that records the points reached.
pub const PAUSE_FILE_ENV: &str = "CVK_PAUSE_FILE";

fn configured() -> &'static HashSet<String> {
    static POINTS: OnceLock<HashSet<String>> = OnceLock::new();
    POINTS.get_or_init(|| parse(std::env::var(PAUSE_AT_ENV).ok().as_deref()))
}

fn parse(value: Option<&str>) -> HashSet<String> {
    value
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Whether `name` is configured to pause.
pub fn is_armed(name: &str) -> bool {
    configured().contains(name)
}

/// Pauses forever at `name` if it is listed in `CVK_PAUSE_AT`; returns at
/// once otherwise.
pub async fn point(name: &str) {
    if !is_armed(name) {
        return;
    }
    tracing::warn!(point = name, "pause point reached: {name}");
    if let Ok(path) = std::env::var(PAUSE_FILE_ENV) {
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| writeln!(f, "{name}").and_then(|()| f.sync_all()));
        if let Err(err) = written {
            tracing::error!(point = name, file = %path, error = %err, "could not record the pause point");
        }
    }
    std::future::pending::<()>().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_comma_separated_list() {
        let set = parse(Some(" a-b , c,,"));
        assert_eq!(set.len(), 2);
        assert!(set.contains("a-b") && set.contains("c"));
        assert!(parse(None).is_empty());
        assert!(parse(Some("")).is_empty());
    }

    #[tokio::test]
    async fn an_unlisted_point_returns() {
        // CVK_PAUSE_AT is not set in unit tests.
        tokio::time::timeout(std::time::Duration::from_secs(1), point("not-armed"))
            .await
            .expect("an unlisted point must not pause");
    }
}
