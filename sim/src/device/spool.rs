//! The spool file an OS.Install writes: appended through `O_DIRECT` from
//! an aligned staging buffer where the filesystem allows it, so an image
//! goes to disk without a second copy of every byte in the page cache.
//!
//! A simulated switch's flash is write-once, read-rarely: the image is read
//! back only to activate it (its header), for a File.Get, or for the
//! corrupt-image fault. Writing it through the page cache would allocate
//! and fill a page per 4 KiB, on the same CPUs as the controller and the
//! other simulated devices; on two vCPUs that copy was the largest single
//! cost of an install (a third of all CPU time with eight transfers). With
//! `O_DIRECT` the kernel sends the staging buffer to the disk as it is.
//!
//! Where the filesystem refuses `O_DIRECT` (tmpfs before Linux 6.6, some
//! FUSE and network filesystems) at open or at the first write, the same
//! bytes go through the ordinary file instead: only speed differs. The
//! tail that does not fill a disk block is always written through the
//! ordinary file, at its offset.

use std::fs::File;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

/// Alignment of the staging buffer, of every direct write's offset and of
/// its length: the largest logical block size of common disks.
const ALIGN: usize = 4096;

/// Bytes staged before one direct write (a multiple of [`ALIGN`]).
const STAGE: usize = 4 << 20;

/// An append-only spool file.
pub(super) struct SpoolFile {
    /// The file as opened by the device (always usable).
    file: File,
    /// The same file opened with `O_DIRECT`, while that works.
    direct: Option<File>,
    /// `STAGE + ALIGN` bytes; the staging area starts at `start`.
    buf: Vec<u8>,
    start: usize,
    /// Bytes staged, not yet written.
    staged: usize,
    /// Bytes written to the file.
    pos: u64,
}

impl SpoolFile {
    /// Wraps `file` (opened for writing at `path`, empty); tries a second,
    /// direct descriptor on the same path.
    pub(super) fn new(file: File, path: &Path) -> SpoolFile {
        let direct = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32)
            .open(path)
            .ok();
        let buf = if direct.is_some() {
            vec![0u8; STAGE + ALIGN]
        } else {
            Vec::new()
        };
        let start = buf.as_ptr().align_offset(ALIGN).min(ALIGN);
        SpoolFile {
            file,
            direct,
            buf,
            start,
            staged: 0,
            pos: 0,
        }
    }

    /// Whether writes still bypass the page cache.
    pub(super) fn is_direct(&self) -> bool {
        self.direct.is_some()
    }

    /// Appends `data`.
    pub(super) fn write(&mut self, mut data: &[u8]) -> std::io::Result<()> {
        if self.direct.is_none() {
            self.file.write_all_at(data, self.pos)?;
            self.pos += data.len() as u64;
            return Ok(());
        }
        while !data.is_empty() {
            let take = (STAGE - self.staged).min(data.len());
            let at = self.start + self.staged;
            self.buf[at..at + take].copy_from_slice(&data[..take]);
            self.staged += take;
            data = &data[take..];
            if self.staged == STAGE {
                self.flush_staged(STAGE)?;
            }
        }
        Ok(())
    }

    /// Writes the first `n` staged bytes (a multiple of [`ALIGN`]) and
    /// moves the rest to the front of the staging area.
    fn flush_staged(&mut self, n: usize) -> std::io::Result<()> {
        debug_assert_eq!(n % ALIGN, 0);
        let area = &self.buf[self.start..self.start + n];
        match &self.direct {
            Some(d) => match d.write_all_at(area, self.pos) {
                Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => {
                    // Opened direct, but the write is refused (an alignment
                    // the filesystem cannot meet): the ordinary file from
                    // here on.
                    tracing::debug!(
                        "spool: O_DIRECT write refused ({e}); writing through the page cache"
                    );
                    self.direct = None;
                    self.file.write_all_at(area, self.pos)?;
                }
                r => r?,
            },
            None => self.file.write_all_at(area, self.pos)?,
        }
        self.pos += n as u64;
        let rest = self.staged - n;
        self.buf
            .copy_within(self.start + n..self.start + self.staged, self.start);
        self.staged = rest;
        Ok(())
    }

    /// Writes what is staged: the whole blocks direct, the tail through
    /// the ordinary file. Returns the bytes written in all.
    pub(super) fn finish(mut self) -> std::io::Result<u64> {
        let whole = self.staged / ALIGN * ALIGN;
        if whole > 0 {
            self.flush_staged(whole)?;
        }
        if self.staged > 0 {
            let tail = &self.buf[self.start..self.start + self.staged];
            self.file.write_all_at(tail, self.pos)?;
            self.pos += self.staged as u64;
        }
        Ok(self.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 4099) as u8).collect()
    }

    fn spool(dir: &Path) -> (std::path::PathBuf, SpoolFile) {
        let p = dir.join("s.bin");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&p)
            .unwrap();
        let s = SpoolFile::new(f, &p);
        (p, s)
    }

    #[test]
    fn odd_sized_chunks_land_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        // Larger than two stages, not a multiple of a block; chunk sizes
        // that straddle stage and block boundaries.
        let data = image(2 * STAGE + 3 * ALIGN + 123);
        let (p, mut s) = spool(dir.path());
        let mut rest = &data[..];
        for n in [1usize, 4095, 70_001, 1 << 20, STAGE, 17].iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let take = (*n).min(rest.len());
            s.write(&rest[..take]).unwrap();
            rest = &rest[take..];
        }
        assert_eq!(s.finish().unwrap(), data.len() as u64);
        assert_eq!(std::fs::read(&p).unwrap(), data);
    }

    #[test]
    fn short_images_and_empty_ones() {
        let dir = tempfile::tempdir().unwrap();
        for len in [0usize, 1, ALIGN - 1, ALIGN, ALIGN + 1] {
            let data = image(len);
            let (p, mut s) = spool(dir.path());
            s.write(&data).unwrap();
            assert_eq!(s.finish().unwrap(), len as u64);
            assert_eq!(std::fs::read(&p).unwrap(), data, "{len} bytes");
        }
    }

    #[test]
    fn without_direct_io_the_same_bytes_go_through_the_page_cache() {
        let dir = tempfile::tempdir().unwrap();
        let data = image(STAGE + 5000);
        let (p, mut s) = spool(dir.path());
        // As on a filesystem that refused O_DIRECT at open.
        s.direct = None;
        s.write(&data[..10]).unwrap();
        s.write(&data[10..]).unwrap();
        assert!(!s.is_direct());
        assert_eq!(s.finish().unwrap(), data.len() as u64);
        assert_eq!(std::fs::read(&p).unwrap(), data);
    }

    #[test]
    fn the_staging_area_is_aligned() {
        let dir = tempfile::tempdir().unwrap();
        let (_p, s) = spool(dir.path());
        if s.is_direct() {
            assert_eq!((s.buf.as_ptr() as usize + s.start) % ALIGN, 0);
            assert!(s.start + STAGE <= s.buf.len());
        }
    }
}
