//! The one domain error type and its mapping onto gRPC status codes.

/// An operation on the device model failed. Services convert it with
/// `tonic::Status::from`; the variant picks the gRPC code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// The request is malformed (INVALID_ARGUMENT).
    #[error("{0}")]
    InvalidArgument(String),
    /// A path, process or version does not exist (NOT_FOUND).
    #[error("{0}")]
    NotFound(String),
    /// Read-only filesystem or protected file (PERMISSION_DENIED).
    #[error("{0}")]
    PermissionDenied(String),
    /// Out of space (RESOURCE_EXHAUSTED).
    #[error("{0}")]
    ResourceExhausted(String),
    /// The device is not in a state that allows this (FAILED_PRECONDITION).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The device is rebooting (UNAVAILABLE).
    #[error("{0}")]
    Unavailable(String),
    /// Not supported by this platform or release (UNIMPLEMENTED).
    #[error("{0}")]
    Unimplemented(String),
    /// Content does not match its hash (DATA_LOSS).
    #[error("{0}")]
    DataLoss(String),
    /// The client went away mid-transfer (ABORTED).
    #[error("{0}")]
    Aborted(String),
    /// A simulator bug or host I/O failure (INTERNAL).
    #[error("{0}")]
    Internal(String),
}

impl DomainError {
    /// Stable label for logs and the journal.
    pub fn category(&self) -> &'static str {
        match self {
            DomainError::InvalidArgument(_) => "invalid_argument",
            DomainError::NotFound(_) => "not_found",
            DomainError::PermissionDenied(_) => "permission_denied",
            DomainError::ResourceExhausted(_) => "resource_exhausted",
            DomainError::FailedPrecondition(_) => "failed_precondition",
            DomainError::Unavailable(_) => "unavailable",
            DomainError::Unimplemented(_) => "unimplemented",
            DomainError::DataLoss(_) => "data_loss",
            DomainError::Aborted(_) => "aborted",
            DomainError::Internal(_) => "internal",
        }
    }
}

impl From<DomainError> for tonic::Status {
    fn from(e: DomainError) -> Self {
        use tonic::Code;
        let code = match &e {
            DomainError::InvalidArgument(_) => Code::InvalidArgument,
            DomainError::NotFound(_) => Code::NotFound,
            DomainError::PermissionDenied(_) => Code::PermissionDenied,
            DomainError::ResourceExhausted(_) => Code::ResourceExhausted,
            DomainError::FailedPrecondition(_) => Code::FailedPrecondition,
            DomainError::Unavailable(_) => Code::Unavailable,
            DomainError::Unimplemented(_) => Code::Unimplemented,
            DomainError::DataLoss(_) => Code::DataLoss,
            DomainError::Aborted(_) => Code::Aborted,
            DomainError::Internal(_) => Code::Internal,
        };
        tonic::Status::new(code, e.to_string())
    }
}

impl From<std::io::Error> for DomainError {
    fn from(e: std::io::Error) -> Self {
        DomainError::Internal(format!("host i/o: {e}"))
    }
}

/// Upper-case gRPC code name (`UNAVAILABLE`), as used by the journal.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Parses a code given as a name (`unavailable`, `UNAVAILABLE`,
/// `Unavailable`) or a number (`14`).
pub fn parse_code(s: &str) -> Option<tonic::Code> {
    if let Ok(n) = s.trim().parse::<i32>() {
        let c = tonic::Code::from_i32(n);
        return (c as i32 == n).then_some(c);
    }
    let norm: String = s
        .trim()
        .chars()
        .filter(|c| *c != '_')
        .collect::<String>()
        .to_ascii_uppercase();
    (0..=16)
        .map(tonic::Code::from_i32)
        .find(|c| code_name(*c).replace('_', "") == norm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_parse_by_name_and_number() {
        assert_eq!(parse_code("unavailable"), Some(tonic::Code::Unavailable));
        assert_eq!(
            parse_code("RESOURCE_EXHAUSTED"),
            Some(tonic::Code::ResourceExhausted)
        );
        assert_eq!(
            parse_code("FailedPrecondition"),
            Some(tonic::Code::FailedPrecondition)
        );
        assert_eq!(parse_code("14"), Some(tonic::Code::Unavailable));
        assert_eq!(parse_code("99"), None);
        assert_eq!(parse_code("nonsense"), None);
        let s: tonic::Status = DomainError::ResourceExhausted("full".into()).into();
        assert_eq!(s.code(), tonic::Code::ResourceExhausted);
    }
}
