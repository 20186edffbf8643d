//! `gnoi.os.OS`: install (the full transfer state machine), activate,
//! verify.
//!
//! Install, as os.proto prescribes:
//!
//! ```text
//! client: TransferRequest{version, package_size}
//! device: Validated (already there)      -> done, nothing sent
//!       | InstallError                   -> done (an outcome, not an Err)
//!       | TransferReady                  -> content chunks ... TransferEnd
//! device (during/after): TransferProgress* SyncProgress*
//!       then Validated | InstallError
//! ```
//!
//! The response stream has exactly one reader (the loop in
//! [`DeviceClient::os_install`], which also writes), so a `Validated` can
//! never be consumed and lost by a second reader (the gnoic pitfall noted in
//! gnoi-wire.md §5). A broken stream is an Err that says how many bytes were
//! sent; the device never confirms that the version it validated is the one
//! requested, so callers compare [`InstallOutcome::Validated`]'s version.
//!
//! Activate: IOS-XE runs `install activate` and reloads without answering;
//! the client reports that as [`ActivateOutcome::ConnectionClosed`], which
//! the upgrade lifecycle treats as "reloading".

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use cvk_proto::gnoi::os as pb;
use cvk_proto::gnoi::os::os_client::OsClient;
use futures::{Stream, StreamExt};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::error::is_transport_break;
use super::{ClientError, DeviceClient, MAX_DECODE_CONTROL, MAX_MESSAGE_BULK, rpcs};

/// Smallest accepted install chunk.
pub const MIN_CHUNK_BYTES: usize = 4 * 1024;
/// Largest accepted install chunk (IOS-XE accepts ~4 MB messages).
pub const MAX_CHUNK_BYTES: usize = 4 * 1024 * 1024;
/// Default install chunk (gnoic's default).
pub const DEFAULT_CHUNK_BYTES: usize = 1024 * 1024;

fn client(ch: tonic::transport::Channel, bulk: bool) -> OsClient<tonic::transport::Channel> {
    let c = OsClient::new(ch);
    if bulk {
        c.max_decoding_message_size(MAX_MESSAGE_BULK)
            .max_encoding_message_size(MAX_MESSAGE_BULK)
    } else {
        c.max_decoding_message_size(MAX_DECODE_CONTROL)
    }
}

/// Arguments of [`DeviceClient::os_install`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallParams {
    /// The image's full version string (`CW_FULL_VERSION`), e.g.
    /// `17.18.02.0.4112.1766116039`; empty forces the transfer.
    pub version: String,
    /// Size of the image in bytes (0 = unknown). When set, the content must
    /// yield exactly this many bytes.
    pub package_size: u64,
    /// Install on the standby supervisor.
    pub standby_supervisor: bool,
    /// Content message size, 4 KiB - 4 MiB.
    pub chunk_bytes: usize,
}

impl InstallParams {
    /// Parameters for `version` of `package_size` bytes with the default
    /// chunk size.
    pub fn new(version: impl Into<String>, package_size: u64) -> Self {
        Self {
            version: version.into(),
            package_size,
            standby_supervisor: false,
            chunk_bytes: DEFAULT_CHUNK_BYTES,
        }
    }
}

/// Progress of an install, reported to the callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InstallProgress {
    /// Content bytes handed to the transport.
    pub bytes_sent: u64,
    /// Bytes the device said it received (TransferProgress).
    pub bytes_acknowledged: u64,
    /// Standby sync percentage (SyncProgress), if reported.
    pub sync_percent: Option<u32>,
}

/// How an install ended (both are answers from the device).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "result")]
pub enum InstallOutcome {
    /// The device validated the image.
    Validated {
        /// Version the device validated.
        version: String,
        /// Device's description.
        description: String,
        /// The device already had it: no content was sent.
        already_present: bool,
        /// Content bytes sent.
        bytes_sent: u64,
    },
    /// The device refused or failed the install.
    Failed {
        /// `INCOMPATIBLE`, `TOO_LARGE`, `INTEGRITY_FAIL`, ...
        kind: String,
        /// Device's detail.
        detail: String,
        /// Content bytes sent before the error.
        bytes_sent: u64,
    },
}

/// How an activate ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "result")]
pub enum ActivateOutcome {
    /// ActivateOK.
    Activated,
    /// ActivateError from the device.
    Error {
        /// `NON_EXISTENT_VERSION`, `NOT_SUPPORTED_ON_BACKUP`, ...
        kind: String,
        /// Device's detail.
        detail: String,
    },
    /// The connection dropped after the request was sent and before any
    /// answer: on IOS-XE, the reload has started.
    ConnectionClosed {
        /// What the transport said.
        detail: String,
    },
}

/// Standby supervisor state in a verify answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum StandbyInfo {
    /// The device reported a standby state (`UNSUPPORTED`, `NON_EXISTENT`,
    /// `UNAVAILABLE`).
    State {
        /// The state.
        state: String,
    },
    /// The standby answered.
    Response {
        /// Standby id.
        id: String,
        /// Its running version.
        version: String,
        /// Its activation failure message.
        activation_fail_message: String,
    },
}

/// OS.Verify answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyInfo {
    /// Running version.
    pub version: String,
    /// Set when the last activation failed and the device fell back.
    pub activation_fail_message: String,
    /// Standby supervisor, if reported.
    pub standby: Option<StandbyInfo>,
    /// Supervisors are installed individually.
    pub individual_supervisor_install: bool,
}

fn install_error(e: pb::InstallError, bytes_sent: u64) -> InstallOutcome {
    InstallOutcome::Failed {
        kind: pb::install_error::Type::try_from(e.r#type)
            .map(|t| t.as_str_name().to_owned())
            .unwrap_or_else(|_| format!("TYPE_{}", e.r#type)),
        detail: e.detail,
        bytes_sent,
    }
}

/// Cuts an arbitrary byte stream into `size`-byte chunks (the last may be
/// shorter). A chunk that lies inside one input piece is a slice of it (no
/// copy); one that spans pieces is gathered into a buffer allocated once at
/// its full size.
struct Chunker<S> {
    source: S,
    size: usize,
    /// The chunk being gathered (shorter than `size`).
    buf: BytesMut,
    /// Input read from `source` and not yet cut.
    rest: Bytes,
    done: bool,
    read: u64,
}

impl<S> Chunker<S>
where
    S: Stream<Item = Result<Bytes, std::io::Error>> + Unpin,
{
    fn new(source: S, size: usize) -> Self {
        Chunker {
            source,
            size,
            buf: BytesMut::new(),
            rest: Bytes::new(),
            done: false,
            read: 0,
        }
    }

    async fn next(&mut self) -> Option<Result<Bytes, ClientError>> {
        loop {
            if !self.rest.is_empty() {
                if self.buf.is_empty() && self.rest.len() >= self.size {
                    return Some(Ok(self.rest.split_to(self.size)));
                }
                if self.buf.is_empty() {
                    self.buf.reserve(self.size);
                }
                let take = (self.size - self.buf.len()).min(self.rest.len());
                self.buf.extend_from_slice(&self.rest.split_to(take));
                if self.buf.len() == self.size {
                    return Some(Ok(self.buf.split().freeze()));
                }
                continue;
            }
            if self.done {
                break;
            }
            match self.source.next().await {
                Some(Ok(b)) => {
                    self.read += b.len() as u64;
                    self.rest = b;
                }
                Some(Err(e)) => {
                    self.done = true;
                    return Some(Err(ClientError::ContentSource {
                        bytes_read: self.read,
                        message: e.to_string(),
                    }));
                }
                None => self.done = true,
            }
        }
        if self.buf.is_empty() {
            return None;
        }
        Some(Ok(self.buf.split().freeze()))
    }
}

enum Step {
    Continue,
    Outcome(InstallOutcome),
}

impl DeviceClient {
    /// OS.Install: transfers the image `content` yields (any chunking; it is
    /// re-cut to `chunk_bytes`) unless the device already has `version`.
    /// `progress` is called after every chunk and every progress message.
    ///
    /// Timeouts: the first answer must come within the control deadline;
    /// during the transfer each chunk must be accepted and each answer
    /// arrive within [`Timeouts::stream_idle`](super::Timeouts); after
    /// TransferEnd the device has [`Timeouts::install_validation`](super::Timeouts)
    /// to validate.
    pub async fn os_install<S, F>(
        &self,
        params: &InstallParams,
        content: S,
        mut progress: F,
    ) -> Result<InstallOutcome, ClientError>
    where
        S: Stream<Item = Result<Bytes, std::io::Error>> + Unpin + Send,
        F: FnMut(InstallProgress) + Send,
    {
        if !(MIN_CHUNK_BYTES..=MAX_CHUNK_BYTES).contains(&params.chunk_bytes) {
            return Err(ClientError::InvalidRequest(format!(
                "install chunk size {} is out of range {MIN_CHUNK_BYTES}-{MAX_CHUNK_BYTES} bytes",
                params.chunk_bytes
            )));
        }
        let rpc = rpcs::OS_INSTALL;
        let t = self.settings().timeouts.clone();
        let (tx, rx) = mpsc::channel::<pb::InstallRequest>(2);
        tx.send(pb::InstallRequest {
            request: Some(pb::install_request::Request::TransferRequest(
                pb::TransferRequest {
                    version: params.version.clone(),
                    standby_supervisor: params.standby_supervisor,
                    package_size: params.package_size,
                },
            )),
        })
        .await
        .map_err(|_| ClientError::Protocol("install request channel closed".into()))?;
        let req = self.request(ReceiverStream::new(rx), None);
        let mut responses = self
            .open_stream(rpc, t.control, req, |ch, req| async move {
                client(ch, true).install(req).await
            })
            .await?;

        let mut state = InstallProgress {
            bytes_sent: 0,
            bytes_acknowledged: 0,
            sync_percent: None,
        };
        let interrupted = |state: &InstallProgress, cause: String| ClientError::Interrupted {
            rpc: rpc.path,
            bytes_sent: state.bytes_sent,
            cause,
        };
        // Maps a stream read error: a transport break mid-transfer is an
        // interruption (retryable, with the byte count); anything else is
        // the device's answer.
        let read_err = |state: &InstallProgress, e: ClientError| match e {
            ClientError::Unavailable { message, .. } => interrupted(state, message),
            other => other,
        };

        let result: Result<InstallOutcome, ClientError> = async {
            // Phase 1: the answer to TransferRequest.
            let first = self
                .next_message(rpc, t.control, &mut responses)
                .await
                .map_err(|e| read_err(&state, e))?;
            match first.and_then(|m| m.response) {
                Some(pb::install_response::Response::TransferReady(_)) => {}
                Some(pb::install_response::Response::Validated(v)) => {
                    return Ok(InstallOutcome::Validated {
                        version: v.version,
                        description: v.description,
                        already_present: true,
                        bytes_sent: 0,
                    });
                }
                Some(pb::install_response::Response::InstallError(e)) => {
                    return Ok(install_error(e, 0));
                }
                Some(other) => {
                    return Err(ClientError::Protocol(format!(
                        "OS.Install: expected TransferReady, Validated or InstallError after \
                         TransferRequest, got {other:?}"
                    )));
                }
                None => {
                    return Err(ClientError::Protocol(
                        "OS.Install: the device ended the stream without answering \
                         TransferRequest"
                            .into(),
                    ));
                }
            }

            // Phase 2: content. One loop reads answers and writes chunks.
            let mut chunks = Chunker::new(content, params.chunk_bytes);
            let mut pending: Option<Bytes> = None;
            let mut source_done = false;
            let mut deadline = tokio::time::Instant::now() + t.stream_idle;
            loop {
                if source_done && pending.is_none() {
                    break;
                }
                tokio::select! {
                    msg = responses.message() => {
                        deadline = tokio::time::Instant::now() + t.stream_idle;
                        match self.on_install_message(msg, &mut state, &mut progress, false)? {
                            Step::Continue => {}
                            Step::Outcome(o) => return Ok(o),
                        }
                    }
                    permit = tx.reserve(), if pending.is_some() => {
                        let Ok(permit) = permit else {
                            // The request side closed: the call ended. Its
                            // answer (InstallError or status) is read below.
                            return self.drain_install(&mut responses, &mut state, &mut progress, t.stream_idle).await;
                        };
                        let chunk = pending.take().unwrap_or_default();
                        state.bytes_sent += chunk.len() as u64;
                        permit.send(pb::InstallRequest {
                            request: Some(pb::install_request::Request::TransferContent(chunk)),
                        });
                        progress(state);
                        deadline = tokio::time::Instant::now() + t.stream_idle;
                    }
                    next = chunks.next(), if pending.is_none() && !source_done => {
                        match next {
                            Some(Ok(chunk)) => {
                                if params.package_size != 0 && chunks.read > params.package_size {
                                    return Err(ClientError::ContentSource {
                                        bytes_read: chunks.read,
                                        message: format!(
                                            "the image yields more than its declared package size of {} bytes",
                                            params.package_size
                                        ),
                                    });
                                }
                                pending = Some(chunk);
                            }
                            Some(Err(e)) => return Err(e),
                            None => source_done = true,
                        }
                    }
                    _ = tokio::time::sleep_until(deadline) => {
                        return Err(ClientError::DeadlineExceeded { rpc: rpc.path, after: t.stream_idle });
                    }
                }
            }
            if params.package_size != 0 && chunks.read != params.package_size {
                return Err(ClientError::ContentSource {
                    bytes_read: chunks.read,
                    message: format!(
                        "the image yielded {} bytes but its declared package size is {} bytes",
                        chunks.read, params.package_size
                    ),
                });
            }
            let end = pb::InstallRequest {
                request: Some(pb::install_request::Request::TransferEnd(pb::TransferEnd {})),
            };
            if tx.send(end).await.is_err() {
                return self
                    .drain_install(&mut responses, &mut state, &mut progress, t.stream_idle)
                    .await;
            }

            // Phase 3: wait for the verdict. Progress messages keep coming
            // while the device validates; the whole phase is bounded.
            let verdict = tokio::time::Instant::now() + t.install_validation;
            loop {
                let msg = tokio::select! {
                    msg = responses.message() => msg,
                    _ = tokio::time::sleep_until(verdict) => {
                        return Err(ClientError::DeadlineExceeded { rpc: rpc.path, after: t.install_validation });
                    }
                };
                match self.on_install_message(msg, &mut state, &mut progress, true)? {
                    Step::Continue => {}
                    Step::Outcome(o) => return Ok(o),
                }
            }
        }
        .await;
        // Closing the request side (dropping tx) ends the call for the
        // device; dropping `responses` cancels it if it is still open.
        drop(tx);
        self.finish(rpc, &result);
        result
    }

    fn on_install_message<F>(
        &self,
        msg: Result<Option<pb::InstallResponse>, tonic::Status>,
        state: &mut InstallProgress,
        progress: &mut F,
        after_end: bool,
    ) -> Result<Step, ClientError>
    where
        F: FnMut(InstallProgress),
    {
        let rpc = rpcs::OS_INSTALL;
        use pb::install_response::Response;
        match msg {
            Err(status) => {
                let err = self.status_error(rpc, self.settings().timeouts.stream_idle, &status);
                Err(match err {
                    ClientError::Unavailable { message, .. } => ClientError::Interrupted {
                        rpc: rpc.path,
                        bytes_sent: state.bytes_sent,
                        cause: message,
                    },
                    e if is_transport_break(&status) => ClientError::Interrupted {
                        rpc: rpc.path,
                        bytes_sent: state.bytes_sent,
                        cause: e.to_string(),
                    },
                    e => e,
                })
            }
            Ok(None) => Err(ClientError::Interrupted {
                rpc: rpc.path,
                bytes_sent: state.bytes_sent,
                cause: if after_end {
                    "the device ended the stream without Validated or InstallError".into()
                } else {
                    "the device ended the stream during the transfer".into()
                },
            }),
            Ok(Some(m)) => match m.response {
                Some(Response::TransferProgress(p)) => {
                    state.bytes_acknowledged = p.bytes_received;
                    progress(*state);
                    Ok(Step::Continue)
                }
                Some(Response::SyncProgress(p)) => {
                    state.sync_percent = Some(p.percentage_transferred);
                    progress(*state);
                    Ok(Step::Continue)
                }
                Some(Response::InstallError(e)) => {
                    Ok(Step::Outcome(install_error(e, state.bytes_sent)))
                }
                Some(Response::Validated(v)) if after_end => {
                    Ok(Step::Outcome(InstallOutcome::Validated {
                        version: v.version,
                        description: v.description,
                        already_present: false,
                        bytes_sent: state.bytes_sent,
                    }))
                }
                Some(Response::Validated(_)) => Err(ClientError::Protocol(format!(
                    "OS.Install: Validated arrived after {} bytes, before TransferEnd",
                    state.bytes_sent
                ))),
                Some(Response::TransferReady(_)) => Err(ClientError::Protocol(
                    "OS.Install: a second TransferReady".into(),
                )),
                None => Err(ClientError::Protocol(
                    "OS.Install: empty response message".into(),
                )),
            },
        }
    }

    /// After the request side closed early: read what the device said.
    async fn drain_install<F>(
        &self,
        responses: &mut tonic::Streaming<pb::InstallResponse>,
        state: &mut InstallProgress,
        progress: &mut F,
        idle: Duration,
    ) -> Result<InstallOutcome, ClientError>
    where
        F: FnMut(InstallProgress),
    {
        loop {
            let msg = match tokio::time::timeout(idle, responses.message()).await {
                Ok(m) => m,
                Err(_) => {
                    return Err(ClientError::Interrupted {
                        rpc: rpcs::OS_INSTALL.path,
                        bytes_sent: state.bytes_sent,
                        cause: "the request stream closed and the device sent no verdict".into(),
                    });
                }
            };
            if let Step::Outcome(o) = self.on_install_message(msg, state, progress, true)? {
                return Ok(o);
            }
        }
    }

    /// OS.Activate of `version` (exact, as validated). With `no_reboot`
    /// the image is staged for the next reload.
    pub async fn os_activate(
        &self,
        version: &str,
        no_reboot: bool,
    ) -> Result<ActivateOutcome, ClientError> {
        if version.trim().is_empty() {
            return Err(ClientError::InvalidRequest(
                "activate needs the validated version".into(),
            ));
        }
        let rpc = rpcs::OS_ACTIVATE;
        let d = self.settings().timeouts.activate;
        self.preflight(rpc)?;
        let req = self.request(
            pb::ActivateRequest {
                version: version.to_owned(),
                standby_supervisor: false,
                no_reboot,
            },
            Some(d),
        );
        let mut c = client(self.channel(rpc.class), false);
        let call = c.activate(req);
        let result = match tokio::time::timeout(d, call).await {
            Err(_) => Err(ClientError::DeadlineExceeded {
                rpc: rpc.path,
                after: d,
            }),
            Ok(Ok(resp)) => {
                self.mark_supported(rpc);
                Ok(match resp.into_inner().response {
                    Some(pb::activate_response::Response::ActivateOk(_)) => {
                        ActivateOutcome::Activated
                    }
                    Some(pb::activate_response::Response::ActivateError(e)) => {
                        ActivateOutcome::Error {
                            kind: pb::activate_error::Type::try_from(e.r#type)
                                .map(|t| t.as_str_name().to_owned())
                                .unwrap_or_else(|_| format!("TYPE_{}", e.r#type)),
                            detail: e.detail,
                        }
                    }
                    None => {
                        return self.finish_with(
                            rpc,
                            Err(ClientError::Protocol(
                                "OS.Activate: empty ActivateResponse".into(),
                            )),
                        );
                    }
                })
            }
            Ok(Err(status)) if is_transport_break(&status) => {
                // The request reached an open connection, which then went
                // away without an answer: the device is reloading.
                Ok(ActivateOutcome::ConnectionClosed {
                    detail: super::error::status_text(&status),
                })
            }
            Ok(Err(status)) => Err(self.status_error(rpc, d, &status)),
        };
        self.finish_with(rpc, result)
    }

    fn finish_with<T>(
        &self,
        rpc: super::Rpc,
        result: Result<T, ClientError>,
    ) -> Result<T, ClientError> {
        self.finish(rpc, &result);
        result
    }

    /// OS.Verify.
    pub async fn os_verify(&self) -> Result<VerifyInfo, ClientError> {
        let d = self.settings().timeouts.control;
        let r = self
            .unary(
                rpcs::OS_VERIFY,
                d,
                pb::VerifyRequest {},
                |ch, req| async move { client(ch, false).verify(req).await },
            )
            .await?;
        let standby = r.verify_standby.and_then(|s| s.state).map(|s| match s {
            pb::verify_standby::State::StandbyState(st) => StandbyInfo::State {
                state: pb::standby_state::State::try_from(st.state)
                    .map(|x| x.as_str_name().to_owned())
                    .unwrap_or_else(|_| format!("STATE_{}", st.state)),
            },
            pb::verify_standby::State::VerifyResponse(v) => StandbyInfo::Response {
                id: v.id,
                version: v.version,
                activation_fail_message: v.activation_fail_message,
            },
        });
        Ok(VerifyInfo {
            version: r.version,
            activation_fail_message: r.activation_fail_message,
            standby,
            individual_supervisor_install: r.individual_supervisor_install,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn chunker_recuts_any_input() {
        let parts: Vec<Result<Bytes, std::io::Error>> = vec![
            Ok(Bytes::from(vec![1u8; 3])),
            Ok(Bytes::from(vec![2u8; 10])),
            Ok(Bytes::new()),
            Ok(Bytes::from(vec![3u8; 2])),
        ];
        let mut c = Chunker::new(futures::stream::iter(parts), 4);
        let mut sizes = Vec::new();
        while let Some(b) = c.next().await {
            sizes.push(b.unwrap().len());
        }
        assert_eq!(sizes, vec![4, 4, 4, 3]);
        assert_eq!(c.read, 15);

        let parts: Vec<Result<Bytes, std::io::Error>> = vec![
            Ok(Bytes::from(vec![1u8; 3])),
            Err(std::io::Error::other("disk gone")),
        ];
        let mut c = Chunker::new(futures::stream::iter(parts), 4);
        let e = c.next().await.unwrap().unwrap_err();
        assert!(
            matches!(e, ClientError::ContentSource { bytes_read: 3, .. }),
            "{e}"
        );
    }

    proptest::proptest! {
        /// Any pieces, any chunk size: every chunk but the last is exactly
        /// `size` bytes, none is empty, and together they are the input in
        /// order.
        #[test]
        fn chunker_keeps_bytes_and_sizes(
            pieces in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..40), 0..12),
            size in 1usize..17,
        ) {
            let input: Vec<u8> = pieces.concat();
            let parts: Vec<Result<Bytes, std::io::Error>> =
                pieces.into_iter().map(|p| Ok(Bytes::from(p))).collect();
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let chunks: Vec<Bytes> = rt.block_on(async {
                let mut c = Chunker::new(futures::stream::iter(parts), size);
                let mut out = Vec::new();
                while let Some(b) = c.next().await {
                    out.push(b.unwrap());
                }
                assert_eq!(c.read, input.len() as u64);
                out
            });
            proptest::prop_assert_eq!(chunks.concat(), input.clone());
            proptest::prop_assert_eq!(chunks.len(), input.len().div_ceil(size));
            for (i, c) in chunks.iter().enumerate() {
                proptest::prop_assert!(!c.is_empty());
                if i + 1 < chunks.len() {
                    proptest::prop_assert_eq!(c.len(), size);
                }
            }
        }
    }
}
