//! [`ImageStream`]: the bytes of an image, in order, for one reader.
//!
//! Three ways in, fewest copies first:
//!
//! * **live** (the reader was there when the download handed out a batch):
//!   the download's own `Bytes`, shared with the hasher and the cache
//!   writer, no copy and no disk read;
//! * **partial file** (the reader joined late or fell behind): positioned
//!   reads of what the download has written so far;
//! * **verified cache file**: positioned reads straight into the buffer
//!   that is sent (one copy, from the page cache), the next chunk read
//!   while the current one is sent.
//!
//! Reads run on blocking threads with `pread`, not through `tokio::fs`,
//! which would read into a buffer of its own and copy again.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::Stream;
use futures::stream::BoxStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::sink::{LiveFeed, Progress};
use super::{STREAM_CHUNK, SourceError};

/// The bytes of an image, in order, as they arrive. Ends with `None` only
/// after the SHA-256 of all bytes equals the requested digest; on a
/// mismatch the last item is an `Err` whose `io::Error` wraps
/// [`SourceError::DigestMismatch`] (and the partial file is discarded).
/// Size over `max_image_bytes` errors with [`SourceError::TooLarge`].
pub struct ImageStream {
    inner: BoxStream<'static, Result<Bytes, std::io::Error>>,
    total: Option<u64>,
    progress: Option<watch::Receiver<Progress>>,
    from_cache: bool,
    reads: ReadCounters,
}

/// How many bytes of an [`ImageStream`] came from where. Cheap to clone;
/// stays readable after the stream is consumed.
#[derive(Debug, Clone, Default)]
pub struct ReadCounters {
    inner: Arc<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    live: AtomicU64,
    disk: AtomicU64,
}

impl ReadCounters {
    /// Bytes handed over by the download itself (no disk read).
    pub fn live(&self) -> u64 {
        self.inner.live.load(Ordering::Relaxed)
    }

    /// Bytes read from the partial or the verified file.
    pub fn from_disk(&self) -> u64 {
        self.inner.disk.load(Ordering::Relaxed)
    }

    fn add_live(&self, n: usize) {
        self.inner.live.fetch_add(n as u64, Ordering::Relaxed);
    }

    fn add_disk(&self, n: usize) {
        self.inner.disk.fetch_add(n as u64, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for ImageStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageStream")
            .field("total", &self.total_bytes())
            .field("from_cache", &self.from_cache)
            .field("reads", &self.reads)
            .finish_non_exhaustive()
    }
}

/// Reads `len` bytes at `pos` on a blocking thread, into a buffer of its
/// own that becomes the chunk: `pread` into the buffer's uninitialised
/// capacity, so the bytes are copied once and the buffer never zeroed.
fn pread(file: &Arc<std::fs::File>, pos: u64, len: usize) -> JoinHandle<std::io::Result<Bytes>> {
    let file = Arc::clone(file);
    tokio::task::spawn_blocking(move || {
        let mut buf = Vec::with_capacity(len);
        while buf.len() < len {
            let at = pos + buf.len() as u64;
            let n = match rustix::io::pread(&*file, rustix::buffer::spare_capacity(&mut buf), at) {
                Ok(n) => n,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            };
            if n == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!(
                        "the image file ends at {at} bytes, {} before the read's end",
                        len - buf.len()
                    ),
                ));
            }
        }
        Ok(Bytes::from(buf))
    })
}

async fn joined(h: JoinHandle<std::io::Result<Bytes>>) -> std::io::Result<Bytes> {
    h.await.map_err(std::io::Error::other)?
}

impl ImageStream {
    /// The size, when the source announced it (always for cached images).
    pub fn total_bytes(&self) -> Option<u64> {
        match &self.progress {
            Some(p) => p.borrow().total,
            None => self.total,
        }
    }

    /// Whether the bytes come from a verified copy in the cache.
    pub fn from_cache(&self) -> bool {
        self.from_cache
    }

    /// Where the bytes came from, so far.
    pub fn reads(&self) -> ReadCounters {
        self.reads.clone()
    }

    /// A verified file of `len` bytes; `guard` lives as long as the stream
    /// (it keeps the file from eviction).
    pub(super) fn from_file<G: Send + 'static>(file: std::fs::File, len: u64, guard: G) -> Self {
        struct Cached<G> {
            file: Arc<std::fs::File>,
            pos: u64,
            len: u64,
            ahead: Option<JoinHandle<std::io::Result<Bytes>>>,
            reads: ReadCounters,
            _guard: G,
        }
        let reads = ReadCounters::default();
        let state = Cached {
            file: Arc::new(file),
            pos: 0,
            len,
            ahead: None,
            reads: reads.clone(),
            _guard: guard,
        };
        let inner = futures::stream::try_unfold(state, |mut s| async move {
            if s.pos >= s.len {
                return Ok(None);
            }
            let want = STREAM_CHUNK.min((s.len - s.pos) as usize);
            let read = s
                .ahead
                .take()
                .unwrap_or_else(|| pread(&s.file, s.pos, want));
            let chunk = joined(read).await?;
            s.pos += chunk.len() as u64;
            s.reads.add_disk(chunk.len());
            if s.pos < s.len {
                // Read the next chunk while this one is sent.
                let next = STREAM_CHUNK.min((s.len - s.pos) as usize);
                s.ahead = Some(pread(&s.file, s.pos, next));
            }
            Ok(Some((chunk, s)))
        });
        Self {
            inner: Box::pin(inner),
            total: Some(len),
            progress: None,
            from_cache: true,
            reads,
        }
    }

    /// A download in flight: live batches from the tee while `live` holds,
    /// the partial file for what came before it and after it closed.
    pub(super) fn follow(
        file: std::fs::File,
        progress: watch::Receiver<Progress>,
        live: Option<LiveFeed>,
    ) -> Self {
        let watch = progress.clone();
        struct Follow {
            file: Arc<std::fs::File>,
            pos: u64,
            progress: watch::Receiver<Progress>,
            live: Option<LiveFeed>,
            reads: ReadCounters,
            done: bool,
        }
        let reads = ReadCounters::default();
        let state = Follow {
            file: Arc::new(file),
            pos: 0,
            progress,
            live,
            reads: reads.clone(),
            done: false,
        };
        let inner = futures::stream::unfold(state, |mut s| async move {
            if s.done {
                return None;
            }
            loop {
                if let Some(feed) = s.live.as_mut()
                    && s.pos >= feed.from
                {
                    match feed.rx.recv().await {
                        Some(chunk) => {
                            debug_assert_eq!(s.pos, feed.from);
                            feed.from += chunk.len() as u64;
                            s.pos += chunk.len() as u64;
                            s.reads.add_live(chunk.len());
                            return Some((Ok(chunk), s));
                        }
                        // The download ended or this reader fell behind:
                        // the rest comes from the file.
                        None => {
                            s.live = None;
                            continue;
                        }
                    }
                }
                let (written, outcome) = {
                    let p = s.progress.borrow_and_update();
                    (p.written, p.outcome.clone())
                };
                // While live, the file serves only what came before the feed.
                let end = s.live.as_ref().map_or(written, |f| written.min(f.from));
                if s.pos < end {
                    let want = STREAM_CHUNK.min((end - s.pos) as usize);
                    return match joined(pread(&s.file, s.pos, want)).await {
                        Ok(chunk) => {
                            s.pos += chunk.len() as u64;
                            s.reads.add_disk(chunk.len());
                            Some((Ok(chunk), s))
                        }
                        Err(e) => {
                            s.done = true;
                            Some((Err(e), s))
                        }
                    };
                }
                match outcome {
                    Some(Ok(())) => return None,
                    Some(Err(e)) => {
                        s.done = true;
                        return Some((Err(e.into_io()), s));
                    }
                    None => {
                        if s.progress.changed().await.is_err() {
                            s.done = true;
                            let e = SourceError::Io {
                                detail: "the download task ended without an outcome".into(),
                            };
                            return Some((Err(e.into_io()), s));
                        }
                    }
                }
            }
        });
        Self {
            inner: Box::pin(inner),
            total: None,
            progress: Some(watch),
            from_cache: false,
            reads,
        }
    }
}

impl Stream for ImageStream {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}
