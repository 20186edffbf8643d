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

use std::sync::Arc;

use russh::keys::PrivateKeyWithHashAlg;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::sink::Sink;
use super::url::{Scheme, SourceUrl};
use super::{SourceError, SourceSettings, UrlCredentials};
use crate::client::known_hosts::{self, HostKeyChecker};

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
        Some(
            known_hosts::parse(text).map_err(|e| SourceError::Credentials {
                key: "knownHosts".into(),
                reason: e.to_string(),
            })?,
        )
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
    let handler = HostKeyChecker::new(&url.host, url.port, known);
    let rejected = handler.rejection();
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
    // `Config::nodelay` applies only to russh's own connect: set it on the
    // stream, or Nagle holds small writes for the peer's delayed ACK.
    let _ = tcp.set_nodelay(true);
    let connected = tokio::time::timeout(
        settings.connect_timeout,
        russh::client::connect_stream(config, tcp, handler),
    )
    .await
    .map_err(|_| unreachable("SSH handshake timed out".into()))?;
    let mut session = match connected {
        Ok(s) => s,
        Err(e) => {
            if let Some(why) = rejected.lock().unwrap_or_else(|p| p.into_inner()).take() {
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

    #[test]
    fn quoting_and_paths() {
        assert_eq!(shell_quote("/a b/it's"), "'/a b/it'\\''s'");
        let u = SourceUrl::parse("sftp://h/~/img.bin").unwrap();
        assert_eq!(remote_path(&u), "img.bin");
        let u = SourceUrl::parse("sftp://h/images/img.bin").unwrap();
        assert_eq!(remote_path(&u), "/images/img.bin");
    }
}
