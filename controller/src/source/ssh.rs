//! `sftp://` and `scp://` over SSH (russh, ring). The server's host key must
//! match a knownHosts line from the urlSecretRef Secret; the check is
//! skipped only when the URL says `insecureSkipHostKey=true` (or
//! `insecure=true`) AND the controller runs with
//! `CISCO_VK_UPGRADE_ALLOW_INSECURE_SSH`. Authentication with the Secret's
//! private key (and passphrase) when set, else its password.
//!
//! Paths follow curl: `sftp://host/images/a.bin` is the absolute path
//! `/images/a.bin`; `sftp://host/~/a.bin` is `a.bin` in the login directory.
//! SCP runs `scp -f <path>` and speaks the source protocol's sink side.

use std::sync::{Arc, Mutex};

use hmac::{KeyInit, Mac};
use russh::keys::{PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::cache::Sink;
use super::url::{Scheme, SourceUrl};
use super::{SourceError, SourceSettings, UrlCredentials};

/// One known_hosts line, parsed.
#[derive(Debug, Clone)]
struct KnownHost {
    patterns: String,
    revoked: bool,
    key: PublicKey,
}

/// Parses known_hosts text; `@cert-authority` lines are skipped, bad lines
/// are errors naming the line.
fn parse_known_hosts(text: &str) -> Result<Vec<KnownHost>, SourceError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace().peekable();
        let mut revoked = false;
        if let Some(m) = fields.peek()
            && m.starts_with('@')
        {
            match *m {
                "@revoked" => revoked = true,
                _ => continue,
            }
            fields.next();
        }
        let bad = |why: &str| SourceError::Credentials {
            key: "knownHosts".into(),
            reason: format!("line {}: {why}", i + 1),
        };
        let patterns = fields.next().ok_or_else(|| bad("no host field"))?;
        let algo = fields.next().ok_or_else(|| bad("no key type"))?;
        let b64 = fields.next().ok_or_else(|| bad("no key"))?;
        let key = PublicKey::from_openssh(&format!("{algo} {b64}"))
            .map_err(|e| bad(&format!("key does not parse: {e}")))?;
        out.push(KnownHost {
            patterns: patterns.to_owned(),
            revoked,
            key,
        });
    }
    Ok(out)
}

/// Whether a known_hosts host field names `host` on `port`: plain names,
/// `[host]:port`, and hashed `|1|salt|hash` entries.
fn host_matches(patterns: &str, host: &str, port: u16) -> bool {
    let name = if port == 22 {
        host.to_owned()
    } else {
        format!("[{host}]:{port}")
    };
    patterns.split(',').any(|p| {
        if let Some(rest) = p.strip_prefix("|1|") {
            let mut parts = rest.split('|');
            let (Some(salt), Some(hash)) = (parts.next(), parts.next()) else {
                return false;
            };
            use base64::Engine;
            let b64 = base64::engine::general_purpose::STANDARD;
            let (Ok(salt), Ok(hash)) = (b64.decode(salt), b64.decode(hash)) else {
                return false;
            };
            let Ok(mac) = hmac::Hmac::<sha1::Sha1>::new_from_slice(&salt) else {
                return false;
            };
            mac.chain_update(name.as_bytes())
                .verify_slice(&hash)
                .is_ok()
        } else {
            p.eq_ignore_ascii_case(&name)
        }
    })
}

/// The verdict on a host key offered by a server.
fn check_host_key(
    known: &[KnownHost],
    host: &str,
    port: u16,
    offered: &PublicKey,
) -> Result<(), String> {
    let fp = offered.fingerprint(Default::default());
    let mut named = false;
    for k in known
        .iter()
        .filter(|k| host_matches(&k.patterns, host, port))
    {
        if k.key.key_data() == offered.key_data() {
            if k.revoked {
                return Err(format!("key {fp} is marked @revoked in knownHosts"));
            }
            return Ok(());
        }
        named |= !k.revoked;
    }
    Err(if named {
        format!(
            "the server offered {} key {fp}, which differs from the knownHosts entries for this host",
            offered.algorithm()
        )
    } else {
        format!(
            "no knownHosts entry names {}; the server offered {} key {fp}",
            if port == 22 {
                host.to_owned()
            } else {
                format!("[{host}]:{port}")
            },
            offered.algorithm()
        )
    })
}

struct Client {
    host: String,
    port: u16,
    /// `None`: the check is skipped (insecure opt-out).
    known: Option<Vec<KnownHost>>,
    rejected: Arc<Mutex<Option<String>>>,
}

impl russh::client::Handler for Client {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let Some(known) = &self.known else {
            return Ok(true);
        };
        let offered = match key {
            PublicKeyOrCertificate::PublicKey { key, .. } => key.clone(),
            PublicKeyOrCertificate::Certificate(c) => PublicKey::from(c.public_key().clone()),
        };
        match check_host_key(known, &self.host, self.port, &offered) {
            Ok(()) => Ok(true),
            Err(why) => {
                *self.rejected.lock().unwrap() = Some(why);
                Ok(false)
            }
        }
    }
}

/// Single-quotes a path for the remote shell.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The remote path of a URL: absolute, or relative to home after `/~/`.
fn remote_path(url: &SourceUrl) -> String {
    match url.path.strip_prefix("/~/") {
        Some(rel) => rel.to_owned(),
        None => url.path.clone(),
    }
}

pub(crate) async fn fetch(
    url: &SourceUrl,
    credentials: Option<&UrlCredentials>,
    settings: &SourceSettings,
    sink: &mut Sink<'_>,
) -> Result<(), SourceError> {
    let skip = url.insecure_skip_host_key && settings.allow_insecure_ssh;
    if url.insecure_skip_host_key && !settings.allow_insecure_ssh {
        tracing::warn!(url = %url.url, "insecureSkipHostKey=true ignored: CISCO_VK_UPGRADE_ALLOW_INSECURE_SSH is off");
    }
    let known = if skip {
        None
    } else {
        let text = credentials
            .and_then(|c| c.known_hosts.as_deref())
            .ok_or(SourceError::MissingKnownHosts)?;
        Some(parse_known_hosts(text)?)
    };
    let creds = credentials.ok_or_else(|| SourceError::Credentials {
        key: "username".into(),
        reason: format!(
            "is required for {} (no urlSecretRef Secret given)",
            url.scheme.as_str()
        ),
    })?;
    let user = creds
        .username
        .clone()
        .ok_or_else(|| SourceError::Credentials {
            key: "username".into(),
            reason: format!("is required for {}", url.scheme.as_str()),
        })?;
    if creds.password.is_none() && creds.private_key.is_none() {
        return Err(SourceError::Credentials {
            key: "password".into(),
            reason: format!("or privateKey is required for {}", url.scheme.as_str()),
        });
    }
    let unreachable = |detail: String| SourceError::Unreachable {
        url: url.url.clone(),
        detail,
    };
    let rejected = Arc::new(Mutex::new(None));
    let handler = Client {
        host: url.host.clone(),
        port: url.port,
        known,
        rejected: Arc::clone(&rejected),
    };
    let config = Arc::new(russh::client::Config {
        inactivity_timeout: Some(settings.idle_timeout),
        window_size: 8 * 1024 * 1024,
        nodelay: true,
        ..Default::default()
    });
    let tcp = tokio::time::timeout(
        settings.connect_timeout,
        tokio::net::TcpStream::connect(url.authority()),
    )
    .await
    .map_err(|_| unreachable(format!("connecting to {} timed out", url.authority())))?
    .map_err(|e| unreachable(format!("connecting to {}: {e}", url.authority())))?;
    let connected = tokio::time::timeout(
        settings.connect_timeout,
        russh::client::connect_stream(config, tcp, handler),
    )
    .await
    .map_err(|_| unreachable("SSH handshake timed out".into()))?;
    let mut session = match connected {
        Ok(s) => s,
        Err(e) => {
            if let Some(why) = rejected.lock().unwrap().take() {
                return Err(SourceError::HostKeyRejected {
                    host: url.authority(),
                    detail: why,
                });
            }
            return Err(unreachable(format!("SSH handshake: {e}")));
        }
    };
    let auth = if let Some(pem) = &creds.private_key {
        let key =
            russh::keys::decode_secret_key(pem, creds.passphrase.as_deref()).map_err(|e| {
                SourceError::Credentials {
                    key: "privateKey".into(),
                    reason: format!("does not decode (wrong passphrase?): {e}"),
                }
            })?;
        let hash = session
            .best_supported_rsa_hash()
            .await
            .map_err(|e| unreachable(format!("SSH: {e}")))?
            .flatten();
        session
            .authenticate_publickey(&user, PrivateKeyWithHashAlg::new(Arc::new(key), hash))
            .await
    } else {
        session
            .authenticate_password(&user, creds.password.clone().unwrap_or_default())
            .await
    }
    .map_err(|e| unreachable(format!("SSH authentication: {e}")))?;
    if !auth.success() {
        return Err(SourceError::AuthFailed {
            url: url.url.clone(),
            detail: format!(
                "user '{user}' refused ({})",
                if creds.private_key.is_some() {
                    "private key"
                } else {
                    "password"
                }
            ),
        });
    }
    let channel = session
        .channel_open_session()
        .await
        .map_err(|e| unreachable(format!("opening an SSH channel: {e}")))?;
    let path = remote_path(url);
    let result = match url.scheme {
        Scheme::Sftp => sftp(url, channel, &path, settings, sink).await,
        _ => scp(url, channel, &path, settings, sink).await,
    };
    let _ = session
        .disconnect(russh::Disconnect::ByApplication, "", "en")
        .await;
    result
}

async fn sftp(
    url: &SourceUrl,
    channel: russh::Channel<russh::client::Msg>,
    path: &str,
    settings: &SourceSettings,
    sink: &mut Sink<'_>,
) -> Result<(), SourceError> {
    use russh_sftp::client::error::Error as SftpError;
    use russh_sftp::protocol::StatusCode;
    let map = |what: &str, e: SftpError| -> SourceError {
        match &e {
            SftpError::Status(s) if s.status_code == StatusCode::NoSuchFile => {
                SourceError::NotFound {
                    url: url.url.clone(),
                    detail: format!("{what}: {e}"),
                }
            }
            SftpError::Status(s) if s.status_code == StatusCode::PermissionDenied => {
                SourceError::AuthFailed {
                    url: url.url.clone(),
                    detail: format!("{what}: {e}"),
                }
            }
            SftpError::Status(s) if s.status_code == StatusCode::OpUnsupported => {
                SourceError::Protocol {
                    url: url.url.clone(),
                    detail: format!("{what}: {e}"),
                }
            }
            _ => SourceError::Unreachable {
                url: url.url.clone(),
                detail: format!("{what}: {e}"),
            },
        }
    };
    channel
        .request_subsystem(true, "sftp")
        .await
        .map_err(|e| SourceError::Protocol {
            url: url.url.clone(),
            detail: format!("sftp subsystem refused: {e}"),
        })?;
    let session = russh_sftp::client::SftpSession::new(channel.into_stream())
        .await
        .map_err(|e| map("sftp init", e))?;
    session.set_timeout(settings.idle_timeout.as_secs().max(1));
    let size = session
        .metadata(path)
        .await
        .map_err(|e| map("stat", e))?
        .size;
    if let Some(s) = size {
        sink.announce_total(s)?;
    }
    let mut file = session.open(path).await.map_err(|e| map("open", e))?;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = tokio::time::timeout(settings.idle_timeout, file.read(&mut buf))
            .await
            .map_err(|_| SourceError::Unreachable {
                url: url.url.clone(),
                detail: format!("no data after {} bytes", sink.written()),
            })?
            .map_err(|e| SourceError::Unreachable {
                url: url.url.clone(),
                detail: format!("read after {} bytes: {e}", sink.written()),
            })?;
        if n == 0 {
            break;
        }
        sink.write(&buf[..n]).await?;
    }
    let _ = file.shutdown().await;
    let _ = session.close().await;
    if let Some(s) = size
        && s != sink.written()
    {
        return Err(SourceError::Unreachable {
            url: url.url.clone(),
            detail: format!("sftp read ended after {} of {s} bytes", sink.written()),
        });
    }
    Ok(())
}

async fn scp(
    url: &SourceUrl,
    channel: russh::Channel<russh::client::Msg>,
    path: &str,
    settings: &SourceSettings,
    sink: &mut Sink<'_>,
) -> Result<(), SourceError> {
    let unreachable = |detail: String| SourceError::Unreachable {
        url: url.url.clone(),
        detail,
    };
    let protocol = |detail: String| SourceError::Protocol {
        url: url.url.clone(),
        detail,
    };
    channel
        .exec(true, format!("scp -f {}", shell_quote(path)))
        .await
        .map_err(|e| protocol(format!("exec scp refused: {e}")))?;
    let mut stream = channel.into_stream();
    let idle = settings.idle_timeout;
    macro_rules! io {
        ($fut:expr, $what:expr) => {
            tokio::time::timeout(idle, $fut)
                .await
                .map_err(|_| {
                    unreachable(format!(
                        "{} timed out after {} bytes",
                        $what,
                        sink.written()
                    ))
                })?
                .map_err(|e| unreachable(format!("{} after {} bytes: {e}", $what, sink.written())))
        };
    }
    io!(stream.write_all(&[0]), "scp start")?;
    io!(stream.flush(), "scp start")?;
    // Header: C<mode> <size> <name>\n, or \x01/\x02 message.
    let mut header = Vec::with_capacity(128);
    loop {
        let mut b = [0u8; 1];
        io!(stream.read_exact(&mut b), "scp header")?;
        if b[0] == b'\n' {
            break;
        }
        header.push(b[0]);
        if header.len() > 4096 {
            return Err(protocol("scp header longer than 4 KiB".into()));
        }
    }
    let text = String::from_utf8_lossy(&header).into_owned();
    match header.first() {
        Some(1) | Some(2) => {
            let msg = text[1..].to_owned();
            return Err(
                if msg.contains("No such file") || msg.contains("not a regular file") {
                    SourceError::NotFound {
                        url: url.url.clone(),
                        detail: msg,
                    }
                } else if msg.contains("Permission denied") {
                    SourceError::AuthFailed {
                        url: url.url.clone(),
                        detail: msg,
                    }
                } else {
                    protocol(format!("scp: {msg}"))
                },
            );
        }
        Some(b'C') => {}
        _ => return Err(protocol(format!("unexpected scp header '{text}'"))),
    }
    let size: u64 = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| protocol(format!("bad scp header '{text}'")))?;
    sink.announce_total(size)?;
    io!(stream.write_all(&[0]), "scp ack")?;
    io!(stream.flush(), "scp ack")?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut left = size;
    while left > 0 {
        let want = buf.len().min(left as usize);
        let n = io!(stream.read(&mut buf[..want]), "scp data")?;
        if n == 0 {
            return Err(unreachable(format!(
                "scp stream closed after {} of {size} bytes",
                sink.written()
            )));
        }
        sink.write(&buf[..n]).await?;
        left -= n as u64;
    }
    let mut status = [0u8; 1];
    io!(stream.read_exact(&mut status), "scp trailer")?;
    if status[0] != 0 {
        return Err(protocol(format!(
            "scp ended with status byte {}",
            status[0]
        )));
    }
    let _ = stream.write_all(&[0]).await;
    let _ = stream.flush().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
    const OTHER: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGGQSAsZcH1+XQGW7PhdXB4YoY/3+3Ppk3sT1bHyD0Ri";

    #[test]
    fn known_hosts_match_plain_bracketed_and_hashed_names() {
        assert!(host_matches(
            "files.example.com,10.0.0.1",
            "files.example.com",
            22
        ));
        assert!(!host_matches(
            "files.example.com",
            "files.example.com",
            2222
        ));
        assert!(host_matches("[127.0.0.1]:2222", "127.0.0.1", 2222));
        // `ssh-keygen -H` form of "[127.0.0.1]:2222" with a fixed salt.
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        let salt = [7u8; 20];
        let mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(&salt)
            .unwrap()
            .chain_update(b"[127.0.0.1]:2222")
            .finalize()
            .into_bytes();
        let hashed = format!("|1|{}|{}", b64.encode(salt), b64.encode(mac));
        assert!(host_matches(&hashed, "127.0.0.1", 2222));
        assert!(!host_matches(&hashed, "127.0.0.1", 2223));
    }

    #[test]
    fn host_key_verdicts() {
        let known = parse_known_hosts(&format!(
            "# comment\n[127.0.0.1]:2222 {KEY}\n@cert-authority *.example.com {OTHER}\n"
        ))
        .unwrap();
        assert_eq!(known.len(), 1);
        let key = PublicKey::from_openssh(KEY).unwrap();
        let other = PublicKey::from_openssh(OTHER).unwrap();
        check_host_key(&known, "127.0.0.1", 2222, &key).unwrap();
        let e = check_host_key(&known, "127.0.0.1", 2222, &other).unwrap_err();
        assert!(e.contains("differs"), "{e}");
        let e = check_host_key(&known, "127.0.0.1", 22, &key).unwrap_err();
        assert!(e.contains("no knownHosts entry names 127.0.0.1"), "{e}");
        let revoked = parse_known_hosts(&format!("@revoked [127.0.0.1]:2222 {KEY}\n")).unwrap();
        let e = check_host_key(&revoked, "127.0.0.1", 2222, &key).unwrap_err();
        assert!(e.contains("@revoked"), "{e}");
    }

    #[test]
    fn bad_known_hosts_lines_are_named() {
        let e = parse_known_hosts("host ssh-ed25519\n").unwrap_err();
        assert!(
            e.to_string().contains("knownHosts") && e.to_string().contains("line 1"),
            "{e}"
        );
        let e = parse_known_hosts("\nhost ssh-ed25519 AAAA!!\n").unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
    }

    #[test]
    fn quoting_and_paths() {
        assert_eq!(shell_quote("/a b/it's"), "'/a b/it'\\''s'");
        let u = SourceUrl::parse("sftp://h/~/img.bin").unwrap();
        assert_eq!(remote_path(&u), "img.bin");
        let u = SourceUrl::parse("sftp://h/images/img.bin").unwrap();
        assert_eq!(remote_path(&u), "/images/img.bin");
    }
}
