//! The content-addressed image cache with single-flight downloads.
//!
//! Layout under `cache_dir` (mode 0700, files 0600):
//! `sha256/<digest>` verified images, `partial/<digest>.<n>` downloads in
//! progress (removed at start, on failure and on mismatch).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use sha2::Digest;
use tokio::sync::{Semaphore, watch};

use super::sink::{Progress, Sink, Tee};
use super::stream::ImageStream;
use super::url::{Scheme, SourceUrl};
use super::{FetchRequest, SourceError, SourceSettings, UrlCredentials};

/// Content-addressed image cache with single-flight downloads. Cheap to
/// clone (Arc inside).
#[derive(Clone)]
pub struct ImageCache {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ImageCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageCache")
            .field("cache_dir", &self.inner.settings.cache_dir)
            .finish_non_exhaustive()
    }
}

struct Inner {
    settings: SourceSettings,
    http: super::http::HttpClient,
    fetch_slots: Arc<Semaphore>,
    state: Mutex<State>,
    partial_seq: AtomicU64,
}

#[derive(Default)]
struct State {
    flights: HashMap<String, Arc<Flight>>,
    /// Open readers of verified files, by digest (never evicted while > 0).
    readers: HashMap<String, usize>,
}

struct Flight {
    partial: PathBuf,
    progress: watch::Receiver<Progress>,
    tee: Tee,
}

impl ImageCache {
    /// Creates the cache directories (mode 0700) and removes partial files
    /// left by an earlier process.
    pub fn new(settings: SourceSettings) -> Result<Self, SourceError> {
        let dir = &settings.cache_dir;
        for sub in [dir.clone(), dir.join("sha256"), dir.join("partial")] {
            std::fs::create_dir_all(&sub).map_err(|e| SourceError::io(sub.display(), e))?;
            set_mode(&sub, 0o700)?;
        }
        if let Ok(entries) = std::fs::read_dir(dir.join("partial")) {
            for e in entries.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        let http = super::http::HttpClient::new(&settings)?;
        Ok(Self {
            inner: Arc::new(Inner {
                fetch_slots: Arc::new(Semaphore::new(settings.max_concurrent_fetches.max(1))),
                http,
                settings,
                state: Mutex::new(State::default()),
                partial_seq: AtomicU64::new(0),
            }),
        })
    }

    /// The settings in force.
    pub fn settings(&self) -> &SourceSettings {
        &self.inner.settings
    }

    /// Path of the verified copy of `sha256` (whether or not it exists).
    pub fn path_of(&self, sha256: &str) -> PathBuf {
        self.inner.settings.cache_dir.join("sha256").join(sha256)
    }

    /// Whether a verified copy is cached.
    pub fn contains(&self, sha256: &str) -> bool {
        super::check_sha256(sha256).is_ok() && self.path_of(sha256).is_file()
    }

    /// Whether a download of `sha256` is running.
    pub fn in_flight(&self, sha256: &str) -> bool {
        self.inner
            .state
            .lock()
            .unwrap()
            .flights
            .contains_key(sha256)
    }

    /// Opens the image for streaming. If `sha256` is complete in the cache,
    /// streams it from disk. If a download of the same digest is in flight,
    /// follows it. Otherwise starts the download (in a background task that
    /// outlives this stream, so other followers and a retry can use it) and
    /// follows it. Never holds the image in memory.
    pub async fn open(&self, req: &FetchRequest) -> Result<ImageStream, SourceError> {
        super::check_sha256(&req.sha256)?;
        let url = SourceUrl::parse(&req.url)?;
        if let Some(c) = &req.credentials {
            c.check_allowed(&url)?;
        }
        let digest = req.sha256.clone();
        let (flight, file, feed) = {
            let mut st = self.inner.state.lock().unwrap();
            let flight = if let Some(f) = st.flights.get(&digest) {
                Arc::clone(f)
            } else {
                let path = self.path_of(&digest);
                if let Ok(file) = std::fs::File::open(&path) {
                    let len = file
                        .metadata()
                        .map_err(|e| SourceError::io(path.display(), e))?
                        .len();
                    if len > self.inner.settings.max_image_bytes {
                        return Err(SourceError::TooLarge {
                            size: len,
                            limit: self.inner.settings.max_image_bytes,
                        });
                    }
                    *st.readers.entry(digest.clone()).or_default() += 1;
                    drop(st);
                    // Mark as recently used for eviction.
                    let _ = file.set_modified(SystemTime::now());
                    let guard = ReaderGuard {
                        cache: Arc::clone(&self.inner),
                        digest,
                    };
                    return Ok(ImageStream::from_file(file, len, guard));
                }
                let flight = self.start_flight(&digest, url, req.credentials.clone())?;
                st.flights.insert(digest.clone(), Arc::clone(&flight));
                flight
            };
            // Opened under the lock: the download removes its partial file
            // only after leaving the map under the same lock.
            let file = std::fs::File::open(&flight.partial)
                .map_err(|e| SourceError::io(flight.partial.display(), e))?;
            // Subscribed under the lock too: the reader that starts a
            // download gets every batch live (while it keeps up); one that
            // joins later reads up to the live point from the partial file.
            let feed = flight.tee.subscribe();
            (flight, file, feed)
        };
        // Wait until the source answered, so that refusals (not found, auth,
        // too large) come back from `open` and the size is known when the
        // source announces one.
        let mut progress = flight.progress.clone();
        let answered = progress
            .wait_for(|p| p.total.is_some() || p.written > 0 || p.outcome.is_some())
            .await
            .map(|p| p.clone());
        // Judged on the value when this reader looked, which may be later
        // than the moment the predicate first held: a download that broke
        // after the source announced its size is not a refusal, and its
        // stream reports the break (whether this reader was quick or slow).
        match answered {
            Ok(Progress {
                written: 0,
                total: None,
                outcome: Some(Err(e)),
            }) => Err(e),
            Ok(_) => Ok(ImageStream::follow(file, flight.progress.clone(), feed)),
            Err(_) => Err(SourceError::Io {
                detail: "the download task ended without an outcome".into(),
            }),
        }
    }

    /// Creates the partial file and spawns the download. Called with the
    /// state lock held, so it does no async work.
    fn start_flight(
        &self,
        digest: &str,
        url: SourceUrl,
        credentials: Option<UrlCredentials>,
    ) -> Result<Arc<Flight>, SourceError> {
        let n = self.inner.partial_seq.fetch_add(1, Ordering::Relaxed);
        let partial = self
            .inner
            .settings
            .cache_dir
            .join("partial")
            .join(format!("{digest}.{}.{n}", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(&partial)
            .map_err(|e| SourceError::io(partial.display(), e))?;
        set_mode(&partial, 0o600)?;
        let (tx, rx) = watch::channel(Progress::default());
        let flight = Arc::new(Flight {
            partial: partial.clone(),
            progress: rx,
            tee: Tee::default(),
        });
        let inner = Arc::clone(&self.inner);
        let digest = digest.to_owned();
        let ours = Arc::clone(&flight);
        tokio::spawn(async move {
            // The live feed ends with the download, whichever way it ends.
            let _close = CloseTee(&ours.tee);
            let outcome = download(
                &inner,
                &digest,
                &url,
                credentials.as_ref(),
                file,
                &ours,
                &tx,
            )
            .await;
            ours.tee.close();
            match &outcome {
                Ok(size) => {
                    tracing::info!(url = %url.url, digest = %digest, bytes = size, "image downloaded and verified")
                }
                Err(e) => {
                    tracing::warn!(url = %url.url, digest = %digest, reason = %e.reason(), error = %e, "image download failed")
                }
            }
            let final_path = inner.settings.cache_dir.join("sha256").join(&digest);
            {
                let mut st = inner.state.lock().unwrap();
                st.flights.remove(&digest);
                if outcome.is_ok() {
                    // Renamed under the lock: a concurrent open sees either
                    // the flight or the verified file.
                    if let Err(e) = std::fs::rename(&partial, &final_path) {
                        let _ = std::fs::remove_file(&partial);
                        drop(st);
                        tx.send_modify(|p| {
                            p.outcome = Some(Err(SourceError::io(final_path.display(), e)))
                        });
                        return;
                    }
                } else {
                    let _ = std::fs::remove_file(&partial);
                }
            }
            let ok = outcome.is_ok();
            tx.send_modify(|p| p.outcome = Some(outcome.map(|_| ())));
            if ok {
                evict(&inner, &digest);
            }
        });
        Ok(flight)
    }
}

/// Closes a download's live feed when dropped.
struct CloseTee<'a>(&'a Tee);

impl Drop for CloseTee<'_> {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Runs one download into `file`; returns its size once the digest matched.
async fn download(
    inner: &Arc<Inner>,
    digest: &str,
    url: &SourceUrl,
    credentials: Option<&UrlCredentials>,
    file: std::fs::File,
    flight: &Flight,
    tx: &watch::Sender<Progress>,
) -> Result<u64, SourceError> {
    let partial = flight.partial.as_path();
    let _slot = Arc::clone(&inner.fetch_slots)
        .acquire_owned()
        .await
        .map_err(|_| SourceError::io("fetch slots", "closed"))?;
    let mut sink = Sink::new(
        file,
        partial.to_owned(),
        inner.settings.max_image_bytes,
        tx,
        &flight.tee,
    );
    let settings = &inner.settings;
    let fetch = async {
        match url.scheme {
            Scheme::Http | Scheme::Https => inner.http.fetch(url, settings, &mut sink).await,
            Scheme::Tftp => super::tftp::fetch(url, settings, &mut sink).await,
            Scheme::Ftp => super::ftp::fetch(url, credentials, settings, &mut sink).await,
            Scheme::Scp | Scheme::Sftp => {
                super::ssh::fetch(url, credentials, settings, &mut sink).await
            }
        }
    };
    match tokio::time::timeout(settings.fetch_timeout, fetch).await {
        Ok(r) => r?,
        Err(_) => {
            return Err(SourceError::Unreachable {
                url: url.url.clone(),
                detail: format!(
                    "download did not finish within {} s",
                    settings.fetch_timeout.as_secs()
                ),
            });
        }
    }
    let (hasher, file) = sink.finish().await?;
    let actual = hex::encode(hasher.finalize());
    if actual != digest {
        return Err(SourceError::DigestMismatch {
            expected: digest.to_owned(),
            actual,
        });
    }
    let path = partial.to_owned();
    tokio::task::spawn_blocking(move || file.sync_all())
        .await
        .map_err(|e| SourceError::io(path.display(), e))?
        .map_err(|e| SourceError::io(path.display(), e))?;
    Ok(sink.written())
}

/// Keeps a verified file from eviction while it is read.
struct ReaderGuard {
    cache: Arc<Inner>,
    digest: String,
}

impl Drop for ReaderGuard {
    fn drop(&mut self) {
        let mut st = self.cache.state.lock().unwrap();
        if let Some(n) = st.readers.get_mut(&self.digest) {
            *n -= 1;
            if *n == 0 {
                st.readers.remove(&self.digest);
            }
        }
    }
}

/// Removes verified images, least recently used first, until the cache is
/// within `max_cache_bytes`; never the one just added, one being read or
/// one being downloaded.
fn evict(inner: &Inner, keep: &str) {
    let dir = inner.settings.cache_dir.join("sha256");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    let mut files: Vec<(SystemTime, u64, String, PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let md = e.metadata().ok()?;
            md.is_file().then(|| {
                (
                    md.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    md.len(),
                    e.file_name().to_string_lossy().into_owned(),
                    e.path(),
                )
            })
        })
        .collect();
    let mut total: u64 = files.iter().map(|f| f.1).sum();
    if total <= inner.settings.max_cache_bytes {
        return;
    }
    files.sort();
    let st = inner.state.lock().unwrap();
    for (_, len, name, path) in files {
        if total <= inner.settings.max_cache_bytes {
            break;
        }
        if name == keep || st.readers.contains_key(&name) || st.flights.contains_key(&name) {
            continue;
        }
        if std::fs::remove_file(&path).is_ok() {
            tracing::info!(digest = %name, bytes = len, "evicted image from cache");
            total -= len;
        }
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<(), SourceError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| SourceError::io(path.display(), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn put(cache: &ImageCache, name: &str, len: usize, age_s: u64) {
        let p = cache.path_of(name);
        std::fs::write(&p, vec![1u8; len]).unwrap();
        let f = std::fs::File::options().write(true).open(&p).unwrap();
        f.set_modified(SystemTime::now() - std::time::Duration::from_secs(age_s))
            .unwrap();
    }

    #[tokio::test]
    async fn eviction_removes_least_recently_used_unread_entries() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SourceSettings::new(dir.path());
        s.max_cache_bytes = 250;
        let cache = ImageCache::new(s).unwrap();
        let (a, b, c, d) = (
            "a".repeat(64),
            "b".repeat(64),
            "c".repeat(64),
            "d".repeat(64),
        );
        put(&cache, &a, 100, 400);
        put(&cache, &b, 100, 300);
        put(&cache, &c, 100, 200);
        put(&cache, &d, 100, 0);
        // `a` is being read: kept although oldest.
        let stream = cache
            .open(&FetchRequest {
                url: "http://127.0.0.1:9/unused".into(),
                sha256: a.clone(),
                credentials: None,
            })
            .await
            .unwrap();
        assert!(stream.from_cache());
        evict(&cache.inner, &d);
        assert!(cache.contains(&a), "in use");
        assert!(
            !cache.contains(&b) && !cache.contains(&c),
            "oldest unused evicted"
        );
        assert!(cache.contains(&d), "the new entry stays");
        let chunks: Vec<_> = stream.collect().await;
        assert_eq!(
            chunks
                .iter()
                .map(|c| c.as_ref().unwrap().len())
                .sum::<usize>(),
            100
        );
        assert!(cache.inner.state.lock().unwrap().readers.is_empty());
    }

    #[tokio::test]
    async fn new_cache_dirs_are_private_and_partials_are_cleared() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("cache");
        std::fs::create_dir_all(root.join("partial")).unwrap();
        std::fs::write(root.join("partial").join("leftover"), b"x").unwrap();
        let _cache = ImageCache::new(SourceSettings::new(&root)).unwrap();
        assert_eq!(
            std::fs::metadata(&root).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert_eq!(std::fs::read_dir(root.join("partial")).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn open_checks_the_request_before_any_io() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ImageCache::new(SourceSettings::new(dir.path())).unwrap();
        let req = |url: &str, sha: &str| FetchRequest {
            url: url.into(),
            sha256: sha.into(),
            credentials: None,
        };
        let e = cache.open(&req("http://h/a", "xyz")).await.unwrap_err();
        assert!(e.to_string().contains("64 lowercase hex"), "{e}");
        let e = cache
            .open(&req("gopher://h/a", &"a".repeat(64)))
            .await
            .unwrap_err();
        assert_eq!(e.reason(), "SourceUnsupportedScheme");
    }
}
