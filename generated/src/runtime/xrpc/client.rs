//! The client half: typed calls over HTTP and event streams over WebSocket.
//!
//! The generated per-namespace clients are thin wrappers over
//! [`XrpcClient`]; error bodies are mapped back to the method's declared
//! error enum, so a caller matches on the same `Error` the server returned.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::{Stream, StreamExt as _};
use http::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde::Serialize;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

use crate::runtime::DeclaredError;
use crate::runtime::xrpc::error::{ErrorBody, name_for_status};
use crate::runtime::xrpc::frames::{ErrorFrame, OP_ERROR, OP_MESSAGE};
use crate::runtime::xrpc::{
    EventMessage, InputBody, MethodError, OutputBody, Route, XrpcError, decode_frame_body,
    encode_params, split_frame,
};

/// The bearer token for one call, as a token source produces it.
type TokenFuture = Pin<Box<dyn Future<Output = Result<Option<String>, TokenError>> + Send>>;

/// Produces the bearer token for a call to the given NSID, if any.
type TokenSource = Arc<dyn Fn(&'static str) -> TokenFuture + Send + Sync>;

/// Why a token source gave no token. The call is not sent; its caller gets
/// this as the call's error ([`ClientError::Method`] for a refusal,
/// [`ClientError::Transport`] otherwise).
#[derive(Debug, Clone)]
pub enum TokenError {
    /// Whoever issues the tokens (e.g. a PDS) refused, with this error.
    Refused(XrpcError),
    /// Whoever issues the tokens could not be reached or answered nonsense.
    Unavailable(String),
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Refused(error) => write!(f, "{} {error}", error.status()),
            Self::Unavailable(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for TokenError {}

impl<E> From<TokenError> for ClientError<E> {
    fn from(error: TokenError) -> Self {
        match error {
            TokenError::Refused(error) => Self::Method(MethodError::Xrpc(error)),
            TokenError::Unavailable(message) => {
                Self::Transport(format!("no token for the call: {message}"))
            }
        }
    }
}

/// A client for one XRPC service.
#[derive(Clone)]
pub struct XrpcClient {
    http: reqwest::Client,
    base_url: String,
    token_source: Option<TokenSource>,
    headers: HeaderMap,
}

impl fmt::Debug for XrpcClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XrpcClient")
            .field("base_url", &self.base_url)
            .field("token_source", &self.token_source.is_some())
            .finish_non_exhaustive()
    }
}

impl XrpcClient {
    /// A client for the service at `base_url`, e.g. `http://127.0.0.1:8080`.
    pub fn new(base_url: impl Into<String>) -> Self {
        let mut base_url = base_url.into();
        while base_url.ends_with('/') {
            base_url.pop();
        }
        Self {
            http: reqwest::Client::new(),
            base_url,
            token_source: None,
            headers: HeaderMap::new(),
        }
    }

    /// Sends `Authorization: Bearer <token>` with every call for which
    /// `source` returns a token. The source gets the method's NSID because
    /// service-auth tokens are bound to one method (`lxm`).
    pub fn with_token_source(
        self,
        source: impl Fn(&str) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.with_async_token_source(move |nsid| std::future::ready(Ok(source(nsid))))
    }

    /// Like [`with_token_source`](Self::with_token_source), for a source
    /// that must ask someone for each token (e.g. a PDS's
    /// `com.atproto.server.getServiceAuth`). A source's error fails the
    /// call without sending it.
    pub fn with_async_token_source<F, T>(mut self, source: F) -> Self
    where
        F: Fn(&'static str) -> T + Send + Sync + 'static,
        T: Future<Output = Result<Option<String>, TokenError>> + Send + 'static,
    {
        self.token_source = Some(Arc::new(move |nsid| Box::pin(source(nsid))));
        self
    }

    /// Sends this header with every call and event-stream upgrade (e.g.
    /// `atproto-proxy`, which asks a PDS to forward the call).
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.insert(name, value);
        self
    }

    /// Uses a preconfigured HTTP client (timeouts, TLS, proxies).
    pub fn with_http_client(mut self, http: reqwest::Client) -> Self {
        self.http = http;
        self
    }

    /// The service's base URL.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Calls a query.
    pub async fn query<P, O, E>(
        &self,
        route: &'static Route,
        params: &P,
    ) -> Result<O, ClientError<E>>
    where
        P: Serialize,
        O: OutputBody,
        E: DeclaredError,
    {
        self.call(route, params, None).await
    }

    /// Calls a procedure.
    pub async fn procedure<P, I, O, E>(
        &self,
        route: &'static Route,
        params: &P,
        input: &I,
    ) -> Result<O, ClientError<E>>
    where
        P: Serialize,
        I: InputBody,
        O: OutputBody,
        E: DeclaredError,
    {
        let body = input
            .encode(route)
            .map_err(|error| ClientError::Encode(error.message().to_owned()))?;
        self.call(route, params, body).await
    }

    async fn call<P, O, E>(
        &self,
        route: &'static Route,
        params: &P,
        body: Option<(String, Vec<u8>)>,
    ) -> Result<O, ClientError<E>>
    where
        P: Serialize,
        O: OutputBody,
        E: DeclaredError,
    {
        let url = self.url(&self.base_url, route, params)?;
        let mut request = self
            .http
            .request(route.http_method(), url)
            .headers(self.headers.clone());
        if let Some(token) = self.token(route.nsid).await? {
            request = request.bearer_auth(token);
        }
        if let Some((content_type, bytes)) = body {
            request = request.header(CONTENT_TYPE, content_type).body(bytes);
        }
        let response = request.send().await.map_err(transport)?;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.map_err(transport)?;
        if !status.is_success() {
            return Err(ClientError::Method(method_error(status, &headers, &bytes)));
        }
        let content_type = headers
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok());
        O::decode(route, content_type, bytes)
            .map_err(|error| ClientError::Decode(error.message().to_owned()))
    }

    /// Subscribes to an event stream. An error frame from the server is
    /// yielded as one `Err(ClientError::Method(..))`, after which the stream
    /// ends; so does a frame that cannot be decoded.
    pub async fn subscribe<P, M, E>(
        &self,
        route: &'static Route,
        params: &P,
    ) -> Result<EventStream<M, E>, ClientError<E>>
    where
        P: Serialize,
        M: EventMessage,
        E: DeclaredError + Send + 'static,
    {
        let raw = Box::pin(self.subscribe_raw::<P, E>(route, params).await?);
        let events = futures_util::stream::unfold(Some(raw), |state| async move {
            let mut raw = state?;
            loop {
                let frame = match raw.next().await? {
                    Ok(frame) => frame,
                    Err(error) => return Some((Err(error), None)),
                };
                match decode_event::<M, E>(&frame) {
                    Ok(Some(message)) => return Some((Ok(message), Some(raw))),
                    Ok(None) => {}
                    Err(error) => return Some((Err(error), None)),
                }
            }
        });
        Ok(EventStream {
            inner: Box::pin(events),
        })
    }

    /// Subscribes and yields each binary frame's exact bytes (for tests and
    /// debugging). The stream ends when the server closes the socket.
    pub async fn subscribe_raw<P, E>(
        &self,
        route: &'static Route,
        params: &P,
    ) -> Result<impl Stream<Item = Result<Vec<u8>, ClientError<E>>> + Send + 'static, ClientError<E>>
    where
        P: Serialize,
        E: DeclaredError + Send + 'static,
    {
        let base = if let Some(rest) = self.base_url.strip_prefix("https://") {
            format!("wss://{rest}")
        } else if let Some(rest) = self.base_url.strip_prefix("http://") {
            format!("ws://{rest}")
        } else {
            self.base_url.clone()
        };
        let url = self.url(&base, route, params)?;
        let mut request = url.into_client_request().map_err(transport)?;
        for (name, value) in &self.headers {
            request.headers_mut().insert(name, value.clone());
        }
        if let Some(token) = self.token(route.nsid).await? {
            let value = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|error| ClientError::Encode(format!("invalid token: {error}")))?;
            request.headers_mut().insert(AUTHORIZATION, value);
        }
        let socket = match tokio_tungstenite::connect_async(request).await {
            Ok((socket, _response)) => socket,
            Err(tungstenite::Error::Http(response)) => {
                let body = response.body().as_deref().unwrap_or_default();
                let error = method_error(response.status(), response.headers(), body);
                return Err(ClientError::Method(error));
            }
            Err(error) => return Err(transport(error)),
        };
        Ok(futures_util::stream::unfold(
            Some(socket),
            |state| async move {
                let mut socket = state?;
                loop {
                    match socket.next().await? {
                        Ok(tungstenite::Message::Binary(frame)) => {
                            return Some((Ok(frame.to_vec()), Some(socket)));
                        }
                        Ok(tungstenite::Message::Close(_)) => return None,
                        // Pings are answered by tungstenite while we read.
                        Ok(_) => {}
                        Err(error) => return Some((Err(transport(error)), None)),
                    }
                }
            },
        ))
    }

    fn url<P: Serialize, E>(
        &self,
        base: &str,
        route: &Route,
        params: &P,
    ) -> Result<String, ClientError<E>> {
        let query = encode_params(route, params)
            .map_err(|error| ClientError::Encode(error.message().to_owned()))?;
        let mut url = format!("{base}{}", route.path());
        if !query.is_empty() {
            url.push('?');
            url.push_str(&query);
        }
        Ok(url)
    }

    async fn token(&self, nsid: &'static str) -> Result<Option<String>, TokenError> {
        match &self.token_source {
            Some(source) => source(nsid).await,
            None => Ok(None),
        }
    }
}

/// One frame as a message (`Ok(Some)`), a frame to skip (`Ok(None)`: an
/// op this client does not know), or the error it carries.
fn decode_event<M: EventMessage, E: DeclaredError>(
    frame: &[u8],
) -> Result<Option<M>, ClientError<E>> {
    let decode = |error: XrpcError| ClientError::Decode(error.message().to_owned());
    let (header, body) = split_frame(frame).map_err(decode)?;
    match header.op {
        OP_MESSAGE => {
            let frame_type = header
                .t
                .ok_or_else(|| ClientError::Decode("message frame without \"t\"".to_owned()))?;
            M::decode(&frame_type, body).map(Some).map_err(decode)
        }
        OP_ERROR => {
            let error: ErrorFrame = decode_frame_body(body).map_err(decode)?;
            let message = error.message.unwrap_or_default();
            Err(ClientError::Method(match E::from_name(&error.error) {
                Some(declared) => MethodError::Declared {
                    error: declared,
                    message,
                    status: StatusCode::BAD_REQUEST,
                },
                None => MethodError::Xrpc(XrpcError::new(
                    status_for_name(&error.error),
                    error.error,
                    message,
                )),
            }))
        }
        _ => Ok(None),
    }
}

/// An event frame has no HTTP status; runtime errors get their usual one.
fn status_for_name(name: &str) -> StatusCode {
    match name {
        "AuthenticationRequired" | "InvalidToken" => StatusCode::UNAUTHORIZED,
        "Forbidden" => StatusCode::FORBIDDEN,
        "RateLimitExceeded" => StatusCode::TOO_MANY_REQUESTS,
        "InternalServerError" => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    }
}

/// Headers of an error response worth keeping for the caller.
fn kept_headers(headers: &HeaderMap) -> HeaderMap {
    let mut kept = HeaderMap::new();
    for (name, value) in headers {
        if name == WWW_AUTHENTICATE
            || name == RETRY_AFTER
            || name.as_str().starts_with("ratelimit-")
        {
            kept.append(name.clone(), value.clone());
        }
    }
    kept
}

/// An error response as the method's error: its declared error if the name
/// matches, else a runtime error with the status, name and message. A body
/// that is not an XRPC error (a proxy's page) keeps the status and text.
fn method_error<E: DeclaredError>(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> MethodError<E> {
    let headers = kept_headers(headers);
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(body) => {
            let message = body.message.unwrap_or_default();
            match E::from_name(&body.error) {
                Some(error) => MethodError::Declared {
                    error,
                    message,
                    status,
                },
                None => MethodError::Xrpc(
                    XrpcError::new(status, body.error, message).with_headers(headers),
                ),
            }
        }
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let text: String = text.trim().chars().take(512).collect();
            MethodError::Xrpc(
                XrpcError::new(status, name_for_status(status), text).with_headers(headers),
            )
        }
    }
}

fn transport<E, T: fmt::Display>(error: T) -> ClientError<E> {
    ClientError::Transport(error.to_string())
}

/// A typed event stream from [`XrpcClient::subscribe`].
pub struct EventStream<M, E> {
    inner: Pin<Box<dyn Stream<Item = Result<M, ClientError<E>>> + Send>>,
}

impl<M, E> fmt::Debug for EventStream<M, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventStream").finish_non_exhaustive()
    }
}

impl<M, E> Stream for EventStream<M, E> {
    type Item = Result<M, ClientError<E>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

/// Why a call failed.
#[derive(Debug, Clone)]
pub enum ClientError<E> {
    /// The server answered with an error: declared or runtime-level.
    Method(MethodError<E>),
    /// The request could not be built (parameters or input that do not
    /// serialise, a token that is not a valid header).
    Encode(String),
    /// The request did not complete: connection, TLS, WebSocket.
    Transport(String),
    /// The server answered 2xx with a body that does not fit the method.
    Decode(String),
}

impl<E: DeclaredError> ClientError<E> {
    /// The declared error, if the server returned one.
    pub fn declared(&self) -> Option<&E> {
        match self {
            Self::Method(error) => error.declared_error(),
            _ => None,
        }
    }

    /// The HTTP status of a server error.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Self::Method(error) => Some(error.status()),
            _ => None,
        }
    }
}

impl<E: DeclaredError> fmt::Display for ClientError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Method(error) => write!(f, "{} {error}", error.status()),
            Self::Encode(message) => write!(f, "could not encode the request: {message}"),
            Self::Transport(message) => write!(f, "transport error: {message}"),
            Self::Decode(message) => write!(f, "could not decode the response: {message}"),
        }
    }
}

impl<E: DeclaredError + fmt::Debug> std::error::Error for ClientError<E> {}
