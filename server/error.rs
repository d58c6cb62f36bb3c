//! The one place typed errors become XRPC errors.
//!
//! Handlers and hooks return typed errors (`AuthError`, ...); the `From`
//! impls here decide the status, the error name and what the caller may be
//! told. Anything that could carry internals (database errors, network
//! failures, file paths) is logged here and replaced by a generic message.

use catbird_generated::runtime::DeclaredError;
use catbird_generated::runtime::xrpc::http::StatusCode;
use catbird_generated::runtime::xrpc::{MethodError, XrpcError};

use std::time::Duration;

use crate::groups::engine::EngineError;
use crate::mls_crypto::UnsupportedSuite;
use catbird_mls_core::auth::AuthError;

/// Why a method failed. Each variant that is a lexicon error carries the
/// message for the caller; [`ServiceError::Database`] and
/// [`ServiceError::Internal`] carry causes for the log only.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{0}")]
    InvalidKeyPackage(String),
    #[error("{0}")]
    UnsupportedCipherSuite(String),
    #[error("{0}")]
    TooManyKeyPackages(String),
    #[error("{0}")]
    NoKeyPackages(String),
    #[error("{0}")]
    KeyPackageNotFound(String),
    #[error("{0}")]
    InvalidDevice(String),
    #[error("{0}")]
    ConvoNotFound(String),
    #[error("{0}")]
    ConvoAlreadyExists(String),
    #[error("{0}")]
    NotMember(String),
    #[error("{0}")]
    NotAdmin(String),
    #[error("{0}")]
    Banned(String),
    #[error("{0}")]
    EpochMismatch(String),
    #[error("{0}")]
    InvalidCommit(String),
    #[error("{0}")]
    InvalidWelcome(String),
    #[error("{0}")]
    InvalidGroupInfo(String),
    #[error("{0}")]
    InvalidProposal(String),
    #[error("{0}")]
    InvalidCiphertext(String),
    #[error("{0}")]
    MessageTooLarge(String),
    #[error("{0}")]
    DuplicateMessageId(String),
    #[error("{0}")]
    DuplicateCiphertext(String),
    #[error("{0}")]
    WelcomeNotFound(String),
    #[error("{0}")]
    WelcomeConsumed(String),
    #[error("{0}")]
    InvalidCursor(String),
    #[error("{0}")]
    IdempotencyKeyReused(String),
    #[error("{0}")]
    IdempotencyKeyInProgress(String),
    #[error("{0}")]
    ExternalCommitNotEnabled(String),
    #[error("{0}")]
    TooManyConnections(String),
    #[error("{0}")]
    RateLimitExceeded(String),
    /// The service cannot take the request now (shutting down); retry.
    #[error("{0}")]
    Unavailable(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("{0}")]
    Internal(String),
}

impl ServiceError {
    /// The lexicon error name, or `None` for our own failures.
    pub fn name(&self) -> Option<&'static str> {
        self.name_and_status().map(|(name, _)| name)
    }

    /// The lexicon error name and the status the service answers it with,
    /// or `None` for our own failures.
    fn name_and_status(&self) -> Option<(&'static str, StatusCode)> {
        Some(match self {
            Self::InvalidKeyPackage(_) => ("InvalidKeyPackage", StatusCode::BAD_REQUEST),
            Self::UnsupportedCipherSuite(_) => ("UnsupportedCipherSuite", StatusCode::BAD_REQUEST),
            Self::TooManyKeyPackages(_) => ("TooManyKeyPackages", StatusCode::BAD_REQUEST),
            Self::NoKeyPackages(_) => ("NoKeyPackages", StatusCode::NOT_FOUND),
            Self::KeyPackageNotFound(_) => ("KeyPackageNotFound", StatusCode::NOT_FOUND),
            Self::InvalidDevice(_) => ("InvalidDevice", StatusCode::BAD_REQUEST),
            Self::ConvoNotFound(_) => ("ConvoNotFound", StatusCode::NOT_FOUND),
            Self::ConvoAlreadyExists(_) => ("ConvoAlreadyExists", StatusCode::CONFLICT),
            Self::NotMember(_) => ("NotMember", StatusCode::FORBIDDEN),
            Self::NotAdmin(_) => ("NotAdmin", StatusCode::FORBIDDEN),
            Self::Banned(_) => ("Banned", StatusCode::FORBIDDEN),
            Self::EpochMismatch(_) => ("EpochMismatch", StatusCode::CONFLICT),
            Self::InvalidCommit(_) => ("InvalidCommit", StatusCode::BAD_REQUEST),
            Self::InvalidWelcome(_) => ("InvalidWelcome", StatusCode::BAD_REQUEST),
            Self::InvalidGroupInfo(_) => ("InvalidGroupInfo", StatusCode::BAD_REQUEST),
            Self::InvalidProposal(_) => ("InvalidProposal", StatusCode::BAD_REQUEST),
            Self::InvalidCiphertext(_) => ("InvalidCiphertext", StatusCode::BAD_REQUEST),
            Self::MessageTooLarge(_) => ("MessageTooLarge", StatusCode::PAYLOAD_TOO_LARGE),
            Self::DuplicateMessageId(_) => ("DuplicateMessageId", StatusCode::CONFLICT),
            Self::DuplicateCiphertext(_) => ("DuplicateCiphertext", StatusCode::CONFLICT),
            Self::WelcomeNotFound(_) => ("WelcomeNotFound", StatusCode::NOT_FOUND),
            Self::WelcomeConsumed(_) => ("WelcomeConsumed", StatusCode::GONE),
            Self::InvalidCursor(_) => ("InvalidCursor", StatusCode::BAD_REQUEST),
            Self::IdempotencyKeyReused(_) => {
                ("IdempotencyKeyReused", StatusCode::UNPROCESSABLE_ENTITY)
            }
            Self::IdempotencyKeyInProgress(_) => ("IdempotencyKeyInProgress", StatusCode::CONFLICT),
            Self::ExternalCommitNotEnabled(_) => {
                ("ExternalCommitNotEnabled", StatusCode::FORBIDDEN)
            }
            Self::TooManyConnections(_) => ("TooManyConnections", StatusCode::TOO_MANY_REQUESTS),
            Self::RateLimitExceeded(_) => ("RateLimitExceeded", StatusCode::TOO_MANY_REQUESTS),
            Self::Unavailable(_) | Self::Database(_) | Self::Internal(_) => return None,
        })
    }

    /// The errors that are not the lexicon's but the caller can act on:
    /// 503 `ServiceUnavailable` with `Retry-After` (shutting down, or the
    /// database unreachable: retry), and 400 for a string PostgreSQL
    /// cannot store (the input's fault, though found only by the
    /// database). The database's own words are logged, never sent.
    fn runtime_error(&self) -> Option<XrpcError> {
        match self {
            Self::Unavailable(message) => {
                Some(XrpcError::service_unavailable(message.clone(), RETRY_AFTER))
            }
            Self::Database(error) if unavailable(error) => {
                tracing::warn!(%error, "database unavailable");
                Some(database_unavailable())
            }
            Self::Database(error) if unstorable_text(error) => {
                tracing::warn!(%error, "input the database cannot store");
                Some(XrpcError::invalid_request(
                    "the input holds a character that cannot be stored (U+0000, NUL)",
                ))
            }
            _ => None,
        }
    }
}

/// Whether a database error means the database cannot be reached now (no
/// connection within the acquire timeout, a connection lost, the server
/// shutting down or starting up, out of connections) rather than a bad
/// statement: the request may succeed when retried.
pub fn unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        // Class 08: connection exceptions; 57P01-03: admin shutdown, crash
        // shutdown, cannot connect now; 53300: too many connections.
        sqlx::Error::Database(error) => error.code().is_some_and(|code| {
            code.starts_with("08") || matches!(&*code, "57P01" | "57P02" | "57P03" | "53300")
        }),
        _ => false,
    }
}

/// Whether PostgreSQL refused a string it cannot store (SQLSTATE 22021,
/// "invalid byte sequence": U+0000 in `text`): the input's fault.
pub fn unstorable_text(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(error) if error.code().as_deref() == Some("22021"))
}

/// How long a client is told to wait before retrying a 503.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// What a client is told when the database cannot be reached now.
pub const DATABASE_UNAVAILABLE: &str = "the service's database is unavailable; retry shortly";

/// 503 `ServiceUnavailable`: the database cannot be reached now.
pub fn database_unavailable() -> XrpcError {
    XrpcError::service_unavailable(DATABASE_UNAVAILABLE, RETRY_AFTER)
}

impl From<UnsupportedSuite> for ServiceError {
    fn from(error: UnsupportedSuite) -> Self {
        Self::UnsupportedCipherSuite(error.to_string())
    }
}

impl From<EngineError> for ServiceError {
    /// The MLS engine's refusals, by what was refused. (A wrong-group
    /// application message is mapped where messages are sent.)
    fn from(error: EngineError) -> Self {
        let message = error.to_string();
        match error {
            EngineError::InvalidCommit(_) | EngineError::WrongGroup => Self::InvalidCommit(message),
            EngineError::EpochMismatch { .. } => Self::EpochMismatch(format!(
                "{message}: another commit was accepted first; read the log with getMessages, process it and retry"
            )),
            EngineError::InvalidGroupInfo(_) => Self::InvalidGroupInfo(message),
            EngineError::InvalidProposal(_) => Self::InvalidProposal(message),
            EngineError::InvalidCiphertext(_) => Self::InvalidCiphertext(message),
            EngineError::InvalidWelcome(_) => Self::InvalidWelcome(message),
            EngineError::Internal(_) => Self::Internal(message),
        }
    }
}

impl<E: DeclaredError> From<ServiceError> for MethodError<E> {
    /// A lexicon error becomes the method's declared error of that name,
    /// with the status chosen above. Our own failures become a 500 whose
    /// cause is only logged.
    fn from(error: ServiceError) -> Self {
        if let Some(runtime) = error.runtime_error() {
            return runtime.into();
        }
        if let Some((name, status)) = error.name_and_status() {
            if let Some(declared) = E::from_name(name) {
                return MethodError::declared(declared, error.to_string()).with_status(status);
            }
            // A method returning an error its lexicon does not declare is
            // our bug, but the caller still gets the same name and status.
            tracing::warn!(error = name, "error not declared by the method's lexicon");
        }
        XrpcError::from(error).into()
    }
}

impl From<ServiceError> for XrpcError {
    /// Where no method type is at hand (the hooks): the lexicon error by
    /// name and status, or a 500 whose cause is only logged.
    fn from(error: ServiceError) -> Self {
        if let Some(runtime) = error.runtime_error() {
            return runtime;
        }
        match error.name_and_status() {
            Some((name, status)) => XrpcError::new(status, name, error.to_string()),
            None => XrpcError::internal(&error),
        }
    }
}

/// An authentication failure as an XRPC error: no credentials -> 401
/// `AuthenticationRequired`; bad credentials -> 401 `InvalidToken` with a
/// message naming the problem; our own failure -> 500.
pub fn auth_error(error: AuthError) -> XrpcError {
    match error {
        AuthError::Missing => XrpcError::authentication_required(error.to_string()),
        // The cause (a path, a network error) is in the verifier's log.
        AuthError::UnresolvableDid(_) => {
            XrpcError::invalid_token("could not resolve the token issuer's DID document")
        }
        AuthError::Internal(cause) => XrpcError::internal(&cause),
        AuthError::Unavailable(cause) => {
            tracing::warn!(%cause, "cannot check a token");
            database_unavailable()
        }
        AuthError::Malformed(_)
        | AuthError::UnsupportedAlgorithm
        | AuthError::BadSignature
        | AuthError::WrongAudience
        | AuthError::Expired
        | AuthError::NotYetValid
        | AuthError::IssuedInFuture
        | AuthError::WrongMethod { .. }
        | AuthError::Replayed
        | AuthError::ForbiddenTokenType(_)
        | AuthError::NoSigningKey => XrpcError::invalid_token(error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use catbird_generated::runtime::xrpc::http::StatusCode;
    use catbird_generated::runtime::xrpc::http::header::{
        RETRY_AFTER as RETRY_AFTER_HEADER, WWW_AUTHENTICATE,
    };

    use super::*;

    #[test]
    fn auth_errors_become_401s_without_internals() {
        let missing = auth_error(AuthError::Missing);
        assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(missing.error(), "AuthenticationRequired");
        assert!(missing.headers().contains_key(WWW_AUTHENTICATE));

        let expired = auth_error(AuthError::Expired);
        assert_eq!(expired.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(expired.error(), "InvalidToken");
        assert_eq!(expired.message(), "token expired");

        let wrong = auth_error(AuthError::WrongMethod {
            expected: "a.b.c".into(),
            got: Some("a.b.d".into()),
        });
        assert_eq!(wrong.message(), "token is for method a.b.d, not a.b.c");

        let unresolvable = auth_error(AuthError::UnresolvableDid("/secret/path: ENOENT".into()));
        assert_eq!(unresolvable.error(), "InvalidToken");
        assert!(!unresolvable.message().contains("secret"));

        let internal = auth_error(AuthError::Internal("pool timed out at 10.0.0.1".into()));
        assert_eq!(internal.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!internal.message().contains("10.0.0.1"));

        let unavailable = auth_error(AuthError::Unavailable("pool timed out at 10.0.0.1".into()));
        assert_eq!(unavailable.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(unavailable.error(), "ServiceUnavailable");
        assert_eq!(unavailable.headers()[RETRY_AFTER_HEADER], "1");
        assert!(!unavailable.message().contains("10.0.0.1"));
    }

    #[test]
    fn database_failures_become_503s_or_400s() {
        use catbird_generated::lexicons::blue::catbird::mls::send_message;

        let timed_out: XrpcError = ServiceError::Database(sqlx::Error::PoolTimedOut).into();
        assert_eq!(timed_out.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(timed_out.error(), "ServiceUnavailable");
        assert_eq!(timed_out.headers()[RETRY_AFTER_HEADER], "1");

        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let method: MethodError<send_message::Error> =
            ServiceError::Database(sqlx::Error::Io(refused)).into();
        assert_eq!(method.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(method.name(), "ServiceUnavailable");

        let other: XrpcError = ServiceError::Database(sqlx::Error::RowNotFound).into();
        assert_eq!(other.status(), StatusCode::INTERNAL_SERVER_ERROR);

        let stopping: XrpcError = ServiceError::Unavailable("shutting down".into()).into();
        assert_eq!(stopping.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(stopping.headers()[RETRY_AFTER_HEADER], "1");
    }
}
