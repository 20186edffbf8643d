//! `gnoi.file.File`: get (bounded preview), get_hash (whole-file digest,
//! streamed), stat, put (streamed upload with a final SHA-256), remove.
//!
//! Every path is checked with [`paths`](super::paths) before anything is
//! sent: reads accept the eight IOS-XE prefixes, writes only the five
//! writable ones. Get and Put run on the bulk class with an idle timeout
//! (no progress for [`Timeouts::stream_idle`](super::Timeouts) ends them);
//! Stat and Remove are unary control calls.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use cvk_proto::gnoi::file as pb;
use cvk_proto::gnoi::file::file_client::FileClient;
use cvk_proto::gnoi::types::{HashType, hash_type::HashMethod};
use md5::Md5;
use serde::Serialize;
use sha2::{Digest, Sha256, Sha512};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::paths::{READ_PREFIXES, WRITE_PREFIXES, validate_path};
use super::{ClientError, DeviceClient, MAX_DECODE_CONTROL, MAX_MESSAGE_BULK, rpcs};

/// Size of each Put content message (the gNOI limit is 64 KB per message).
pub const PUT_CHUNK_BYTES: usize = 64 * 1024;

fn client(ch: tonic::transport::Channel, bulk: bool) -> FileClient<tonic::transport::Channel> {
    let c = FileClient::new(ch);
    if bulk {
        c.max_decoding_message_size(MAX_MESSAGE_BULK)
            .max_encoding_message_size(MAX_MESSAGE_BULK)
    } else {
        c.max_decoding_message_size(MAX_DECODE_CONTROL)
    }
}

/// A digest the device sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceHash {
    /// `SHA256`, `SHA512`, `MD5` or `UNSPECIFIED`.
    pub method: String,
    /// Lowercase hex digest.
    pub hex: String,
}

impl DeviceHash {
    fn from_pb(h: &HashType) -> Self {
        Self {
            method: HashMethod::try_from(h.method)
                .map(|m| m.as_str_name().to_owned())
                .unwrap_or_else(|_| format!("METHOD_{}", h.method)),
            hex: hex::encode(&h.hash),
        }
    }
}

/// Result of [`DeviceClient::file_get`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FileContent {
    /// The path read.
    pub path: String,
    /// The bytes read (at most `max_bytes`).
    #[serde(skip)]
    pub content: Bytes,
    /// `content.len()`.
    pub bytes_read: u64,
    /// The file is longer than `max_bytes`; reading stopped there.
    pub truncated: bool,
    /// The trailing hash, when the whole file was read and the device sent
    /// one.
    pub hash: Option<DeviceHash>,
    /// The trailing hash was checked against the content and matched.
    pub hash_verified: bool,
}

/// Result of [`DeviceClient::file_hash`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FileHash {
    /// The path read.
    pub path: String,
    /// Bytes in the file.
    pub size: u64,
    /// Lowercase hex SHA-256 of the content, computed here.
    pub sha256: String,
    /// The trailing hash the device sent (already checked: a mismatch is an
    /// error).
    pub device_hash: Option<DeviceHash>,
}

/// One entry of [`DeviceClient::file_stat`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FileStat {
    /// Path of the entry.
    pub path: String,
    /// Last modification, nanoseconds since the epoch.
    pub last_modified_unix_nanos: u64,
    /// Permissions as the device reports them (octal digits as decimal,
    /// e.g. 644).
    pub permissions: u32,
    /// Size in bytes.
    pub size: u64,
    /// Umask (same encoding as permissions).
    pub umask: u32,
}

/// Running digests of a download; SHA-256 always, plus the method the
/// device names in its trailing hash (known only at the end, so all are
/// computed).
struct Digests {
    sha256: Sha256,
    sha512: Sha512,
    md5: Md5,
}

impl Digests {
    fn new() -> Self {
        Self {
            sha256: Sha256::new(),
            sha512: Sha512::new(),
            md5: Md5::new(),
        }
    }

    fn update(&mut self, b: &[u8]) {
        self.sha256.update(b);
        self.sha512.update(b);
        self.md5.update(b);
    }

    /// (sha256 hex, digest of `method` if it is a known method).
    fn finish(self, method: Option<HashMethod>) -> (String, Option<Vec<u8>>) {
        let sha256 = self.sha256.finalize().to_vec();
        let other = match method {
            Some(HashMethod::Sha256) => Some(sha256.clone()),
            Some(HashMethod::Sha512) => Some(self.sha512.finalize().to_vec()),
            Some(HashMethod::Md5) => Some(self.md5.finalize().to_vec()),
            Some(HashMethod::Unspecified) | None => None,
        };
        (hex::encode(sha256), other)
    }
}

fn check_hash(
    path: &str,
    device: &HashType,
    computed: Option<Vec<u8>>,
) -> Result<bool, ClientError> {
    let Some(computed) = computed else {
        return Ok(false);
    };
    if computed == device.hash {
        Ok(true)
    } else {
        Err(ClientError::HashMismatch {
            path: path.to_owned(),
            method: match HashMethod::try_from(device.method) {
                Ok(HashMethod::Sha256) => "SHA256",
                Ok(HashMethod::Sha512) => "SHA512",
                Ok(HashMethod::Md5) => "MD5",
                _ => "UNSPECIFIED",
            },
            expected: hex::encode(&device.hash),
            actual: hex::encode(computed),
        })
    }
}

/// Shared between a Put's request stream and the call that drives it.
struct PutProgress {
    bytes_sent: AtomicU64,
    last_progress: Mutex<Instant>,
    read_error: Mutex<Option<String>>,
}

impl PutProgress {
    fn touch(&self) {
        *self.last_progress.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    fn idle_for(&self) -> Duration {
        self.last_progress
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .elapsed()
    }
}

enum PutPhase<R> {
    Open(pb::put_request::Details, R),
    Content(R, Sha256),
    Done,
}

impl DeviceClient {
    /// File.Get of at most `max_bytes`: reading stops there (the RPC is
    /// cancelled) and the result says `truncated`. When the whole file fits,
    /// the trailing hash is verified; a mismatch is
    /// [`ClientError::HashMismatch`].
    pub async fn file_get(&self, path: &str, max_bytes: u64) -> Result<FileContent, ClientError> {
        let path = validate_path(path, READ_PREFIXES)?;
        let rpc = rpcs::FILE_GET;
        let idle = self.settings().timeouts.stream_idle;
        let req = self.request(
            pb::GetRequest {
                remote_file: path.to_string(),
            },
            None,
        );
        let mut stream = self
            .open_stream(rpc, idle, req, |ch, req| async move {
                client(ch, true).get(req).await
            })
            .await?;
        let result = async {
            let mut buf = BytesMut::new();
            let mut truncated = false;
            let mut trailer: Option<HashType> = None;
            while let Some(m) = self.next_message(rpc, idle, &mut stream).await? {
                match m.response {
                    Some(pb::get_response::Response::Contents(c)) => {
                        if trailer.is_some() {
                            return Err(ClientError::Protocol(format!(
                                "File.Get {path}: content after the trailing hash"
                            )));
                        }
                        let room = max_bytes.saturating_sub(buf.len() as u64);
                        if (c.len() as u64) > room {
                            buf.extend_from_slice(&c[..room as usize]);
                            truncated = true;
                            break;
                        }
                        buf.extend_from_slice(&c);
                    }
                    Some(pb::get_response::Response::Hash(h)) => trailer = Some(h),
                    None => {
                        return Err(ClientError::Protocol(format!(
                            "File.Get {path}: empty response message"
                        )));
                    }
                }
            }
            let content = buf.freeze();
            let mut hash_verified = false;
            let hash = if truncated {
                None
            } else if let Some(h) = &trailer {
                let mut d = Digests::new();
                d.update(&content);
                let (_, computed) = d.finish(HashMethod::try_from(h.method).ok());
                hash_verified = check_hash(path.as_str(), h, computed)?;
                Some(DeviceHash::from_pb(h))
            } else {
                None
            };
            Ok(FileContent {
                path: path.to_string(),
                bytes_read: content.len() as u64,
                content,
                truncated,
                hash,
                hash_verified,
            })
        }
        .await;
        self.finish(rpc, &result);
        result
    }

    /// Streams a whole file through File.Get and returns its SHA-256
    /// without holding it in memory; the device's trailing hash, if any, is
    /// verified too. This is how a staged image's `localPathSHA256` is
    /// checked.
    pub async fn file_hash(&self, path: &str) -> Result<FileHash, ClientError> {
        let path = validate_path(path, READ_PREFIXES)?;
        let rpc = rpcs::FILE_GET;
        let idle = self.settings().timeouts.stream_idle;
        let req = self.request(
            pb::GetRequest {
                remote_file: path.to_string(),
            },
            None,
        );
        let mut stream = self
            .open_stream(rpc, idle, req, |ch, req| async move {
                client(ch, true).get(req).await
            })
            .await?;
        let result = async {
            let mut digests = Digests::new();
            let mut size = 0u64;
            let mut trailer: Option<HashType> = None;
            while let Some(m) = self.next_message(rpc, idle, &mut stream).await? {
                match m.response {
                    Some(pb::get_response::Response::Contents(c)) => {
                        if trailer.is_some() {
                            return Err(ClientError::Protocol(format!(
                                "File.Get {path}: content after the trailing hash"
                            )));
                        }
                        size += c.len() as u64;
                        digests.update(&c);
                    }
                    Some(pb::get_response::Response::Hash(h)) => trailer = Some(h),
                    None => {
                        return Err(ClientError::Protocol(format!(
                            "File.Get {path}: empty response message"
                        )));
                    }
                }
            }
            let method = trailer
                .as_ref()
                .and_then(|h| HashMethod::try_from(h.method).ok());
            let (sha256, computed) = digests.finish(method);
            if let Some(h) = &trailer {
                check_hash(path.as_str(), h, computed)?;
            }
            Ok(FileHash {
                path: path.to_string(),
                size,
                sha256,
                device_hash: trailer.as_ref().map(DeviceHash::from_pb),
            })
        }
        .await;
        self.finish(rpc, &result);
        result
    }

    /// File.Stat.
    pub async fn file_stat(&self, path: &str) -> Result<Vec<FileStat>, ClientError> {
        let path = validate_path(path, READ_PREFIXES)?;
        let d = self.settings().timeouts.control;
        let r = self
            .unary(
                rpcs::FILE_STAT,
                d,
                pb::StatRequest {
                    path: path.to_string(),
                },
                |ch, req| async move { client(ch, false).stat(req).await },
            )
            .await?;
        Ok(r.stats
            .into_iter()
            .map(|s| FileStat {
                path: s.path,
                last_modified_unix_nanos: s.last_modified,
                permissions: s.permissions,
                size: s.size,
                umask: s.umask,
            })
            .collect())
    }

    /// File.Remove (write prefixes only).
    pub async fn file_remove(&self, path: &str) -> Result<(), ClientError> {
        let path = validate_path(path, WRITE_PREFIXES)?;
        let d = self.settings().timeouts.control;
        self.unary(
            rpcs::FILE_REMOVE,
            d,
            pb::RemoveRequest {
                remote_file: path.to_string(),
            },
            |ch, req| async move { client(ch, false).remove(req).await },
        )
        .await
        .map(|_| ())
    }

    /// File.Put of everything `content` yields, in 64 KiB messages,
    /// followed by its SHA-256. `mode` is the Unix mode (e.g. `0o644`, at
    /// most `0o777`). Returns the bytes sent. If `content` fails, the upload
    /// ends without its hash, so the device discards the partial file.
    pub async fn file_put<R>(&self, path: &str, mode: u32, content: R) -> Result<u64, ClientError>
    where
        R: AsyncRead + Unpin + Send + 'static,
    {
        let path = validate_path(path, WRITE_PREFIXES)?;
        if mode > 0o777 {
            return Err(ClientError::InvalidRequest(format!(
                "file permissions {mode:#o} exceed 0o777"
            )));
        }
        // gNOI carries the octal digits read as decimal: 0o644 -> 644.
        let permissions: u32 = format!("{mode:o}").parse().unwrap_or(0);
        let rpc = rpcs::FILE_PUT;
        let idle = self.settings().timeouts.stream_idle;
        self.preflight(rpc)?;
        let progress = Arc::new(PutProgress {
            bytes_sent: AtomicU64::new(0),
            last_progress: Mutex::new(Instant::now()),
            read_error: Mutex::new(None),
        });
        let open = pb::put_request::Details {
            remote_file: path.to_string(),
            permissions,
        };
        let shared = progress.clone();
        let requests = futures::stream::unfold(PutPhase::Open(open, content), move |phase| {
            let shared = shared.clone();
            async move {
                use pb::put_request::Request;
                shared.touch();
                match phase {
                    PutPhase::Open(details, reader) => Some((
                        pb::PutRequest {
                            request: Some(Request::Open(details)),
                        },
                        PutPhase::Content(reader, Sha256::new()),
                    )),
                    PutPhase::Content(mut reader, mut hasher) => {
                        let mut buf = vec![0u8; PUT_CHUNK_BYTES];
                        let mut filled = 0;
                        // Fill whole chunks: small reads from the source
                        // would otherwise become tiny messages.
                        while filled < buf.len() {
                            match reader.read(&mut buf[filled..]).await {
                                Ok(0) => break,
                                Ok(n) => filled += n,
                                Err(e) => {
                                    *shared.read_error.lock().unwrap_or_else(|p| p.into_inner()) =
                                        Some(e.to_string());
                                    return None;
                                }
                            }
                        }
                        if filled == 0 {
                            let hash = HashType {
                                method: HashMethod::Sha256 as i32,
                                hash: hasher.finalize().to_vec(),
                            };
                            return Some((
                                pb::PutRequest {
                                    request: Some(Request::Hash(hash)),
                                },
                                PutPhase::Done,
                            ));
                        }
                        buf.truncate(filled);
                        hasher.update(&buf);
                        shared
                            .bytes_sent
                            .fetch_add(filled as u64, Ordering::Relaxed);
                        Some((
                            pb::PutRequest {
                                request: Some(Request::Contents(buf.into())),
                            },
                            PutPhase::Content(reader, hasher),
                        ))
                    }
                    PutPhase::Done => None,
                }
            }
        });
        let req = self.request(requests, None);
        let mut c = client(self.channel(rpc.class), true);
        let call = c.put(req);
        tokio::pin!(call);
        let check = (idle / 10).clamp(Duration::from_millis(10), Duration::from_secs(1));
        let outcome = loop {
            tokio::select! {
                r = &mut call => break Some(r),
                _ = tokio::time::sleep(check) => {
                    if progress.idle_for() >= idle {
                        break None;
                    }
                }
            }
        };
        let sent = progress.bytes_sent.load(Ordering::Relaxed);
        let read_error = progress
            .read_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let result = match (read_error, outcome) {
            (Some(message), _) => Err(ClientError::ContentSource {
                bytes_read: sent,
                message,
            }),
            (None, None) => Err(ClientError::DeadlineExceeded {
                rpc: rpc.path,
                after: idle,
            }),
            (None, Some(Ok(_))) => {
                self.mark_supported(rpc);
                Ok(sent)
            }
            (None, Some(Err(status))) => {
                let err = self.status_error(rpc, idle, &status);
                Err(match err {
                    ClientError::Unavailable { message, .. } if sent > 0 => {
                        ClientError::Interrupted {
                            rpc: rpc.path,
                            bytes_sent: sent,
                            cause: message,
                        }
                    }
                    other => other,
                })
            }
        };
        self.finish(rpc, &result);
        result
    }

    /// [`file_put`](Self::file_put) of an in-memory buffer.
    pub async fn file_put_bytes(
        &self,
        path: &str,
        mode: u32,
        content: Bytes,
    ) -> Result<u64, ClientError> {
        self.file_put(path, mode, std::io::Cursor::new(content))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_check() {
        let data = b"hello";
        let mut d = Digests::new();
        d.update(data);
        let (sha, md5) = d.finish(Some(HashMethod::Md5));
        assert_eq!(
            sha,
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        let good = HashType {
            method: HashMethod::Md5 as i32,
            hash: hex::decode("5d41402abc4b2a76b9719d911017c592").unwrap(),
        };
        assert!(check_hash("flash:x", &good, md5.clone()).unwrap());
        let bad = HashType {
            method: HashMethod::Md5 as i32,
            hash: vec![0; 16],
        };
        let e = check_hash("flash:x", &bad, md5).unwrap_err();
        assert_eq!(e.category(), "hash_mismatch");
        assert!(e.to_string().contains("flash:x") && e.to_string().contains("MD5"));
        assert!(!check_hash("flash:x", &bad, None).unwrap());
    }
}
