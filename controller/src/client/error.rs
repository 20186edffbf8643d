//! The device client's error type.
//!
//! [`ClientError::category`] is a stable snake_case string: it is the
//! `outcome` label of `cisco_vk_gnoi_rpc_total` and the reason reconcilers
//! write into status and Events, so its values never change once released.
//! [`ClientError::class`] is the one classification reconcilers act on:
//! ambiguous (the device may have acted), retryable, final or unsupported;
//! [`ClientError::is_transient`] says whether retrying the same call later
//! can succeed without anyone changing anything.

use std::error::Error as StdError;
use std::time::Duration;

use tonic::Code;

use super::GnoiService;
use super::paths::PathError;

/// What a failed call means for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The request may have reached the device and its outcome is unknown
    /// (the transport broke or the deadline passed): a read may be retried;
    /// a destructive RPC is observed on the device, never sent again.
    Ambiguous,
    /// A definite answer that may clear by itself (busy, aborted, internal
    /// error): the same call later can succeed.
    Retryable,
    /// Refused for good: the same call gets the same answer until the spec
    /// or the configuration changes.
    Final,
    /// The device does not implement the service.
    Unsupported,
}

/// Everything a device call can fail with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// The device answered UNIMPLEMENTED for this service, now or within the
    /// capability cache's TTL; the call did not touch the network if the
    /// answer was cached.
    #[error("gNOI service {service} is not supported by the device (UNIMPLEMENTED){}",
            detail_suffix(.detail))]
    ServiceUnsupported {
        /// The service.
        service: GnoiService,
        /// The device's message on the first UNIMPLEMENTED answer.
        detail: String,
    },
    /// The device cannot be reached (connect failure, reset, UNAVAILABLE).
    #[error("device unavailable: {message}")]
    Unavailable {
        /// What failed.
        message: String,
        /// Set while the connection class backs off after connect failures:
        /// how long until the next attempt is allowed.
        retry_after: Option<Duration>,
    },
    /// The device refused the credentials (UNAUTHENTICATED or
    /// PERMISSION_DENIED).
    #[error("device refused the credentials ({code:?}): {message}")]
    Unauthenticated {
        /// UNAUTHENTICATED or PERMISSION_DENIED.
        code: Code,
        /// The device's message.
        message: String,
    },
    /// No answer within the deadline (or no progress within the idle
    /// timeout of a streaming call).
    #[error("{rpc} got no answer within {after:?}")]
    DeadlineExceeded {
        /// Full method name, e.g. `gnoi.system.System/Time`.
        rpc: &'static str,
        /// The deadline or idle timeout that passed.
        after: Duration,
    },
    /// A file path broke the IOS-XE path rules; nothing was sent.
    #[error(transparent)]
    InvalidPath(#[from] PathError),
    /// A request argument is out of range; nothing was sent.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The device target or the TLS material cannot be used.
    #[error("invalid device target: {0}")]
    InvalidTarget(String),
    /// TLS setup or handshake failed.
    #[error("TLS: {0}")]
    Tls(String),
    /// Any other gRPC error status from the device.
    #[error("{service}/{method} failed with {code:?}: {message}")]
    Rpc {
        /// The service.
        service: GnoiService,
        /// The method name, e.g. `Stat`.
        method: &'static str,
        /// The gRPC status code.
        code: Code,
        /// The device's message.
        message: String,
    },
    /// The device broke the protocol (unexpected message order or content).
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// A streaming upload broke before it completed.
    #[error("{rpc} interrupted after {bytes_sent} bytes sent: {cause}")]
    Interrupted {
        /// Full method name.
        rpc: &'static str,
        /// Bytes handed to the transport before the break.
        bytes_sent: u64,
        /// What broke.
        cause: String,
    },
    /// Reading the local content of an upload failed; the upload was
    /// abandoned without its final message, so the device discards it.
    #[error("reading the content to upload failed after {bytes_read} bytes: {message}")]
    ContentSource {
        /// Bytes read before the failure.
        bytes_read: u64,
        /// What failed.
        message: String,
    },
    /// A file's content does not match the hash the device sent with it.
    #[error(
        "hash mismatch for {path}: device sent {method} {expected}, content hashes to {actual}"
    )]
    HashMismatch {
        /// The file.
        path: String,
        /// `SHA256`, `SHA512` or `MD5`.
        method: &'static str,
        /// Hex digest the device sent.
        expected: String,
        /// Hex digest of the received content.
        actual: String,
    },
    /// gNOI is switched off (`CISCO_VK_GNOI_DISABLED`); no client exists.
    #[error("gNOI is disabled on this controller (CISCO_VK_GNOI_DISABLED / gnoi.disabled)")]
    Disabled,
}

fn detail_suffix(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(": {detail}")
    }
}

impl ClientError {
    /// Stable snake_case name of the error kind, for metric labels and
    /// Event/status reasons.
    pub fn category(&self) -> &'static str {
        match self {
            ClientError::ServiceUnsupported { .. } => "service_unsupported",
            ClientError::Unavailable { .. } => "unavailable",
            ClientError::Unauthenticated { .. } => "unauthenticated",
            ClientError::DeadlineExceeded { .. } => "deadline_exceeded",
            ClientError::InvalidPath(_) => "invalid_path",
            ClientError::InvalidRequest(_) => "invalid_request",
            ClientError::InvalidTarget(_) => "invalid_target",
            ClientError::Tls(_) => "tls",
            ClientError::Rpc { code, .. } => code_category(*code),
            ClientError::Protocol(_) => "protocol",
            ClientError::Interrupted { .. } => "interrupted",
            ClientError::ContentSource { .. } => "content_source",
            ClientError::HashMismatch { .. } => "hash_mismatch",
            ClientError::Disabled => "disabled",
        }
    }

    /// The one classification of client errors every reconciler uses.
    pub fn class(&self) -> ErrorClass {
        match self {
            ClientError::Unavailable { .. }
            | ClientError::DeadlineExceeded { .. }
            | ClientError::Interrupted { .. } => ErrorClass::Ambiguous,
            ClientError::Rpc { code, .. } => match code {
                Code::Unknown | Code::Cancelled | Code::DeadlineExceeded | Code::Unavailable => {
                    ErrorClass::Ambiguous
                }
                Code::ResourceExhausted | Code::Aborted | Code::Internal => ErrorClass::Retryable,
                _ => ErrorClass::Final,
            },
            // The capability cache entry expires, but within its TTL the
            // answer is the same: callers treat it as a condition to report.
            ClientError::ServiceUnsupported { .. } => ErrorClass::Unsupported,
            ClientError::Unauthenticated { .. }
            | ClientError::InvalidPath(_)
            | ClientError::InvalidRequest(_)
            | ClientError::InvalidTarget(_)
            | ClientError::Tls(_)
            | ClientError::Protocol(_)
            | ClientError::ContentSource { .. }
            | ClientError::HashMismatch { .. }
            | ClientError::Disabled => ErrorClass::Final,
        }
    }

    /// Whether the same call may succeed later without a change of spec or
    /// configuration ([`ErrorClass::Ambiguous`] or [`ErrorClass::Retryable`]).
    pub fn is_transient(&self) -> bool {
        matches!(self.class(), ErrorClass::Ambiguous | ErrorClass::Retryable)
    }

    /// Whether the request certainly did not take effect: refused before it
    /// was sent (invalid request or target, gNOI disabled), by the device's
    /// authentication, or for a service the device does not implement. A
    /// destructive RPC that failed otherwise is observed, never assumed
    /// refused.
    pub fn refused_unsent(&self) -> bool {
        matches!(
            self,
            ClientError::ServiceUnsupported { .. }
                | ClientError::InvalidRequest(_)
                | ClientError::Unauthenticated { .. }
                | ClientError::InvalidTarget(_)
                | ClientError::Disabled
        )
    }

    /// The gRPC code behind this error, where there is one.
    pub fn code(&self) -> Option<Code> {
        match self {
            ClientError::ServiceUnsupported { .. } => Some(Code::Unimplemented),
            ClientError::Unavailable { .. } => Some(Code::Unavailable),
            ClientError::Unauthenticated { code, .. } | ClientError::Rpc { code, .. } => {
                Some(*code)
            }
            ClientError::DeadlineExceeded { .. } => Some(Code::DeadlineExceeded),
            _ => None,
        }
    }
}

fn code_category(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "service_unsupported",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

/// Marker error returned by the connector while a class backs off or when
/// the TCP connect fails; found again in a status's source chain to tell a
/// call that never left from one that broke on the wire.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct ConnectFailed(pub(crate) String);

/// Walks an error's source chain, looking inside `io::Error`s too (their
/// `source()` skips the wrapped error).
pub(crate) fn chain_find<'a, T: StdError + 'static>(
    err: &'a (dyn StdError + 'static),
) -> Option<&'a T> {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(t) = e.downcast_ref::<T>() {
            return Some(t);
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
        {
            if let Some(t) = inner.downcast_ref::<T>() {
                return Some(t);
            }
            if let Some(found) = chain_find::<T>(inner) {
                return Some(found);
            }
        }
        cur = e.source();
    }
    None
}

/// Text of a status and its source chain, for messages.
pub(crate) fn status_text(status: &tonic::Status) -> String {
    let mut text = status.message().to_owned();
    let mut cur = status.source();
    while let Some(e) = cur {
        let s = e.to_string();
        if !s.is_empty() && !text.contains(&s) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&s);
        }
        cur = e.source();
    }
    text
}

/// Whether a status says the transport broke (as opposed to an answer from
/// the device): a connection reset, an h2 GOAWAY or an EOF mid-call.
pub(crate) fn is_transport_break(status: &tonic::Status) -> bool {
    let Some(src) = status.source() else {
        return false;
    };
    if chain_find::<ConnectFailed>(src).is_some() {
        return false;
    }
    chain_find::<hyper::Error>(src).is_some()
        || chain_find::<std::io::Error>(src).is_some()
        || chain_find::<tonic::transport::Error>(src).is_some()
}

/// Maps a status from `service`/`method` to a [`ClientError`].
pub(crate) fn from_status(
    service: GnoiService,
    method: &'static str,
    rpc: &'static str,
    deadline: Duration,
    status: &tonic::Status,
) -> ClientError {
    if let Some(src) = status.source() {
        if let Some(tls) = chain_find::<rustls::Error>(src) {
            return ClientError::Tls(tls.to_string());
        }
        if let Some(cf) = chain_find::<ConnectFailed>(src) {
            return ClientError::Unavailable {
                message: cf.0.clone(),
                retry_after: None,
            };
        }
        if chain_find::<tonic::TimeoutExpired>(src).is_some() {
            return ClientError::DeadlineExceeded {
                rpc,
                after: deadline,
            };
        }
    }
    // tonic enforces the request's grpc-timeout locally and reports it as
    // CANCELLED "Timeout expired"; it races the client's own deadline, and
    // both mean the same thing.
    if status.code() == Code::Cancelled && status.message() == tonic::TimeoutExpired(()).to_string()
    {
        return ClientError::DeadlineExceeded {
            rpc,
            after: deadline,
        };
    }
    match status.code() {
        Code::Unimplemented => ClientError::ServiceUnsupported {
            service,
            detail: status.message().to_owned(),
        },
        Code::Unavailable => ClientError::Unavailable {
            message: status_text(status),
            retry_after: None,
        },
        Code::Unauthenticated | Code::PermissionDenied => ClientError::Unauthenticated {
            code: status.code(),
            message: status.message().to_owned(),
        },
        Code::DeadlineExceeded => ClientError::DeadlineExceeded {
            rpc,
            after: deadline,
        },
        code if is_transport_break(status) => ClientError::Unavailable {
            message: format!("{code:?}: {}", status_text(status)),
            retry_after: None,
        },
        code => ClientError::Rpc {
            service,
            method,
            code,
            message: status.message().to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_are_stable_snake_case() {
        let cases = [
            (
                ClientError::ServiceUnsupported {
                    service: GnoiService::System,
                    detail: String::new(),
                },
                "service_unsupported",
                false,
            ),
            (
                ClientError::Unavailable {
                    message: "x".into(),
                    retry_after: None,
                },
                "unavailable",
                true,
            ),
            (
                ClientError::DeadlineExceeded {
                    rpc: "gnoi.system.System/Time",
                    after: Duration::from_secs(1),
                },
                "deadline_exceeded",
                true,
            ),
            (
                ClientError::Rpc {
                    service: GnoiService::File,
                    method: "Stat",
                    code: Code::NotFound,
                    message: "no such file".into(),
                },
                "not_found",
                false,
            ),
            (
                ClientError::Rpc {
                    service: GnoiService::File,
                    method: "Put",
                    code: Code::ResourceExhausted,
                    message: "full".into(),
                },
                "resource_exhausted",
                true,
            ),
            (ClientError::Disabled, "disabled", false),
            (ClientError::Protocol("x".into()), "protocol", false),
        ];
        for (err, cat, transient) in cases {
            assert_eq!(err.category(), cat, "{err}");
            assert_eq!(err.is_transient(), transient, "{err}");
            assert!(cat.chars().all(|c| c.is_ascii_lowercase() || c == '_'));
        }
    }

    #[test]
    fn one_classification() {
        let rpc = |code| ClientError::Rpc {
            service: GnoiService::System,
            method: "Reboot",
            code,
            message: "m".into(),
        };
        let unavailable = ClientError::Unavailable {
            message: "reset".into(),
            retry_after: None,
        };
        let unsupported = ClientError::ServiceUnsupported {
            service: GnoiService::Os,
            detail: "nope".into(),
        };
        let cases = [
            (unavailable, ErrorClass::Ambiguous, false),
            (rpc(Code::Unknown), ErrorClass::Ambiguous, false),
            (rpc(Code::Cancelled), ErrorClass::Ambiguous, false),
            (rpc(Code::Aborted), ErrorClass::Retryable, false),
            (rpc(Code::Internal), ErrorClass::Retryable, false),
            (rpc(Code::NotFound), ErrorClass::Final, false),
            (rpc(Code::FailedPrecondition), ErrorClass::Final, false),
            (ClientError::Protocol("x".into()), ErrorClass::Final, false),
            (
                ClientError::InvalidRequest("x".into()),
                ErrorClass::Final,
                true,
            ),
            (ClientError::Disabled, ErrorClass::Final, true),
            (unsupported, ErrorClass::Unsupported, true),
        ];
        for (err, class, unsent) in cases {
            assert_eq!(err.class(), class, "{err}");
            assert_eq!(err.refused_unsent(), unsent, "{err}");
            assert_eq!(
                err.is_transient(),
                matches!(class, ErrorClass::Ambiguous | ErrorClass::Retryable),
                "{err}"
            );
        }
    }

    #[test]
    fn status_mapping() {
        let d = Duration::from_secs(3);
        let e = from_status(
            GnoiService::Os,
            "Verify",
            "gnoi.os.OS/Verify",
            d,
            &tonic::Status::unimplemented("nope"),
        );
        assert!(
            matches!(e, ClientError::ServiceUnsupported { service: GnoiService::Os, ref detail } if detail == "nope")
        );
        let e = from_status(
            GnoiService::Os,
            "Verify",
            "gnoi.os.OS/Verify",
            d,
            &tonic::Status::permission_denied("bad user"),
        );
        assert_eq!(e.category(), "unauthenticated");
        let e = from_status(
            GnoiService::File,
            "Stat",
            "gnoi.file.File/Stat",
            d,
            &tonic::Status::not_found("flash:x"),
        );
        assert_eq!(
            e.to_string(),
            "gnoi.file.File/Stat failed with NotFound: flash:x"
        );
        // tonic's local grpc-timeout enforcement is a deadline, not a break.
        let e = from_status(
            GnoiService::System,
            "Time",
            "gnoi.system.System/Time",
            d,
            &tonic::Status::cancelled("Timeout expired"),
        );
        assert!(
            matches!(e, ClientError::DeadlineExceeded { rpc: "gnoi.system.System/Time", after } if after == d),
            "{e}"
        );
        // A server-side cancellation with another message stays an RPC error.
        let e = from_status(
            GnoiService::System,
            "Time",
            "gnoi.system.System/Time",
            d,
            &tonic::Status::cancelled("operator abort"),
        );
        assert_eq!(e.category(), "cancelled");
    }
}
