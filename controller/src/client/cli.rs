//! The device CLI over SSH (russh), the way netmiko's `cisco_xe` and
//! scrapli's `IOSXEDriver` reach IOS-XE: one interactive shell on a PTY
//! (vt100, 200 columns) per session, the base prompt found at the very end
//! of what was read, `enable` when the prompt is `>` and an enable secret is
//! given, then `terminal length 0` and `terminal width 0` before the first
//! command. No Kubernetes types.
//!
//! * **Its own class.** `ClassCli` is a separate TCP connection with its own
//!   per-device session limit ([`CliSettings::sessions_per_device`]), so a
//!   long `show` never queues a gNOI probe behind it: the gRPC classes of
//!   [`super::WorkloadClass`] are not touched.
//! * **Host keys.** The server's key must match a knownHosts line
//!   ([`super::known_hosts`]); [`HostKeys::InsecureAcceptAny`] is the
//!   explicit, loudly named opt-out.
//! * **Output.** CRLF normalised, the echoed command line and the trailing
//!   prompt removed; an output whose last line is one of IOS-XE's error
//!   forms (`% Invalid input detected at '^' marker.`, `% Incomplete
//!   command.`, `% Ambiguous command: ...`, `% Unknown command ...`,
//!   authorization failures) is a per-output error that does not stop the
//!   batch. A prompt-like line inside the output does not end the read: the
//!   prompt must be the last thing received, with nothing following it
//!   within a short settle time.
//! * **Deadlines.** Connect and login within `connect_timeout`; every read
//!   within `command_timeout` (a session that timed out is closed, never
//!   reused).
//! * **Reuse.** [`CliPool::session`] hands out the device's idle session
//!   when its target is unchanged; [`PooledSession::release`] returns it,
//!   and a session idle for `idle_timeout` is closed with `exit`.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use russh::ChannelMsg;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::known_hosts::{self, HostKeyChecker, KnownHostsError};

/// Default SSH port of the device CLI.
pub const DEFAULT_SSH_PORT: u16 = 22;

/// How the server's host key is trusted.
#[derive(Clone, PartialEq, Eq)]
pub enum HostKeys {
    /// OpenSSH known_hosts text; the key must match a line naming the
    /// device's address and port.
    Known(String),
    /// Accept any key (lab only; the CiscoDevice says
    /// `insecureAcceptAnyHostKey: true`).
    InsecureAcceptAny,
}

impl fmt::Debug for HostKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Known(t) => write!(f, "Known({} lines)", t.lines().count()),
            Self::InsecureAcceptAny => f.write_str("InsecureAcceptAny"),
        }
    }
}

/// Where and how to log in to one device's CLI.
#[derive(Clone, PartialEq, Eq)]
pub struct CliTarget {
    /// Device name (pool key, logs).
    pub device: String,
    /// Address or DNS name.
    pub host: String,
    /// SSH port.
    pub port: u16,
    /// Login user.
    pub username: String,
    /// Login password (never logged).
    pub password: String,
    /// Secret for `enable` when the login lands in user exec (`>`).
    pub enable_secret: Option<String>,
    /// OpenSSH private key (unencrypted): public-key login is tried first,
    /// then the password (never logged).
    pub private_key: Option<String>,
    /// Host-key trust.
    pub host_keys: HostKeys,
}

impl fmt::Debug for CliTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CliTarget")
            .field("device", &self.device)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field(
                "enable_secret",
                &self.enable_secret.as_ref().map(|_| "<set>"),
            )
            .field("private_key", &self.private_key.as_ref().map(|_| "<set>"))
            .field("host_keys", &self.host_keys)
            .finish_non_exhaustive()
    }
}

impl CliTarget {
    /// `host:port`, bracketed for IPv6.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Timeouts and limits of the CLI class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliSettings {
    /// TCP connect, SSH handshake, login and the first prompt, each.
    pub connect_timeout: Duration,
    /// Longest wait for one command's output (30 s, as upstream).
    pub command_timeout: Duration,
    /// An idle session is closed after this long.
    pub idle_timeout: Duration,
    /// Sessions open to one device at once.
    pub sessions_per_device: usize,
    /// Quiet time after a prompt before the read is considered complete.
    pub settle: Duration,
}

impl Default for CliSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(15),
            command_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            sessions_per_device: 1,
            settle: Duration::from_millis(15),
        }
    }
}

/// Why a CLI session or command failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CliError {
    /// TCP or the SSH handshake failed.
    #[error("SSH to {addr} failed: {detail}")]
    Unreachable {
        /// `host:port`.
        addr: String,
        /// What failed.
        detail: String,
    },
    /// The server's host key is not trusted.
    #[error("SSH host key of {addr} rejected: {detail}")]
    HostKeyRejected {
        /// `host:port`.
        addr: String,
        /// The verdict.
        detail: String,
    },
    /// The knownHosts text does not parse.
    #[error("knownHosts {0}")]
    KnownHosts(KnownHostsError),
    /// The password was refused.
    #[error("SSH login as {user:?} refused by {addr}")]
    AuthFailed {
        /// `host:port`.
        addr: String,
        /// The user.
        user: String,
    },
    /// `enable` did not reach privileged exec.
    #[error("enable failed: {0}")]
    EnableFailed(String),
    /// No output (or prompt) within the deadline.
    #[error("{what} did not finish within {after:?}; last output: {tail:?}")]
    Timeout {
        /// The command, or the login step.
        what: String,
        /// The deadline.
        after: Duration,
        /// The end of what was read.
        tail: String,
    },
    /// The session ended (device reload, dropped connection).
    #[error("the SSH session ended{}: {detail}", .during.as_ref().map(|c| format!(" during {c:?}")).unwrap_or_default())]
    Closed {
        /// The command running, if any.
        during: Option<String>,
        /// What was seen.
        detail: String,
    },
}

impl CliError {
    /// Stable snake_case category (metric label).
    pub fn category(&self) -> &'static str {
        match self {
            Self::Unreachable { .. } => "unreachable",
            Self::HostKeyRejected { .. } => "host_key_rejected",
            Self::KnownHosts(_) => "known_hosts_invalid",
            Self::AuthFailed { .. } => "auth_failed",
            Self::EnableFailed(_) => "enable_failed",
            Self::Timeout { .. } => "timeout",
            Self::Closed { .. } => "closed",
        }
    }

    /// CamelCase reason for status and Events.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Unreachable { .. } => "SSHUnreachable",
            Self::HostKeyRejected { .. } => "SSHHostKeyRejected",
            Self::KnownHosts(_) => "SSHKnownHostsInvalid",
            Self::AuthFailed { .. } => "SSHAuthFailed",
            Self::EnableFailed(_) => "SSHEnableFailed",
            Self::Timeout { .. } => "CommandTimeout",
            Self::Closed { .. } => "SSHSessionClosed",
        }
    }
}

/// The output of one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutput {
    /// The command as sent.
    pub command: String,
    /// Its text, LF line ends, without the echo and the prompt.
    pub text: String,
    /// The IOS-XE error line when the device refused the command.
    pub error: Option<String>,
}

/// The error lines IOS-XE ends a refused command with: `% ` and a message
/// (`% Invalid input detected at '^' marker.`, `% Incomplete command.`,
/// `% Ambiguous command: ...`, `% Unknown command ...`, `% Capture point X
/// does not exist`, ...; syslog lines are `%FACILITY-...`, without the
/// space), or an AAA refusal.
const ERROR_PREFIXES: [&str; 2] = ["% ", "Command authorization failed"];

/// Whether the end of `text` is an IOS-XE prompt: the last line is a
/// hostname (letters, digits, `.`, `_`, `-`), an optional mode in
/// parentheses, then `#` or `>`. Returns (hostname, mode char).
pub fn trailing_prompt(text: &str) -> Option<(&str, char)> {
    let last = text.rsplit('\n').next()?.trim_end_matches([' ', '\r']);
    let last = last.rsplit('\r').next()?;
    let mode = last.chars().last().filter(|c| matches!(c, '#' | '>'))?;
    let body = &last[..last.len() - 1];
    let host = match body.find('(') {
        Some(i) if body.ends_with(')') => &body[..i],
        Some(_) => return None,
        None => body,
    };
    let ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    ok.then_some((host, mode))
}

/// Cleans one command's raw output: CRLF to LF, the echo and the trailing
/// prompt removed, and the error line recognised (pure).
pub fn clean_output(command: &str, raw: &str) -> CommandOutput {
    let norm = raw.replace("\r\n", "\n").replace('\r', "");
    let norm = if norm.contains('\u{8}') || norm.contains("--More--") {
        norm.split('\n').map(unpage).collect::<Vec<_>>().join("\n")
    } else {
        norm
    };
    let mut lines: Vec<&str> = norm.split('\n').collect();
    // The trailing prompt.
    if lines.last().is_some_and(|l| trailing_prompt(l).is_some()) {
        lines.pop();
    }
    // The echo: the first line is the command (possibly after the prompt).
    if lines
        .first()
        .is_some_and(|l| l.trim_end() == command || l.trim_end().ends_with(command))
    {
        lines.remove(0);
    }
    while lines.last().is_some_and(|l| l.trim().is_empty()) {
        lines.pop();
    }
    let error = lines
        .iter()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.trim())
        .filter(|l| ERROR_PREFIXES.iter().any(|p| l.starts_with(p)))
        .map(str::to_owned);
    let mut text = lines.join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    CommandOutput {
        command: command.to_owned(),
        text,
        error,
    }
}

/// One line as the terminal shows it: backspaces erase the character
/// before them (IOS-XE erases its ` --More-- ` pager mark that way), and a
/// pager mark left at the start of the line is removed.
fn unpage(line: &str) -> String {
    let mut out: Vec<char> = Vec::with_capacity(line.len());
    for c in line.chars() {
        if c == '\u{8}' {
            out.pop();
        } else {
            out.push(c);
        }
    }
    let text: String = out.into_iter().collect();
    let trimmed = text.trim_start();
    match trimmed.strip_prefix("--More--") {
        Some(rest) => rest.trim_start().to_owned(),
        None => text,
    }
}

/// One logged-in interactive session.
pub struct CliSession {
    handle: russh::client::Handle<HostKeyChecker>,
    channel: russh::Channel<russh::client::Msg>,
    hostname: String,
    privileged: bool,
    command_timeout: Duration,
    settle: Duration,
    broken: bool,
}

impl fmt::Debug for CliSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CliSession")
            .field("hostname", &self.hostname)
            .field("privileged", &self.privileged)
            .finish_non_exhaustive()
    }
}

impl CliSession {
    /// Connects, logs in, finds the prompt, enables when needed and turns
    /// paging off.
    pub async fn open(target: &CliTarget, settings: &CliSettings) -> Result<Self, CliError> {
        let addr = target.authority();
        let known = match &target.host_keys {
            HostKeys::InsecureAcceptAny => None,
            HostKeys::Known(text) => Some(known_hosts::parse(text).map_err(CliError::KnownHosts)?),
        };
        let unreachable = |detail: String| CliError::Unreachable {
            addr: addr.clone(),
            detail,
        };
        let handler = HostKeyChecker::new(&target.host, target.port, known);
        let rejected = handler.rejection();
        let config = Arc::new(russh::client::Config {
            inactivity_timeout: Some(settings.idle_timeout + settings.command_timeout),
            nodelay: true,
            ..Default::default()
        });
        let tcp = tokio::time::timeout(
            settings.connect_timeout,
            tokio::net::TcpStream::connect(addr.as_str()),
        )
        .await
        .map_err(|_| unreachable("connecting timed out".into()))?
        .map_err(|e| unreachable(format!("connecting: {e}")))?;
        // `Config::nodelay` applies only to russh's own connect: set it on the
        // stream, or Nagle holds small writes for the peer's delayed ACK.
        let _ = tcp.set_nodelay(true);
        let connected = tokio::time::timeout(
            settings.connect_timeout,
            russh::client::connect_stream(config, tcp, handler),
        )
        .await
        .map_err(|_| unreachable("the SSH handshake timed out".into()))?;
        let mut handle = match connected {
            Ok(h) => h,
            Err(e) => {
                if let Some(why) = rejected.lock().unwrap_or_else(|p| p.into_inner()).take() {
                    return Err(CliError::HostKeyRejected { addr, detail: why });
                }
                return Err(unreachable(format!("SSH handshake: {e}")));
            }
        };
        let mut logged_in = false;
        if let Some(text) = &target.private_key {
            let key =
                russh::keys::PrivateKey::from_openssh(text).map_err(|e| CliError::AuthFailed {
                    addr: addr.clone(),
                    user: format!("{} (sshPrivateKey does not parse: {e})", target.username),
                })?;
            let login = async {
                let hash = match handle.best_supported_rsa_hash().await {
                    Ok(h) => h.flatten(),
                    Err(_) => None,
                };
                let key = russh::keys::PrivateKeyWithHashAlg::new(Arc::new(key), hash);
                handle.authenticate_publickey(&target.username, key).await
            };
            let auth = tokio::time::timeout(settings.connect_timeout, login)
                .await
                .map_err(|_| unreachable("the SSH login timed out".into()))?
                .map_err(|e| unreachable(format!("SSH public-key login: {e}")))?;
            logged_in = auth.success();
        }
        if !logged_in && !target.password.is_empty() {
            let auth = tokio::time::timeout(
                settings.connect_timeout,
                handle.authenticate_password(&target.username, target.password.clone()),
            )
            .await
            .map_err(|_| unreachable("the SSH login timed out".into()))?
            .map_err(|e| unreachable(format!("SSH login: {e}")))?;
            logged_in = auth.success();
        }
        if !logged_in && handle.is_closed() {
            // Not a refusal: the server dropped the connection mid-login.
            return Err(unreachable(
                "the device closed the connection during the SSH login".into(),
            ));
        }
        if !logged_in {
            return Err(CliError::AuthFailed {
                addr,
                user: target.username.clone(),
            });
        }
        let channel = handle
            .channel_open_session()
            .await
            .map_err(|e| unreachable(format!("opening a session channel: {e}")))?;
        channel
            .request_pty(false, "vt100", 200, 24, 0, 0, &[])
            .await
            .map_err(|e| unreachable(format!("requesting a PTY: {e}")))?;
        channel
            .request_shell(false)
            .await
            .map_err(|e| unreachable(format!("starting the shell: {e}")))?;
        let mut s = Self {
            handle,
            channel,
            hostname: String::new(),
            privileged: false,
            command_timeout: settings.connect_timeout,
            settle: settings.settle,
            broken: false,
        };
        let first = s.read_to_prompt("the first prompt").await?;
        let (host, mode) = trailing_prompt(&first).ok_or_else(|| CliError::Closed {
            during: None,
            detail: "no prompt".into(),
        })?;
        s.hostname = host.to_owned();
        s.privileged = mode == '#';
        if !s.privileged
            && let Some(secret) = &target.enable_secret
        {
            s.enable(secret).await?;
        }
        s.command_timeout = settings.command_timeout;
        for setup in ["terminal length 0", "terminal width 0"] {
            let out = s.run(setup).await?;
            if let Some(e) = out.error {
                tracing::debug!(device = %target.device, command = setup, error = %e, "CLI set-up command refused");
            }
        }
        Ok(s)
    }

    /// The device's hostname, from its prompt.
    pub fn hostname(&self) -> &str {
        &self.hostname
    }

    /// Whether the session is in privileged exec (`#`).
    pub fn privileged(&self) -> bool {
        self.privileged
    }

    async fn enable(&mut self, secret: &str) -> Result<(), CliError> {
        self.send("enable\n").await?;
        let text = self
            .read_until("enable", |t| {
                t.trim_end().ends_with("Password:") || trailing_prompt(t).is_some()
            })
            .await?;
        if text.trim_end().ends_with("Password:") {
            self.send(&format!("{secret}\n")).await?;
            let after = self
                .read_until("enable", |t| {
                    t.trim_end().ends_with("Password:") || trailing_prompt(t).is_some()
                })
                .await?;
            if after.trim_end().ends_with("Password:") {
                // Asked again: the secret is wrong. The session is left
                // mid-prompt and is not reused.
                self.broken = true;
                return Err(CliError::EnableFailed(
                    "the enable secret was refused (Password: asked again)".into(),
                ));
            }
            let privileged = trailing_prompt(&after).is_some_and(|(_, m)| m == '#');
            if !privileged {
                return Err(CliError::EnableFailed(
                    "the enable secret was refused (prompt still ends in >)".into(),
                ));
            }
        } else if trailing_prompt(&text).is_none_or(|(_, m)| m != '#') {
            return Err(CliError::EnableFailed(format!(
                "enable answered {:?}",
                text.trim()
            )));
        }
        self.privileged = true;
        Ok(())
    }

    async fn send(&mut self, text: &str) -> Result<(), CliError> {
        self.channel.data(text.as_bytes()).await.map_err(|e| {
            self.broken = true;
            CliError::Closed {
                during: Some(text.trim_end().to_owned()),
                detail: e.to_string(),
            }
        })
    }

    /// Reads until the text ends in a prompt. Any hostname is accepted: a
    /// configuration change may rename the device between commands; the
    /// session follows it.
    async fn read_to_prompt(&mut self, what: &str) -> Result<String, CliError> {
        let text = self
            .read_until(what, |t| trailing_prompt(t).is_some())
            .await?;
        if let Some((host, _)) = trailing_prompt(&text) {
            self.hostname = host.to_owned();
        }
        Ok(text)
    }

    async fn read_until(
        &mut self,
        what: &str,
        done: impl Fn(&str) -> bool,
    ) -> Result<String, CliError> {
        let deadline = tokio::time::Instant::now() + self.command_timeout;
        let mut buf: Vec<u8> = Vec::new();
        // Set when the text ends as `done` wants; new data clears it, other
        // channel messages (window adjustments) do not move it.
        let mut quiet_until: Option<tokio::time::Instant> = None;
        loop {
            let text = String::from_utf8_lossy(&buf);
            if text.ends_with(" --More-- ") || text.ends_with("--More--") {
                // Paging still on (terminal length refused): page on.
                self.send(" ").await?;
            } else if done(&text) {
                // Complete only when nothing follows within the settle time.
                let until =
                    *quiet_until.get_or_insert_with(|| tokio::time::Instant::now() + self.settle);
                match tokio::time::timeout_at(until, self.channel.wait()).await {
                    Err(_) => return Ok(text.into_owned()),
                    Ok(Some(ChannelMsg::Data { data })) => {
                        buf.extend_from_slice(&data);
                        quiet_until = None;
                        continue;
                    }
                    Ok(Some(_)) => continue,
                    Ok(None) => return Ok(text.into_owned()),
                }
            }
            let msg = match tokio::time::timeout_at(deadline, self.channel.wait()).await {
                Ok(m) => m,
                Err(_) => {
                    self.broken = true;
                    let t = String::from_utf8_lossy(&buf);
                    let tail: String = t
                        .chars()
                        .rev()
                        .take(200)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect();
                    return Err(CliError::Timeout {
                        what: what.to_owned(),
                        after: self.command_timeout,
                        tail,
                    });
                }
            };
            match msg {
                Some(ChannelMsg::Data { data }) | Some(ChannelMsg::ExtendedData { data, .. }) => {
                    buf.extend_from_slice(&data);
                    quiet_until = None;
                }
                Some(ChannelMsg::Eof) | Some(ChannelMsg::Close) | None => {
                    self.broken = true;
                    return Err(CliError::Closed {
                        during: Some(what.to_owned()),
                        detail: "the device closed the session".into(),
                    });
                }
                Some(_) => {}
            }
        }
    }

    /// Runs one command and returns its cleaned output. A device-side
    /// refusal is in [`CommandOutput::error`]; `Err` means the session
    /// itself failed (and is not reused).
    pub async fn run(&mut self, command: &str) -> Result<CommandOutput, CliError> {
        self.send(&format!("{command}\n")).await?;
        let raw = self.read_to_prompt(command).await?;
        Ok(clean_output(command, &raw))
    }

    /// Whether the session can be reused.
    pub fn healthy(&self) -> bool {
        !self.broken && !self.channel_closed()
    }

    fn channel_closed(&self) -> bool {
        self.handle.is_closed()
    }

    /// Ends the session with `exit` and an SSH disconnect.
    pub async fn close(self) {
        if !self.broken {
            let _ = self.channel.data(&b"exit\n"[..]).await;
        }
        let _ = self
            .handle
            .disconnect(russh::Disconnect::ByApplication, "", "en")
            .await;
    }
}

/// Outcome labels of `cvk_cli_commands_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CliLabels {
    /// `ok`, `refused` (an IOS-XE error line) or a [`CliError::category`].
    pub outcome: String,
}

/// Metrics of the CLI class.
#[derive(Clone, Default, Debug)]
pub struct CliMetrics {
    /// Commands by outcome.
    pub commands: Family<CliLabels, Counter>,
    /// Sessions opened, by outcome.
    pub sessions: Family<CliLabels, Counter>,
}

impl CliMetrics {
    /// Registers the families.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "cvk_cli_commands",
            "Device CLI commands over SSH by outcome",
            self.commands.clone(),
        );
        registry.register(
            "cvk_cli_sessions",
            "Device CLI SSH sessions opened, by outcome",
            self.sessions.clone(),
        );
    }

    fn count(f: &Family<CliLabels, Counter>, outcome: &str) {
        f.get_or_create(&CliLabels {
            outcome: outcome.to_owned(),
        })
        .inc();
    }
}

struct Slot {
    target: CliTarget,
    gate: Arc<Semaphore>,
    idle: Vec<(CliSession, Instant)>,
}

type Slots = Arc<Mutex<HashMap<String, Slot>>>;

/// Per-device CLI sessions: a concurrency gate and idle sessions for reuse.
#[derive(Clone)]
pub struct CliPool {
    settings: CliSettings,
    slots: Slots,
    metrics: CliMetrics,
}

impl fmt::Debug for CliPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CliPool")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl CliPool {
    /// An empty pool.
    pub fn new(settings: CliSettings, metrics: CliMetrics) -> Self {
        Self {
            settings,
            slots: Arc::default(),
            metrics,
        }
    }

    /// The pool's settings.
    pub fn settings(&self) -> &CliSettings {
        &self.settings
    }

    /// Idle sessions held for `device`.
    pub fn idle_sessions(&self, device: &str) -> usize {
        self.slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(device)
            .map_or(0, |s| s.idle.len())
    }

    fn gate(&self, target: &CliTarget) -> (Arc<Semaphore>, Vec<CliSession>) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let n = self.settings.sessions_per_device.max(1);
        let slot = slots.entry(target.device.clone()).or_insert_with(|| Slot {
            target: target.clone(),
            gate: Arc::new(Semaphore::new(n)),
            idle: Vec::new(),
        });
        let mut stale = Vec::new();
        if slot.target != *target {
            // New address, credentials or trust: no old session is reused.
            stale.extend(slot.idle.drain(..).map(|(s, _)| s));
            slot.target = target.clone();
        }
        (Arc::clone(&slot.gate), stale)
    }

    /// A session to `target`: the device's idle one when healthy, else a
    /// new one. Waits while the device's session limit is in use.
    pub async fn session(&self, target: &CliTarget) -> Result<PooledSession, CliError> {
        let (gate, stale) = self.gate(target);
        for s in stale {
            s.close().await;
        }
        let permit = gate.acquire_owned().await.map_err(|_| CliError::Closed {
            during: None,
            detail: "the CLI pool is shutting down".into(),
        })?;
        let reused = {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            slots
                .get_mut(&target.device)
                .filter(|s| s.target == *target)
                .and_then(|s| s.idle.pop())
                .map(|(s, _)| s)
        };
        let session = match reused {
            Some(s) if s.healthy() => s,
            other => {
                if let Some(s) = other {
                    s.close().await;
                }
                match CliSession::open(target, &self.settings).await {
                    Ok(s) => {
                        CliMetrics::count(&self.metrics.sessions, "ok");
                        s
                    }
                    Err(e) => {
                        CliMetrics::count(&self.metrics.sessions, e.category());
                        return Err(e);
                    }
                }
            }
        };
        Ok(PooledSession {
            session: Some(session),
            target: target.clone(),
            _permit: permit,
            pool: self.clone(),
        })
    }

    fn put_back(&self, target: &CliTarget, session: CliSession) {
        let now = Instant::now();
        {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            match slots.get_mut(&target.device) {
                Some(slot) if slot.target == *target => slot.idle.push((session, now)),
                _ => {
                    drop(slots);
                    tokio::spawn(session.close());
                    return;
                }
            }
        }
        let slots = Arc::clone(&self.slots);
        let device = target.device.clone();
        let idle = self.settings.idle_timeout;
        tokio::spawn(async move {
            tokio::time::sleep(idle).await;
            let expired: Vec<CliSession> = {
                let mut slots = slots.lock().unwrap_or_else(|p| p.into_inner());
                let Some(slot) = slots.get_mut(&device) else {
                    return;
                };
                let (old, keep): (Vec<_>, Vec<_>) = slot
                    .idle
                    .drain(..)
                    .partition(|(_, since)| since.elapsed() >= idle);
                slot.idle = keep;
                old.into_iter().map(|(s, _)| s).collect()
            };
            for s in expired {
                tracing::debug!(device = %device, "closing an idle CLI session");
                s.close().await;
            }
        });
    }

    /// Closes every idle session (shutdown).
    pub async fn close_all(&self) {
        let all: Vec<CliSession> = {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            slots
                .values_mut()
                .flat_map(|s| s.idle.drain(..).map(|(s, _)| s))
                .collect()
        };
        for s in all {
            s.close().await;
        }
    }
}

/// A session lent by the pool; [`Self::release`] returns it for reuse,
/// dropping it closes the connection.
pub struct PooledSession {
    session: Option<CliSession>,
    target: CliTarget,
    _permit: OwnedSemaphorePermit,
    pool: CliPool,
}

impl fmt::Debug for PooledSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PooledSession")
            .field("device", &self.target.device)
            .field("session", &self.session)
            .finish_non_exhaustive()
    }
}

impl PooledSession {
    /// Runs one command (see [`CliSession::run`]), counted by outcome.
    pub async fn run(&mut self, command: &str) -> Result<CommandOutput, CliError> {
        let s = self.session.as_mut().ok_or_else(|| CliError::Closed {
            during: Some(command.to_owned()),
            detail: "session already released".into(),
        })?;
        let r = s.run(command).await;
        let outcome = match &r {
            Ok(o) if o.error.is_some() => "refused",
            Ok(_) => "ok",
            Err(e) => e.category(),
        };
        CliMetrics::count(&self.pool.metrics.commands, outcome);
        r
    }

    /// The device's hostname.
    pub fn hostname(&self) -> &str {
        self.session.as_ref().map_or("", |s| s.hostname())
    }

    /// Returns a healthy session to the pool for reuse; a broken one is
    /// closed.
    pub fn release(mut self) {
        if let Some(s) = self.session.take() {
            if s.healthy() {
                self.pool.put_back(&self.target, s);
            } else {
                tokio::spawn(s.close());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pager_marks_and_their_erasure_are_removed() {
        let erase = format!("{0}{1}{0}", "\u{8}".repeat(10), " ".repeat(10));
        let raw = format!(
            "show x\r\nline 1\r\nline 2\r\n --More-- {erase}line 3\r\n --More-- line 4\r\nsw1#"
        );
        let o = clean_output("show x", &raw);
        assert_eq!(o.text, "line 1\nline 2\nline 3\nline 4\n");
        assert_eq!(o.error, None);
    }

    #[test]
    fn prompts_are_found_only_at_the_end() {
        assert_eq!(trailing_prompt("banner\r\nsw1#"), Some(("sw1", '#')));
        assert_eq!(
            trailing_prompt("x\nedge-01.lab>"),
            Some(("edge-01.lab", '>'))
        );
        assert_eq!(trailing_prompt("x\nsw1(config)#"), Some(("sw1", '#')));
        assert_eq!(trailing_prompt("sw1# "), Some(("sw1", '#')));
        assert_eq!(trailing_prompt("sw1#\nInterface Gi1/0/1"), None);
        assert_eq!(trailing_prompt("Password:"), None);
        assert_eq!(trailing_prompt("a b#"), None);
        assert_eq!(trailing_prompt("#"), None);
        assert_eq!(trailing_prompt("sw1(config#"), None);
    }

    #[test]
    fn outputs_lose_echo_and_prompt_and_keep_error_lines() {
        let o = clean_output(
            "show clock",
            "show clock\r\n*10:00:00.000 UTC Thu Dec 3 2026\r\nsw1#",
        );
        assert_eq!(o.text, "*10:00:00.000 UTC Thu Dec 3 2026\n");
        assert_eq!(o.error, None);
        let o = clean_output(
            "show bogus",
            "show bogus\r\n      ^\r\n% Invalid input detected at '^' marker.\r\n\r\nsw1#",
        );
        assert_eq!(
            o.error.as_deref(),
            Some("% Invalid input detected at '^' marker.")
        );
        assert!(o.text.ends_with("marker.\n"), "{:?}", o.text);
        let o = clean_output("show", "show\r\n% Incomplete command.\r\n\r\nsw1#");
        assert_eq!(o.error.as_deref(), Some("% Incomplete command."));
        let o = clean_output(
            "show running-config",
            "show running-config\r\nhostname sw1\r\nsw1#notacommand\r\nend\r\n\r\nsw1#",
        );
        // A prompt-like line inside the output stays.
        assert_eq!(o.text, "hostname sw1\nsw1#notacommand\nend\n");
        assert_eq!(clean_output("x", "x\r\nsw1#").text, "");
    }

    #[test]
    fn errors_have_reasons_and_categories() {
        let e = CliError::AuthFailed {
            addr: "a:22".into(),
            user: "u".into(),
        };
        assert_eq!((e.reason(), e.category()), ("SSHAuthFailed", "auth_failed"));
        let e = CliError::Closed {
            during: Some("show version".into()),
            detail: "x".into(),
        };
        assert!(e.to_string().contains("during \"show version\""), "{e}");
        let t = CliTarget {
            device: "d".into(),
            host: "::1".into(),
            port: 22,
            username: "u".into(),
            password: "pw".into(),
            enable_secret: Some("en".into()),
            private_key: Some("-----BEGIN OPENSSH PRIVATE KEY-----".into()),
            host_keys: HostKeys::InsecureAcceptAny,
        };
        assert_eq!(t.authority(), "[::1]:22");
        let dbg = format!("{t:?}");
        assert!(
            !dbg.contains("pw") && !dbg.contains("\"en\"") && !dbg.contains("OPENSSH"),
            "{dbg}"
        );
    }
}
