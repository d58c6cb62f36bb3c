//! Request and response bodies: JSON (any generated type), raw bytes for
//! non-JSON encodings, and `()` for methods without a body.
//!
//! Decoding enforces the XRPC body rules: the `Content-Type` must match the
//! declared encoding (415), JSON must parse and then satisfy the lexicon
//! constraints (400 naming the field), and a method without input accepts no
//! body (400).

#[cfg(feature = "server")]
use axum::body::Body;
#[cfg(feature = "server")]
use axum::response::{IntoResponse, Response};
#[cfg(feature = "server")]
use http::HeaderValue;
#[cfg(feature = "server")]
use http::header::CONTENT_TYPE;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::runtime::xrpc::{Route, XrpcError};
use crate::runtime::{RawBody, Validate};

/// The JSON media type.
pub(crate) const JSON: &str = "application/json";

/// A body a client sends and a server decodes.
pub trait InputBody: Sized + Send + 'static {
    /// Decodes a request body sent with `content_type` to `route`.
    fn decode(
        route: &Route,
        content_type: Option<&str>,
        body: bytes::Bytes,
    ) -> Result<Self, XrpcError>;
    /// The content type and bytes to send, or `None` for no body.
    fn encode(&self, route: &Route) -> Result<Option<(String, Vec<u8>)>, XrpcError>;
}

/// A body a server sends and a client decodes.
pub trait OutputBody: Sized + Send + 'static {
    #[cfg(feature = "server")]
    /// The 200 response carrying this body.
    fn into_response(self, route: &Route) -> Response;
    /// Decodes a 2xx response body received with `content_type`.
    fn decode(
        route: &Route,
        content_type: Option<&str>,
        body: bytes::Bytes,
    ) -> Result<Self, XrpcError>;
}

/// The media type without parameters, lowercased: `Application/JSON;
/// charset=utf-8` is `application/json`.
pub(crate) fn essence(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Whether a body of `content_type` fits the declared `encoding`, where
/// `*/*` accepts anything and `image/*` any image type.
pub(crate) fn encoding_matches(encoding: &str, content_type: &str) -> bool {
    let encoding = essence(encoding);
    let actual = essence(content_type);
    if encoding == "*/*" {
        return true;
    }
    if actual.is_empty() {
        return false;
    }
    match encoding.strip_suffix("/*") {
        Some(kind) => actual
            .split_once('/')
            .is_some_and(|(actual_kind, sub)| actual_kind == kind && !sub.is_empty()),
        None => actual == encoding,
    }
}

fn decode_json<T: DeserializeOwned + Validate>(
    what: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<T, XrpcError> {
    if content_type.is_none_or(|content_type| essence(content_type) != JSON) {
        return Err(XrpcError::unsupported_media_type(JSON, content_type));
    }
    let mut json = serde_json::Deserializer::from_slice(body);
    let value: T = serde_path_to_error::deserialize(&mut json).map_err(|error| {
        let path = error.path().to_string();
        let error = error.into_inner();
        if path.is_empty() || path == "." {
            XrpcError::invalid_request(format!("invalid JSON body: {error}"))
        } else {
            XrpcError::invalid_request(format!("invalid JSON body: {path}: {error}"))
        }
    })?;
    json.end()
        .map_err(|error| XrpcError::invalid_request(format!("invalid JSON body: {error}")))?;
    value
        .validate()
        .map_err(|error| XrpcError::invalid_request(format!("{what} must be valid: {error}")))?;
    Ok(value)
}

/// Refuses a JSON body with U+0000 (NUL) in any string or object key, for
/// services whose store cannot keep it
/// ([`XrpcService::ACCEPTS_NUL`](crate::runtime::xrpc::XrpcService::ACCEPTS_NUL)):
/// a 400 `InvalidRequest` naming the field, e.g. `Input must be valid:
/// msgId: must not contain U+0000 (NUL)`. A body that is not JSON is left
/// to decoding, which reports it.
pub fn refuse_nul_in_json(body: &[u8]) -> Result<(), XrpcError> {
    // JSON can only carry a NUL escaped: skip the parse when there is none.
    if !body.windows(6).any(|window| window == b"\\u0000") {
        return Ok(());
    }
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Ok(());
    };
    match nul_path(&value) {
        Some(path) => {
            let field = if path.is_empty() {
                "Input".to_owned()
            } else {
                path
            };
            Err(XrpcError::invalid_request(format!(
                "Input must be valid: {field}: must not contain U+0000 (NUL)"
            )))
        }
        None => Ok(()),
    }
}

/// The path (`a.b[2]`, empty for the value itself) of the first string or
/// object key in `value` that holds U+0000.
fn nul_path(value: &serde_json::Value) -> Option<String> {
    use serde_json::Value;
    // `rest` continues the path below `head`.
    fn join(head: String, rest: String) -> String {
        if rest.is_empty() || rest.starts_with('[') {
            head + &rest
        } else {
            format!("{head}.{rest}")
        }
    }
    match value {
        Value::String(text) => text.contains('\0').then(String::new),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(index, item)| nul_path(item).map(|rest| join(format!("[{index}]"), rest))),
        Value::Object(fields) => fields.iter().find_map(|(key, item)| {
            if key.contains('\0') {
                Some(format!("{key:?}"))
            } else {
                nul_path(item).map(|rest| join(key.clone(), rest))
            }
        }),
        _ => None,
    }
}

impl<T: DeserializeOwned + Serialize + Validate + Send + 'static> InputBody for T {
    fn decode(
        _route: &Route,
        content_type: Option<&str>,
        body: bytes::Bytes,
    ) -> Result<Self, XrpcError> {
        decode_json("Input", content_type, &body)
    }

    fn encode(&self, _route: &Route) -> Result<Option<(String, Vec<u8>)>, XrpcError> {
        let bytes = serde_json::to_vec(self)
            .map_err(|error| XrpcError::invalid_request(format!("unencodable input: {error}")))?;
        Ok(Some((JSON.to_owned(), bytes)))
    }
}

impl<T: DeserializeOwned + Serialize + Validate + Send + 'static> OutputBody for T {
    #[cfg(feature = "server")]
    /// Outputs are validated too: a handler that breaks the lexicon is a
    /// server bug, reported as a 500 rather than sent to clients.
    fn into_response(self, route: &Route) -> Response {
        if let Err(error) = self.validate() {
            let cause = format!("{} returned an invalid output: {error}", route.nsid);
            return XrpcError::internal(&cause).into_response();
        }
        match serde_json::to_vec(&self) {
            Ok(bytes) => body_response(JSON, bytes),
            Err(error) => XrpcError::internal(&error).into_response(),
        }
    }

    fn decode(
        _route: &Route,
        content_type: Option<&str>,
        body: bytes::Bytes,
    ) -> Result<Self, XrpcError> {
        decode_json("Output", content_type, &body)
    }
}

impl InputBody for RawBody {
    fn decode(
        route: &Route,
        content_type: Option<&str>,
        body: bytes::Bytes,
    ) -> Result<Self, XrpcError> {
        let encoding = route.input.unwrap_or("*/*");
        match content_type {
            Some(content_type) if encoding_matches(encoding, content_type) => {
                Ok(RawBody::new(content_type, body.to_vec()))
            }
            _ => Err(XrpcError::unsupported_media_type(encoding, content_type)),
        }
    }

    fn encode(&self, _route: &Route) -> Result<Option<(String, Vec<u8>)>, XrpcError> {
        Ok(Some((self.content_type.clone(), self.data.clone())))
    }
}

impl OutputBody for RawBody {
    #[cfg(feature = "server")]
    fn into_response(self, _route: &Route) -> Response {
        body_response(&self.content_type, self.data)
    }

    fn decode(
        route: &Route,
        content_type: Option<&str>,
        body: bytes::Bytes,
    ) -> Result<Self, XrpcError> {
        let content_type = content_type
            .or(route.output)
            .unwrap_or("application/octet-stream");
        Ok(RawBody::new(content_type, body.to_vec()))
    }
}

impl InputBody for () {
    fn decode(
        _route: &Route,
        _content_type: Option<&str>,
        body: bytes::Bytes,
    ) -> Result<Self, XrpcError> {
        if body.is_empty() {
            Ok(())
        } else {
            Err(XrpcError::invalid_request("this method takes no input"))
        }
    }

    fn encode(&self, _route: &Route) -> Result<Option<(String, Vec<u8>)>, XrpcError> {
        Ok(None)
    }
}

impl OutputBody for () {
    #[cfg(feature = "server")]
    fn into_response(self, _route: &Route) -> Response {
        http::StatusCode::OK.into_response()
    }

    /// Whatever a server sends for a method without output is ignored.
    fn decode(
        _route: &Route,
        _content_type: Option<&str>,
        _body: bytes::Bytes,
    ) -> Result<Self, XrpcError> {
        Ok(())
    }
}

#[cfg(feature = "server")]
/// A 200 response with a body of the given type. A content type that is
/// not a valid header value (only possible for a hand-built `RawBody`) is a
/// server bug.
fn body_response(content_type: &str, bytes: Vec<u8>) -> Response {
    let Ok(value) = HeaderValue::from_str(content_type) else {
        let cause = format!("invalid output Content-Type {content_type:?}");
        return XrpcError::internal(&cause).into_response();
    };
    let mut response = Response::new(Body::from(bytes));
    response.headers_mut().insert(CONTENT_TYPE, value);
    response
}

/// `serde_json::Value` bodies (a JSON encoding without a schema) have no
/// constraints to check.
impl Validate for serde_json::Value {
    fn validate(&self) -> Result<(), crate::runtime::ValidationError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;
    use crate::runtime::xrpc::MethodKind;
    use crate::runtime::{ResultExt as _, ValidationError, check};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Input {
        text: String,
    }

    impl Validate for Input {
        fn validate(&self) -> Result<(), ValidationError> {
            check::max_length(&self.text, 10).at("text")
        }
    }

    fn route(input: Option<&'static str>) -> Route {
        Route {
            input_fields: &[],
            nsid: "com.example.createThing",
            kind: MethodKind::Procedure,
            params: &[],
            input,
            output: None,
        }
    }

    fn json(content_type: Option<&str>, body: &str) -> Result<Input, XrpcError> {
        <Input as InputBody>::decode(
            &route(Some(JSON)),
            content_type,
            bytes::Bytes::copy_from_slice(body.as_bytes()),
        )
    }

    #[test]
    fn json_bodies() {
        let ok = json(Some("application/json; charset=utf-8"), r#"{"text":"hi"}"#);
        assert_eq!(ok.unwrap().text, "hi");
        let wrong_type = json(Some("text/plain"), r#"{"text":"hi"}"#).unwrap_err();
        assert_eq!(wrong_type.status(), 415);
        assert_eq!(json(None, "{}").unwrap_err().status(), 415);
        let bad = json(Some(JSON), "{").unwrap_err();
        assert_eq!(bad.status(), 400);
        assert!(bad.message().starts_with("invalid JSON body: "), "{bad}");
        let typed = json(Some(JSON), r#"{"text":5}"#).unwrap_err();
        assert!(
            typed.message().starts_with("invalid JSON body: text: "),
            "{typed}"
        );
        let long = json(Some(JSON), r#"{"text":"far too long"}"#).unwrap_err();
        assert_eq!(long.status(), 400);
        assert!(
            long.message()
                .starts_with("Input must be valid: text: must be at most 10 bytes"),
            "{long}"
        );
    }

    #[test]
    fn nul_in_json_is_refused_naming_the_field() {
        let refused = |body: &str| {
            refuse_nul_in_json(body.as_bytes())
                .unwrap_err()
                .message()
                .to_owned()
        };
        assert_eq!(
            refused(r#"{"msgId":"a\u0000b"}"#),
            "Input must be valid: msgId: must not contain U+0000 (NUL)"
        );
        assert_eq!(
            refused(r#"{"a":{"b":[1,"x","\u0000"]}}"#),
            "Input must be valid: a.b[2]: must not contain U+0000 (NUL)"
        );
        assert_eq!(
            refused(r#"[{"k":"\u0000"}]"#),
            "Input must be valid: [0].k: must not contain U+0000 (NUL)"
        );
        assert_eq!(
            refused(r#"{"a\u0000":1}"#),
            "Input must be valid: \"a\\0\": must not contain U+0000 (NUL)"
        );
        assert_eq!(
            refused(r#""\u0000""#),
            "Input must be valid: Input: must not contain U+0000 (NUL)"
        );
        // An escaped backslash before `u0000` is text, not a NUL; bodies
        // that are not JSON are left to decoding.
        assert!(refuse_nul_in_json(br#"{"a":"\\u0000"}"#).is_ok());
        assert!(refuse_nul_in_json(br#"{"a":"\u0000"#).is_ok());
        assert!(refuse_nul_in_json(br#"{"a":"\u0001"}"#).is_ok());
    }

    #[test]
    fn encodings_match() {
        assert!(encoding_matches("*/*", "anything/at-all"));
        assert!(encoding_matches("image/*", "image/png"));
        assert!(!encoding_matches("image/*", "video/mp4"));
        assert!(!encoding_matches("image/*", "image/"));
        assert!(encoding_matches(
            "application/cbor",
            "Application/CBOR; x=y"
        ));
        assert!(!encoding_matches("application/cbor", "application/json"));
        assert!(!encoding_matches("application/cbor", ""));
    }

    #[test]
    fn raw_bodies() {
        let body = bytes::Bytes::from_static(b"\x89PNG");
        let any =
            <RawBody as InputBody>::decode(&route(Some("*/*")), Some("image/png"), body.clone())
                .unwrap();
        assert_eq!(any, RawBody::new("image/png", b"\x89PNG".as_slice()));
        let missing =
            <RawBody as InputBody>::decode(&route(Some("*/*")), None, body.clone()).unwrap_err();
        assert_eq!(missing.status(), 415);
        let wrong =
            <RawBody as InputBody>::decode(&route(Some("video/*")), Some("image/png"), body)
                .unwrap_err();
        assert_eq!(wrong.status(), 415);
    }

    #[test]
    fn no_input() {
        assert!(<() as InputBody>::decode(&route(None), None, bytes::Bytes::new()).is_ok());
        let error = <() as InputBody>::decode(&route(None), None, bytes::Bytes::from_static(b"x"))
            .unwrap_err();
        assert_eq!(error.message(), "this method takes no input");
        assert_eq!(<() as InputBody>::encode(&(), &route(None)).unwrap(), None);
    }

    #[test]
    fn schemaless_json_is_accepted() {
        let value = <serde_json::Value as InputBody>::decode(
            &route(Some(JSON)),
            Some(JSON),
            bytes::Bytes::from_static(br#"{"any":[1]}"#),
        )
        .unwrap();
        assert_eq!(value["any"][0], 1);
    }
}
