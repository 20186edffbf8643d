//! Image sources of `IOSXESoftwareUpgrade`: fetch an image from a URL
//! (`http`, `https`, `tftp`, `ftp`, `scp`, `sftp`), check its SHA-256 and
//! hand it on as a stream, through a content-addressed cache on disk.
//!
//! ```text
//!  ImageCache::open(FetchRequest{url, sha256, credentials})
//!     |  verified copy at <cache_dir>/sha256/<digest>? -> stream it from disk (pread, read-ahead)
//!     |  a download of <digest> in flight?             -> follow it
//!     v  else: spawn the download (outlives the caller), then follow it
//!  download task: scheme client -> Sink (size cap, 1 MiB batches)
//!     batch -> blocking thread: SHA-256 + write to the partial file
//!     batch -> Tee: the same bytes to every live reader (no copy, no disk read)
//!     -> digest == sha256 ? rename into <cache_dir>/sha256/<digest> : delete, DigestMismatch
//!  reader (ImageStream): live batches while it keeps up, the partial file for
//!     what it missed; ends with None only once the digest matched, else Err
//! ```
//!
//! The bytes pass the network once, the hasher once and the disk once: the
//! first device of a download gets them straight from the download (a tee),
//! later devices read the verified file. The image is never held in memory
//! beyond a few 1 MiB batches per download. Many devices upgrading to one
//! image, and the retries of one device, share one download (single flight).

mod cache;
mod ftp;
mod http;
mod sink;
mod ssh;
mod stream;
mod tftp;
mod url;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::reason::SourceReason;

pub use cache::ImageCache;
pub use stream::{ImageStream, ReadCounters};
pub use url::{Scheme, SourceUrl};

/// Size of the chunks an [`ImageStream`] yields: the default OS.Install
/// chunk size, so that the installer sends each one as it is, without
/// gathering pieces into a new buffer.
pub const STREAM_CHUNK: usize = crate::client::os::DEFAULT_CHUNK_BYTES;

/// Credentials from the `urlSecretRef` Secret.
///
/// Keys: `username`, `password`, `privateKey`, `passphrase`, `knownHosts` or
/// `known_hosts` (see the upstream API reference, "urlSecretRef Secret
/// contract"). The allowlist keys `allowedScheme`, `allowedHost` and
/// `allowedPort` are kept when present and checked against the URL by
/// [`UrlCredentials::check_allowed`].
#[derive(Clone, Default, PartialEq, Eq)]
pub struct UrlCredentials {
    /// `username`.
    pub username: Option<String>,
    /// `password` (ftp, scp, sftp).
    pub password: Option<String>,
    /// `privateKey`: an OpenSSH or PEM private key (scp, sftp).
    pub private_key: Option<String>,
    /// `passphrase` of the private key.
    pub passphrase: Option<String>,
    /// `knownHosts` / `known_hosts`: OpenSSH known_hosts lines (scp, sftp).
    pub known_hosts: Option<String>,
    /// `allowedScheme`.
    pub allowed_scheme: Option<String>,
    /// `allowedHost`.
    pub allowed_host: Option<String>,
    /// `allowedPort`.
    pub allowed_port: Option<u16>,
}

impl std::fmt::Debug for UrlCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UrlCredentials")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field(
                "private_key",
                &self.private_key.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "passphrase",
                &self.passphrase.as_ref().map(|_| "<redacted>"),
            )
            .field("known_hosts", &self.known_hosts.as_ref().map(|k| k.len()))
            .field("allowed_scheme", &self.allowed_scheme)
            .field("allowed_host", &self.allowed_host)
            .field("allowed_port", &self.allowed_port)
            .finish()
    }
}

impl UrlCredentials {
    /// From a Secret's data; errors name the missing/invalid key.
    pub fn from_secret_data(
        data: &BTreeMap<String, k8s_openapi::ByteString>,
    ) -> Result<Self, SourceError> {
        let text = |key: &str| -> Result<Option<String>, SourceError> {
            match data.get(key) {
                None => Ok(None),
                Some(v) => {
                    let s =
                        String::from_utf8(v.0.clone()).map_err(|_| SourceError::Credentials {
                            key: key.to_owned(),
                            reason: "is not UTF-8 text".into(),
                        })?;
                    Ok(Some(s))
                }
            }
        };
        let non_empty = |key: &str, v: Option<String>| -> Result<Option<String>, SourceError> {
            match v {
                Some(s) if s.trim().is_empty() => Err(SourceError::Credentials {
                    key: key.to_owned(),
                    reason: "is empty".into(),
                }),
                other => Ok(other),
            }
        };
        let username = non_empty("username", text("username")?.map(|u| u.trim().to_owned()))?;
        let password = text("password")?;
        let private_key = non_empty("privateKey", text("privateKey")?)?;
        let passphrase = text("passphrase")?;
        let known_hosts = match (text("knownHosts")?, text("known_hosts")?) {
            (Some(a), Some(b)) if a != b => {
                return Err(SourceError::Credentials {
                    key: "knownHosts".into(),
                    reason: "knownHosts and known_hosts are both set and differ; set one".into(),
                });
            }
            (Some(a), _) => Some(a),
            (None, b) => b,
        };
        let known_hosts = non_empty("knownHosts", known_hosts)?;
        if (password.is_some() || private_key.is_some()) && username.is_none() {
            return Err(SourceError::Credentials {
                key: "username".into(),
                reason: "is required with password or privateKey".into(),
            });
        }
        if passphrase.is_some() && private_key.is_none() {
            return Err(SourceError::Credentials {
                key: "passphrase".into(),
                reason: "is set without privateKey".into(),
            });
        }
        if let Some(pk) = &private_key
            && !pk.contains("PRIVATE KEY-----")
        {
            return Err(SourceError::Credentials {
                key: "privateKey".into(),
                reason:
                    "is not a PEM or OpenSSH private key (no '-----BEGIN ... PRIVATE KEY-----')"
                        .into(),
            });
        }
        let allowed_port =
            match text("allowedPort")? {
                None => None,
                Some(p) => Some(p.trim().parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(
                    || SourceError::Credentials {
                        key: "allowedPort".into(),
                        reason: format!("'{p}' is not a TCP port (1-65535)"),
                    },
                )?),
            };
        Ok(Self {
            username,
            password,
            private_key,
            passphrase,
            known_hosts,
            allowed_scheme: text("allowedScheme")?.map(|s| s.trim().to_ascii_lowercase()),
            allowed_host: text("allowedHost")?.map(|s| s.trim().to_owned()),
            allowed_port,
        })
    }

    /// Checks the Secret's `allowedScheme`, `allowedHost` and `allowedPort`
    /// (those that are set) against the URL's canonical endpoint: scheme and
    /// host compare case-insensitively, a trailing DNS dot is ignored, a
    /// missing port is the scheme's default.
    pub fn check_allowed(&self, url: &SourceUrl) -> Result<(), SourceError> {
        if let Some(s) = &self.allowed_scheme
            && s != url.scheme.as_str()
        {
            return Err(SourceError::Credentials {
                key: "allowedScheme".into(),
                reason: format!("is '{s}' but the URL's scheme is '{}'", url.scheme.as_str()),
            });
        }
        if let Some(h) = &self.allowed_host
            && url::canonical_host(h) != url::canonical_host(&url.host)
        {
            return Err(SourceError::Credentials {
                key: "allowedHost".into(),
                reason: format!("is '{h}' but the URL's host is '{}'", url.host),
            });
        }
        if let Some(p) = self.allowed_port
            && p != url.port
        {
            return Err(SourceError::Credentials {
                key: "allowedPort".into(),
                reason: format!("is {p} but the URL's port is {}", url.port),
            });
        }
        Ok(())
    }
}

/// One image to fetch.
#[derive(Debug, Clone)]
pub struct FetchRequest {
    /// `spec.imageSource.url`.
    pub url: String,
    /// `spec.imageSource.sha256`: 64 lowercase hex digits.
    pub sha256: String,
    /// From `spec.imageSource.urlSecretRef`.
    pub credentials: Option<UrlCredentials>,
}

/// How the cache and the scheme clients behave.
#[derive(Debug, Clone)]
pub struct SourceSettings {
    /// Cache directory (`CVK_IMAGE_CACHE_DIR`); created with mode 0700.
    pub cache_dir: PathBuf,
    /// Largest image accepted (`CISCO_VK_UPGRADE_MAX_IMAGE_BYTES`).
    pub max_image_bytes: u64,
    /// Whether `insecureSkipHostKey=true` in an scp/sftp URL may skip the
    /// host-key check (`CISCO_VK_UPGRADE_ALLOW_INSECURE_SSH`).
    pub allow_insecure_ssh: bool,
    /// Downloads running at once (`CVK_MAX_CONCURRENT_TRANSFERS`); more wait.
    pub max_concurrent_fetches: usize,
    /// Largest total size of verified images kept; unused entries are
    /// evicted, least recently used first, when a new image lands.
    pub max_cache_bytes: u64,
    /// TCP connect (and SSH handshake) timeout.
    pub connect_timeout: Duration,
    /// Longest wait for the next bytes from a source before the download is
    /// abandoned as unreachable.
    pub idle_timeout: Duration,
    /// Cap on one whole download (upstream: 4 h per materialization).
    pub fetch_timeout: Duration,
    /// Extra CA certificates (PEM) trusted for https besides the native roots.
    pub extra_ca_pem: Option<String>,
    /// TFTP options the client asks for.
    pub tftp: TftpOptions,
}

/// TFTP options requested by the client (RFC 2347/2348/2349/7440).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TftpOptions {
    /// `blksize` (8..=65464); 512 is the protocol's default and is not asked for.
    pub blksize: u16,
    /// `windowsize` (1..=65535); 1 is not asked for.
    pub windowsize: u16,
    /// Timeout of one exchange before a retransmit.
    pub timeout: Duration,
    /// Retransmits of one packet before the transfer is abandoned.
    pub retries: u32,
}

impl Default for TftpOptions {
    fn default() -> Self {
        // Measured over loopback (tests/source_bench.rs): 8192 x 8 is the
        // fastest; a window of 16 such blocks overflows the default 208 KiB
        // UDP receive buffer and loses datagrams every window.
        Self {
            blksize: 8192,
            windowsize: 8,
            timeout: Duration::from_secs(2),
            retries: 5,
        }
    }
}

impl SourceSettings {
    /// Settings with the defaults of `cvk-controller run` and the given cache
    /// directory.
    pub fn new(cache_dir: impl Into<PathBuf>) -> Self {
        Self {
            cache_dir: cache_dir.into(),
            max_image_bytes: crate::config::DEFAULT_MAX_IMAGE_BYTES,
            allow_insecure_ssh: false,
            max_concurrent_fetches: 4,
            max_cache_bytes: 32 * 1024 * 1024 * 1024,
            connect_timeout: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(60),
            fetch_timeout: Duration::from_secs(4 * 3600),
            extra_ca_pem: None,
            tftp: TftpOptions::default(),
        }
    }

    /// From the flags of `cvk-controller run`.
    pub fn from_run_args(args: &crate::config::RunArgs) -> Self {
        let mut s = Self::new(args.image_cache_dir.clone());
        s.max_image_bytes = args.upgrade_max_image_bytes;
        s.allow_insecure_ssh = args.allow_insecure_ssh;
        s.max_concurrent_fetches = args.max_concurrent_transfers.max(1) as usize;
        s
    }
}

/// Why an image could not be fetched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// The URL does not parse or breaks a rule.
    #[error("invalid image URL '{url}': {reason}")]
    InvalidUrl {
        /// The URL (without credentials).
        url: String,
        /// The rule it breaks.
        reason: String,
    },
    /// The scheme is none of http, https, tftp, ftp, scp, sftp.
    #[error("unsupported URL scheme '{scheme}' (use http, https, tftp, ftp, scp or sftp)")]
    UnsupportedScheme {
        /// The scheme given.
        scheme: String,
    },
    /// The server says the file does not exist.
    #[error("image not found at {url}: {detail}")]
    NotFound {
        /// The URL.
        url: String,
        /// The server's answer.
        detail: String,
    },
    /// The server refused the credentials.
    #[error("authentication to {url} failed: {detail}")]
    AuthFailed {
        /// The URL.
        url: String,
        /// What was refused.
        detail: String,
    },
    /// The SSH server's host key is not in knownHosts (or differs).
    #[error("host key of {host} rejected: {detail}")]
    HostKeyRejected {
        /// `host:port`.
        host: String,
        /// The key offered and why it was refused.
        detail: String,
    },
    /// scp/sftp without knownHosts in the Secret and without the opt-out.
    #[error(
        "scp and sftp need the server's host key: set knownHosts (or known_hosts) in the urlSecretRef Secret, \
         or for labs add insecureSkipHostKey=true to the URL and run the controller with \
         CISCO_VK_UPGRADE_ALLOW_INSECURE_SSH=true"
    )]
    MissingKnownHosts,
    /// The image is larger than `CISCO_VK_UPGRADE_MAX_IMAGE_BYTES`.
    #[error(
        "image is {size} bytes, over the limit of {limit} bytes (CISCO_VK_UPGRADE_MAX_IMAGE_BYTES)"
    )]
    TooLarge {
        /// Size announced or counted so far.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The bytes do not hash to the requested SHA-256.
    #[error("image digest mismatch: expected sha256 {expected}, got {actual}")]
    DigestMismatch {
        /// `spec.imageSource.sha256`.
        expected: String,
        /// SHA-256 of the bytes received.
        actual: String,
    },
    /// Connection refused, reset, closed early or timed out: a retry may help.
    #[error("image source {url} unreachable: {detail}")]
    Unreachable {
        /// The URL.
        url: String,
        /// What happened.
        detail: String,
    },
    /// The server answered outside its protocol.
    #[error("image source {url}: protocol error: {detail}")]
    Protocol {
        /// The URL.
        url: String,
        /// What was wrong.
        detail: String,
    },
    /// Local I/O (the cache directory).
    #[error("image cache I/O error: {detail}")]
    Io {
        /// What failed.
        detail: String,
    },
    /// The urlSecretRef Secret lacks a key or holds a bad value.
    #[error("urlSecretRef Secret: key '{key}' {reason}")]
    Credentials {
        /// The key.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl SourceError {
    /// CamelCase reason for status and Events.
    pub fn reason(&self) -> SourceReason {
        match self {
            SourceError::InvalidUrl { .. } => SourceReason::InvalidUrl,
            SourceError::UnsupportedScheme { .. } => SourceReason::UnsupportedScheme,
            SourceError::NotFound { .. } => SourceReason::NotFound,
            SourceError::AuthFailed { .. } => SourceReason::AuthFailed,
            SourceError::HostKeyRejected { .. } => SourceReason::HostKeyRejected,
            SourceError::MissingKnownHosts => SourceReason::MissingKnownHosts,
            SourceError::TooLarge { .. } => SourceReason::TooLarge,
            SourceError::DigestMismatch { .. } => SourceReason::DigestMismatch,
            SourceError::Unreachable { .. } => SourceReason::Unreachable,
            SourceError::Protocol { .. } => SourceReason::ProtocolError,
            SourceError::Io { .. } => SourceReason::CacheIoError,
            SourceError::Credentials { .. } => SourceReason::CredentialsInvalid,
        }
    }

    /// Whether a retry may help (network errors yes; digest mismatch, not
    /// found, auth no). A local I/O error (disk full) may clear, so it is
    /// retryable too.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            SourceError::Unreachable { .. } | SourceError::Io { .. }
        )
    }

    /// Wraps the error for an [`ImageStream`] item.
    pub fn into_io(self) -> std::io::Error {
        let kind = match &self {
            SourceError::NotFound { .. } => std::io::ErrorKind::NotFound,
            SourceError::AuthFailed { .. } | SourceError::HostKeyRejected { .. } => {
                std::io::ErrorKind::PermissionDenied
            }
            SourceError::Unreachable { .. } => std::io::ErrorKind::ConnectionAborted,
            SourceError::DigestMismatch { .. } | SourceError::TooLarge { .. } => {
                std::io::ErrorKind::InvalidData
            }
            _ => std::io::ErrorKind::Other,
        };
        std::io::Error::new(kind, self)
    }

    pub(crate) fn io(what: impl std::fmt::Display, err: impl std::fmt::Display) -> Self {
        SourceError::Io {
            detail: format!("{what}: {err}"),
        }
    }
}

/// The [`SourceError`] inside an `io::Error` produced by an [`ImageStream`],
/// if any.
pub fn source_error(err: &std::io::Error) -> Option<&SourceError> {
    err.get_ref()?.downcast_ref::<SourceError>()
}

/// Validates a `sha256` field: 64 lowercase hex digits.
pub fn check_sha256(s: &str) -> Result<(), SourceError> {
    if s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(())
    } else {
        Err(SourceError::InvalidUrl {
            url: String::new(),
            reason: format!("sha256 '{s}' is not 64 lowercase hex digits"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, ByteString> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
            .collect()
    }

    #[test]
    fn credentials_from_secret_data() {
        let c = UrlCredentials::from_secret_data(&data(&[
            ("username", "admin"),
            ("password", "pw"),
            ("known_hosts", "host ssh-ed25519 AAAA"),
            ("allowedPort", "2222"),
        ]))
        .unwrap();
        assert_eq!(c.username.as_deref(), Some("admin"));
        assert_eq!(c.password.as_deref(), Some("pw"));
        assert_eq!(c.known_hosts.as_deref(), Some("host ssh-ed25519 AAAA"));
        assert_eq!(c.allowed_port, Some(2222));
        assert!(!format!("{c:?}").contains("pw\""), "{c:?}");
    }

    #[test]
    fn credential_errors_name_the_key() {
        for (pairs, key) in [
            (vec![("password", "pw")], "username"),
            (vec![("username", " ")], "username"),
            (
                vec![("username", "u"), ("privateKey", "nope")],
                "privateKey",
            ),
            (vec![("username", "u"), ("passphrase", "x")], "passphrase"),
            (vec![("allowedPort", "99999")], "allowedPort"),
            (
                vec![("knownHosts", "a ssh-ed25519 A"), ("known_hosts", "b")],
                "knownHosts",
            ),
        ] {
            let err = UrlCredentials::from_secret_data(&data(&pairs)).unwrap_err();
            match &err {
                SourceError::Credentials { key: k, .. } => assert_eq!(k, key, "{err}"),
                other => panic!("{other:?}"),
            }
            assert!(err.to_string().contains(key), "{err}");
            assert_eq!(err.reason(), "SourceCredentialsInvalid");
        }
        let mut bad = data(&[("username", "u")]);
        bad.insert("password".into(), ByteString(vec![0xff, 0xfe]));
        let err = UrlCredentials::from_secret_data(&bad).unwrap_err();
        assert!(err.to_string().contains("'password' is not UTF-8"), "{err}");
    }

    #[test]
    fn allowlist_checks_the_canonical_endpoint() {
        let c = UrlCredentials::from_secret_data(&data(&[
            ("allowedScheme", "SFTP"),
            ("allowedHost", "Files.Example.COM."),
        ]))
        .unwrap();
        let ok = SourceUrl::parse("sftp://files.example.com/img.bin").unwrap();
        c.check_allowed(&ok).unwrap();
        let other = SourceUrl::parse("sftp://other.example.com/img.bin").unwrap();
        assert!(
            c.check_allowed(&other)
                .unwrap_err()
                .to_string()
                .contains("allowedHost")
        );
        let scp = SourceUrl::parse("scp://files.example.com/img.bin").unwrap();
        assert!(
            c.check_allowed(&scp)
                .unwrap_err()
                .to_string()
                .contains("allowedScheme")
        );
        let port = UrlCredentials::from_secret_data(&data(&[("allowedPort", "22")])).unwrap();
        port.check_allowed(&ok).unwrap();
        let p2 = SourceUrl::parse("sftp://files.example.com:2222/img.bin").unwrap();
        assert!(port.check_allowed(&p2).is_err());
    }

    #[test]
    fn reasons_and_retryability() {
        let unreachable = SourceError::Unreachable {
            url: "u".into(),
            detail: "reset".into(),
        };
        assert!(unreachable.is_retryable());
        assert_eq!(unreachable.reason(), "SourceUnreachable");
        let mismatch = SourceError::DigestMismatch {
            expected: "a".into(),
            actual: "b".into(),
        };
        assert!(!mismatch.is_retryable());
        assert_eq!(mismatch.reason(), "SourceDigestMismatch");
        assert_eq!(
            SourceError::TooLarge { size: 2, limit: 1 }.reason(),
            "ImageTooLarge"
        );
        let io = mismatch.clone().into_io();
        assert_eq!(source_error(&io), Some(&mismatch));
        assert_eq!(source_error(&std::io::Error::other("x")), None);
    }

    #[test]
    fn sha256_rule() {
        check_sha256(&"a".repeat(64)).unwrap();
        assert!(check_sha256(&"A".repeat(64)).is_err());
        assert!(check_sha256(&"a".repeat(63)).is_err());
    }
}
