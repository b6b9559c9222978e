//! The one error type. Every error a client can see carries the spec's errcode,
//! the right HTTP status and a message a person can act on.

use std::time::Duration;

use http::StatusCode;
use ruma::api::{
    client::uiaa::UiaaInfo,
    error::{ErrorKind, LimitExceededErrorData, RetryAfter, UnknownTokenErrorData},
};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Matrix error with its errcode, status and message.
    #[error("{message}")]
    Matrix {
        status: StatusCode,
        kind: ErrorKind,
        message: String,
    },

    /// User-interactive auth is not (yet) complete: 401 with the flows.
    #[error("user-interactive authentication required")]
    Uiaa(Box<UiaaInfo>),

    #[error("storage: {0}")]
    Storage(#[from] rocksdb::Error),

    /// A bug or an environment failure: logged in full, shown as M_UNKNOWN.
    #[error("{0}")]
    Internal(String),
}

impl Error {
    pub fn new(status: StatusCode, kind: ErrorKind, message: impl Into<String>) -> Self {
        Self::Matrix {
            status,
            kind,
            message: message.into(),
        }
    }

    pub fn bad_json(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorKind::BadJson, message)
    }

    pub fn not_json(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorKind::NotJson, message)
    }

    pub fn invalid_param(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorKind::InvalidParam, message)
    }

    pub fn missing_param(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorKind::MissingParam, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, ErrorKind::Forbidden, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorKind::NotFound, message)
    }

    pub fn unrecognized(status: StatusCode, message: impl Into<String>) -> Self {
        Self::new(status, ErrorKind::Unrecognized, message)
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, ErrorKind::TooLarge, message)
    }

    pub fn missing_token() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            ErrorKind::MissingToken,
            "This endpoint needs an access token: send it as 'Authorization: Bearer <token>'",
        )
    }

    /// An access token that is not (or no longer) valid. `soft_logout` tells the
    /// client it may refresh or log in again without losing its device.
    pub fn unknown_token(soft_logout: bool, message: impl Into<String>) -> Self {
        let mut data = UnknownTokenErrorData::new();
        data.soft_logout = soft_logout;
        Self::new(
            StatusCode::UNAUTHORIZED,
            ErrorKind::UnknownToken(data),
            message,
        )
    }

    pub fn limit_exceeded(retry_after: Duration) -> Self {
        let mut data = LimitExceededErrorData::new();
        data.retry_after = Some(RetryAfter::Delay(retry_after));
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::LimitExceeded(data),
            format!(
                "Too many requests; retry in {} ms",
                retry_after.as_millis().max(1)
            ),
        )
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::Internal(message.into())
    }

    /// The Matrix errcode kind, for tests and logs.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Matrix { kind, .. } => kind.clone(),
            Self::Uiaa(_) => ErrorKind::Unauthorized,
            Self::Storage(_) | Self::Internal(_) => ErrorKind::Unknown,
        }
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Self::Internal(format!("JSON (de)serialisation: {e}"))
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Self::Internal(format!("file system: {e}"))
    }
}

impl From<tokio::task::JoinError> for Error {
    fn from(e: tokio::task::JoinError) -> Self {
        Self::Internal(format!("background task failed: {e}"))
    }
}
