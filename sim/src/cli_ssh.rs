//! The device's SSH CLI (russh): an interactive exec shell (with or without
//! a PTY) and the exec channel, both answered by [`crate::cli`] from the
//! device model. Password login with the device's credentials (any password
//! when the device has none). The listener follows the device's power: it is
//! closed, and open sessions are dropped, while the device reboots.
//!
//! Faults use the RPC fault store with two pseudo-methods:
//! [`LOGIN`] (`status`/`unimplemented`: the password is refused; `latency`:
//! login is slow; `cut`/`stall`: the connection is dropped) and [`COMMAND`]
//! (`latency`: each command waits; `cut`/`stall`: the session is dropped
//! before the answer; `status`/`unimplemented`: `% Authorization failed.`).
//! A profile with `ssh_cli: false` serves no CLI at all.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use russh::keys::PrivateKey;
use russh::keys::PublicKey;
use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::server::{Auth, ChannelOpenHandle, Msg, Session};
use russh::{Channel, ChannelId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::cli::{CliSession, Reply};
use crate::device::{Device, Power};

/// Fault method matched at login.
pub const LOGIN: &str = "/cli.SSH/Login";
/// Fault method matched before each command.
pub const COMMAND: &str = "/cli.SSH/Command";

/// What a command fault does.
enum CommandFault {
    /// Drop the session without answering.
    Drop,
    /// Answer `% Authorization failed.`.
    Deny,
}

/// Applies the command faults (sleeping for latency).
async fn command_fault(device: &Device) -> Option<CommandFault> {
    match device.faults().take_rpc(COMMAND)? {
        crate::faults::FaultKind::Latency { ms } => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            None
        }
        crate::faults::FaultKind::Cut { .. } | crate::faults::FaultKind::Stall { .. } => {
            Some(CommandFault::Drop)
        }
        _ => Some(CommandFault::Deny),
    }
}

const DENIED: &str = "Command authorization failed.\n\n";

/// How the CLI behaves for its user.
#[derive(Debug, Clone, Default)]
pub struct CliOptions {
    /// The user starts in user exec (`>`) rather than privileged exec (`#`).
    pub user_exec: bool,
    /// Secret `enable` asks for.
    pub enable_secret: Option<String>,
}

/// A device's SSH CLI listener; stops when dropped.
pub struct CliServer {
    addr: SocketAddr,
    host_key: PublicKey,
    stop: CancellationToken,
}

impl CliServer {
    /// Serves `device`'s CLI on `addr` (port 0: a free port, kept across
    /// reboots). Binds at once when the device is up.
    pub async fn start(
        device: Arc<Device>,
        addr: SocketAddr,
        opts: CliOptions,
    ) -> std::io::Result<Self> {
        let key = PrivateKey::from(Ed25519Keypair::from_seed(&rand::random::<[u8; 32]>()));
        let host_key = key.public_key().clone();
        let config = Arc::new(russh::server::Config {
            keys: vec![key],
            auth_rejection_time: Duration::from_millis(50),
            auth_rejection_time_initial: Some(Duration::ZERO),
            inactivity_timeout: Some(Duration::from_secs(600)),
            nodelay: true,
            ..Default::default()
        });
        // Bind once now so the port is known (and fixed) before the first reboot.
        let first = tokio::net::TcpListener::bind(addr).await?;
        let addr = first.local_addr()?;
        let stop = CancellationToken::new();
        let token = stop.clone();
        let opts = Arc::new(opts);
        tokio::spawn(async move {
            let mut power = device.power_watch();
            let mut listener = Some(first);
            loop {
                if *power.borrow_and_update() == Power::Down {
                    listener = None;
                    tokio::select! {
                        r = power.changed() => if r.is_err() { return },
                        _ = token.cancelled() => return,
                    }
                    continue;
                }
                let l = match listener.take() {
                    Some(l) => l,
                    None => match tokio::net::TcpListener::bind(addr).await {
                        Ok(l) => l,
                        Err(e) => {
                            tracing::warn!(%addr, error = %e, "SSH CLI rebind failed; retrying");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    },
                };
                // Sessions of this power cycle end when it goes down.
                let cycle = token.child_token();
                loop {
                    tokio::select! {
                        r = l.accept() => {
                            let Ok((tcp, _)) = r else { continue };
                            // `Config::nodelay` only applies to russh's own
                            // listener: without this, Nagle holds each small
                            // answer for the peer's delayed ACK (~40 ms).
                            let _ = tcp.set_nodelay(true);
                            let conn = Conn {
                                device: Arc::clone(&device),
                                opts: Arc::clone(&opts),
                                channels: HashMap::new(),
                                pty: HashMap::new(),
                            };
                            let config = Arc::clone(&config);
                            let cycle = cycle.clone();
                            tokio::spawn(async move {
                                let Ok(session) = russh::server::run_stream(config, tcp, conn).await else {
                                    return;
                                };
                                let handle = session.handle();
                                tokio::select! {
                                    _ = session => {}
                                    _ = cycle.cancelled() => {
                                        // The session task runs on its own: end it
                                        // (and its channels) with the power cycle.
                                        let _ = handle
                                            .disconnect(
                                                russh::Disconnect::ByApplication,
                                                "device reloading".into(),
                                                String::new(),
                                            )
                                            .await;
                                    }
                                }
                            });
                        }
                        r = power.changed() => {
                            if r.is_err() { return }
                            if *power.borrow() == Power::Down {
                                cycle.cancel();
                                break;
                            }
                        }
                        _ = token.cancelled() => return,
                    }
                }
                drop(l);
            }
        });
        tracing::info!(%addr, "SSH CLI listening");
        Ok(Self {
            addr,
            host_key,
            stop,
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The host public key (`ssh-ed25519 AAAA...`).
    pub fn host_key_openssh(&self) -> String {
        self.host_key.to_openssh().expect("encode host key")
    }

    /// A known_hosts line: `[127.0.0.1]:port ssh-ed25519 AAAA...`.
    pub fn known_hosts_line(&self) -> String {
        let host = self.addr.ip().to_string();
        let host = if self.addr.port() == 22 {
            host
        } else {
            format!("[{host}]:{}", self.addr.port())
        };
        format!("{host} {}", self.host_key_openssh())
    }
}

impl Drop for CliServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

struct Conn {
    device: Arc<Device>,
    opts: Arc<CliOptions>,
    channels: HashMap<ChannelId, Channel<Msg>>,
    pty: HashMap<ChannelId, bool>,
}

impl Conn {
    fn session(&self) -> CliSession {
        CliSession::new(!self.opts.user_exec, self.opts.enable_secret.clone())
    }
}

impl russh::server::Handler for Conn {
    type Error = russh::Error;

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        match self.device.faults().take_rpc(LOGIN) {
            Some(crate::faults::FaultKind::Latency { ms }) => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            Some(crate::faults::FaultKind::Cut { .. } | crate::faults::FaultKind::Stall { .. }) => {
                return Err(russh::Error::Disconnect);
            }
            Some(_) => return Ok(Auth::reject()),
            None => {}
        }
        let ok = match self.device.credentials() {
            Some(c) => c.username == user && c.password == password,
            None => true,
        };
        Ok(if ok { Auth::Accept } else { Auth::reject() })
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

    #[allow(clippy::too_many_arguments)]
    async fn pty_request(
        &mut self,
        id: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.pty.insert(id, true);
        session.channel_success(id)?;
        Ok(())
    }

    async fn shell_request(
        &mut self,
        id: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(channel) = self.channels.remove(&id) else {
            session.channel_failure(id)?;
            return Ok(());
        };
        session.channel_success(id)?;
        let echo = self.pty.remove(&id).unwrap_or(false);
        let device = Arc::clone(&self.device);
        let cli = self.session();
        let handle = session.handle();
        tokio::spawn(async move {
            if let Err(e) = shell(device, cli, channel, echo).await {
                tracing::debug!(error = %e, "CLI shell ended");
            }
            let _ = handle.exit_status_request(id, 0).await;
            let _ = handle.eof(id).await;
            let _ = handle.close(id).await;
        });
        Ok(())
    }

    async fn exec_request(
        &mut self,
        id: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(channel) = self.channels.remove(&id) else {
            session.channel_failure(id)?;
            return Ok(());
        };
        session.channel_success(id)?;
        let line = String::from_utf8_lossy(data).into_owned();
        let device = Arc::clone(&self.device);
        let mut cli = self.session();
        let handle = session.handle();
        tokio::spawn(async move {
            let out = match command_fault(&device).await {
                Some(CommandFault::Drop) => {
                    let _ = handle.close(id).await;
                    return;
                }
                Some(CommandFault::Deny) => {
                    let mut stream = channel.into_stream();
                    let _ = stream.write_all(crlf(DENIED).as_bytes()).await;
                    let _ = stream.flush().await;
                    let _ = handle.exit_status_request(id, 1).await;
                    let _ = handle.eof(id).await;
                    let _ = handle.close(id).await;
                    return;
                }
                None => cli.run(&device, &line),
            };
            let out = match out {
                Reply::Output(o) => o,
                Reply::Exit => String::new(),
                Reply::Password => "% Password required, but none was sent\n".into(),
            };
            let failed = out.contains("\n% ") || out.starts_with("% ");
            let mut stream = channel.into_stream();
            let _ = stream.write_all(crlf(&out).as_bytes()).await;
            let _ = stream.flush().await;
            let _ = handle
                .exit_status_request(id, if failed { 1 } else { 0 })
                .await;
            let _ = handle.eof(id).await;
            let _ = handle.close(id).await;
        });
        Ok(())
    }
}

/// `\n` -> `\r\n`.
fn crlf(s: &str) -> String {
    s.replace('\n', "\r\n")
}

/// The interactive exec shell: echo (on a PTY), line editing (backspace,
/// Ctrl-U), `--More--` paging while `terminal length` is not 0.
async fn shell(
    device: Arc<Device>,
    mut cli: CliSession,
    channel: Channel<Msg>,
    echo: bool,
) -> std::io::Result<()> {
    let mut stream = channel.into_stream();
    let hostname = || device.snapshot().hostname;
    stream
        .write_all(format!("\r\n{}", cli.prompt(&hostname())).as_bytes())
        .await?;
    stream.flush().await?;
    let mut line: Vec<u8> = Vec::new();
    let mut buf = [0u8; 4096];
    let mut pending: std::collections::VecDeque<u8> = Default::default();
    loop {
        let b = match pending.pop_front() {
            Some(b) => b,
            None => {
                let n = stream.read(&mut buf).await?;
                if n == 0 {
                    return Ok(());
                }
                pending.extend(&buf[..n]);
                continue;
            }
        };
        match b {
            b'\r' | b'\n' => {
                // CRLF or LF alone both end a line.
                if b == b'\r' && pending.front() == Some(&b'\n') {
                    pending.pop_front();
                }
                let hidden = cli.awaiting_password();
                if echo || !hidden {
                    stream.write_all(b"\r\n").await?;
                }
                let text = String::from_utf8_lossy(&line).into_owned();
                line.clear();
                let reply = if hidden || text.trim().is_empty() {
                    cli.run(&device, &text)
                } else {
                    match command_fault(&device).await {
                        Some(CommandFault::Drop) => {
                            return Err(std::io::Error::new(
                                std::io::ErrorKind::ConnectionAborted,
                                "fault: session dropped",
                            ));
                        }
                        Some(CommandFault::Deny) => Reply::Output(DENIED.into()),
                        None => cli.run(&device, &text),
                    }
                };
                match reply {
                    Reply::Exit => {
                        stream.flush().await?;
                        return Ok(());
                    }
                    Reply::Password => {
                        stream.write_all(b"Password: ").await?;
                    }
                    Reply::Output(out) => {
                        page(&mut stream, &mut pending, &cli, &out).await?;
                        stream.write_all(cli.prompt(&hostname()).as_bytes()).await?;
                    }
                }
                stream.flush().await?;
            }
            0x08 | 0x7f if line.pop().is_some() && echo && !cli.awaiting_password() => {
                stream.write_all(b"\x08 \x08").await?;
                stream.flush().await?;
            }
            0x08 | 0x7f => {}
            0x15 => {
                if echo && !cli.awaiting_password() {
                    for _ in 0..line.len() {
                        stream.write_all(b"\x08 \x08").await?;
                    }
                    stream.flush().await?;
                }
                line.clear();
            }
            0x03 => {
                line.clear();
                stream
                    .write_all(format!("\r\n{}", cli.prompt(&hostname())).as_bytes())
                    .await?;
                stream.flush().await?;
            }
            b if b >= 0x20 => {
                line.push(b);
                if echo && !cli.awaiting_password() {
                    stream.write_all(&[b]).await?;
                    stream.flush().await?;
                }
            }
            _ => {}
        }
    }
}

/// Writes `out`, stopping at ` --More-- ` every `terminal length - 1` lines
/// until a key: space a page, Enter a line, anything else ends the output.
async fn page(
    stream: &mut russh::ChannelStream<Msg>,
    pending: &mut std::collections::VecDeque<u8>,
    cli: &CliSession,
    out: &str,
) -> std::io::Result<()> {
    let lines: Vec<&str> = out.split_inclusive('\n').collect();
    if cli.term_length == 0 || lines.len() < cli.term_length as usize {
        stream.write_all(crlf(out).as_bytes()).await?;
        return Ok(());
    }
    let page_len = (cli.term_length as usize).saturating_sub(1).max(1);
    let mut i = 0;
    let mut budget = page_len;
    let mut buf = [0u8; 64];
    while i < lines.len() {
        while budget > 0 && i < lines.len() {
            stream.write_all(crlf(lines[i]).as_bytes()).await?;
            i += 1;
            budget -= 1;
        }
        if i == lines.len() {
            break;
        }
        stream.write_all(b" --More-- ").await?;
        stream.flush().await?;
        let key = match pending.pop_front() {
            Some(k) => k,
            None => {
                let n = stream.read(&mut buf).await?;
                if n == 0 {
                    return Ok(());
                }
                pending.extend(&buf[1..n]);
                buf[0]
            }
        };
        stream.write_all(b"\x08\x08\x08\x08\x08\x08\x08\x08\x08\x08          \x08\x08\x08\x08\x08\x08\x08\x08\x08\x08").await?;
        match key {
            b' ' => budget = page_len,
            b'\r' | b'\n' => {
                if key == b'\r' && pending.front() == Some(&b'\n') {
                    pending.pop_front();
                }
                budget = 1;
            }
            _ => return Ok(()),
        }
    }
    Ok(())
}
