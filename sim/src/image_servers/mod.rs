//! Image servers on loopback for tests, the scenario runner, benchmarks and
//! labs: HTTP, TFTP, FTP, and SFTP/SCP over SSH, each serving the files of
//! one directory.
//!
//! ```text
//!  dir/ ──► HttpServer  (GET, HEAD, Range)                 http://addr/<file>
//!       ──► TftpServer  (RFC 1350 + blksize/tsize/timeout/windowsize) tftp://addr/<file>
//!       ──► FtpServer   (passive, binary; user/password or anonymous) ftp://addr/<file>
//!       ──► SshServer   (SFTP subsystem and `scp -f`; password and public key)
//!                                                 sftp://addr/<file>  scp://addr/<file>
//! ```
//!
//! Every server is started on a given address (port 0 for any free port),
//! reports its address, counts downloads in [`ServerStats`] and obeys a
//! [`FaultKnob`] that cuts the next transfers after a number of bytes, so
//! the upgrade tests can interrupt a transfer. Paths are relative to the
//! directory (a leading `/` is ignored) and never leave it.
//! `iosxe-sim serve-images` starts them all from the command line.

pub mod ftp;
pub mod http;
pub mod ssh;
pub mod tftp;

use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

pub use ftp::FtpServer;
pub use http::HttpServer;
pub use ssh::{SshAuth, SshServer};
pub use tftp::TftpServer;

/// What a server has served.
#[derive(Debug, Default)]
pub struct ServerStats {
    downloads: AtomicU64,
    completed: AtomicU64,
    bytes: AtomicU64,
    per_file: Mutex<std::collections::BTreeMap<String, u64>>,
}

impl ServerStats {
    /// Downloads started (a file found and its first byte about to be sent).
    pub fn downloads(&self) -> u64 {
        self.downloads.load(Ordering::SeqCst)
    }

    /// Downloads that sent their last byte.
    pub fn completed(&self) -> u64 {
        self.completed.load(Ordering::SeqCst)
    }

    /// Bytes of file content sent.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::SeqCst)
    }

    pub(crate) fn started(&self, file: &str) {
        self.downloads.fetch_add(1, Ordering::SeqCst);
        *self
            .per_file
            .lock()
            .unwrap()
            .entry(file.trim_start_matches('/').to_owned())
            .or_default() += 1;
    }

    pub(crate) fn sent(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::SeqCst);
    }

    pub(crate) fn finished(&self) {
        self.completed.fetch_add(1, Ordering::SeqCst);
    }
}

/// Cuts transfers: the next `times` downloads stop after `after_bytes`
/// bytes of content (the connection is closed, or for TFTP the server goes
/// silent).
#[derive(Debug, Default)]
pub struct FaultKnob {
    cut: Mutex<Option<(u64, u32)>>,
}

impl FaultKnob {
    /// Cuts the next `times` downloads after `after_bytes` bytes.
    pub fn cut_next(&self, after_bytes: u64, times: u32) {
        *self.cut.lock().unwrap() = (times > 0).then_some((after_bytes, times));
    }

    /// Clears the knob.
    pub fn clear(&self) {
        *self.cut.lock().unwrap() = None;
    }

    /// For a download about to start: after how many bytes to cut it.
    pub(crate) fn take(&self) -> Option<u64> {
        let mut g = self.cut.lock().unwrap();
        let (after, times) = (*g)?;
        *g = (times > 1).then_some((after, times - 1));
        Some(after)
    }
}

/// Maps a request path to a file under `root`: percent-decoded by the
/// caller, leading `/` ignored, no `..`, must be a regular file.
pub fn resolve(root: &Path, path: &str) -> Option<PathBuf> {
    let rel = Path::new(path.trim_start_matches('/'));
    let mut out = root.to_path_buf();
    for c in rel.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            _ => return None,
        }
    }
    (out != root && out.is_file()).then_some(out)
}

/// All four servers over one directory.
pub struct ImageServers {
    /// HTTP.
    pub http: HttpServer,
    /// TFTP.
    pub tftp: TftpServer,
    /// FTP.
    pub ftp: FtpServer,
    /// SFTP and SCP.
    pub ssh: SshServer,
}

/// Ports and credentials of [`ImageServers::start`].
#[derive(Debug, Clone)]
pub struct ImageServersConfig {
    /// Directory served.
    pub dir: PathBuf,
    /// Listen address (127.0.0.1 in tests).
    pub address: std::net::IpAddr,
    /// HTTP port (0: any).
    pub http_port: u16,
    /// TFTP port (0: any).
    pub tftp_port: u16,
    /// FTP control port (0: any).
    pub ftp_port: u16,
    /// SSH port (0: any).
    pub ssh_port: u16,
    /// FTP and SSH user; FTP also accepts `anonymous` when `ftp_anonymous`.
    pub username: String,
    /// FTP and SSH password.
    pub password: String,
    /// Whether FTP accepts `anonymous`.
    pub ftp_anonymous: bool,
    /// OpenSSH public keys (`ssh-ed25519 AAAA...`) the SSH server accepts.
    pub authorized_keys: Vec<String>,
}

impl ImageServersConfig {
    /// All servers on 127.0.0.1, any free port, user `cvk` / password `cvk`,
    /// anonymous FTP allowed.
    pub fn loopback(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            address: std::net::Ipv4Addr::LOCALHOST.into(),
            http_port: 0,
            tftp_port: 0,
            ftp_port: 0,
            ssh_port: 0,
            username: "cvk".into(),
            password: "cvk".into(),
            ftp_anonymous: true,
            authorized_keys: Vec::new(),
        }
    }
}

/// Addresses and the SSH host key, as written to `--ready-file`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ImageServersInfo {
    /// Directory served.
    pub dir: PathBuf,
    /// `http://host:port`.
    pub http: String,
    /// `tftp://host:port`.
    pub tftp: String,
    /// `ftp://host:port`.
    pub ftp: String,
    /// `sftp://host:port`.
    pub sftp: String,
    /// `scp://host:port`.
    pub scp: String,
    /// The SSH host key as a known_hosts line for the listen address.
    pub known_hosts: String,
}

impl ImageServers {
    /// Starts all four servers.
    pub async fn start(cfg: ImageServersConfig) -> std::io::Result<Self> {
        let sa = |port| std::net::SocketAddr::new(cfg.address, port);
        let http = HttpServer::start(&cfg.dir, sa(cfg.http_port)).await?;
        let tftp = TftpServer::start(&cfg.dir, sa(cfg.tftp_port)).await?;
        let ftp = FtpServer::start(
            &cfg.dir,
            sa(cfg.ftp_port),
            ftp::FtpAuth {
                username: cfg.username.clone(),
                password: cfg.password.clone(),
                anonymous: cfg.ftp_anonymous,
            },
        )
        .await?;
        let ssh = SshServer::start(
            &cfg.dir,
            sa(cfg.ssh_port),
            SshAuth {
                username: cfg.username.clone(),
                password: Some(cfg.password.clone()),
                authorized_keys: cfg.authorized_keys.clone(),
            },
        )
        .await?;
        Ok(Self {
            http,
            tftp,
            ftp,
            ssh,
        })
    }

    /// Addresses and host key.
    pub fn info(&self, dir: &Path) -> ImageServersInfo {
        let a = |s: std::net::SocketAddr| s.to_string();
        ImageServersInfo {
            dir: dir.to_owned(),
            http: format!("http://{}", a(self.http.addr())),
            tftp: format!("tftp://{}", a(self.tftp.addr())),
            ftp: format!("ftp://{}", a(self.ftp.addr())),
            sftp: format!("sftp://{}", a(self.ssh.addr())),
            scp: format!("scp://{}", a(self.ssh.addr())),
            known_hosts: self.ssh.known_hosts_line(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knob_cuts_the_next_n_downloads() {
        let k = FaultKnob::default();
        assert_eq!(k.take(), None);
        k.cut_next(10, 2);
        assert_eq!(k.take(), Some(10));
        assert_eq!(k.take(), Some(10));
        assert_eq!(k.take(), None);
        k.cut_next(5, 1);
        k.clear();
        assert_eq!(k.take(), None);
    }

    #[test]
    fn resolve_stays_inside_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("images")).unwrap();
        std::fs::write(dir.path().join("images/a.bin"), b"x").unwrap();
        assert!(resolve(dir.path(), "/images/a.bin").is_some());
        assert!(resolve(dir.path(), "images/./a.bin").is_some());
        assert!(resolve(dir.path(), "/images/../images/a.bin").is_none());
        assert!(resolve(dir.path(), "/images").is_none());
        assert!(resolve(dir.path(), "/").is_none());
        assert!(resolve(dir.path(), "/missing").is_none());
    }
}
