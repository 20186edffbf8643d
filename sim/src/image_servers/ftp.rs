//! FTP image server (read only): passive mode (`EPSV`, `PASV`), binary
//! `RETR`, `SIZE`, `CWD`, user/password or anonymous login.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::{FaultKnob, ServerStats, resolve};

/// Who may log in.
#[derive(Debug, Clone)]
pub struct FtpAuth {
    /// The one user.
    pub username: String,
    /// Its password.
    pub password: String,
    /// Whether `anonymous` (any password) may log in too.
    pub anonymous: bool,
}

/// A running FTP server; stops when dropped.
pub struct FtpServer {
    addr: SocketAddr,
    stats: Arc<ServerStats>,
    faults: Arc<FaultKnob>,
    stop: CancellationToken,
}

impl FtpServer {
    /// Serves `dir` on `addr` (port 0: any free port).
    pub async fn start(dir: &Path, addr: SocketAddr, auth: FtpAuth) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let stats = Arc::new(ServerStats::default());
        let faults = Arc::new(FaultKnob::default());
        let stop = CancellationToken::new();
        let ctx = Arc::new(Ctx {
            root: dir.to_owned(),
            auth,
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
                let ctx = Arc::clone(&ctx);
                let token = token.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        r = ctx.session(tcp) => {
                            if let Err(e) = r {
                                tracing::debug!(error = %e, "FTP session ended");
                            }
                        }
                        _ = token.cancelled() => {}
                    }
                });
            }
        });
        tracing::info!(%addr, dir = %dir.display(), "FTP image server listening");
        Ok(Self {
            addr,
            stats,
            faults,
            stop,
        })
    }

    /// The control address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `ftp://addr/<file>`.
    pub fn url(&self, file: &str) -> String {
        format!("ftp://{}/{}", self.addr, file.trim_start_matches('/'))
    }

    /// What it served.
    pub fn stats(&self) -> &Arc<ServerStats> {
        &self.stats
    }

    /// The cut-after-N-bytes knob (the data connection closes, 426).
    pub fn faults(&self) -> &Arc<FaultKnob> {
        &self.faults
    }
}

impl Drop for FtpServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

struct Ctx {
    root: PathBuf,
    auth: FtpAuth,
    stats: Arc<ServerStats>,
    faults: Arc<FaultKnob>,
}

/// Joins a client path onto the working directory ("/"-rooted).
fn join(cwd: &str, p: &str) -> String {
    if p.starts_with('/') {
        p.to_owned()
    } else if cwd.ends_with('/') {
        format!("{cwd}{p}")
    } else {
        format!("{cwd}/{p}")
    }
}

impl Ctx {
    async fn session(&self, tcp: TcpStream) -> std::io::Result<()> {
        let local_ip = tcp.local_addr()?.ip();
        let (r, mut w) = tcp.into_split();
        let mut lines = BufReader::new(r);
        w.write_all(b"220 iosxe-sim image server ready\r\n").await?;
        let mut user: Option<String> = None;
        let mut logged_in = false;
        let mut cwd = String::from("/");
        let mut passive: Option<TcpListener> = None;
        let mut line = String::new();
        loop {
            line.clear();
            let n = tokio::time::timeout(Duration::from_secs(300), lines.read_line(&mut line))
                .await
                .map_err(|_| std::io::Error::other("idle"))??;
            if n == 0 {
                return Ok(());
            }
            let text = line.trim_end_matches(['\r', '\n']);
            let (cmd, arg) = match text.split_once(' ') {
                Some((c, a)) => (c.to_ascii_uppercase(), a.to_owned()),
                None => (text.to_ascii_uppercase(), String::new()),
            };
            let needs_login = !matches!(
                cmd.as_str(),
                "USER" | "PASS" | "QUIT" | "SYST" | "FEAT" | "NOOP" | "OPTS" | "AUTH"
            );
            if needs_login && !logged_in {
                w.write_all(b"530 Please login with USER and PASS\r\n")
                    .await?;
                continue;
            }
            let reply: String = match cmd.as_str() {
                "USER" => {
                    user = Some(arg.clone());
                    logged_in = false;
                    "331 Password required\r\n".into()
                }
                "PASS" => {
                    let ok = match user.as_deref() {
                        Some("anonymous") | Some("ftp") => self.auth.anonymous,
                        Some(u) => u == self.auth.username && arg == self.auth.password,
                        None => false,
                    };
                    if ok {
                        logged_in = true;
                        "230 Logged in\r\n".into()
                    } else {
                        "530 Login incorrect\r\n".into()
                    }
                }
                "AUTH" => "502 TLS not offered\r\n".into(),
                "SYST" => "215 UNIX Type: L8\r\n".into(),
                "FEAT" => "211-Features:\r\n SIZE\r\n EPSV\r\n PASV\r\n211 End\r\n".into(),
                "NOOP" | "OPTS" | "MODE" | "STRU" => "200 OK\r\n".into(),
                "TYPE" => {
                    if arg.eq_ignore_ascii_case("I") || arg.eq_ignore_ascii_case("A") {
                        "200 Type set\r\n".into()
                    } else {
                        "504 Type not supported\r\n".into()
                    }
                }
                "PWD" => format!("257 \"{cwd}\" is the current directory\r\n"),
                "CWD" => {
                    let target = join(&cwd, &arg);
                    let dir = self.root.join(target.trim_start_matches('/'));
                    if !target.split('/').any(|c| c == "..") && dir.is_dir() {
                        cwd = target;
                        "250 Directory changed\r\n".into()
                    } else {
                        "550 No such directory\r\n".into()
                    }
                }
                "CDUP" => {
                    cwd = "/".into();
                    "250 Directory changed\r\n".into()
                }
                "SIZE" => match resolve(&self.root, &join(&cwd, &arg)) {
                    Some(p) => format!("213 {}\r\n", std::fs::metadata(p)?.len()),
                    None => "550 No such file\r\n".into(),
                },
                "EPSV" | "PASV" => {
                    let l = TcpListener::bind(SocketAddr::new(local_ip, 0)).await?;
                    let port = l.local_addr()?.port();
                    passive = Some(l);
                    if cmd == "EPSV" {
                        format!("229 Entering Extended Passive Mode (|||{port}|)\r\n")
                    } else {
                        match local_ip {
                            std::net::IpAddr::V4(v4) => {
                                let o = v4.octets();
                                format!(
                                    "227 Entering Passive Mode ({},{},{},{},{},{})\r\n",
                                    o[0],
                                    o[1],
                                    o[2],
                                    o[3],
                                    port >> 8,
                                    port & 0xff
                                )
                            }
                            std::net::IpAddr::V6(_) => "522 Use EPSV\r\n".into(),
                        }
                    }
                }
                "RETR" => {
                    let rel = join(&cwd, &arg);
                    let Some(path) = resolve(&self.root, &rel) else {
                        w.write_all(b"550 No such file\r\n").await?;
                        continue;
                    };
                    let Some(l) = passive.take() else {
                        w.write_all(b"425 Use PASV or EPSV first\r\n").await?;
                        continue;
                    };
                    let accepted = tokio::time::timeout(Duration::from_secs(10), l.accept()).await;
                    let Ok(Ok((data, _))) = accepted else {
                        w.write_all(b"425 No data connection\r\n").await?;
                        continue;
                    };
                    w.write_all(b"150 Opening BINARY mode data connection\r\n")
                        .await?;
                    match self.send_file(&rel, &path, data).await {
                        Ok(true) => "226 Transfer complete\r\n".into(),
                        Ok(false) => "426 Connection closed; transfer aborted\r\n".into(),
                        Err(_) => "451 Local error\r\n".into(),
                    }
                }
                "QUIT" => {
                    w.write_all(b"221 Bye\r\n").await?;
                    return Ok(());
                }
                "STOR" | "APPE" | "DELE" | "MKD" | "RMD" | "RNFR" | "RNTO" => {
                    "550 Read-only server\r\n".into()
                }
                _ => "502 Command not implemented\r\n".into(),
            };
            w.write_all(reply.as_bytes()).await?;
        }
    }

    /// Sends a file on the data connection; false when cut by the fault knob.
    async fn send_file(
        &self,
        rel: &str,
        path: &Path,
        mut data: TcpStream,
    ) -> std::io::Result<bool> {
        let mut f = tokio::fs::File::open(path).await?;
        self.stats.started(rel);
        let cut = self.faults.take();
        let mut buf = vec![0u8; 256 * 1024];
        let mut sent = 0u64;
        loop {
            let mut want = buf.len();
            if let Some(limit) = cut {
                if sent >= limit {
                    drop(data);
                    return Ok(false);
                }
                want = want.min((limit - sent) as usize);
            }
            let n = f.read(&mut buf[..want]).await?;
            if n == 0 {
                break;
            }
            data.write_all(&buf[..n]).await?;
            sent += n as u64;
            self.stats.sent(n as u64);
        }
        data.shutdown().await?;
        self.stats.finished();
        Ok(true)
    }
}
