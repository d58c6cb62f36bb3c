//! The server half: one axum method router per XRPC method, plus the
//! router-wide pieces (fallback, body limit, JSON-only error bodies).
//!
//! Each method router runs the same fixed pipeline, so the order is a
//! property of the runtime rather than of each handler:
//! verb check -> `authenticate` -> parameters -> body -> `intercept`
//! (procedures) -> decoding -> handler -> encoding (-> the intercept's
//! observer).
//! Authentication comes before any parsing, so an unauthenticated request
//! never learns anything about the method's inputs and never reaches a
//! handler.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use axum::Router;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{FromRequestParts, Request};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use bytes::Bytes;
use futures_util::{FutureExt as _, SinkExt as _, Stream, StreamExt as _};
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::request::Parts;
use http::{StatusCode, Uri};
use http_body_util::{BodyExt as _, LengthLimitError, Limited};

use crate::runtime::DeclaredError;
use crate::runtime::xrpc::body::{JSON, essence, refuse_nul_in_json};
use crate::runtime::xrpc::error::{error_response, name_for_status};
use crate::runtime::xrpc::frames::{OP_MESSAGE, encode_frame, error_frame};
use crate::runtime::xrpc::{
    EventMessage, InputBody, MethodError, OutputBody, Params, Route, XrpcError, parse_params,
    refuse_nul_in_query,
};

/// What every generated handler trait builds on: the authentication hook.
///
/// It runs before anything else looks at a request, with the route's NSID,
/// so a service-auth token's `lxm` claim can be bound to the method being
/// called. An `Err` ends the request; the handler never runs.
pub trait XrpcService: Send + Sync + 'static {
    /// Who is calling, as the handlers see it (e.g. an authenticated DID).
    type Caller: Send + 'static;

    /// Authenticates a request to the method `nsid`.
    fn authenticate(
        &self,
        nsid: &'static str,
        request: &Parts,
    ) -> impl Future<Output = Result<Self::Caller, XrpcError>> + Send;

    /// Whether strings in query parameters and JSON input may hold U+0000
    /// (NUL). The data model allows it; a service whose store cannot keep
    /// it (PostgreSQL `text` cannot) says `false`, and such a request then
    /// gets 400 `InvalidRequest` naming the parameter or field, after
    /// authentication and before `intercept` or the handler see it.
    const ACCEPTS_NUL: bool = true;

    /// Sees every procedure call once its caller is known and its body read,
    /// before the body is decoded: the place for policies that work on the
    /// request as sent, such as answering a retry from a stored response.
    /// The default runs the handler.
    fn intercept(
        &self,
        route: &'static Route,
        caller: &Self::Caller,
        body: &Bytes,
    ) -> impl Future<Output = Intercept> + Send {
        let _unused = (route, caller, body);
        std::future::ready(Intercept::Proceed)
    }
}

/// What [`XrpcService::intercept`] decides for one procedure call.
pub enum Intercept {
    /// Decode the body and run the handler.
    Proceed,
    /// Decode the body and run the handler, then pass the handler's
    /// response (its output or its error) through this function before it
    /// is sent. The handler and the function run to completion in a task of
    /// their own, even if the client goes away meanwhile, so what the
    /// handler did is always observed. If the body does not decode (the
    /// handler never runs) or the handler panics, the function is dropped
    /// without being called.
    Observe(ResponseObserver),
    /// Send this response; the body is not decoded and the handler does not
    /// run.
    Answer(Response),
}

/// The function of [`Intercept::Observe`].
pub type ResponseObserver =
    Box<dyn FnOnce(Response) -> std::pin::Pin<Box<dyn Future<Output = Response> + Send>> + Send>;

/// What a subscription handler streams: boxed, so a generated trait can
/// name one type for every implementation (`Box::pin(stream)`).
pub type SubscriptionStream<M, E> =
    std::pin::Pin<Box<dyn Stream<Item = Result<M, MethodError<E>>> + Send + 'static>>;

/// The request-body limit used when no [`body_limit_layer`] is applied.
pub const DEFAULT_BODY_LIMIT: usize = 2 * 1024 * 1024;

/// The request-body limit in bytes, carried as a request extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimit(pub usize);

/// A layer that sets the request-body limit for the routes it wraps; larger
/// bodies are answered with 413 `PayloadTooLarge`.
pub fn body_limit_layer(bytes: usize) -> axum::Extension<BodyLimit> {
    axum::Extension(BodyLimit(bytes))
}

/// The longest pause allowed while a request body is read (between its
/// parts, not for the whole body), carried as a request extension: a body
/// that stalls longer is answered with 408 `RequestTimeout` (and the
/// connection, its body unread, is closed). Without it a body may stall
/// for ever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyTimeout(pub std::time::Duration);

/// A layer that sets the [`BodyTimeout`] for the routes it wraps.
pub fn body_timeout_layer(pause: std::time::Duration) -> axum::Extension<BodyTimeout> {
    axum::Extension(BodyTimeout(pause))
}

/// The method router of a query (`GET`, parameters, output).
pub fn query<S, P, O, E, F, Fut>(service: Arc<S>, route: &'static Route, handler: F) -> MethodRouter
where
    S: XrpcService,
    P: Params,
    O: OutputBody,
    E: DeclaredError + Send + 'static,
    F: Fn(Arc<S>, S::Caller, P) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<O, MethodError<E>>> + Send + 'static,
{
    axum::routing::any(move |request: Request| {
        let service = Arc::clone(&service);
        let handler = handler.clone();
        guarded(async move {
            let (parts, _body) = request.into_parts();
            let (caller, params) = match admit::<S, P>(&service, route, &parts).await {
                Ok(admitted) => admitted,
                Err(error) => return error.into_response(),
            };
            match handler(service, caller, params).await {
                Ok(output) => output.into_response(route),
                Err(error) => error.into_response(),
            }
        })
    })
}

/// The method router of a procedure (`POST`, parameters, input, output).
pub fn procedure<S, P, I, O, E, F, Fut>(
    service: Arc<S>,
    route: &'static Route,
    handler: F,
) -> MethodRouter
where
    S: XrpcService,
    P: Params,
    I: InputBody,
    O: OutputBody,
    E: DeclaredError + Send + 'static,
    F: Fn(Arc<S>, S::Caller, P, I) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<O, MethodError<E>>> + Send + 'static,
{
    axum::routing::any(move |request: Request| {
        let service = Arc::clone(&service);
        let handler = handler.clone();
        guarded(async move {
            let (parts, body) = request.into_parts();
            let (caller, params) = match admit::<S, P>(&service, route, &parts).await {
                Ok(admitted) => admitted,
                Err(error) => return error.into_response(),
            };
            let bytes = match read_body::<S>(route, &parts, body).await {
                Ok(bytes) => bytes,
                Err(error) => return error.into_response(),
            };
            let observer = match service.intercept(route, &caller, &bytes).await {
                Intercept::Proceed => None,
                Intercept::Observe(observer) => Some(observer),
                Intercept::Answer(response) => return response,
            };
            let input = match decode_input::<I>(route, &parts, bytes) {
                Ok(input) => input,
                Err(error) => return error.into_response(),
            };
            let run = async move {
                match handler(service, caller, params, input).await {
                    Ok(output) => output.into_response(route),
                    Err(error) => error.into_response(),
                }
            };
            let Some(observe) = observer else {
                return run.await;
            };
            match tokio::spawn(async move { observe(run.await).await }).await {
                Ok(response) => response,
                Err(failed) => match failed.try_into_panic() {
                    Ok(panic) => XrpcError::internal(&PanicMessage(&*panic)).into_response(),
                    Err(cancelled) => XrpcError::internal(&cancelled).into_response(),
                },
            }
        })
    })
}

/// The method router of a subscription (`GET` + WebSocket upgrade).
///
/// Authentication, parameters and the handler's own checks (it runs
/// before upgrading) come first, so a rejected request gets an ordinary
/// JSON error response. After the upgrade each stream item is one binary
/// frame; an `Err` from the stream is sent as an error frame and the socket
/// is closed. The server pings every [`PING_INTERVAL`], and a frame the
/// client does not take within [`SEND_TIMEOUT`] ends the stream: a client
/// that stops reading cannot hold a connection (and its task) forever.
pub fn subscription<S, P, M, E, F, Fut, St>(
    service: Arc<S>,
    route: &'static Route,
    handler: F,
) -> MethodRouter
where
    S: XrpcService,
    P: Params,
    M: EventMessage,
    E: DeclaredError + Send + 'static,
    F: Fn(Arc<S>, S::Caller, P) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<St, MethodError<E>>> + Send + 'static,
    St: Stream<Item = Result<M, MethodError<E>>> + Send + 'static,
{
    axum::routing::any(move |request: Request| {
        let service = Arc::clone(&service);
        let handler = handler.clone();
        guarded(async move {
            let (mut parts, _body) = request.into_parts();
            let (caller, params) = match admit::<S, P>(&service, route, &parts).await {
                Ok(admitted) => admitted,
                Err(error) => return error.into_response(),
            };
            let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
                Ok(upgrade) => upgrade,
                Err(rejection) => {
                    return XrpcError::invalid_request(format!(
                        "{} is a subscription and needs a WebSocket upgrade: {rejection}",
                        route.nsid
                    ))
                    .into_response();
                }
            };
            // A handler that refuses (access, limits) is answered before the
            // upgrade, with the usual status and error body.
            match handler(service, caller, params).await {
                Ok(stream) => upgrade.on_upgrade(move |socket| send_frames(socket, stream)),
                Err(error) => error.into_response(),
            }
        })
    })
}

/// The shared start of every method: verb, then authentication, then
/// parameters, in that order.
async fn admit<S: XrpcService, P: Params>(
    service: &S,
    route: &'static Route,
    parts: &Parts,
) -> Result<(S::Caller, P), XrpcError> {
    let expected = route.http_method();
    if parts.method != expected {
        return Err(XrpcError::invalid_request(format!(
            "{} must be called with {expected}, not {}",
            route.nsid, parts.method
        )));
    }
    let caller = service.authenticate(route.nsid, parts).await?;
    if !S::ACCEPTS_NUL {
        refuse_nul_in_query(parts.uri.query())?;
    }
    let params = parse_params(route, parts.uri.query())?;
    Ok((caller, params))
}

/// Reads the body within the limit and the pause allowed between its
/// parts ([`BodyTimeout`]), and refuses a NUL in JSON input when the
/// service does not accept one.
async fn read_body<S: XrpcService>(
    route: &Route,
    parts: &Parts,
    body: axum::body::Body,
) -> Result<Bytes, XrpcError> {
    let bytes = read_limited(parts, body).await?;
    if !S::ACCEPTS_NUL
        && route
            .input
            .is_some_and(|encoding| essence(encoding) == JSON)
    {
        refuse_nul_in_json(&bytes)?;
    }
    Ok(bytes)
}

async fn read_limited(parts: &Parts, body: axum::body::Body) -> Result<Bytes, XrpcError> {
    let limit = parts
        .extensions
        .get::<BodyLimit>()
        .map_or(DEFAULT_BODY_LIMIT, |limit| limit.0);
    let pause = parts
        .extensions
        .get::<BodyTimeout>()
        .map(|timeout| timeout.0);
    // A declared length over the limit is refused without reading.
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > u64::try_from(limit).unwrap_or(u64::MAX)) {
        return Err(XrpcError::payload_too_large(limit));
    }
    let mut body = Limited::new(body, limit);
    let mut bytes = Vec::new();
    loop {
        let frame = match pause {
            Some(pause) => tokio::time::timeout(pause, body.frame())
                .await
                .map_err(|_| XrpcError::request_timeout(pause))?,
            None => body.frame().await,
        };
        match frame {
            None => return Ok(Bytes::from(bytes)),
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    bytes.extend_from_slice(data);
                }
            }
            Some(Err(error)) if error.downcast_ref::<LengthLimitError>().is_some() => {
                return Err(XrpcError::payload_too_large(limit));
            }
            Some(Err(error)) => {
                return Err(XrpcError::invalid_request(format!(
                    "could not read the request body: {error}"
                )));
            }
        }
    }
}

/// Decodes a body as the method's input, by its declared encoding.
fn decode_input<I: InputBody>(route: &Route, parts: &Parts, bytes: Bytes) -> Result<I, XrpcError> {
    let content_type = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok());
    I::decode(route, content_type, bytes)
}

/// Runs a request future, turning a panic into a 500 that says nothing
/// about the panic (the message is logged instead).
async fn guarded(request: impl Future<Output = Response> + Send) -> Response {
    match AssertUnwindSafe(request).catch_unwind().await {
        Ok(response) => response,
        Err(panic) => XrpcError::internal(&PanicMessage(&*panic)).into_response(),
    }
}

/// A panic payload's message, for the log.
struct PanicMessage<'a>(&'a (dyn std::any::Any + Send));

impl std::fmt::Display for PanicMessage<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let message = self
            .0
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| self.0.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(no message)");
        write!(f, "handler panicked: {message}")
    }
}

/// How often an event stream's connection is pinged (the client's pongs
/// are handled by the WebSocket layer; a dead peer makes the ping fail).
pub const PING_INTERVAL: std::time::Duration = std::time::Duration::from_secs(20);

/// How long sending one frame may take before the client counts as gone.
pub const SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Sends the event stream over an upgraded socket until it ends, fails, or
/// the client goes away.
async fn send_frames<M, E, St>(socket: WebSocket, stream: St)
where
    M: EventMessage,
    E: DeclaredError + Send + 'static,
    St: Stream<Item = Result<M, MethodError<E>>> + Send + 'static,
{
    let (mut sink, mut incoming) = socket.split();
    let mut stream = std::pin::pin!(AssertUnwindSafe(stream).catch_unwind());
    let mut ping =
        tokio::time::interval_at(tokio::time::Instant::now() + PING_INTERVAL, PING_INTERVAL);
    loop {
        let outgoing = tokio::select! {
            item = stream.next() => match item {
                None => {
                    let _closed = timed_send(&mut sink, close_message()).await;
                    return;
                }
                Some(Ok(Ok(message))) => match message.encode_body() {
                    Ok(body) => Message::Binary(
                        encode_frame(OP_MESSAGE, Some(&message.frame_type()), &body).into(),
                    ),
                    Err(error) => {
                        send_error(&mut sink, error.error(), error.message()).await;
                        return;
                    }
                },
                Some(Ok(Err(error))) => {
                    send_error(&mut sink, error.name(), error.message()).await;
                    return;
                }
                Some(Err(panic)) => {
                    let error = XrpcError::internal(&PanicMessage(&*panic));
                    send_error(&mut sink, error.error(), error.message()).await;
                    return;
                }
            },
            _ = ping.tick() => Message::Ping(Vec::new().into()),
            received = incoming.next() => match received {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                // Clients have nothing to say on an event stream; pings are
                // answered by the WebSocket layer.
                Some(Ok(_)) => continue,
            },
        };
        if timed_send(&mut sink, outgoing).await.is_err() {
            return;
        }
    }
}

/// Sends one message within [`SEND_TIMEOUT`].
async fn timed_send<Si>(sink: &mut Si, message: Message) -> Result<(), ()>
where
    Si: futures_util::Sink<Message> + Unpin,
{
    match tokio::time::timeout(SEND_TIMEOUT, sink.send(message)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) | Err(_) => Err(()),
    }
}

async fn send_error<Si>(sink: &mut Si, name: &str, message: &str)
where
    Si: futures_util::Sink<Message> + Unpin,
{
    let frame = error_frame(name, message);
    if timed_send(sink, Message::Binary(frame.into()))
        .await
        .is_ok()
    {
        let _closed = timed_send(sink, close_message()).await;
    }
}

fn close_message() -> Message {
    Message::Close(Some(CloseFrame {
        code: close_code::NORMAL,
        reason: "".into(),
    }))
}

/// Completes a router of XRPC methods: unknown NSIDs under `/xrpc/` get
/// 501 `MethodNotImplemented`, other paths 404 `NotFound`, and any error
/// response that is not already JSON (an axum rejection, a layer's plain
/// text) is rewritten into the XRPC error shape.
pub fn finish(router: Router) -> Router {
    router
        .fallback(fallback)
        .layer(axum::middleware::map_response(json_errors))
}

async fn fallback(uri: Uri) -> Response {
    match uri.path().strip_prefix("/xrpc/") {
        Some(nsid) => XrpcError::method_not_implemented(nsid).into_response(),
        None => XrpcError::not_found(format!("no route for {}", uri.path())).into_response(),
    }
}

/// The most of a plain-text error body that is kept as the message.
const PLAIN_ERROR_LIMIT: usize = 4096;

async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| essence(value) == "application/json");
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = match Limited::new(body, PLAIN_ERROR_LIMIT).collect().await {
        Ok(collected) => String::from_utf8_lossy(&collected.to_bytes())
            .trim()
            .to_owned(),
        Err(_) => String::new(),
    };
    // Server errors never pass their text on: it may hold internals.
    let message = if text.is_empty() || status.is_server_error() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        text
    };
    let error = if status == StatusCode::PAYLOAD_TOO_LARGE {
        "PayloadTooLarge".to_owned()
    } else {
        name_for_status(status)
    };
    parts.headers.remove(CONTENT_TYPE);
    parts.headers.remove(CONTENT_LENGTH);
    let mut json = error_response(status, &error, &message);
    json.headers_mut().extend(parts.headers);
    json
}
