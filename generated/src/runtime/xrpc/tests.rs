//! End-to-end tests of the server and client halves against each other,
//! over loopback, with a tiny hand-written service.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::response::{IntoResponse as _, Response};
use bytes::Bytes;
use futures_util::StreamExt as _;
use http::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::request::Parts;
use http::{HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::*;
use crate::runtime::{DeclaredError, RawBody, ResultExt as _, Validate, ValidationError, check};

// ---- the "lexicon" ------------------------------------------------------

const GET_THING: Route = Route {
    input_fields: &[],
    nsid: "com.example.getThing",
    kind: MethodKind::Query,
    params: &[
        Param {
            name: "uri",
            kind: ParamKind::String,
            array: false,
            required: true,
        },
        Param {
            name: "depth",
            kind: ParamKind::Integer,
            array: false,
            required: false,
        },
    ],
    input: None,
    output: Some("application/json"),
};

const CREATE_THING: Route = Route {
    input_fields: &[],
    nsid: "com.example.createThing",
    kind: MethodKind::Procedure,
    params: &[],
    input: Some("application/json"),
    output: Some("application/json"),
};

const UPLOAD: Route = Route {
    input_fields: &[],
    nsid: "com.example.upload",
    kind: MethodKind::Procedure,
    params: &[],
    input: Some("image/*"),
    output: Some("*/*"),
};

const PING: Route = Route {
    input_fields: &[],
    nsid: "com.example.ping",
    kind: MethodKind::Procedure,
    params: &[],
    input: None,
    output: None,
};

const SUBSCRIBE: Route = Route {
    input_fields: &[],
    nsid: "com.example.subscribe",
    kind: MethodKind::Subscription,
    params: &[Param {
        name: "cursor",
        kind: ParamKind::Integer,
        array: false,
        required: false,
    }],
    input: None,
    output: None,
};

#[derive(Debug, Serialize, Deserialize)]
struct GetParams {
    uri: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    depth: Option<i64>,
}

impl Validate for GetParams {
    fn validate(&self) -> Result<(), ValidationError> {
        if let Some(depth) = self.depth {
            check::maximum(depth, 10).at("depth")?;
        }
        Ok(())
    }
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct ThingOutput {
    uri: String,
    caller: String,
}

impl Validate for ThingOutput {
    fn validate(&self) -> Result<(), ValidationError> {
        check::min_length(&self.uri, 1).at("uri")
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct NoParams {}

impl Validate for NoParams {
    fn validate(&self) -> Result<(), ValidationError> {
        Ok(())
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct CreateInput {
    text: String,
}

impl Validate for CreateInput {
    fn validate(&self) -> Result<(), ValidationError> {
        check::max_length(&self.text, 10).at("text")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ThingError {
    ThingNotFound,
}

impl DeclaredError for ThingError {
    fn name(&self) -> &'static str {
        "ThingNotFound"
    }
    fn from_name(name: &str) -> Option<Self> {
        (name == "ThingNotFound").then_some(Self::ThingNotFound)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamError {
    FutureCursor,
    ConsumerTooSlow,
}

impl DeclaredError for StreamError {
    fn name(&self) -> &'static str {
        match self {
            Self::FutureCursor => "FutureCursor",
            Self::ConsumerTooSlow => "ConsumerTooSlow",
        }
    }
    fn from_name(name: &str) -> Option<Self> {
        match name {
            "FutureCursor" => Some(Self::FutureCursor),
            "ConsumerTooSlow" => Some(Self::ConsumerTooSlow),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NoError {}

impl DeclaredError for NoError {
    fn name(&self) -> &'static str {
        match *self {}
    }
    fn from_name(_: &str) -> Option<Self> {
        None
    }
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Tick {
    seq: i64,
}

#[derive(Debug, PartialEq)]
enum Event {
    Tick(Tick),
}

impl EventMessage for Event {
    fn frame_type(&self) -> String {
        "#tick".to_owned()
    }
    fn encode_body(&self) -> Result<Vec<u8>, XrpcError> {
        match self {
            Self::Tick(tick) => encode_frame_body(tick),
        }
    }
    fn decode(frame_type: &str, body: &[u8]) -> Result<Self, XrpcError> {
        match frame_type {
            "#tick" => decode_frame_body(body).map(Self::Tick),
            other => Err(XrpcError::invalid_request(format!("unknown type {other}"))),
        }
    }
}

// ---- the service ----------------------------------------------------------

#[derive(Default)]
struct Service {
    handled: AtomicUsize,
    intercepted: AtomicUsize,
}

/// Tokens are `good:<nsid>`: bound to one method, as service auth's `lxm`.
impl XrpcService for Service {
    type Caller = String;

    async fn authenticate(&self, nsid: &'static str, request: &Parts) -> Result<String, XrpcError> {
        let Some(header) = request.headers.get(AUTHORIZATION) else {
            return Err(XrpcError::authentication_required("no token"));
        };
        if header.to_str().ok() == Some(format!("Bearer good:{nsid}").as_str()) {
            // A proxy names the caller it forwards for (tests of extra headers).
            let caller = request
                .headers
                .get("x-caller")
                .and_then(|v| v.to_str().ok());
            Ok(caller.unwrap_or("did:example:alice").to_owned())
        } else {
            Err(XrpcError::invalid_token("token is not for this method"))
        }
    }

    /// `createThing` bodies choose: `"cached"` is answered here, `"observed"`
    /// runs with the observer marking the handler's response with its
    /// status.
    async fn intercept(&self, route: &'static Route, caller: &String, body: &Bytes) -> Intercept {
        assert_eq!(caller, "did:example:alice");
        self.intercepted.fetch_add(1, Ordering::SeqCst);
        if route.nsid != CREATE_THING.nsid {
            return Intercept::Proceed;
        }
        let text = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|body| body["text"].as_str().map(str::to_owned));
        match text.as_deref() {
            Some("cached") => Intercept::Answer(
                (
                    StatusCode::ACCEPTED,
                    [(CONTENT_TYPE, "application/json")],
                    r#"{"cached":true,"by":"intercept"}"#,
                )
                    .into_response(),
            ),
            Some(text) if text.starts_with("observed") => {
                Intercept::Observe(Box::new(|mut response: Response| {
                    Box::pin(async move {
                        let status = HeaderValue::from(response.status().as_u16());
                        response.headers_mut().insert("x-observed", status);
                        response
                    })
                }))
            }
            _ => Intercept::Proceed,
        }
    }
}

async fn get_thing(
    service: Arc<Service>,
    caller: String,
    params: GetParams,
) -> Result<ThingOutput, MethodError<ThingError>> {
    service.handled.fetch_add(1, Ordering::SeqCst);
    match params.uri.as_str() {
        "missing" => Err(
            MethodError::declared(ThingError::ThingNotFound, "no such thing")
                .with_status(StatusCode::NOT_FOUND),
        ),
        "busy" => Err(XrpcError::rate_limited(Duration::from_millis(2500)).into()),
        "panic" => panic!("secret: postgres://admin:hunter2@db"),
        "internal" => Err(XrpcError::internal(&"secret: disk /var/db full").into()),
        "invalid" => Ok(ThingOutput {
            uri: String::new(),
            caller,
        }),
        uri => Ok(ThingOutput {
            uri: uri.to_owned(),
            caller,
        }),
    }
}

fn app() -> Router {
    let service = Arc::new(Service::default());
    app_with(service)
}

fn app_with(service: Arc<Service>) -> Router {
    let router =
        Router::new()
            .route(
                &GET_THING.path(),
                query(Arc::clone(&service), &GET_THING, get_thing),
            )
            .route(
                &CREATE_THING.path(),
                procedure(
                    Arc::clone(&service),
                    &CREATE_THING,
                    |service: Arc<Service>, caller, _: NoParams, input: CreateInput| async move {
                        service.handled.fetch_add(1, Ordering::SeqCst);
                        Ok::<_, MethodError<NoError>>(ThingOutput {
                            uri: format!("at://{caller}/thing/{}", input.text),
                            caller,
                        })
                    },
                ),
            )
            .route(
                &UPLOAD.path(),
                procedure(
                    Arc::clone(&service),
                    &UPLOAD,
                    |_, _, _: NoParams, input: RawBody| async move {
                        Ok::<_, MethodError<NoError>>(input)
                    },
                ),
            )
            .route(
                &PING.path(),
                procedure(
                    Arc::clone(&service),
                    &PING,
                    |_, _, _: NoParams, (): ()| async { Ok::<_, MethodError<NoError>>(()) },
                ),
            )
            .route(
                &SUBSCRIBE.path(),
                subscription(Arc::clone(&service), &SUBSCRIBE, subscribe_ticks),
            )
            // A route that is not XRPC, answering in plain text like an axum
            // rejection would.
            .route(
                "/plain",
                axum::routing::get(|| async { (StatusCode::IM_A_TEAPOT, "short and stout") }),
            )
            .layer(body_limit_layer(64));
    finish(router)
}

#[derive(Debug, Serialize, Deserialize)]
struct CursorParams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cursor: Option<i64>,
}

impl Validate for CursorParams {
    fn validate(&self) -> Result<(), ValidationError> {
        Ok(())
    }
}

type Ticks =
    futures_util::stream::Iter<std::vec::IntoIter<Result<Event, MethodError<StreamError>>>>;

/// Three ticks from the cursor; cursor 50 fails after one; past 100 fails
/// before streaming.
async fn subscribe_ticks(
    _: Arc<Service>,
    _: String,
    params: CursorParams,
) -> Result<Ticks, MethodError<StreamError>> {
    let cursor = params.cursor.unwrap_or(1);
    if cursor > 100 {
        return Err(MethodError::declared(
            StreamError::FutureCursor,
            "cursor is in the future",
        ));
    }
    let items = if cursor == 50 {
        vec![
            Ok(Event::Tick(Tick { seq: 50 })),
            Err(MethodError::declared(
                StreamError::ConsumerTooSlow,
                "too slow",
            )),
        ]
    } else {
        (cursor..cursor + 3)
            .map(|seq| Ok(Event::Tick(Tick { seq })))
            .collect()
    };
    Ok(futures_util::stream::iter(items))
}

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{address}")
}

fn client(base: &str) -> XrpcClient {
    XrpcClient::new(base).with_token_source(|nsid| Some(format!("good:{nsid}")))
}

/// A raw HTTP call: status, headers and the JSON body.
async fn raw(request: reqwest::RequestBuilder) -> (StatusCode, http::HeaderMap, serde_json::Value) {
    let response = request.send().await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    assert_eq!(
        headers.get(CONTENT_TYPE).map(|v| v.to_str().unwrap()),
        Some("application/json"),
        "{status}"
    );
    let body: serde_json::Value = response.json_body().await;
    assert_eq!(body.as_object().unwrap().len(), 2, "{body}");
    (status, headers, body)
}

/// reqwest's `json` feature is off; this is all it would do.
trait JsonBody {
    async fn json_body(self) -> serde_json::Value;
}

impl JsonBody for reqwest::Response {
    async fn json_body(self) -> serde_json::Value {
        serde_json::from_slice(&self.bytes().await.unwrap()).unwrap()
    }
}

fn token(nsid: &str) -> String {
    format!("Bearer good:{nsid}")
}

// ---- tests ------------------------------------------------------------------

#[tokio::test]
async fn authentication_errors_carry_www_authenticate() {
    let base = serve(app()).await;
    let http = reqwest::Client::new();
    let url = format!("{base}/xrpc/com.example.getThing?uri=x");

    let (status, headers, body) = raw(http.get(&url)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(headers[WWW_AUTHENTICATE], "Bearer");
    assert_eq!(body["error"], "AuthenticationRequired");

    // A token for another method is refused: auth is bound to the NSID.
    let wrong = http
        .get(&url)
        .header(AUTHORIZATION, token("com.example.ping"));
    let (status, headers, body) = raw(wrong).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(headers[WWW_AUTHENTICATE], "Bearer error=\"invalid_token\"");
    assert_eq!(body["error"], "InvalidToken");
}

#[tokio::test]
async fn authentication_runs_before_parsing() {
    let service = Arc::new(Service::default());
    let base = serve(app_with(Arc::clone(&service))).await;
    let http = reqwest::Client::new();
    // Missing `uri` and an out-of-range depth, and no token: 401, not 400.
    let url = format!("{base}/xrpc/com.example.getThing?depth=99");
    let (status, _, body) = raw(http.get(&url)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    // A body that is too large, of the wrong type, without a token: 401.
    let post = http
        .post(format!("{base}/xrpc/com.example.createThing"))
        .header(CONTENT_TYPE, "text/plain")
        .body(vec![b'x'; 1000]);
    let (status, _, _) = raw(post).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // With the token the same query is a 400 naming the parameter.
    let (status, _, body) = raw(http.get(&url).header(AUTHORIZATION, token(GET_THING.nsid))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "InvalidRequest");
    assert!(
        body["message"].as_str().unwrap().contains("\"uri\""),
        "{body}"
    );
    let depth = format!("{base}/xrpc/com.example.getThing?uri=x&depth=99");
    let (status, _, body) = raw(http
        .get(&depth)
        .header(AUTHORIZATION, token(GET_THING.nsid)))
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("depth: must be <= 10"),
        "{body}"
    );
    assert_eq!(service.handled.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn status_errors_have_json_bodies_and_headers() {
    let base = serve(app()).await;
    let http = reqwest::Client::new();
    let get = |uri: &str| {
        http.get(format!("{base}/xrpc/com.example.getThing?uri={uri}"))
            .header(AUTHORIZATION, token(GET_THING.nsid))
    };

    let (status, headers, body) = raw(get("busy")).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(headers[RETRY_AFTER], "3");
    assert_eq!(body["error"], "RateLimitExceeded");

    let (status, _, body) = raw(get("missing")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "ThingNotFound");
    assert_eq!(body["message"], "no such thing");

    for leaky in ["panic", "internal", "invalid"] {
        let (status, _, body) = raw(get(leaky)).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{leaky}");
        assert_eq!(
            body,
            serde_json::json!({"error": "InternalServerError", "message": "internal server error"})
        );
    }
}

#[tokio::test]
async fn verbs_paths_and_fallbacks() {
    let base = serve(app()).await;
    let http = reqwest::Client::new();

    let post_query = http
        .post(format!("{base}/xrpc/com.example.getThing?uri=x"))
        .header(AUTHORIZATION, token(GET_THING.nsid));
    let (status, _, body) = raw(post_query).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "InvalidRequest");
    assert!(body["message"].as_str().unwrap().contains("GET"), "{body}");

    let get_procedure = http
        .get(format!("{base}/xrpc/com.example.ping"))
        .header(AUTHORIZATION, token(PING.nsid));
    let (status, _, body) = raw(get_procedure).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["message"].as_str().unwrap().contains("POST"), "{body}");

    let (status, _, body) = raw(http.get(format!("{base}/xrpc/com.example.nope"))).await;
    assert_eq!(status, StatusCode::NOT_IMPLEMENTED);
    assert_eq!(body["error"], "MethodNotImplemented");

    let (status, _, body) = raw(http.post(format!("{base}/elsewhere"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "NotFound");

    // Plain-text error responses are rewritten into the XRPC shape.
    let (status, _, body) = raw(http.get(format!("{base}/plain"))).await;
    assert_eq!(status, StatusCode::IM_A_TEAPOT);
    assert_eq!(body["message"], "short and stout");

    // A subscription without a WebSocket upgrade.
    let plain_get = http
        .get(format!("{base}/xrpc/com.example.subscribe"))
        .header(AUTHORIZATION, token(SUBSCRIBE.nsid));
    let (status, _, body) = raw(plain_get).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["message"].as_str().unwrap().contains("WebSocket"),
        "{body}"
    );
}

#[tokio::test]
async fn body_rules() {
    let base = serve(app()).await;
    let http = reqwest::Client::new();
    let create = || {
        http.post(format!("{base}/xrpc/com.example.createThing"))
            .header(AUTHORIZATION, token(CREATE_THING.nsid))
    };

    let wrong_type = create()
        .header(CONTENT_TYPE, "text/plain")
        .body(r#"{"text":"a"}"#);
    let (status, _, body) = raw(wrong_type).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(body["error"], "UnsupportedMediaType");

    let too_long = create()
        .header(CONTENT_TYPE, "application/json")
        .body(r#"{"text":"far too long"}"#);
    let (status, _, body) = raw(too_long).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("Input must be valid: text: "),
        "{body}"
    );

    let too_big = create()
        .header(CONTENT_TYPE, "application/json")
        .body(format!(r#"{{"text":"{}"}}"#, "x".repeat(100)));
    let (status, _, body) = raw(too_big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body["error"], "PayloadTooLarge");

    let upload = || {
        http.post(format!("{base}/xrpc/com.example.upload"))
            .header(AUTHORIZATION, token(UPLOAD.nsid))
    };
    let (status, _, _) = raw(upload().header(CONTENT_TYPE, "application/json").body("{}")).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let (status, _, _) = raw(upload().body("no type")).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let ping_with_body = http
        .post(format!("{base}/xrpc/com.example.ping"))
        .header(AUTHORIZATION, token(PING.nsid))
        .body("surprise");
    let (status, _, body) = raw(ping_with_body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["message"], "this method takes no input");
}

#[tokio::test]
async fn intercept_answers_observes_or_lets_through() {
    let service = Arc::new(Service::default());
    let base = serve(app_with(Arc::clone(&service))).await;
    let http = reqwest::Client::new();
    let create = |token: String, text: &str| {
        http.post(format!("{base}/xrpc/com.example.createThing"))
            .header(AUTHORIZATION, token)
            .header(CONTENT_TYPE, "application/json")
            .body(format!(r#"{{"text":"{text}"}}"#))
    };

    // Rejected callers never reach the hook.
    let (status, _, _) = raw(create("Bearer forged".to_owned(), "cached")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(service.intercepted.load(Ordering::SeqCst), 0);

    // Answered: the hook's response as it is, the handler not run.
    let (status, _, body) = raw(create(token(CREATE_THING.nsid), "cached")).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(body, serde_json::json!({"cached": true, "by": "intercept"}));
    assert_eq!(service.handled.load(Ordering::SeqCst), 0);

    // Observed: the handler runs and the observer sees its response ...
    let (status, headers, body) = raw(create(token(CREATE_THING.nsid), "observed")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-observed"], "200");
    assert_eq!(body["uri"], "at://did:example:alice/thing/observed");
    assert_eq!(service.handled.load(Ordering::SeqCst), 1);

    // ... but not a decoding error: the handler never ran.
    let (status, headers, body) = raw(create(token(CREATE_THING.nsid), "observed-too-long")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(!headers.contains_key("x-observed"));
    assert_eq!(body["error"], "InvalidRequest");
    assert_eq!(service.handled.load(Ordering::SeqCst), 1);

    // Let through: no trace of the hook.
    let (status, headers, _) = raw(create(token(CREATE_THING.nsid), "plain")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!headers.contains_key("x-observed"));
    assert_eq!(service.handled.load(Ordering::SeqCst), 2);
    assert_eq!(service.intercepted.load(Ordering::SeqCst), 4);
}

/// A chunked body has no Content-Length to refuse early; the limit must
/// still hold while reading.
#[tokio::test]
async fn chunked_bodies_are_limited_too() {
    let base = serve(app()).await;
    let address = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let chunk = "x".repeat(100);
    let request = format!(
        "POST /xrpc/com.example.upload HTTP/1.1\r\nHost: {address}\r\nAuthorization: {}\r\n\
         Content-Type: image/png\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
         {:x}\r\n{chunk}\r\n0\r\n\r\n",
        token(UPLOAD.nsid),
        chunk.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(
        response.contains(r#""error":"PayloadTooLarge""#),
        "{response}"
    );
}

#[tokio::test]
async fn client_round_trips() {
    let base = serve(app()).await;
    let client = client(&base);

    let params = GetParams {
        uri: "at://thing".to_owned(),
        depth: Some(2),
    };
    let output: ThingOutput = client
        .query::<_, _, ThingError>(&GET_THING, &params)
        .await
        .unwrap();
    assert_eq!(output.uri, "at://thing");
    assert_eq!(output.caller, "did:example:alice");

    let input = CreateInput {
        text: "hello".to_owned(),
    };
    let created: ThingOutput = client
        .procedure::<_, _, _, NoError>(&CREATE_THING, &NoParams {}, &input)
        .await
        .unwrap();
    assert_eq!(created.uri, "at://did:example:alice/thing/hello");

    let image = RawBody::new("image/png", b"\x89PNG".as_slice());
    let echoed: RawBody = client
        .procedure::<_, _, _, NoError>(&UPLOAD, &NoParams {}, &image)
        .await
        .unwrap();
    assert_eq!(echoed, image);

    client
        .procedure::<_, _, (), NoError>(&PING, &NoParams {}, &())
        .await
        .unwrap();
}

#[tokio::test]
async fn client_maps_errors_back() {
    let base = serve(app()).await;
    let client = client(&base);
    let get = |uri: &str| GetParams {
        uri: uri.to_owned(),
        depth: None,
    };

    let error = client
        .query::<_, ThingOutput, ThingError>(&GET_THING, &get("missing"))
        .await
        .unwrap_err();
    assert_eq!(error.declared(), Some(&ThingError::ThingNotFound));
    assert_eq!(error.status(), Some(StatusCode::NOT_FOUND));
    assert_eq!(
        error.to_string(),
        "404 Not Found ThingNotFound: no such thing"
    );

    let error = client
        .query::<_, ThingOutput, ThingError>(&GET_THING, &get("busy"))
        .await
        .unwrap_err();
    assert_eq!(error.declared(), None);
    let ClientError::Method(MethodError::Xrpc(xrpc)) = &error else {
        panic!("{error:?}");
    };
    assert_eq!(xrpc.error(), "RateLimitExceeded");
    assert_eq!(xrpc.headers()[RETRY_AFTER], HeaderValue::from_static("3"));

    let anonymous = XrpcClient::new(format!("{base}/"));
    let error = anonymous
        .query::<_, ThingOutput, ThingError>(&GET_THING, &get("x"))
        .await
        .unwrap_err();
    assert_eq!(error.status(), Some(StatusCode::UNAUTHORIZED));

    let nowhere = XrpcClient::new("http://127.0.0.1:1");
    let error = nowhere
        .query::<_, ThingOutput, ThingError>(&GET_THING, &get("x"))
        .await
        .unwrap_err();
    assert!(matches!(error, ClientError::Transport(_)), "{error:?}");
}

#[tokio::test]
async fn async_token_sources_and_extra_headers() {
    let service = Arc::new(Service::default());
    let base = serve(app_with(service.clone())).await;
    let asked = Arc::new(AtomicUsize::new(0));
    let counter = asked.clone();
    let client = XrpcClient::new(&base)
        .with_async_token_source(move |nsid| {
            let counter = counter.clone();
            async move {
                tokio::task::yield_now().await;
                counter.fetch_add(1, Ordering::SeqCst);
                Ok(Some(format!("good:{nsid}")))
            }
        })
        .with_header(
            http::HeaderName::from_static("x-caller"),
            HeaderValue::from_static("did:example:bob"),
        );
    let params = GetParams {
        uri: "at://thing".to_owned(),
        depth: None,
    };
    let output: ThingOutput = client
        .query::<_, _, ThingError>(&GET_THING, &params)
        .await
        .unwrap();
    assert_eq!(output.caller, "did:example:bob");
    let frames = client
        .subscribe_raw::<_, StreamError>(&SUBSCRIBE, &CursorParams { cursor: Some(1) })
        .await
        .unwrap()
        .count()
        .await;
    assert_eq!(frames, 3);
    assert_eq!(asked.load(Ordering::SeqCst), 2, "one token per call");

    // A source's error fails the call before it is sent.
    let handled = service.handled.load(Ordering::SeqCst);
    let refused = XrpcClient::new(&base).with_async_token_source(|_| async {
        let error = XrpcError::new(StatusCode::UNAUTHORIZED, "ExpiredToken", "session over");
        Err(TokenError::Refused(error))
    });
    let error = refused
        .query::<_, ThingOutput, ThingError>(&GET_THING, &params)
        .await
        .unwrap_err();
    assert_eq!(error.status(), Some(StatusCode::UNAUTHORIZED));
    assert_eq!(
        error.to_string(),
        "401 Unauthorized ExpiredToken: session over"
    );
    let unavailable = XrpcClient::new(&base)
        .with_async_token_source(|_| async { Err(TokenError::Unavailable("no PDS".to_owned())) });
    let error = unavailable
        .subscribe_raw::<_, StreamError>(&SUBSCRIBE, &CursorParams { cursor: None })
        .await
        .err()
        .unwrap();
    assert!(
        matches!(&error, ClientError::Transport(message) if message.ends_with("no PDS")),
        "{error:?}"
    );
    assert_eq!(service.handled.load(Ordering::SeqCst), handled);
}

#[tokio::test]
async fn event_stream_frames_are_dag_cbor() {
    let base = serve(app()).await;
    let client = client(&base);
    let frames: Vec<Vec<u8>> = client
        .subscribe_raw::<_, StreamError>(&SUBSCRIBE, &CursorParams { cursor: Some(7) })
        .await
        .unwrap()
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(frames.len(), 3);
    // {"t": "#tick", "op": 1} then {"seq": 7}
    let expected = "a2617465237469636b626f7001a163736571 07".replace(' ', "");
    let hex: String = frames[0].iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, expected);
}

#[tokio::test]
async fn event_streams_carry_typed_messages_and_errors() {
    let base = serve(app()).await;
    let client = client(&base);

    let events: Vec<_> = client
        .subscribe::<_, Event, StreamError>(&SUBSCRIBE, &CursorParams { cursor: None })
        .await
        .unwrap()
        .collect()
        .await;
    let seqs: Vec<i64> = events
        .into_iter()
        .map(|event| match event.unwrap() {
            Event::Tick(tick) => tick.seq,
        })
        .collect();
    assert_eq!(seqs, [1, 2, 3]);

    // An error mid-stream is the last item.
    let mut events = client
        .subscribe::<_, Event, StreamError>(&SUBSCRIBE, &CursorParams { cursor: Some(50) })
        .await
        .unwrap();
    assert_eq!(
        events.next().await.unwrap().unwrap(),
        Event::Tick(Tick { seq: 50 })
    );
    let error = events.next().await.unwrap().unwrap_err();
    assert_eq!(error.declared(), Some(&StreamError::ConsumerTooSlow));
    assert!(events.next().await.is_none());

    // The handler refusing before it streams is refused before the
    // upgrade: an ordinary declared error with its status.
    let error = client
        .subscribe::<_, Event, StreamError>(&SUBSCRIBE, &CursorParams { cursor: Some(101) })
        .await
        .unwrap_err();
    assert_eq!(error.declared(), Some(&StreamError::FutureCursor));
    assert_eq!(error.status(), Some(StatusCode::BAD_REQUEST));

    // Auth is checked before the upgrade: a plain 401.
    let anonymous = XrpcClient::new(&base);
    let error = anonymous
        .subscribe::<_, Event, StreamError>(&SUBSCRIBE, &CursorParams { cursor: None })
        .await
        .unwrap_err();
    assert_eq!(error.status(), Some(StatusCode::UNAUTHORIZED));
    let ClientError::Method(MethodError::Xrpc(xrpc)) = &error else {
        panic!("{error:?}");
    };
    assert_eq!(xrpc.error(), "AuthenticationRequired");
}
