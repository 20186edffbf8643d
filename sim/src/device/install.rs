//! OS.Install, OS.Activate and OS.Verify: starting a transfer
//! ([`InstallBegin`]), the [`InstallSession`] that streams an image through
//! the flash writer threads (spool file and SHA-256 validator) into a staged
//! image, activation, the corrupt-image fault on a staged image, and the
//! [`InstallFail`] / [`ActivateFail`] refusals.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::Device;
use super::fs::{FileData, FileEntry, discard_spool};
use super::spool::SpoolFile;
use crate::error::DomainError;
use crate::faults::FaultKind;
use crate::image::{ImageError, ImageValidator};

/// A staged (installed, not running) image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StagedImage {
    /// Full version from the image header.
    pub version: String,
    /// Where it lives (`flash:gNOI_iosxe_<version>.bin`).
    pub path: String,
    /// Bytes.
    pub size: u64,
    /// Damaged on flash (fault): activating it fails to boot.
    pub corrupt: bool,
}

#[derive(Debug, Clone)]
pub(super) struct InstallInfo {
    pub(super) version: String,
    pub(super) received: u64,
}

/// Outcome of starting an OS.Install.
pub enum InstallBegin {
    /// The version is already on the device: answer Validated at once.
    AlreadyPresent {
        /// Version.
        version: String,
        /// Description for Validated.
        description: String,
    },
    /// Go ahead: send TransferReady and stream into the session.
    Transfer(InstallSession),
}

/// `InstallError` type and detail (numbers as in `gnoi.os.InstallError.Type`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallFail {
    /// InstallError.Type.
    pub kind: InstallFailKind,
    /// Detail.
    pub detail: String,
}

/// The InstallError types the simulator produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstallFailKind {
    /// Foreign platform.
    Incompatible,
    /// Does not fit.
    TooLarge,
    /// Not an image.
    ParseFail,
    /// Damaged.
    IntegrityFail,
    /// Same as the running image.
    InstallRunPackage,
    /// Another Install is running.
    InstallInProgress,
    /// Standby supervisor requested on a single-supervisor switch.
    NotSupportedOnBackup,
}

impl InstallFail {
    fn new(kind: InstallFailKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
        }
    }
}

/// Outcome of OS.Activate when it is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActivateFail {
    /// The version is not on the device.
    NonExistentVersion(String),
    /// Standby requested.
    NotSupportedOnBackup(String),
    /// Anything else.
    Unspecified(String),
}

/// What Verify reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyInfo {
    /// Running version.
    pub version: String,
    /// Why the last activation did not boot, if it did not.
    pub activation_fail_message: String,
}

impl Device {
    // ---- OS install / activate / verify ------------------------------------

    /// OS.Install's TransferRequest.
    pub fn begin_install(
        self: &Arc<Self>,
        version: &str,
        package_size: u64,
        standby: bool,
    ) -> Result<InstallBegin, InstallFail> {
        use InstallFailKind as K;
        if standby {
            return Err(InstallFail::new(
                K::NotSupportedOnBackup,
                format!("{} has a single supervisor", self.profile.model),
            ));
        }
        let mut st = self.lock();
        if let Some(i) = &st.install {
            return Err(InstallFail::new(
                K::InstallInProgress,
                format!("an install of {:?} is in progress", i.version),
            ));
        }
        if !version.is_empty() {
            if version == st.running_version {
                return Ok(InstallBegin::AlreadyPresent {
                    version: version.into(),
                    description: format!("{version} is the running image"),
                });
            }
            if let Some(s) = st.staged.get(version).filter(|s| !s.corrupt) {
                return Ok(InstallBegin::AlreadyPresent {
                    version: version.into(),
                    description: format!("{version} is already present as {}", s.path),
                });
            }
        }
        let flash = st
            .fs
            .iter()
            .position(|f| f.spec.name == "flash:")
            .expect("profiles have flash:");
        let free = self.free_of(&st.fs[flash]);
        if package_size > free {
            drop(st);
            self.faults
                .take_device(|k| matches!(k, FaultKind::FlashFull));
            return Err(InstallFail::new(
                K::TooLarge,
                format!(
                    "package of {package_size} bytes does not fit in flash: ({free} bytes free)"
                ),
            ));
        }
        st.install = Some(InstallInfo {
            version: version.into(),
            received: 0,
        });
        drop(st);
        self.touch();
        let corrupt = self
            .faults
            .take_device(|k| matches!(k, FaultKind::CorruptImage { version: None }))
            .is_some();
        let (spool, file) = match self.new_spool() {
            Ok(x) => x,
            Err(e) => {
                self.lock().install = None;
                return Err(InstallFail::new(K::TooLarge, e.to_string()));
            }
        };
        let writer = match FlashWriter::start(&self.name, file, &spool, package_size) {
            Ok(w) => w,
            Err(e) => {
                self.lock().install = None;
                let _ = std::fs::remove_file(&spool);
                return Err(InstallFail::new(
                    K::TooLarge,
                    format!("cannot start the flash writer: {e}"),
                ));
            }
        };
        Ok(InstallBegin::Transfer(InstallSession {
            dev: self.clone(),
            spool: Some(spool),
            writer: Some(writer),
            received: 0,
            free,
            corrupt,
            progress_every: self.profile.install_progress_bytes,
            next_progress: self.profile.install_progress_bytes,
            started: std::time::Instant::now(),
        }))
    }

    /// OS.Activate. On success the caller decides how the reboot happens.
    pub fn activate(
        &self,
        version: &str,
        no_reboot: bool,
        standby: bool,
    ) -> Result<(), ActivateFail> {
        if standby {
            return Err(ActivateFail::NotSupportedOnBackup(format!(
                "{} has a single supervisor",
                self.profile.model
            )));
        }
        let mut st = self.lock();
        if version.is_empty() {
            return Err(ActivateFail::NonExistentVersion("no version given".into()));
        }
        if version != st.running_version && !st.staged.contains_key(version) {
            return Err(ActivateFail::NonExistentVersion(format!(
                "version {version} is not installed"
            )));
        }
        if st.install.is_some() {
            return Err(ActivateFail::Unspecified(
                "an install is in progress".into(),
            ));
        }
        st.boot_version = Some(version.to_owned());
        // An activation that reboots an ISSU-capable device takes the
        // in-service path; the boot reports it.
        st.issu_pending = !no_reboot && st.issu_capable;
        drop(st);
        self.touch();
        Ok(())
    }

    /// Corrupts a staged image on flash (fault `corrupt_image` with a version).
    pub fn corrupt_staged(&self, version: &str) -> Result<(), DomainError> {
        let mut st = self.lock();
        let s = st
            .staged
            .get_mut(version)
            .ok_or_else(|| DomainError::NotFound(format!("{version} is not staged")))?;
        s.corrupt = true;
        let path = s.path.clone();
        let r = self.resolve(&st, &path)?;
        if let Some(FileEntry {
            data: FileData::Spool(p),
            ..
        }) = st.fs[r.fs].files.get(&r.rel)
        {
            let mut f = std::fs::OpenOptions::new().read(true).write(true).open(p)?;
            let at = crate::image::HEADER_LEN as u64 + 7;
            let mut b = [0u8; 1];
            f.seek(SeekFrom::Start(at))?;
            f.read_exact(&mut b)?;
            f.seek(SeekFrom::Start(at))?;
            f.write_all(&[b[0] ^ 0x5a])?;
        }
        drop(st);
        self.touch();
        Ok(())
    }

    /// OS.Verify.
    pub fn verify(&self) -> Result<VerifyInfo, DomainError> {
        let st = self.lock();
        if st.reboot.in_outage {
            return Err(DomainError::Unavailable("the device is rebooting".into()));
        }
        Ok(VerifyInfo {
            version: st.running_version.clone(),
            activation_fail_message: st.activation_fail_message.clone(),
        })
    }
}

/// Messages each flash stage holds at most (with 1 MiB chunks, 8 MiB).
const FLASH_WRITER_QUEUE: usize = 8;

/// The write side of an OS.Install: two threads of its own, one appending
/// each chunk to the spool file ([`SpoolFile`]: `O_DIRECT` where the
/// filesystem allows it) and one feeding it to the image validator
/// (SHA-256). Both run beside the gRPC receive path instead of on the async
/// workers between two reads of the stream, and beside each other, since
/// each chunk is shared, not copied. Chunks arrive in order over bounded
/// queues (backpressure reaches the client through HTTP/2 flow control);
/// dropping the senders ends both threads.
struct FlashWriter {
    write_tx: tokio::sync::mpsc::Sender<Bytes>,
    hash_tx: tokio::sync::mpsc::Sender<Bytes>,
    written: tokio::sync::oneshot::Receiver<Result<(), String>>,
    hashed: tokio::sync::oneshot::Receiver<ImageValidator>,
}

impl FlashWriter {
    /// `expected` is the announced package size: the spool file gets its
    /// blocks up front, so that appending does not allocate them page by
    /// page (a hint; ignored where the filesystem cannot).
    fn start(
        device: &str,
        file: std::fs::File,
        path: &std::path::Path,
        expected: u64,
    ) -> std::io::Result<FlashWriter> {
        let (write_tx, mut write_rx) = tokio::sync::mpsc::channel::<Bytes>(FLASH_WRITER_QUEUE);
        let (hash_tx, mut hash_rx) = tokio::sync::mpsc::channel::<Bytes>(FLASH_WRITER_QUEUE);
        let (written_tx, written) = tokio::sync::oneshot::channel();
        let (hashed_tx, hashed) = tokio::sync::oneshot::channel();
        let path = path.to_owned();
        let name = device.to_owned();
        std::thread::Builder::new()
            .name(format!("flash-{device}"))
            .spawn(move || {
                background_priority();
                if expected > 0 {
                    use rustix::fs::{FallocateFlags, fallocate};
                    let _ = fallocate(&file, FallocateFlags::KEEP_SIZE, 0, expected);
                }
                let mut spool = SpoolFile::new(file, &path);
                let mut result = Ok(());
                while let Some(chunk) = write_rx.blocking_recv() {
                    if let Err(e) = spool.write(&chunk) {
                        result = Err(e.to_string());
                        break;
                    }
                }
                if result.is_ok() {
                    let direct = spool.is_direct();
                    result = match spool.finish() {
                        Ok(bytes) => {
                            tracing::debug!(device = %name, bytes, direct, "flash write done");
                            Ok(())
                        }
                        Err(e) => Err(e.to_string()),
                    };
                }
                let _ = written_tx.send(result);
            })?;
        std::thread::Builder::new()
            .name(format!("verify-{device}"))
            .spawn(move || {
                background_priority();
                let mut validator = ImageValidator::new();
                while let Some(chunk) = hash_rx.blocking_recv() {
                    validator.update(&chunk);
                }
                let _ = hashed_tx.send(validator);
            })?;
        Ok(FlashWriter {
            write_tx,
            hash_tx,
            written,
            hashed,
        })
    }

    /// Queues a chunk for both threads; waits while a queue is full. An
    /// error means the write thread stopped on a write error, which
    /// [`FlashWriter::finish`] names.
    async fn write(&self, chunk: Bytes) -> Result<(), ()> {
        self.hash_tx.send(chunk.clone()).await.map_err(|_| ())?;
        self.write_tx.send(chunk).await.map_err(|_| ())
    }

    /// Closes the queues and waits for every queued chunk to be written
    /// and hashed.
    async fn finish(self) -> Result<ImageValidator, String> {
        drop(self.write_tx);
        drop(self.hash_tx);
        self.written
            .await
            .unwrap_or_else(|_| Err("the flash write thread ended without a result".into()))?;
        self.hashed
            .await
            .map_err(|_| "the image verify thread ended without a result".into())
    }
}

/// Lowers the calling thread's scheduling priority (nice 10), as a
/// switch's storage work runs below its management plane: when the CPU is
/// short, gRPC requests (System.Time, RebootStatus) are answered before the
/// next chunk is hashed or written. Best effort.
fn background_priority() {
    let _ = rustix::process::setpriority_process(Some(rustix::thread::gettid()), 10);
}

fn flash_write_failed(e: String) -> InstallFail {
    InstallFail::new(
        InstallFailKind::TooLarge,
        format!("flash write failed: {e}"),
    )
}

/// An open OS.Install transfer. Dropping it (client went away, error)
/// discards the partial image and frees the install slot.
pub struct InstallSession {
    dev: Arc<Device>,
    spool: Option<PathBuf>,
    writer: Option<FlashWriter>,
    received: u64,
    free: u64,
    corrupt: bool,
    progress_every: u64,
    next_progress: u64,
    started: std::time::Instant,
}

impl InstallSession {
    /// Appends content; returns `Some(bytes)` when a TransferProgress is due.
    /// The bytes count as received once queued for the flash writer; a
    /// write error surfaces here on a later chunk or in [`Self::finish`].
    pub async fn write(&mut self, data: Bytes) -> Result<Option<u64>, InstallFail> {
        let total = self.received + data.len() as u64;
        if total > self.free {
            self.dev
                .faults
                .take_device(|k| matches!(k, FaultKind::FlashFull));
            return Err(InstallFail::new(
                InstallFailKind::TooLarge,
                format!(
                    "flash: is full after {} bytes ({} bytes were free)",
                    self.received, self.free
                ),
            ));
        }
        let data = if self.corrupt && total > crate::image::HEADER_LEN as u64 + 64 {
            // Flip one body byte as it lands on "flash".
            self.corrupt = false;
            let mut v = data.to_vec();
            let i = v.len() - 1;
            v[i] ^= 0xa5;
            Bytes::from(v)
        } else {
            data
        };
        let writer = self.writer.as_ref().expect("writer present until finish");
        if writer.write(data).await.is_err() {
            let w = self.writer.take().expect("writer present until finish");
            return Err(match w.finish().await {
                Err(e) => flash_write_failed(e),
                Ok(_) => flash_write_failed("the flash writer stopped".into()),
            });
        }
        self.received = total;
        // The rate limit, read per chunk so a patch applies mid-transfer:
        // hold the chunk until the stream is no ahead of the rate (the
        // client sees gRPC flow control, as from a slow flash).
        let rate = self.dev.lock().install_bytes_per_s;
        if rate > 0 {
            let due = std::time::Duration::from_secs_f64(total as f64 / rate as f64);
            let elapsed = self.started.elapsed();
            if due > elapsed {
                tokio::time::sleep(due - elapsed).await;
            }
        }
        if let Some(i) = self.dev.lock().install.as_mut() {
            i.received = total;
        }
        if self.progress_every > 0 && total >= self.next_progress {
            while self.next_progress <= total {
                self.next_progress += self.progress_every;
            }
            return Ok(Some(total));
        }
        Ok(None)
    }

    /// Bytes received.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// TransferEnd: waits for the flash writer, validates the image and
    /// stores it as `flash:gNOI_iosxe_<version>.bin`. Returns (version, path).
    pub async fn finish(mut self) -> Result<(String, String), InstallFail> {
        use InstallFailKind as K;
        let size = self.received;
        let writer = self.writer.take().expect("writer present until finish");
        let validator = writer.finish().await.map_err(flash_write_failed)?;
        let spec = validator
            .finish(&self.dev.profile.platform_family)
            .map_err(|e| match e {
                ImageError::Incompatible { .. } => InstallFail::new(K::Incompatible, e.to_string()),
                ImageError::Integrity(_) => InstallFail::new(K::IntegrityFail, e.to_string()),
                _ => InstallFail::new(K::ParseFail, e.to_string()),
            })?;
        if spec.version == self.dev.running_version() {
            return Err(InstallFail::new(
                K::InstallRunPackage,
                format!("{} is the running image", spec.version),
            ));
        }
        let path = format!("flash:gNOI_iosxe_{}.bin", spec.version);
        let spool = self.spool.take().expect("spool present until finish");
        if let Err(e) = self
            .dev
            .store(&path, FileData::Spool(spool.clone()), size, 644)
        {
            let _ = std::fs::remove_file(&spool);
            return Err(InstallFail::new(K::ParseFail, e.to_string()));
        }
        let mut st = self.dev.lock();
        st.staged.insert(
            spec.version.clone(),
            StagedImage {
                version: spec.version.clone(),
                path: path.clone(),
                size,
                corrupt: false,
            },
        );
        drop(st);
        tracing::info!(device = %self.dev.name, version = %spec.version, "install add {path}");
        Ok((spec.version, path))
    }
}

impl Drop for InstallSession {
    fn drop(&mut self) {
        self.dev.lock().install = None;
        self.dev.touch();
        if let Some(p) = self.spool.take() {
            discard_spool(p);
        }
    }
}
