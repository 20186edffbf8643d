//! Upgrade state that outlives one reconcile (running transfer tasks, the
//! image cache, the transfer semaphore, the time of the last progress
//! write), kept in the shared [`super::Context`] and used by
//! [`super::upgrade`]. It knows neither the Context nor the reconciler.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::source::{ImageCache, SourceError, SourceSettings};
use crate::upgrade::step::{TransferObs, TransferState};

/// Least time between two status writes that only move transfer progress.
pub const PROGRESS_WRITE_INTERVAL: Duration = Duration::from_secs(3);

/// Settings of the upgrade reconciler (from `cvk-controller run` flags).
#[derive(Debug, Clone)]
pub struct UpgradeSettings {
    /// `CVK_INSTALL_CHUNK_BYTES`: OS.Install content message size.
    pub chunk_bytes: usize,
    /// `CVK_MAX_CONCURRENT_TRANSFERS`: transfers running at once.
    pub max_concurrent_transfers: usize,
    /// `CISCO_VK_UPGRADE_MAX_IMAGE_BYTES`: largest accepted image.
    pub max_image_bytes: u64,
    /// `CVK_IMAGE_CACHE_DIR`: the content-addressed image cache.
    pub image_cache_dir: std::path::PathBuf,
    /// `CISCO_VK_UPGRADE_ALLOW_INSECURE_SSH`.
    pub allow_insecure_ssh: bool,
}

impl Default for UpgradeSettings {
    fn default() -> Self {
        Self {
            chunk_bytes: crate::client::os::DEFAULT_CHUNK_BYTES,
            max_concurrent_transfers: 4,
            max_image_bytes: crate::config::DEFAULT_MAX_IMAGE_BYTES,
            image_cache_dir: std::env::temp_dir().join("cvk-upgrade-cache"),
            allow_insecure_ssh: false,
        }
    }
}

/// One running transfer attempt.
pub(crate) struct TransferTask {
    pub(crate) attempt: i32,
    pub(crate) state: Arc<Mutex<TransferState>>,
    pub(crate) cancel: CancellationToken,
}

/// Upgrade state that outlives one reconcile: running transfers and the
/// time of the last progress write, per object UID.
pub struct Runtime {
    pub(crate) settings: UpgradeSettings,
    pub(crate) cache: Result<ImageCache, SourceError>,
    pub(crate) permits: Arc<Semaphore>,
    pub(crate) transfers: Mutex<HashMap<String, TransferTask>>,
    progress_written: Mutex<HashMap<String, Instant>>,
}

impl Runtime {
    /// A runtime for `settings`.
    pub fn new(settings: UpgradeSettings) -> Self {
        let mut source = SourceSettings::new(settings.image_cache_dir.clone());
        source.max_image_bytes = settings.max_image_bytes;
        source.allow_insecure_ssh = settings.allow_insecure_ssh;
        source.max_concurrent_fetches = settings.max_concurrent_transfers.max(1);
        Self {
            cache: ImageCache::new(source),
            permits: Arc::new(Semaphore::new(settings.max_concurrent_transfers.max(1))),
            settings,
            transfers: Mutex::new(HashMap::new()),
            progress_written: Mutex::new(HashMap::new()),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &UpgradeSettings {
        &self.settings
    }

    pub(crate) fn observe(&self, uid: &str) -> Option<TransferObs> {
        let t = self.transfers.lock().unwrap_or_else(|p| p.into_inner());
        t.get(uid).map(|task| TransferObs {
            attempt: task.attempt,
            state: task.state.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        })
    }

    pub(crate) fn cancel(&self, uid: &str) {
        if let Some(task) = self
            .transfers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(uid)
        {
            task.cancel.cancel();
        }
        self.progress_written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(uid);
    }

    /// Cancels every transfer (the controllers are stopping).
    pub(crate) fn cancel_all(&self) {
        let tasks: Vec<TransferTask> = self
            .transfers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .map(|(_, t)| t)
            .collect();
        for t in tasks {
            t.cancel.cancel();
        }
        self.progress_written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    pub(crate) fn progress_due(&self, uid: &str) -> bool {
        self.progress_written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(uid)
            .is_none_or(|t| t.elapsed() >= PROGRESS_WRITE_INTERVAL)
    }

    pub(crate) fn progress_written(&self, uid: &str) {
        self.progress_written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(uid.to_owned(), Instant::now());
    }
}
