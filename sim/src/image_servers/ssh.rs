//! SSH image server (russh): the `sftp` subsystem (read only: open, read,
//! stat, realpath, close) and `scp -f <path>` (the source side of the scp
//! protocol). Password and public-key authentication; a fresh Ed25519 host
//! key per server, exposed as a known_hosts line so tests can trust it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use russh::keys::ssh_key::LineEnding;
use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::{PrivateKey, PublicKey};
use russh::server::{Auth, ChannelOpenHandle, Msg, Session};
use russh::{Channel, ChannelId};
use russh_sftp::protocol::{
    Attrs, Data, FileAttributes, Handle, Name, OpenFlags, Status, StatusCode,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::{FaultKnob, ServerStats, resolve};

/// Who may log in.
#[derive(Debug, Clone, Default)]
pub struct SshAuth {
    /// The one user.
    pub username: String,
    /// Its password, if password login is allowed.
    pub password: Option<String>,
    /// OpenSSH public keys (`ssh-ed25519 AAAA... comment`) accepted for it.
    pub authorized_keys: Vec<String>,
}

/// A new Ed25519 key pair: (private key in OpenSSH PEM, public key line).
pub fn generate_ed25519() -> (String, String) {
    let key = PrivateKey::from(Ed25519Keypair::from_seed(&rand::random::<[u8; 32]>()));
    let private = key
        .to_openssh(LineEnding::LF)
        .expect("encode an Ed25519 key")
        .to_string();
    let public = key
        .public_key()
        .to_openssh()
        .expect("encode an Ed25519 public key");
    (private, public)
}

/// A running SSH server; stops when dropped.
pub struct SshServer {
    addr: SocketAddr,
    host_key: PublicKey,
    stats: Arc<ServerStats>,
    faults: Arc<FaultKnob>,
    stop: CancellationToken,
}

impl SshServer {
    /// Serves `dir` over SFTP and SCP on `addr` (port 0: any free port).
    pub async fn start(dir: &Path, addr: SocketAddr, auth: SshAuth) -> std::io::Result<Self> {
        let key = PrivateKey::from(Ed25519Keypair::from_seed(&rand::random::<[u8; 32]>()));
        let host_key = key.public_key().clone();
        let mut authorized = Vec::new();
        for k in &auth.authorized_keys {
            authorized.push(PublicKey::from_openssh(k.trim()).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("authorized key '{k}': {e}"),
                )
            })?);
        }
        let config = Arc::new(russh::server::Config {
            keys: vec![key],
            auth_rejection_time: Duration::from_millis(50),
            auth_rejection_time_initial: Some(Duration::ZERO),
            inactivity_timeout: Some(Duration::from_secs(300)),
            window_size: 8 * 1024 * 1024,
            nodelay: true,
            ..Default::default()
        });
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let stats = Arc::new(ServerStats::default());
        let faults = Arc::new(FaultKnob::default());
        let stop = CancellationToken::new();
        let ctx = Arc::new(Ctx {
            root: dir.to_owned(),
            username: auth.username,
            password: auth.password,
            authorized,
            stats: Arc::clone(&stats),
            faults: Arc::clone(&faults),
        });
        let token = stop.clone();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = tokio::select! {
                    r = listener.accept() => match r { Ok(c) => c, Err(_) => continue },
                    _ = token.cancelled() => return,
                };
                // As russh's own listener would with `Config::nodelay`.
                let _ = tcp.set_nodelay(true);
                let handler = Conn {
                    ctx: Arc::clone(&ctx),
                    channels: HashMap::new(),
                };
                let config = Arc::clone(&config);
                let token = token.clone();
                tokio::spawn(async move {
                    let Ok(session) = russh::server::run_stream(config, tcp, handler).await else {
                        return;
                    };
                    tokio::select! {
                        _ = session => {}
                        _ = token.cancelled() => {}
                    }
                });
            }
        });
        tracing::info!(%addr, dir = %dir.display(), "SSH (sftp, scp) image server listening");
        Ok(Self {
            addr,
            host_key,
            stats,
            faults,
            stop,
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `sftp://addr/<file>`.
    pub fn sftp_url(&self, file: &str) -> String {
        format!("sftp://{}/{}", self.addr, file.trim_start_matches('/'))
    }

    /// `scp://addr/<file>`.
    pub fn scp_url(&self, file: &str) -> String {
        format!("scp://{}/{}", self.addr, file.trim_start_matches('/'))
    }

    /// The host public key (`ssh-ed25519 AAAA...`).
    pub fn host_key_openssh(&self) -> String {
        self.host_key.to_openssh().expect("encode host key")
    }

    /// A known_hosts line for this server: `[127.0.0.1]:port ssh-ed25519 AAAA...`.
    pub fn known_hosts_line(&self) -> String {
        let host = match self.addr.ip() {
            std::net::IpAddr::V6(v6) => v6.to_string(),
            std::net::IpAddr::V4(v4) => v4.to_string(),
        };
        let host = if self.addr.port() == 22 {
            host
        } else {
            format!("[{host}]:{}", self.addr.port())
        };
        format!("{host} {}", self.host_key_openssh())
    }

    /// What it served (SFTP opens of a file and SCP sends both count).
    pub fn stats(&self) -> &Arc<ServerStats> {
        &self.stats
    }

    /// The cut-after-N-bytes knob (the session is closed mid-transfer).
    pub fn faults(&self) -> &Arc<FaultKnob> {
        &self.faults
    }
}

impl Drop for SshServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

struct Ctx {
    root: PathBuf,
    username: String,
    password: Option<String>,
    authorized: Vec<PublicKey>,
    stats: Arc<ServerStats>,
    faults: Arc<FaultKnob>,
}

struct Conn {
    ctx: Arc<Ctx>,
    channels: HashMap<ChannelId, Channel<Msg>>,
}

impl russh::server::Handler for Conn {
    type Error = russh::Error;

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        if user == self.ctx.username && self.ctx.password.as_deref() == Some(password) {
            Ok(Auth::Accept)
        } else {
            Ok(Auth::reject())
        }
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: russh::server::VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        let known = self
            .ctx
            .authorized
            .iter()
            .any(|k| k.key_data() == key.public_key.key_data());
        if user == self.ctx.username && known {
            Ok(Auth::Accept)
        } else {
            Ok(Auth::reject())
        }
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.insert(channel.id(), channel);
        reply.accept().await;
        Ok(())
    }

    async fn subsystem_request(
        &mut self,
        id: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        match (name, self.channels.remove(&id)) {
            ("sftp", Some(channel)) => {
                session.channel_success(id)?;
                let sftp = Sftp {
                    ctx: Arc::clone(&self.ctx),
                    handles: HashMap::new(),
                    next: 0,
                };
                tokio::spawn(russh_sftp::server::run(channel.into_stream(), sftp));
            }
            _ => session.channel_failure(id)?,
        }
        Ok(())
    }

    async fn exec_request(
        &mut self,
        id: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let cmd = String::from_utf8_lossy(data).into_owned();
        let Some((path, preserve)) = parse_scp_source(&cmd) else {
            session.channel_failure(id)?;
            return Ok(());
        };
        let Some(channel) = self.channels.remove(&id) else {
            session.channel_failure(id)?;
            return Ok(());
        };
        session.channel_success(id)?;
        let handle = session.handle();
        let ctx = Arc::clone(&self.ctx);
        tokio::spawn(async move {
            let code = match scp_send(&ctx, channel, &path, preserve).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(error = %e, "scp send ended");
                    1
                }
            };
            let _ = handle.exit_status_request(id, code).await;
            let _ = handle.eof(id).await;
            let _ = handle.close(id).await;
        });
        Ok(())
    }
}

/// `scp [-p] [-v] -f [--] <path>` (flags may be combined, as `-pf`):
/// the path and whether times are to be preserved (`-p`).
fn parse_scp_source(cmd: &str) -> Option<(String, bool)> {
    let rest = cmd.trim().strip_prefix("scp ")?;
    let mut from = false;
    let mut preserve = false;
    let mut rest = rest.trim_start();
    while let Some(flags) = rest.strip_prefix('-') {
        let (word, tail) = flags.split_once(' ')?;
        if word == "-" {
            rest = tail.trim_start();
            break;
        }
        for c in word.chars() {
            match c {
                'f' => from = true,
                'p' => preserve = true,
                'v' | 'q' | 'd' => {}
                _ => return None,
            }
        }
        rest = tail.trim_start();
    }
    (from && !rest.is_empty()).then(|| (unquote(rest), preserve))
}

/// Undoes the simple shell quoting a client applies (`'a b'`, `'it'\''s'`).
fn unquote(s: &str) -> String {
    let s = s.trim();
    if !s.contains('\'') {
        return s.to_owned();
    }
    let mut out = String::new();
    let mut quoted = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => quoted = !quoted,
            '\\' if !quoted => {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// The source side of `scp -f`: returns the exit status.
async fn scp_send(
    ctx: &Ctx,
    channel: Channel<Msg>,
    path: &str,
    preserve: bool,
) -> std::io::Result<u32> {
    let mut stream = channel.into_stream();
    let mut b = [0u8; 1];
    stream.read_exact(&mut b).await?;
    let Some(file) = resolve(&ctx.root, path) else {
        stream
            .write_all(format!("\x01scp: {path}: No such file or directory\n").as_bytes())
            .await?;
        stream.flush().await?;
        return Ok(1);
    };
    let f = std::fs::File::open(&file)?;
    let md = f.metadata()?;
    let size = md.len();
    if preserve {
        let secs = |t: std::io::Result<std::time::SystemTime>| {
            t.ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_secs())
                .unwrap_or(0)
        };
        let (m, a) = (secs(md.modified()), secs(md.accessed()));
        stream
            .write_all(format!("T{m} 0 {a} 0\n").as_bytes())
            .await?;
        stream.flush().await?;
        stream.read_exact(&mut b).await?;
        if b[0] != 0 {
            return Ok(1);
        }
    }
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    stream
        .write_all(format!("C0644 {size} {name}\n").as_bytes())
        .await?;
    stream.flush().await?;
    stream.read_exact(&mut b).await?;
    if b[0] != 0 {
        return Ok(1);
    }
    ctx.stats.started(path);
    let cut = ctx.faults.take();
    let mut buf = vec![0u8; 256 * 1024];
    let mut off = 0u64;
    while off < size {
        let mut want = buf.len().min((size - off) as usize);
        if let Some(limit) = cut {
            if off >= limit {
                // Fault: drop the channel mid-transfer.
                return Ok(1);
            }
            want = want.min((limit - off) as usize);
        }
        f.read_exact_at(&mut buf[..want], off)?;
        stream.write_all(&buf[..want]).await?;
        ctx.stats.sent(want as u64);
        off += want as u64;
    }
    stream.write_all(&[0]).await?;
    stream.flush().await?;
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut b)).await;
    ctx.stats.finished();
    Ok(0)
}

struct OpenFile {
    file: std::fs::File,
    rel: String,
    size: u64,
    cut: Option<u64>,
    counted_done: bool,
}

struct Sftp {
    ctx: Arc<Ctx>,
    handles: HashMap<String, OpenFile>,
    next: u64,
}

fn attrs_of(md: &std::fs::Metadata) -> FileAttributes {
    let mut a = FileAttributes::from(md);
    a.size = Some(md.len());
    a
}

impl russh_sftp::server::Handler for Sftp {
    type Error = StatusCode;

    fn unimplemented(&self) -> Self::Error {
        StatusCode::OpUnsupported
    }

    async fn realpath(&mut self, id: u32, path: String) -> Result<Name, Self::Error> {
        let p = if path == "." || path.is_empty() {
            "/".to_owned()
        } else if path.starts_with('/') {
            path
        } else {
            format!("/{path}")
        };
        Ok(Name {
            id,
            files: vec![russh_sftp::protocol::File::dummy(p)],
        })
    }

    async fn open(
        &mut self,
        id: u32,
        filename: String,
        pflags: OpenFlags,
        _attrs: FileAttributes,
    ) -> Result<Handle, Self::Error> {
        if pflags.intersects(
            OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::TRUNCATE | OpenFlags::APPEND,
        ) {
            return Err(StatusCode::PermissionDenied);
        }
        let path = resolve(&self.ctx.root, &filename).ok_or(StatusCode::NoSuchFile)?;
        let file = std::fs::File::open(&path).map_err(|_| StatusCode::NoSuchFile)?;
        let size = file.metadata().map_err(|_| StatusCode::Failure)?.len();
        self.ctx.stats.started(&filename);
        self.next += 1;
        let handle = format!("h{}", self.next);
        self.handles.insert(
            handle.clone(),
            OpenFile {
                file,
                rel: filename,
                size,
                cut: self.ctx.faults.take(),
                counted_done: false,
            },
        );
        Ok(Handle { id, handle })
    }

    async fn read(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        len: u32,
    ) -> Result<Data, Self::Error> {
        let of = self.handles.get_mut(&handle).ok_or(StatusCode::Failure)?;
        if offset >= of.size {
            if !of.counted_done {
                of.counted_done = true;
                self.ctx.stats.finished();
            }
            return Err(StatusCode::Eof);
        }
        let want = (len as u64).min(of.size - offset).min(256 * 1024) as usize;
        if let Some(limit) = of.cut
            && offset + want as u64 > limit
        {
            tracing::debug!(file = %of.rel, "sftp fault: cutting the transfer");
            return Err(StatusCode::ConnectionLost);
        }
        let mut buf = vec![0u8; want];
        of.file
            .read_exact_at(&mut buf, offset)
            .map_err(|_| StatusCode::Failure)?;
        self.ctx.stats.sent(want as u64);
        Ok(Data { id, data: buf })
    }

    async fn close(&mut self, id: u32, handle: String) -> Result<Status, Self::Error> {
        self.handles.remove(&handle);
        Ok(Status {
            id,
            status_code: StatusCode::Ok,
            error_message: "Ok".into(),
            language_tag: "en-US".into(),
        })
    }

    async fn stat(&mut self, id: u32, path: String) -> Result<Attrs, Self::Error> {
        let p = resolve(&self.ctx.root, &path).ok_or(StatusCode::NoSuchFile)?;
        let md = std::fs::metadata(p).map_err(|_| StatusCode::NoSuchFile)?;
        Ok(Attrs {
            id,
            attrs: attrs_of(&md),
        })
    }

    async fn lstat(&mut self, id: u32, path: String) -> Result<Attrs, Self::Error> {
        self.stat(id, path).await
    }

    async fn fstat(&mut self, id: u32, handle: String) -> Result<Attrs, Self::Error> {
        let of = self.handles.get(&handle).ok_or(StatusCode::Failure)?;
        let md = of.file.metadata().map_err(|_| StatusCode::Failure)?;
        Ok(Attrs {
            id,
            attrs: attrs_of(&md),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scp_source_commands() {
        assert_eq!(
            parse_scp_source("scp -f /images/a.bin"),
            Some(("/images/a.bin".into(), false))
        );
        assert_eq!(
            parse_scp_source("scp -pf '/a b.bin'"),
            Some(("/a b.bin".into(), true))
        );
        assert_eq!(
            parse_scp_source("scp -v -f -- /x"),
            Some(("/x".into(), false))
        );
        assert_eq!(parse_scp_source("scp -t /x"), None);
        assert_eq!(parse_scp_source("rm -rf /"), None);
    }

    #[test]
    fn unquotes_shell_words() {
        assert_eq!(unquote("/images/a.bin"), "/images/a.bin");
        assert_eq!(unquote("'/images/a b.bin'"), "/images/a b.bin");
        assert_eq!(unquote("'it'\\''s'"), "it's");
    }

    #[test]
    fn generated_keys_parse() {
        let (private, public) = generate_ed25519();
        assert!(private.contains("OPENSSH PRIVATE KEY"));
        assert!(PublicKey::from_openssh(&public).is_ok());
    }
}
