//! A login to an account on a PDS (the user's AT Protocol server), the way
//! a production client reaches the service: the PDS holds the account's
//! signing key, so it either forwards calls to the service itself
//! (`atproto-proxy`) or hands out service-auth tokens
//! (`com.atproto.server.getServiceAuth`). [`Access`](crate::Access)
//! chooses between the two; this module only speaks to the PDS.
//!
//! The session's access token is short-lived: [`PdsSession::access_token`]
//! refreshes it (`com.atproto.server.refreshSession`) shortly before it
//! expires, one refresh at a time, since a PDS rotates the refresh token on
//! every refresh. The password is used once, to log in, and not kept.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use catbird_generated::runtime::Did;
use catbird_generated::runtime::xrpc::http::StatusCode;
use catbird_generated::runtime::xrpc::{TokenError, XrpcError};
use reqwest::Url;
use serde::Deserialize;
use serde::de::DeserializeOwned;

const CREATE_SESSION: &str = "com.atproto.server.createSession";
const REFRESH_SESSION: &str = "com.atproto.server.refreshSession";
const GET_SERVICE_AUTH: &str = "com.atproto.server.getServiceAuth";

/// An access token this close to its expiry is refreshed before use, so
/// that it does not expire on its way through the PDS.
const REFRESH_MARGIN: Duration = Duration::from_secs(60);

/// A logged-in PDS account. Cheap to clone: clones share the session.
#[derive(Clone)]
pub struct PdsSession {
    inner: Arc<Inner>,
}

struct Inner {
    url: Url,
    http: reqwest::Client,
    did: Did,
    handle: String,
    tokens: tokio::sync::Mutex<Tokens>,
}

/// The session's current tokens.
struct Tokens {
    access: String,
    /// The access token's `exp` (Unix seconds), if it is readable.
    access_expires: Option<i64>,
    refresh: String,
}

impl std::fmt::Debug for PdsSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PdsSession")
            .field("pds", &self.inner.url.as_str())
            .field("did", &self.inner.did)
            .field("handle", &self.inner.handle)
            .finish_non_exhaustive()
    }
}

/// Why the PDS gave no session or token.
#[derive(Debug, thiserror::Error)]
pub enum PdsError {
    /// The PDS URL is not an http(s) URL.
    #[error("{url:?} is not a PDS URL: {message}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        message: String,
    },
    /// The PDS could not be reached.
    #[error("{method}: {message}")]
    Unreachable {
        /// The com.atproto method called.
        method: &'static str,
        /// The transport's error.
        message: String,
    },
    /// The PDS answered with an error (a wrong password, an expired
    /// session, a refused token request).
    #[error("{method}: {} {error}", error.status())]
    Refused {
        /// The com.atproto method called.
        method: &'static str,
        /// The PDS's error, with its status.
        error: XrpcError,
    },
    /// The PDS answered 2xx with something else than the method promises.
    #[error("{method}: unexpected answer: {message}")]
    Unexpected {
        /// The com.atproto method called.
        method: &'static str,
        /// What was wrong with it.
        message: String,
    },
}

impl From<PdsError> for TokenError {
    fn from(error: PdsError) -> Self {
        match error {
            PdsError::Refused { method, error } => TokenError::Refused(XrpcError::new(
                error.status(),
                error.error(),
                format!("{method}: {}", error.message()),
            )),
            other => TokenError::Unavailable(other.to_string()),
        }
    }
}

/// createSession and refreshSession answer with the session.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SessionOutput {
    access_jwt: String,
    refresh_jwt: String,
    did: String,
    handle: String,
}

#[derive(Deserialize)]
struct ServiceAuthOutput {
    token: String,
}

/// An XRPC error body, as far as it is one.
#[derive(Deserialize)]
struct ErrorBody {
    error: Option<String>,
    message: Option<String>,
}

impl PdsSession {
    /// Logs in to the account `identifier` (its handle, DID or email) on
    /// the PDS at `pds_url` (`com.atproto.server.createSession`).
    pub async fn login(pds_url: &str, identifier: &str, password: &str) -> Result<Self, PdsError> {
        Self::login_with(reqwest::Client::new(), pds_url, identifier, password).await
    }

    /// [`login`](Self::login) with a preconfigured HTTP client (timeouts,
    /// proxies, TLS).
    pub async fn login_with(
        http: reqwest::Client,
        pds_url: &str,
        identifier: &str,
        password: &str,
    ) -> Result<Self, PdsError> {
        let url = base_url(pds_url)?;
        let body = serde_json::json!({ "identifier": identifier, "password": password });
        let request = http
            .post(xrpc_url(&url, CREATE_SESSION))
            .header("content-type", "application/json")
            .body(body.to_string());
        let session: SessionOutput = send(CREATE_SESSION, request).await?;
        let did = Did::new(&session.did).map_err(|error| PdsError::Unexpected {
            method: CREATE_SESSION,
            message: format!("did {:?}: {error}", session.did),
        })?;
        Ok(Self {
            inner: Arc::new(Inner {
                url,
                http,
                did,
                handle: session.handle.clone(),
                tokens: tokio::sync::Mutex::new(Tokens::from(session)),
            }),
        })
    }

    /// The account's DID.
    pub fn did(&self) -> &Did {
        &self.inner.did
    }

    /// The account's handle, as the PDS reported it at login.
    pub fn handle(&self) -> &str {
        &self.inner.handle
    }

    /// The PDS's base URL (without a trailing slash).
    pub fn pds_url(&self) -> &str {
        self.inner.url.as_str().trim_end_matches('/')
    }

    /// The session's access token, refreshed first if it expires within a
    /// minute. It authenticates calls to the PDS, including the ones it
    /// forwards with `atproto-proxy`.
    pub async fn access_token(&self) -> Result<String, PdsError> {
        let mut tokens = self.inner.tokens.lock().await;
        let now = chrono::Utc::now().timestamp();
        let margin = i64::try_from(REFRESH_MARGIN.as_secs()).unwrap_or(i64::MAX);
        if tokens
            .access_expires
            .is_some_and(|expires| expires - margin <= now)
        {
            *tokens = self.refreshed(&tokens.refresh).await?;
        }
        Ok(tokens.access.clone())
    }

    /// Replaces the session's tokens with fresh ones now
    /// (`com.atproto.server.refreshSession`), e.g. after the PDS answered
    /// `ExpiredToken` to a token that looked valid here.
    pub async fn refresh(&self) -> Result<(), PdsError> {
        let mut tokens = self.inner.tokens.lock().await;
        *tokens = self.refreshed(&tokens.refresh).await?;
        Ok(())
    }

    async fn refreshed(&self, refresh_token: &str) -> Result<Tokens, PdsError> {
        let request = self
            .inner
            .http
            .post(xrpc_url(&self.inner.url, REFRESH_SESSION))
            .bearer_auth(refresh_token);
        let session: SessionOutput = send(REFRESH_SESSION, request).await?;
        if session.did != self.inner.did.as_str() {
            return Err(PdsError::Unexpected {
                method: REFRESH_SESSION,
                message: format!("a session of {}, not {}", session.did, self.inner.did),
            });
        }
        Ok(Tokens::from(session))
    }

    /// A service-auth token from the PDS (`com.atproto.server.getServiceAuth`):
    /// signed with the account's key, for the service `audience`, for the
    /// one method `lxm`, valid for `lifetime` (a PDS allows at most an hour).
    pub async fn service_auth(
        &self,
        audience: &Did,
        lxm: &str,
        lifetime: Duration,
    ) -> Result<String, PdsError> {
        let access = self.access_token().await?;
        let lifetime = i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX);
        let expires = chrono::Utc::now().timestamp().saturating_add(lifetime);
        let mut url = xrpc_url(&self.inner.url, GET_SERVICE_AUTH);
        url.query_pairs_mut()
            .append_pair("aud", audience.as_str())
            .append_pair("lxm", lxm)
            .append_pair("exp", &expires.to_string());
        let request = self.inner.http.get(url).bearer_auth(access);
        let output: ServiceAuthOutput = send(GET_SERVICE_AUTH, request).await?;
        Ok(output.token)
    }
}

impl From<SessionOutput> for Tokens {
    fn from(session: SessionOutput) -> Self {
        Self {
            access_expires: expiry(&session.access_jwt),
            access: session.access_jwt,
            refresh: session.refresh_jwt,
        }
    }
}

/// The `exp` claim of a JWT, read without verifying it: the token is the
/// PDS's own, and only the PDS checks it; this only decides when to refresh.
fn expiry(jwt: &str) -> Option<i64> {
    #[derive(Deserialize)]
    struct Expiry {
        exp: i64,
    }
    let payload = jwt.split('.').nth(1)?;
    let json = URL_SAFE_NO_PAD.decode(payload).ok()?;
    serde_json::from_slice::<Expiry>(&json)
        .ok()
        .map(|claims| claims.exp)
}

fn base_url(pds_url: &str) -> Result<Url, PdsError> {
    let invalid = |message: String| PdsError::InvalidUrl {
        url: pds_url.to_owned(),
        message,
    };
    let url = Url::parse(pds_url).map_err(|error| invalid(error.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
        return Err(invalid("not an http(s) URL".to_owned()));
    }
    Ok(url)
}

fn xrpc_url(base: &Url, method: &str) -> Url {
    let mut url = base.clone();
    let path = format!("{}/xrpc/{method}", url.path().trim_end_matches('/'));
    url.set_path(&path);
    url.set_query(None);
    url
}

/// Sends a com.atproto call and reads its JSON answer or its error.
async fn send<T: DeserializeOwned>(
    method: &'static str,
    request: reqwest::RequestBuilder,
) -> Result<T, PdsError> {
    let unreachable = |error: reqwest::Error| PdsError::Unreachable {
        method,
        message: error.to_string(),
    };
    let response = request.send().await.map_err(unreachable)?;
    let status = response.status();
    let bytes = response.bytes().await.map_err(unreachable)?;
    if !status.is_success() {
        return Err(PdsError::Refused {
            method,
            error: error_of(status, &bytes),
        });
    }
    serde_json::from_slice(&bytes).map_err(|error| PdsError::Unexpected {
        method,
        message: error.to_string(),
    })
}

/// The PDS's error as an [`XrpcError`]: its name and message, or, for a
/// body that is not an XRPC error, the status and the start of the text.
fn error_of(status: StatusCode, body: &[u8]) -> XrpcError {
    let parsed = serde_json::from_slice::<ErrorBody>(body).ok();
    let (error, message) = match parsed {
        Some(ErrorBody {
            error: Some(error),
            message,
        }) => (error, message.unwrap_or_default()),
        _ => {
            let text = String::from_utf8_lossy(body);
            let text: String = text.trim().chars().take(512).collect();
            let name = status
                .canonical_reason()
                .unwrap_or("Error")
                .replace(' ', "");
            (name, text)
        }
    };
    XrpcError::new(status, error, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_expiry_of_a_jwt() {
        let payload = URL_SAFE_NO_PAD.encode(br#"{"scope":"com.atproto.access","exp":1796417277}"#);
        assert_eq!(expiry(&format!("e30.{payload}.sig")), Some(1_796_417_277));
        assert_eq!(expiry("not a jwt"), None);
        assert_eq!(expiry("e30.e30.sig"), None);
    }

    #[test]
    fn builds_xrpc_urls() {
        let url = base_url("http://localhost:2583/").unwrap();
        assert_eq!(
            xrpc_url(&url, CREATE_SESSION).as_str(),
            "http://localhost:2583/xrpc/com.atproto.server.createSession"
        );
        let mut url = xrpc_url(
            &base_url("https://pds.example/base").unwrap(),
            GET_SERVICE_AUTH,
        );
        url.query_pairs_mut()
            .append_pair("aud", "did:web:localhost%3A8080");
        // `%` itself is escaped: the PDS must read the DID as written.
        assert_eq!(
            url.as_str(),
            "https://pds.example/base/xrpc/com.atproto.server.getServiceAuth?aud=did%3Aweb%3Alocalhost%253A8080"
        );
        assert!(base_url("ftp://pds.example").is_err());
        assert!(base_url("pds.example").is_err());
    }

    #[test]
    fn reads_errors_of_the_pds() {
        let error = error_of(
            StatusCode::UNAUTHORIZED,
            br#"{"error":"AuthenticationRequired","message":"Invalid identifier or password"}"#,
        );
        assert_eq!(error.error(), "AuthenticationRequired");
        assert_eq!(error.message(), "Invalid identifier or password");
        let error = error_of(StatusCode::BAD_GATEWAY, b"<html>bad gateway</html>");
        assert_eq!(error.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(error.error(), "BadGateway");
        assert_eq!(error.message(), "<html>bad gateway</html>");
    }
}
