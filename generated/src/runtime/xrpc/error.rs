//! XRPC errors: the `{"error": "Name", "message": "..."}` body every failure
//! carries, whether the runtime or the handler produced it.

use std::fmt;
use std::time::Duration;

#[cfg(feature = "server")]
use axum::body::Body;
#[cfg(feature = "server")]
use axum::response::{IntoResponse, Response};
#[cfg(feature = "server")]
use http::header::CONTENT_TYPE;
use http::header::{RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};

use crate::runtime::DeclaredError;

/// A runtime-level XRPC error: a status, the JSON body
/// `{"error", "message"}`, and any headers the status calls for
/// (`WWW-Authenticate` on 401, `Retry-After` on 429).
///
/// Boxed inside, so `Result<T, XrpcError>` stays one pointer wide on the
/// error side.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}: {}", self.0.error, self.0.message)]
pub struct XrpcError(Box<Inner>);

#[derive(Debug, Clone)]
struct Inner {
    status: StatusCode,
    error: String,
    message: String,
    headers: HeaderMap,
}

impl XrpcError {
    /// Any status, error name and message.
    pub fn new(status: StatusCode, error: impl Into<String>, message: impl Into<String>) -> Self {
        Self(Box::new(Inner {
            status,
            error: error.into(),
            message: message.into(),
            headers: HeaderMap::new(),
        }))
    }

    /// 400 `InvalidRequest`: bad parameters, bad body, wrong verb.
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "InvalidRequest", message)
    }

    /// 401 `AuthenticationRequired` with `WWW-Authenticate: Bearer` (RFC 6750:
    /// a 401 must say which scheme to use).
    pub fn authentication_required(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "AuthenticationRequired", message)
            .with_header(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))
    }

    /// 401 `InvalidToken`: a token was sent but is bad, expired or replayed.
    pub fn invalid_token(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "InvalidToken", message).with_header(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer error=\"invalid_token\""),
        )
    }

    /// 403 `Forbidden`.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "Forbidden", message)
    }

    /// 404 `NotFound`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NotFound", message)
    }

    /// 429 `RateLimitExceeded` with `Retry-After` in whole seconds, rounded
    /// up and at least 1 (0 would invite an immediate retry).
    pub fn rate_limited(retry_after: Duration) -> Self {
        let mut seconds = retry_after.as_secs();
        if retry_after.subsec_nanos() > 0 {
            seconds = seconds.saturating_add(1);
        }
        let seconds = seconds.max(1);
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "RateLimitExceeded",
            format!("rate limit exceeded; retry after {seconds} s"),
        )
        .with_header(RETRY_AFTER, HeaderValue::from(seconds))
    }

    /// 408 `RequestTimeout`: the request body stalled for longer than
    /// `pause`.
    pub fn request_timeout(pause: Duration) -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "RequestTimeout",
            format!(
                "the request body stalled for more than {} ms",
                pause.as_millis()
            ),
        )
    }

    /// 503 `ServiceUnavailable` with `Retry-After` in whole seconds (at
    /// least 1): the service cannot answer now (its database is
    /// unreachable, it is shutting down) and a retry may succeed.
    pub fn service_unavailable(message: impl Into<String>, retry_after: Duration) -> Self {
        let seconds = retry_after.as_secs().max(1);
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            message,
        )
        .with_header(RETRY_AFTER, HeaderValue::from(seconds))
    }

    /// 413 `PayloadTooLarge`.
    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PayloadTooLarge",
            format!("request body is larger than {limit} bytes"),
        )
    }

    /// 415 `UnsupportedMediaType`: the body's `Content-Type` is not the
    /// method's declared encoding.
    pub fn unsupported_media_type(expected: &str, got: Option<&str>) -> Self {
        let got = got.map_or_else(|| "no Content-Type".to_owned(), |got| format!("{got:?}"));
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            format!("expected Content-Type {expected:?}, got {got}"),
        )
    }

    /// 501 `MethodNotImplemented`: no method with this NSID is served here.
    pub fn method_not_implemented(nsid: &str) -> Self {
        Self::new(
            StatusCode::NOT_IMPLEMENTED,
            "MethodNotImplemented",
            format!("method {nsid:?} is not implemented"),
        )
    }

    /// 500 `InternalServerError`. The cause is logged, never sent: internals
    /// (SQL, paths, stack details) must not reach clients.
    pub fn internal(cause: &dyn fmt::Display) -> Self {
        tracing::error!(%cause, "internal server error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerError",
            "internal server error",
        )
    }

    /// Adds (or replaces) a response header.
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.0.headers.insert(name, value);
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.0.status
    }

    /// The error name, e.g. `InvalidRequest`.
    pub fn error(&self) -> &str {
        &self.0.error
    }

    /// The human-readable message.
    pub fn message(&self) -> &str {
        &self.0.message
    }

    /// Extra response headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.0.headers
    }

    /// Replaces all extra headers (the client keeps the server's).
    #[cfg(feature = "client")]
    pub(crate) fn with_headers(mut self, headers: HeaderMap) -> Self {
        self.0.headers = headers;
        self
    }
}

#[cfg(feature = "server")]
impl IntoResponse for XrpcError {
    fn into_response(self) -> Response {
        let Inner {
            status,
            error,
            message,
            headers,
        } = *self.0;
        let mut response = error_response(status, &error, &message);
        response.headers_mut().extend(headers);
        response
    }
}

/// The wire form of every XRPC error body.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ErrorBody {
    pub error: String,
    #[serde(default)]
    pub message: Option<String>,
}

#[cfg(feature = "server")]
/// A JSON error response. Serialising two strings cannot fail; the
/// fallback body keeps that true without a panic path.
pub(crate) fn error_response(status: StatusCode, error: &str, message: &str) -> Response {
    let body = ErrorBody {
        error: error.to_owned(),
        message: Some(message.to_owned()),
    };
    let bytes = serde_json::to_vec(&body)
        .unwrap_or_else(|_| br#"{"error":"InternalServerError"}"#.to_vec());
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// What a handler returns on failure: one of its method's declared lexicon
/// errors (with the status the service chooses) or a runtime-level error.
#[derive(Debug, Clone)]
pub enum MethodError<E> {
    /// An error from the method's lexicon `errors` list.
    Declared {
        /// Which one.
        error: E,
        /// The human-readable message.
        message: String,
        /// The HTTP status; 400 unless the service picks another.
        status: StatusCode,
    },
    /// Any runtime-level error (auth, rate limit, internal, ...).
    Xrpc(XrpcError),
}

impl<E: DeclaredError> MethodError<E> {
    /// A declared error with status 400.
    pub fn declared(error: E, message: impl Into<String>) -> Self {
        Self::Declared {
            error,
            message: message.into(),
            status: StatusCode::BAD_REQUEST,
        }
    }

    /// Sets the status of a declared error (e.g. 404 for a not-found
    /// error); runtime errors keep theirs.
    pub fn with_status(self, status: StatusCode) -> Self {
        match self {
            Self::Declared { error, message, .. } => Self::Declared {
                error,
                message,
                status,
            },
            other => other,
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Declared { status, .. } => *status,
            Self::Xrpc(error) => error.status(),
        }
    }

    /// The error name as written in the body.
    pub fn name(&self) -> &str {
        match self {
            Self::Declared { error, .. } => error.name(),
            Self::Xrpc(error) => error.error(),
        }
    }

    /// The human-readable message.
    pub fn message(&self) -> &str {
        match self {
            Self::Declared { message, .. } => message,
            Self::Xrpc(error) => error.message(),
        }
    }

    /// The declared error, if this is one.
    pub fn declared_error(&self) -> Option<&E> {
        match self {
            Self::Declared { error, .. } => Some(error),
            Self::Xrpc(_) => None,
        }
    }
}

impl<E> From<XrpcError> for MethodError<E> {
    fn from(error: XrpcError) -> Self {
        Self::Xrpc(error)
    }
}

#[cfg(feature = "server")]
impl<E: DeclaredError> IntoResponse for MethodError<E> {
    fn into_response(self) -> Response {
        match self {
            Self::Declared {
                error,
                message,
                status,
            } => error_response(status, error.name(), &message),
            Self::Xrpc(error) => error.into_response(),
        }
    }
}

impl<E: DeclaredError> fmt::Display for MethodError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.name(), self.message())
    }
}

impl<E: DeclaredError + fmt::Debug> std::error::Error for MethodError<E> {}

/// The conventional error name for a status, for responses that did not
/// come with an XRPC body (a plain-text rejection, a proxy's error page).
pub(crate) fn name_for_status(status: StatusCode) -> String {
    match status.as_u16() {
        400 => "InvalidRequest".to_owned(),
        401 => "AuthenticationRequired".to_owned(),
        403 => "Forbidden".to_owned(),
        404 => "NotFound".to_owned(),
        413 => "PayloadTooLarge".to_owned(),
        415 => "UnsupportedMediaType".to_owned(),
        429 => "RateLimitExceeded".to_owned(),
        500 => "InternalServerError".to_owned(),
        501 => "MethodNotImplemented".to_owned(),
        502 => "UpstreamFailure".to_owned(),
        503 => "NotEnoughResources".to_owned(),
        504 => "UpstreamTimeout".to_owned(),
        _ => status
            .canonical_reason()
            .unwrap_or("Error")
            .split(|c: char| !c.is_ascii_alphanumeric())
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Error {
        NameTaken,
    }

    impl DeclaredError for Error {
        fn name(&self) -> &'static str {
            "NameTaken"
        }
        fn from_name(name: &str) -> Option<Self> {
            (name == "NameTaken").then_some(Self::NameTaken)
        }
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        let header = |d| {
            XrpcError::rate_limited(d).headers()[RETRY_AFTER]
                .to_str()
                .unwrap()
                .to_owned()
        };
        assert_eq!(header(Duration::ZERO), "1");
        assert_eq!(header(Duration::from_millis(1)), "1");
        assert_eq!(header(Duration::from_millis(1500)), "2");
        assert_eq!(header(Duration::from_secs(30)), "30");
    }

    #[test]
    fn unauthorized_errors_carry_www_authenticate() {
        let required = XrpcError::authentication_required("no token");
        assert_eq!(required.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(required.headers()[WWW_AUTHENTICATE], "Bearer");
        let invalid = XrpcError::invalid_token("expired");
        assert_eq!(invalid.error(), "InvalidToken");
        assert_eq!(
            invalid.headers()[WWW_AUTHENTICATE],
            "Bearer error=\"invalid_token\""
        );
    }

    #[test]
    fn internal_errors_hide_the_cause() {
        let error = XrpcError::internal(&"connection to 10.0.0.5:5432 refused");
        assert_eq!(error.message(), "internal server error");
        assert_eq!(
            error.to_string(),
            "InternalServerError: internal server error"
        );
    }

    #[test]
    fn method_errors() {
        let error = MethodError::declared(Error::NameTaken, "taken");
        assert_eq!(error.status(), StatusCode::BAD_REQUEST);
        let error = error.with_status(StatusCode::CONFLICT);
        assert_eq!(error.status(), StatusCode::CONFLICT);
        assert_eq!(error.name(), "NameTaken");
        assert_eq!(error.to_string(), "NameTaken: taken");
        assert_eq!(error.declared_error(), Some(&Error::NameTaken));
        let runtime: MethodError<Error> = XrpcError::forbidden("no").into();
        let runtime = runtime.with_status(StatusCode::CONFLICT);
        assert_eq!(runtime.status(), StatusCode::FORBIDDEN);
        assert_eq!(runtime.name(), "Forbidden");
    }

    #[test]
    fn names_for_statuses() {
        assert_eq!(name_for_status(StatusCode::NOT_FOUND), "NotFound");
        assert_eq!(
            name_for_status(StatusCode::METHOD_NOT_ALLOWED),
            "MethodNotAllowed"
        );
        assert_eq!(name_for_status(StatusCode::IM_A_TEAPOT), "Imateapot");
    }
}
