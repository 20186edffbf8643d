//! Filesystems of a device: IOS-XE path rules and resolution, File.Stat,
//! File.Remove, File.Get ([`FileReader`]) and File.Put ([`PutSession`]),
//! the spool files on the host that hold written content, the system files
//! a profile seeds, and the digest helper File.Put and tools use.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{Device, State};
use crate::clock::wall_ns;
use crate::error::DomainError;
use crate::faults::FaultKind;
use crate::profile::{FilesystemSpec, Profile};

/// Largest content message accepted by File.Put (gNOI: 64 KiB).
pub const MAX_PUT_CHUNK: usize = 64 * 1024;

/// File content.
#[derive(Debug, Clone)]
pub(super) enum FileData {
    Inline(Bytes),
    Spool(PathBuf),
    /// Deterministic filler for big system files that nobody reads closely.
    Synthetic(u64),
}

#[derive(Debug, Clone)]
pub(super) struct FileEntry {
    pub(super) data: FileData,
    pub(super) size: u64,
    pub(super) permissions: u32,
    pub(super) mtime_ns: u64,
    pub(super) protected: bool,
}

#[derive(Debug, Clone)]
pub(super) struct Fs {
    pub(super) spec: FilesystemSpec,
    pub(super) files: BTreeMap<String, FileEntry>,
}

impl Fs {
    fn used(&self) -> u64 {
        self.spec.reserved + self.files.values().map(|f| f.size).sum::<u64>()
    }
}

/// Filesystem usage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FsInfo {
    /// Prefix (`flash:`).
    pub name: String,
    /// Capacity.
    pub size: u64,
    /// Free bytes.
    pub free: u64,
    /// Number of files.
    pub files: usize,
    /// Read-only.
    pub read_only: bool,
}

/// Stat entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatEntry {
    /// Full path.
    pub path: String,
    /// ns since the epoch.
    pub mtime_ns: u64,
    /// Octal-as-decimal permissions.
    pub permissions: u32,
    /// Bytes (0 for directories).
    pub size: u64,
}

fn synth_seed(path: &str) -> u64 {
    path.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

pub(super) fn fill(template: &str, version: &str, hostname: &str) -> String {
    template
        .replace("{version}", version)
        .replace("{hostname}", hostname)
}

/// A resolved path: filesystem index and the path inside it (no leading `/`).
pub(super) struct Resolved {
    pub(super) fs: usize,
    pub(super) rel: String,
}

impl Device {
    // ---- files ------------------------------------------------------------

    pub(super) fn resolve(&self, st: &State, path: &str) -> Result<Resolved, DomainError> {
        resolve(&self.profile, &st.fs, path)
    }

    pub(super) fn free_of(&self, fs: &Fs) -> u64 {
        if fs.spec.name == "flash:"
            && self
                .faults
                .has_device(|k| matches!(k, FaultKind::FlashFull))
        {
            return 0;
        }
        fs.spec.size.saturating_sub(fs.used())
    }

    /// File.Stat: a file, or the entries of a directory.
    pub fn stat(&self, path: &str) -> Result<Vec<StatEntry>, DomainError> {
        let st = self.lock();
        let r = self.resolve(&st, path)?;
        let fs = &st.fs[r.fs];
        let name = &fs.spec.name;
        if let Some(f) = fs.files.get(&r.rel) {
            return Ok(vec![StatEntry {
                path: format!("{name}{}", r.rel),
                mtime_ns: f.mtime_ns,
                permissions: f.permissions,
                size: f.size,
            }]);
        }
        let prefix = if r.rel.is_empty() {
            String::new()
        } else {
            format!("{}/", r.rel)
        };
        let mut out: BTreeMap<String, StatEntry> = BTreeMap::new();
        for (k, f) in fs.files.range(prefix.clone()..) {
            let Some(rest) = k.strip_prefix(&prefix) else {
                break;
            };
            match rest.split_once('/') {
                None => {
                    out.insert(
                        rest.to_owned(),
                        StatEntry {
                            path: format!("{name}{k}"),
                            mtime_ns: f.mtime_ns,
                            permissions: f.permissions,
                            size: f.size,
                        },
                    );
                }
                Some((dir, _)) => {
                    let e = out.entry(dir.to_owned()).or_insert_with(|| StatEntry {
                        path: format!("{name}{prefix}{dir}"),
                        mtime_ns: 0,
                        permissions: 755,
                        size: 0,
                    });
                    e.mtime_ns = e.mtime_ns.max(f.mtime_ns);
                }
            }
        }
        if out.is_empty() && !r.rel.is_empty() {
            return Err(DomainError::NotFound(format!(
                "{path}: no such file or directory"
            )));
        }
        Ok(out.into_values().collect())
    }

    /// File.Remove.
    pub fn remove(&self, path: &str) -> Result<(), DomainError> {
        let mut st = self.lock();
        let r = self.resolve(&st, path)?;
        let fs = &mut st.fs[r.fs];
        if fs.spec.read_only {
            return Err(DomainError::PermissionDenied(format!(
                "{} is read-only",
                fs.spec.name
            )));
        }
        let Some(f) = fs.files.get(&r.rel) else {
            let dir = format!("{}/", r.rel);
            if r.rel.is_empty()
                || fs
                    .files
                    .range(dir.clone()..)
                    .next()
                    .is_some_and(|(k, _)| k.starts_with(&dir))
            {
                return Err(DomainError::InvalidArgument(format!(
                    "{path} is a directory"
                )));
            }
            return Err(DomainError::NotFound(format!("{path}: no such file")));
        };
        if f.protected {
            return Err(DomainError::PermissionDenied(format!(
                "{path} is in use by the running system"
            )));
        }
        let full = format!("{}{}", fs.spec.name, r.rel);
        let f = fs.files.remove(&r.rel).expect("checked above");
        st.staged.retain(|_, s| s.path != full);
        drop(st);
        if let FileData::Spool(p) = f.data {
            discard_spool(p);
        }
        self.touch();
        Ok(())
    }

    /// Opens a file for File.Get.
    pub fn open_read(&self, path: &str) -> Result<FileReader, DomainError> {
        let st = self.lock();
        let r = self.resolve(&st, path)?;
        let fs = &st.fs[r.fs];
        let f = fs.files.get(&r.rel).ok_or_else(|| {
            let dir = format!("{}/", r.rel);
            if r.rel.is_empty() || fs.files.keys().any(|k| k.starts_with(&dir)) {
                DomainError::InvalidArgument(format!("{path} is a directory"))
            } else {
                DomainError::NotFound(format!("{path}: no such file"))
            }
        })?;
        let src = match &f.data {
            FileData::Inline(b) => Source::Inline(b.clone()),
            FileData::Spool(p) => Source::Spool(std::fs::File::open(p)?),
            FileData::Synthetic(seed) => Source::Synthetic(crate::faults::SplitMix::new(*seed)),
        };
        Ok(FileReader {
            src,
            pos: 0,
            size: f.size,
        })
    }

    pub(super) fn new_spool(&self) -> Result<(PathBuf, std::fs::File), DomainError> {
        std::fs::create_dir_all(&self.spool_dir)?;
        let n = self.spool_seq.fetch_add(1, Ordering::Relaxed);
        let p = self.spool_dir.join(format!("{}-{n}.bin", self.name));
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&p)?;
        Ok((p, f))
    }

    /// Starts a File.Put to `path` with `permissions` (octal as decimal).
    pub fn begin_put(
        self: &Arc<Self>,
        path: &str,
        permissions: u32,
    ) -> Result<PutSession, DomainError> {
        if permissions != 0 && permissions.to_string().chars().any(|c| c > '7')
            || permissions > 7777
        {
            return Err(DomainError::InvalidArgument(format!(
                "permissions {permissions} are not octal digits"
            )));
        }
        let (free, full) = {
            let st = self.lock();
            let r = self.resolve(&st, path)?;
            if r.rel.is_empty() || r.rel.ends_with('/') {
                return Err(DomainError::InvalidArgument(format!(
                    "{path} names a directory"
                )));
            }
            let fs = &st.fs[r.fs];
            if fs.spec.read_only {
                return Err(DomainError::PermissionDenied(format!(
                    "{} is read-only",
                    fs.spec.name
                )));
            }
            if fs.files.get(&r.rel).is_some_and(|f| f.protected) {
                return Err(DomainError::PermissionDenied(format!(
                    "{path} is in use by the running system"
                )));
            }
            let replaced = fs.files.get(&r.rel).map(|f| f.size).unwrap_or(0);
            (
                self.free_of(fs) + replaced,
                format!("{}{}", fs.spec.name, r.rel),
            )
        };
        let (spool, file) = self.new_spool()?;
        Ok(PutSession {
            dev: self.clone(),
            path: full,
            permissions: if permissions == 0 { 644 } else { permissions },
            spool: Some(spool),
            file,
            written: 0,
            free,
        })
    }

    pub(super) fn store(
        &self,
        full: &str,
        data: FileData,
        size: u64,
        permissions: u32,
    ) -> Result<(), DomainError> {
        let mut st = self.lock();
        let r = self.resolve(&st, full)?;
        let old = st.fs[r.fs].files.insert(
            r.rel,
            FileEntry {
                data,
                size,
                permissions,
                mtime_ns: wall_ns(),
                protected: false,
            },
        );
        st.staged.retain(|_, s| s.path != full);
        drop(st);
        if let Some(FileEntry {
            data: FileData::Spool(p),
            ..
        }) = old
        {
            discard_spool(p);
        }
        self.touch();
        Ok(())
    }
}

pub(super) fn seed_files(profile: &Profile, st: &mut State, now: u64) {
    let version = st.running_version.clone();
    for f in &profile.files {
        let path = fill(&f.path, &version, &st.hostname);
        let Ok(r) = resolve(profile, &st.fs, &path) else {
            continue;
        };
        let (data, size) = match &f.text {
            Some(t) => {
                let b = Bytes::from(fill(t, &version, &st.hostname));
                let n = b.len() as u64;
                (FileData::Inline(b), n)
            }
            None => (FileData::Synthetic(synth_seed(&path)), f.size),
        };
        st.fs[r.fs].files.insert(
            r.rel,
            FileEntry {
                data,
                size,
                permissions: f.permissions,
                mtime_ns: now,
                protected: f.protected,
            },
        );
    }
}

/// IOS-XE path rules: `<fs>:<path>` or `<fs>:/<path>`, an alias such as
/// `bootflash:` names the same filesystem, no `..`, no empty components.
pub(super) fn resolve(profile: &Profile, fs: &[Fs], path: &str) -> Result<Resolved, DomainError> {
    let Some((prefix, rest)) = path.split_once(':') else {
        return Err(DomainError::InvalidArgument(format!(
            "{path:?} has no filesystem prefix (flash:, bootflash:, usbflash0:, ...)"
        )));
    };
    let prefix = format!("{prefix}:");
    let idx = fs
        .iter()
        .position(|f| f.spec.name == prefix || f.spec.aliases.contains(&prefix))
        .ok_or_else(|| {
            DomainError::InvalidArgument(format!(
                "{prefix} is not a filesystem on {}",
                profile.model
            ))
        })?;
    let rest = rest.trim_start_matches('/');
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let mut parts = Vec::new();
    for c in rest.split('/') {
        match c {
            "" if rest.is_empty() => {}
            "" => {
                return Err(DomainError::InvalidArgument(format!(
                    "{path:?} has an empty path component"
                )));
            }
            "." => {}
            ".." => {
                return Err(DomainError::InvalidArgument(format!(
                    "{path:?}: '..' is not allowed"
                )));
            }
            c if c.contains(['\0', '\\']) => {
                return Err(DomainError::InvalidArgument(format!(
                    "{path:?} has a forbidden character"
                )));
            }
            c => parts.push(c),
        }
    }
    Ok(Resolved {
        fs: idx,
        rel: parts.join("/"),
    })
}

enum Source {
    Inline(Bytes),
    Spool(std::fs::File),
    Synthetic(crate::faults::SplitMix),
}

/// Reads a file in chunks (File.Get).
pub struct FileReader {
    src: Source,
    pos: u64,
    size: u64,
}

impl FileReader {
    /// Total size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Next chunk of at most `max` bytes; `None` at the end.
    pub fn next_chunk(&mut self, max: usize) -> Result<Option<Vec<u8>>, DomainError> {
        if self.pos >= self.size {
            return Ok(None);
        }
        let n = (self.size - self.pos).min(max as u64) as usize;
        let out = match &mut self.src {
            Source::Inline(b) => b[self.pos as usize..self.pos as usize + n].to_vec(),
            Source::Spool(f) => {
                let mut v = vec![0u8; n];
                f.read_exact(&mut v)?;
                v
            }
            Source::Synthetic(rng) => {
                let mut v = Vec::with_capacity(n + 8);
                while v.len() < n {
                    v.extend_from_slice(&rng.next_u64().to_le_bytes());
                }
                v.truncate(n);
                v
            }
        };
        self.pos += n as u64;
        Ok(Some(out))
    }
}

/// An open File.Put. Dropping it without [`PutSession::commit`] leaves no file.
pub struct PutSession {
    dev: Arc<Device>,
    path: String,
    permissions: u32,
    spool: Option<PathBuf>,
    file: std::fs::File,
    written: u64,
    free: u64,
}

impl PutSession {
    /// Full destination path.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Appends content.
    pub fn write(&mut self, data: &[u8]) -> Result<(), DomainError> {
        if data.len() > MAX_PUT_CHUNK {
            return Err(DomainError::InvalidArgument(format!(
                "content message of {} bytes exceeds the 64 KiB limit",
                data.len()
            )));
        }
        if self.written + data.len() as u64 > self.free {
            self.dev
                .faults
                .take_device(|k| matches!(k, FaultKind::FlashFull));
            return Err(DomainError::ResourceExhausted(format!(
                "{}: no space left ({} bytes free)",
                self.path, self.free
            )));
        }
        self.file.write_all(data)?;
        self.written += data.len() as u64;
        Ok(())
    }

    /// Bytes written.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Re-reads the content and checks it against the client's hash, then
    /// makes the file visible.
    pub fn commit(mut self, method: i32, digest: &[u8]) -> Result<(), DomainError> {
        self.file.flush()?;
        self.file.seek(SeekFrom::Start(0))?;
        let got = hash_reader(&mut self.file, method)?;
        if got != digest {
            return Err(DomainError::DataLoss(format!(
                "{}: hash mismatch (received {}, computed {})",
                self.path,
                hex::encode(digest),
                hex::encode(&got)
            )));
        }
        let spool = self.spool.take().expect("spool present until commit");
        let r = self.dev.store(
            &self.path,
            FileData::Spool(spool.clone()),
            self.written,
            self.permissions,
        );
        if r.is_err() {
            let _ = std::fs::remove_file(&spool);
        }
        r
    }
}

impl Drop for PutSession {
    fn drop(&mut self) {
        if let Some(p) = self.spool.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Digest with a `gnoi.types.HashType.HashMethod` (1 SHA256, 2 SHA512, 3 MD5).
pub fn hash_reader(r: &mut impl Read, method: i32) -> Result<Vec<u8>, DomainError> {
    use sha2::Digest;
    fn run<D: sha2::Digest>(mut d: D, r: &mut impl Read) -> Result<Vec<u8>, DomainError> {
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = r.read(&mut buf)?;
            if n == 0 {
                return Ok(d.finalize().to_vec());
            }
            d.update(&buf[..n]);
        }
    }
    match method {
        1 => run(sha2::Sha256::new(), r),
        2 => run(sha2::Sha512::new(), r),
        3 => run(md5::Md5::new(), r),
        m => Err(DomainError::InvalidArgument(format!(
            "hash method {m} is not SHA256, SHA512 or MD5"
        ))),
    }
}

/// Deletes a spool file. Unlinking a large file takes milliseconds of
/// kernel time (its page cache is dropped), so inside a runtime it runs on
/// the blocking pool instead of holding up an async worker, where it would
/// delay every other request of the device.
pub(super) fn discard_spool(p: PathBuf) {
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => {
            rt.spawn_blocking(move || {
                let _ = std::fs::remove_file(p);
            });
        }
        Err(_) => {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// For tests and tools: path rules without a device.
pub fn check_path(profile: &Profile, path: &str) -> Result<String, DomainError> {
    let fs: Vec<Fs> = profile
        .filesystems
        .iter()
        .map(|s| Fs {
            spec: s.clone(),
            files: BTreeMap::new(),
        })
        .collect();
    let r = resolve(profile, &fs, path)?;
    Ok(format!("{}{}", fs[r.fs].spec.name, r.rel))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_rules() {
        let p = Profile::builtin("c9300-17.18").unwrap();
        assert_eq!(check_path(&p, "flash:/a/b.bin").unwrap(), "flash:a/b.bin");
        assert_eq!(check_path(&p, "bootflash:x.txt").unwrap(), "flash:x.txt");
        assert_eq!(check_path(&p, "usbflash1:/").unwrap(), "usbflash1:");
        assert!(matches!(
            check_path(&p, "/etc/passwd"),
            Err(DomainError::InvalidArgument(_))
        ));
        assert!(matches!(
            check_path(&p, "flash:../x"),
            Err(DomainError::InvalidArgument(_))
        ));
        assert!(matches!(
            check_path(&p, "flash:a//b"),
            Err(DomainError::InvalidArgument(_))
        ));
        assert!(matches!(
            check_path(&p, "disk9:x"),
            Err(DomainError::InvalidArgument(_))
        ));
    }
}
