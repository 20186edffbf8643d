//! Where a scheme client puts the bytes of a download: the size cap, the
//! one SHA-256 pass, the partial file, and the tee that hands the same bytes
//! to the readers that follow the download live.
//!
//! ```text
//!  scheme client --write--> Sink: 1 MiB batches (one copy out of the socket buffers)
//!      batch --+--> blocking thread: SHA-256 + write to the partial file --> Progress.written
//!              +--> Tee: the same `Bytes` (no copy) to every live reader
//! ```
//!
//! Each batch is gathered in a page-aligned buffer, so the partial file is
//! written with `O_DIRECT` from the batch itself: the disk takes the bytes
//! without a copy into the page cache (which cost the controller as much
//! CPU as hashing them). Readers of the partial and the verified file read
//! through the page cache as before; the kernel keeps the two coherent.
//! Where the filesystem refuses `O_DIRECT` (tmpfs before Linux 6.6, some
//! network filesystems), and for the last, partial block, the bytes go
//! through the ordinary descriptor at the same offsets.
//!
//! A live reader holds at most [`LIVE_DEPTH`] batches. One that falls
//! further behind (a slow or stalled device) is dropped from the tee and
//! continues from the partial file at its own pace, so a slow switch never
//! slows the download for the others.

use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::Mutex;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch};

use super::{STREAM_CHUNK, SourceError};

/// Bytes the download gathers before hashing and writing them and handing
/// them to live readers: one OS.Install chunk, so that the installer sends
/// each batch as one message without cutting or gathering.
pub(super) const WRITE_BATCH: usize = STREAM_CHUNK;

/// Batches a live reader may hold before the tee drops it to the file.
pub(super) const LIVE_DEPTH: usize = 4;

/// Alignment of a batch's memory, file offset and length for a direct
/// write: the largest logical block size of common disks.
const ALIGN: usize = 4096;

const _: () = assert!(WRITE_BATCH.is_multiple_of(ALIGN));

/// A batch being gathered: its bytes start at an [`ALIGN`]ed address.
struct AlignedBatch {
    vec: Vec<u8>,
    start: usize,
}

impl AlignedBatch {
    fn new() -> Self {
        let mut vec: Vec<u8> = Vec::with_capacity(WRITE_BATCH + ALIGN);
        let start = vec.as_ptr().align_offset(ALIGN).min(ALIGN);
        vec.resize(start, 0);
        Self { vec, start }
    }

    fn len(&self) -> usize {
        self.vec.len() - self.start
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn extend(&mut self, data: &[u8]) {
        self.vec.extend_from_slice(data);
    }

    /// The gathered bytes, as a shared `Bytes` (no copy).
    fn freeze(self) -> Bytes {
        let start = self.start;
        Bytes::from_owner(self.vec).slice(start..)
    }
}

/// The partial file's descriptors: the ordinary one, and a direct one
/// while the filesystem takes direct writes.
struct PartialFile {
    file: std::fs::File,
    direct: Option<std::fs::File>,
}

impl PartialFile {
    fn open(file: std::fs::File, path: &std::path::Path) -> Self {
        let direct = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32)
            .open(path)
            .ok();
        Self { file, direct }
    }

    /// Writes `batch` at `offset`: direct when the batch, its address and
    /// the offset are block-aligned and the filesystem takes it.
    fn write_at(&mut self, batch: &[u8], offset: u64) -> std::io::Result<()> {
        let aligned = batch.len().is_multiple_of(ALIGN)
            && (batch.as_ptr() as usize).is_multiple_of(ALIGN)
            && offset.is_multiple_of(ALIGN as u64);
        if aligned && let Some(d) = &self.direct {
            match d.write_all_at(batch, offset) {
                Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => {
                    tracing::debug!(
                        "image cache: O_DIRECT write refused ({e}); writing through the page cache"
                    );
                    self.direct = None;
                }
                r => return r,
            }
        }
        self.file.write_all_at(batch, offset)
    }
}

/// Progress of one download, published to its readers.
#[derive(Debug, Clone, Default)]
pub(super) struct Progress {
    /// Bytes written to the partial file (readable from it).
    pub(super) written: u64,
    /// Size announced by the source.
    pub(super) total: Option<u64>,
    /// Set once: Ok when verified and renamed into place.
    pub(super) outcome: Option<Result<(), SourceError>>,
}

/// The live side of one download: the readers that receive each batch as it
/// leaves the network, before it is on disk.
#[derive(Debug, Default)]
pub(super) struct Tee {
    state: Mutex<TeeState>,
}

#[derive(Debug, Default)]
struct TeeState {
    /// Offset of the next batch the download hands out.
    next: u64,
    subscribers: Vec<mpsc::Sender<Bytes>>,
    /// The download ended: no more live bytes, new readers read the file.
    closed: bool,
}

/// A live reader's end of the tee: batches from offset `from` on, in order.
/// The channel closes when the download ends or when the reader fell
/// [`LIVE_DEPTH`] batches behind; the reader then goes on from the file.
#[derive(Debug)]
pub(super) struct LiveFeed {
    pub(super) rx: mpsc::Receiver<Bytes>,
    pub(super) from: u64,
}

impl Tee {
    /// A new live reader, or `None` once the download ended.
    pub(super) fn subscribe(&self) -> Option<LiveFeed> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.closed {
            return None;
        }
        let (tx, rx) = mpsc::channel(LIVE_DEPTH);
        st.subscribers.push(tx);
        Some(LiveFeed { rx, from: st.next })
    }

    /// Hands `batch` to every live reader that has room; drops the others.
    fn publish(&self, batch: &Bytes) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.subscribers.retain(|s| match s.try_send(batch.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::debug!(
                    "an image reader fell behind the download; it goes on from the file"
                );
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
        st.next += batch.len() as u64;
    }

    /// Ends the live feed: readers drain what they hold, then read the file.
    pub(super) fn close(&self) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.closed = true;
        st.subscribers.clear();
    }
}

/// Where a scheme client puts the bytes: size cap, SHA-256, the partial
/// file, progress and the live tee for readers.
///
/// Hashing and writing run on a blocking thread, one batch of
/// [`WRITE_BATCH`] bytes at a time, while the client receives the next
/// batch: a two-stage pipeline, so the digest costs no extra time on the
/// network path when two cores are free. Live readers get each batch when
/// it is handed to that thread.
pub(crate) struct Sink<'a> {
    file: Option<PartialFile>,
    hasher: Option<Sha256>,
    pending: Option<tokio::task::JoinHandle<Batch>>,
    path: PathBuf,
    buf: AlignedBatch,
    /// Bytes received (the size-cap count).
    received: u64,
    /// Bytes handed to the blocking thread and the tee.
    submitted: u64,
    limit: u64,
    tx: &'a watch::Sender<Progress>,
    tee: &'a Tee,
}

/// A batch handed back by the blocking thread: the hasher and file, the
/// offset the file now ends at, and the write result.
type Batch = (Sha256, PartialFile, u64, std::io::Result<()>);

impl<'a> Sink<'a> {
    pub(super) fn new(
        file: std::fs::File,
        path: PathBuf,
        limit: u64,
        tx: &'a watch::Sender<Progress>,
        tee: &'a Tee,
    ) -> Self {
        Self {
            file: Some(PartialFile::open(file, &path)),
            hasher: Some(Sha256::new()),
            pending: None,
            path,
            buf: AlignedBatch::new(),
            received: 0,
            submitted: 0,
            limit,
            tx,
            tee,
        }
    }

    /// The size the source announced (Content-Length, tsize, SIZE, stat).
    pub(crate) fn announce_total(&mut self, total: u64) -> Result<(), SourceError> {
        if total > self.limit {
            return Err(SourceError::TooLarge {
                size: total,
                limit: self.limit,
            });
        }
        self.tx.send_modify(|p| p.total = Some(total));
        Ok(())
    }

    /// Bytes received so far.
    pub(crate) fn written(&self) -> u64 {
        self.received
    }

    /// Appends the next bytes of the image.
    pub(crate) async fn write(&mut self, mut data: &[u8]) -> Result<(), SourceError> {
        let new = self.received + data.len() as u64;
        if new > self.limit {
            return Err(SourceError::TooLarge {
                size: new,
                limit: self.limit,
            });
        }
        self.received = new;
        while !data.is_empty() {
            let take = (WRITE_BATCH - self.buf.len()).min(data.len());
            self.buf.extend(&data[..take]);
            data = &data[take..];
            if self.buf.len() == WRITE_BATCH {
                self.submit().await?;
            }
        }
        Ok(())
    }

    /// Waits for the batch in progress and tells readers its bytes are on
    /// disk.
    async fn settle(&mut self) -> Result<(), SourceError> {
        if let Some(h) = self.pending.take() {
            let (hasher, file, end, result) = h
                .await
                .map_err(|e| SourceError::io(self.path.display(), e))?;
            self.hasher = Some(hasher);
            self.file = Some(file);
            result.map_err(|e| SourceError::io(self.path.display(), e))?;
            self.tx.send_modify(|p| p.written = end);
        }
        Ok(())
    }

    /// Hands the buffered bytes to the blocking thread and to live readers.
    async fn submit(&mut self) -> Result<(), SourceError> {
        self.settle().await?;
        if self.buf.is_empty() {
            return Ok(());
        }
        let batch = std::mem::replace(&mut self.buf, AlignedBatch::new()).freeze();
        let (Some(mut hasher), Some(mut file)) = (self.hasher.take(), self.file.take()) else {
            return Err(SourceError::io(
                self.path.display(),
                "sink used after a failure",
            ));
        };
        let offset = self.submitted;
        self.submitted += batch.len() as u64;
        let end = self.submitted;
        self.tee.publish(&batch);
        self.pending = Some(tokio::task::spawn_blocking(move || {
            hasher.update(&batch);
            let r = file.write_at(&batch, offset);
            (hasher, file, end, r)
        }));
        Ok(())
    }

    /// Writes what is left; returns the hasher and the file.
    pub(super) async fn finish(&mut self) -> Result<(Sha256, std::fs::File), SourceError> {
        self.submit().await?;
        self.settle().await?;
        match (self.hasher.take(), self.file.take()) {
            (Some(h), Some(f)) => Ok((h, f.file)),
            _ => Err(SourceError::io(
                self.path.display(),
                "sink used after a failure",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn batches_are_exact_and_reach_live_readers_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("partial");
        let file = std::fs::File::create(&path).unwrap();
        let (tx, rx) = watch::channel(Progress::default());
        let tee = Tee::default();
        let mut early = tee.subscribe().unwrap();
        assert_eq!(early.from, 0);
        let image: Vec<u8> = (0..WRITE_BATCH * 2 + 1000).map(|i| i as u8).collect();
        let mut sink = Sink::new(file, path.clone(), u64::MAX, &tx, &tee);
        // Odd-sized writes, as a socket delivers them.
        let mut late = None;
        for (i, piece) in image.chunks(70_001).enumerate() {
            sink.write(piece).await.unwrap();
            if i == 20 {
                late = tee.subscribe();
            }
        }
        let (hasher, _file) = sink.finish().await.unwrap();
        tee.close();
        assert!(tee.subscribe().is_none(), "no live readers after the end");
        assert_eq!(
            hex::encode(hasher.finalize()),
            hex::encode(Sha256::digest(&image))
        );
        assert_eq!(rx.borrow().written, image.len() as u64);
        assert_eq!(std::fs::read(&path).unwrap(), image);
        let mut got = Vec::new();
        while let Some(b) = early.rx.recv().await {
            assert!(b.len() == WRITE_BATCH || got.len() == 2 * WRITE_BATCH);
            // Aligned for the direct write, which the tee shares.
            assert_eq!(b.as_ptr() as usize % ALIGN, 0);
            got.extend_from_slice(&b);
        }
        assert_eq!(got, image);
        // A reader that joined mid-download starts at a batch boundary.
        let late = late.unwrap();
        assert_eq!(late.from % WRITE_BATCH as u64, 0);
        assert!(late.from > 0);
    }

    #[test]
    fn unaligned_writes_and_no_direct_io_go_through_the_page_cache_at_their_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("partial");
        let data: Vec<u8> = (0..3 * ALIGN + 100).map(|i| (i % 251) as u8).collect();
        for direct in [true, false] {
            let file = std::fs::File::create(&path).unwrap();
            let mut f = PartialFile::open(file, &path);
            if !direct {
                // As on a filesystem that refused O_DIRECT at open.
                f.direct = None;
            }
            // An aligned batch, then one at an odd address and length
            // (the tail), written at their offsets out of order.
            let mut batch = AlignedBatch::new();
            batch.extend(&data[..2 * ALIGN]);
            let batch = batch.freeze();
            f.write_at(&data[2 * ALIGN + 1..], 2 * ALIGN as u64 + 1)
                .unwrap();
            f.write_at(&batch, 0).unwrap();
            f.write_at(&data[2 * ALIGN..2 * ALIGN + 1], 2 * ALIGN as u64)
                .unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), data, "direct {direct}");
        }
    }

    #[tokio::test]
    async fn a_reader_that_falls_behind_is_dropped_and_the_rest_go_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("partial");
        let file = std::fs::File::create(&path).unwrap();
        let (tx, _rx) = watch::channel(Progress::default());
        let tee = Tee::default();
        let mut slow = tee.subscribe().unwrap();
        let mut fast = tee.subscribe().unwrap();
        let mut sink = Sink::new(file, path, u64::MAX, &tx, &tee);
        let batch = vec![7u8; WRITE_BATCH];
        let mut fast_got = 0;
        for _ in 0..LIVE_DEPTH + 3 {
            sink.write(&batch).await.unwrap();
            while let Ok(b) = fast.rx.try_recv() {
                fast_got += b.len();
            }
        }
        sink.finish().await.unwrap();
        tee.close();
        while let Some(b) = fast.rx.recv().await {
            fast_got += b.len();
        }
        assert_eq!(fast_got, (LIVE_DEPTH + 3) * WRITE_BATCH);
        // The slow reader kept what fitted, then its feed closed.
        let mut slow_got = 0;
        while let Some(b) = slow.rx.recv().await {
            slow_got += b.len();
        }
        assert_eq!(slow_got, LIVE_DEPTH * WRITE_BATCH);
    }

    #[tokio::test]
    async fn the_size_cap_counts_received_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("partial");
        let file = std::fs::File::create(&path).unwrap();
        let (tx, _rx) = watch::channel(Progress::default());
        let tee = Tee::default();
        let mut sink = Sink::new(file, path, 10, &tx, &tee);
        sink.write(&[0; 6]).await.unwrap();
        let e = sink.write(&[0; 6]).await.unwrap_err();
        assert_eq!(
            e,
            SourceError::TooLarge {
                size: 12,
                limit: 10
            }
        );
        assert!(matches!(
            sink.announce_total(11),
            Err(SourceError::TooLarge {
                size: 11,
                limit: 10
            })
        ));
    }
}
