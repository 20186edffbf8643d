//! OpenSSH known_hosts: parsing and the host-key verdict, shared by the
//! image sources (scp/sftp) and the device CLI transport. Plain, bracketed
//! (`[host]:port`) and hashed (`|1|salt|hash`) host fields, `@revoked`
//! markers; `@cert-authority` lines are skipped.

use hmac::{KeyInit, Mac};
use russh::keys::PublicKey;

/// The russh client handler both SSH clients use: checks the server's key
/// against known_hosts lines (or accepts any with `known: None`, the
/// explicit insecure opt-out) and keeps why a key was refused, so the
/// caller can report it instead of russh's bare handshake error.
pub struct HostKeyChecker {
    host: String,
    port: u16,
    known: Option<Vec<KnownHost>>,
    rejected: std::sync::Arc<std::sync::Mutex<Option<String>>>,
}

impl HostKeyChecker {
    /// A checker for `host:port`; `known: None` accepts any key.
    pub fn new(host: &str, port: u16, known: Option<Vec<KnownHost>>) -> Self {
        Self {
            host: host.to_owned(),
            port,
            known,
            rejected: Default::default(),
        }
    }

    /// Where the refusal lands; read it after the handshake failed.
    pub fn rejection(&self) -> std::sync::Arc<std::sync::Mutex<Option<String>>> {
        std::sync::Arc::clone(&self.rejected)
    }
}

impl russh::client::Handler for HostKeyChecker {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let Some(known) = &self.known else {
            return Ok(true);
        };
        let offered = match key {
            russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } => key.clone(),
            russh::keys::PublicKeyOrCertificate::Certificate(c) => {
                PublicKey::from(c.public_key().clone())
            }
        };
        match check(known, &self.host, self.port, &offered) {
            Ok(()) => Ok(true),
            Err(why) => {
                *self.rejected.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
                Ok(false)
            }
        }
    }
}

/// A known_hosts line that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct KnownHostsError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub reason: String,
}

/// One known_hosts line, parsed.
#[derive(Debug, Clone)]
pub struct KnownHost {
    patterns: String,
    revoked: bool,
    key: PublicKey,
}

/// Parses known_hosts text; `@cert-authority` lines are skipped, bad lines
/// are errors naming the line.
pub fn parse(text: &str) -> Result<Vec<KnownHost>, KnownHostsError> {
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
        let bad = |why: &str| KnownHostsError {
            line: i + 1,
            reason: why.to_owned(),
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
pub fn host_matches(patterns: &str, host: &str, port: u16) -> bool {
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
pub fn check(
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
        let known = parse(&format!(
            "# comment\n[127.0.0.1]:2222 {KEY}\n@cert-authority *.example.com {OTHER}\n"
        ))
        .unwrap();
        assert_eq!(known.len(), 1);
        let key = PublicKey::from_openssh(KEY).unwrap();
        let other = PublicKey::from_openssh(OTHER).unwrap();
        check(&known, "127.0.0.1", 2222, &key).unwrap();
        let e = check(&known, "127.0.0.1", 2222, &other).unwrap_err();
        assert!(e.contains("differs"), "{e}");
        let e = check(&known, "127.0.0.1", 22, &key).unwrap_err();
        assert!(e.contains("no knownHosts entry names 127.0.0.1"), "{e}");
        let revoked = parse(&format!("@revoked [127.0.0.1]:2222 {KEY}\n")).unwrap();
        let e = check(&revoked, "127.0.0.1", 2222, &key).unwrap_err();
        assert!(e.contains("@revoked"), "{e}");
    }

    #[test]
    fn bad_known_hosts_lines_are_named() {
        let e = parse("host ssh-ed25519\n").unwrap_err();
        assert!(e.to_string().contains("line 1"), "{e}");
        let e = parse("\nhost ssh-ed25519 AAAA!!\n").unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
    }
}
