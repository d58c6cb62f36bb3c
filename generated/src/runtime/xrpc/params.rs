//! Query strings, parsed strictly from the route's parameter table.
//!
//! serde's own URL-encoded deserialiser guesses types from the target and
//! accepts `+1`, `1.0`-ish or `yes` depending on the type; the XRPC rules are
//! stricter and depend on the lexicon, so the table decides: each declared
//! parameter is converted to a JSON value of its declared kind, and the typed
//! `Params` then deserialise from that object and validate.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::runtime::Validate;
use crate::runtime::xrpc::{Param, ParamKind, Route, XrpcError};

/// A generated `Params` struct: deserialised from the query string by
/// [`parse_params`], validated, and written back by [`encode_params`].
pub trait Params: DeserializeOwned + Serialize + Validate + Send + 'static {}

impl<T: DeserializeOwned + Serialize + Validate + Send + 'static> Params for T {}

/// The parameters of a method that declares none: generated method modules
/// have no `Params` of their own then, and routers and clients use this.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NoParams {}

impl Validate for NoParams {
    fn validate(&self) -> Result<(), crate::runtime::ValidationError> {
        Ok(())
    }
}

/// Parses and validates the query string of a request to `route`.
///
/// Arrays are repeated keys; booleans are exactly `true` or `false`;
/// integers are an optional `-` and decimal digits within `i64`. A missing
/// required parameter, a repeated single parameter, or a value of the wrong
/// kind is a 400 `InvalidRequest` naming the parameter. Parameters the route
/// does not declare are ignored (clients may send newer ones).
pub fn parse_params<P: Params>(route: &Route, query: Option<&str>) -> Result<P, XrpcError> {
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .map(|(key, value)| (key.into_owned(), value.into_owned()))
        .collect();
    let mut object = Map::new();
    for param in route.params {
        let mut values = pairs
            .iter()
            .filter(|(key, _)| key == param.name)
            .map(|(_, value)| value.as_str());
        let Some(first) = values.next() else {
            if param.required {
                return Err(XrpcError::invalid_request(format!(
                    "missing required parameter {:?}",
                    param.name
                )));
            }
            continue;
        };
        let value = if param.array {
            let items = std::iter::once(first)
                .chain(values)
                .map(|value| convert(param, value))
                .collect::<Result<Vec<_>, _>>()?;
            Value::Array(items)
        } else {
            if values.next().is_some() {
                return Err(XrpcError::invalid_request(format!(
                    "parameter {:?} must not be repeated",
                    param.name
                )));
            }
            convert(param, first)?
        };
        object.insert(param.name.to_owned(), value);
    }
    let params: P = serde_path_to_error::deserialize(Value::Object(object)).map_err(|error| {
        let path = error.path().to_string();
        XrpcError::invalid_request(format!(
            "invalid parameter {path:?}: {}",
            error.into_inner()
        ))
    })?;
    params
        .validate()
        .map_err(|error| XrpcError::invalid_request(format!("Params must be valid: {error}")))?;
    Ok(params)
}

/// The first query parameter whose name or value holds U+0000 (NUL,
/// `%00`), for services whose store cannot keep it
/// ([`XrpcService::ACCEPTS_NUL`](crate::runtime::xrpc::XrpcService::ACCEPTS_NUL)):
/// a 400 `InvalidRequest` naming it.
pub fn refuse_nul_in_query(query: Option<&str>) -> Result<(), XrpcError> {
    let query = query.unwrap_or("");
    // A NUL can only arrive percent-encoded: skip the parse when there is none.
    if !query.contains("%00") {
        return Ok(());
    }
    match form_urlencoded::parse(query.as_bytes())
        .find(|(key, value)| key.contains('\0') || value.contains('\0'))
    {
        Some((key, _)) => Err(XrpcError::invalid_request(format!(
            "parameter {key:?} must not contain U+0000 (NUL)"
        ))),
        None => Ok(()),
    }
}

/// One query-string value as the JSON value of its declared kind.
fn convert(param: &Param, value: &str) -> Result<Value, XrpcError> {
    match param.kind {
        ParamKind::String => Ok(Value::String(value.to_owned())),
        ParamKind::Boolean => match value {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            _ => Err(XrpcError::invalid_request(format!(
                "parameter {:?} must be true or false, got {value:?}",
                param.name
            ))),
        },
        ParamKind::Integer => parse_integer(value).map(Value::from).ok_or_else(|| {
            XrpcError::invalid_request(format!(
                "parameter {:?} must be an integer, got {value:?}",
                param.name
            ))
        }),
    }
}

/// `-?[0-9]+` within `i64`; Rust's own parser also takes a leading `+`.
fn parse_integer(value: &str) -> Option<i64> {
    let digits = value.strip_prefix('-').unwrap_or(value);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

/// Writes `params` as a query string (without the `?`) in the route's
/// parameter order: arrays as repeated keys, booleans and integers as text,
/// absent and null values left out.
pub fn encode_params<P: Serialize>(route: &Route, params: &P) -> Result<String, XrpcError> {
    let value = serde_json::to_value(params)
        .map_err(|error| XrpcError::invalid_request(format!("unencodable parameters: {error}")))?;
    let object = match value {
        Value::Object(object) => object,
        Value::Null => Map::new(),
        other => {
            return Err(XrpcError::invalid_request(format!(
                "parameters must be an object, got {other}"
            )));
        }
    };
    let mut query = form_urlencoded::Serializer::new(String::new());
    for param in route.params {
        match object.get(param.name) {
            None | Some(Value::Null) => {}
            Some(Value::Array(items)) => {
                for item in items {
                    query.append_pair(param.name, &scalar_text(param, item)?);
                }
            }
            Some(value) => {
                query.append_pair(param.name, &scalar_text(param, value)?);
            }
        }
    }
    Ok(query.finish())
}

/// A scalar parameter value as query-string text.
fn scalar_text(param: &Param, value: &Value) -> Result<String, XrpcError> {
    match value {
        Value::String(text) => Ok(text.clone()),
        Value::Bool(flag) => Ok(flag.to_string()),
        Value::Number(number) => Ok(number.to_string()),
        other => Err(XrpcError::invalid_request(format!(
            "parameter {:?} cannot be written in a query string: {other}",
            param.name
        ))),
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;
    use crate::runtime::xrpc::MethodKind;
    use crate::runtime::{ResultExt as _, ValidationError, check};

    const PARAMS: &[Param] = &[
        Param {
            name: "uri",
            kind: ParamKind::String,
            array: false,
            required: true,
        },
        Param {
            name: "includeDeleted",
            kind: ParamKind::Boolean,
            array: false,
            required: false,
        },
        Param {
            name: "depth",
            kind: ParamKind::Integer,
            array: false,
            required: false,
        },
        Param {
            name: "tags",
            kind: ParamKind::String,
            array: true,
            required: false,
        },
        Param {
            name: "versions",
            kind: ParamKind::Integer,
            array: true,
            required: false,
        },
    ];

    const ROUTE: Route = Route {
        input_fields: &[],
        nsid: "com.example.getThing",
        kind: MethodKind::Query,
        params: PARAMS,
        input: None,
        output: Some("application/json"),
    };

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct TestParams {
        uri: crate::runtime::AtUri,
        #[serde(rename = "includeDeleted", default)]
        include_deleted: bool,
        #[serde(default = "default_depth")]
        depth: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tags: Option<Vec<String>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        versions: Option<Vec<i64>>,
    }

    fn default_depth() -> i64 {
        1
    }

    impl Validate for TestParams {
        fn validate(&self) -> Result<(), ValidationError> {
            check::maximum(self.depth, 10).at("depth")?;
            if let Some(tags) = &self.tags {
                for (i, tag) in tags.iter().enumerate() {
                    check::max_length(tag, 5).at_index(i).at("tags")?;
                }
            }
            Ok(())
        }
    }

    const URI: &str = "at://did:plc:abc/com.example.thing/1";

    fn parse(query: &str) -> Result<TestParams, String> {
        parse_params(&ROUTE, Some(query)).map_err(|error| {
            assert_eq!(error.error(), "InvalidRequest");
            assert_eq!(error.status(), http::StatusCode::BAD_REQUEST);
            error.message().to_owned()
        })
    }

    fn with_uri(rest: &str) -> String {
        format!("uri={}&{rest}", URI.replace(':', "%3A").replace('/', "%2F"))
    }

    #[test]
    fn parses_every_kind() {
        let params = parse(&with_uri(
            "includeDeleted=true&depth=-0&tags=a&tags=b%20c&versions=1&versions=-2",
        ))
        .unwrap();
        assert_eq!(params.uri.as_str(), URI);
        assert!(params.include_deleted);
        assert_eq!(params.depth, 0);
        assert_eq!(params.tags, Some(vec!["a".into(), "b c".into()]));
        assert_eq!(params.versions, Some(vec![1, -2]));
    }

    #[test]
    fn defaults_apply_and_unknown_params_are_ignored() {
        let params = parse(&with_uri("future=1&x")).unwrap();
        assert!(!params.include_deleted);
        assert_eq!(params.depth, 1);
        assert_eq!(params.tags, None);
        assert!(parse_params::<TestParams>(&ROUTE, None).is_err());
    }

    #[test]
    fn rejections_name_the_parameter() {
        let cases = [
            ("depth=1".to_owned(), "missing required parameter \"uri\""),
            (
                with_uri("includeDeleted=True"),
                "\"includeDeleted\" must be true or false",
            ),
            (
                with_uri("includeDeleted=1"),
                "\"includeDeleted\" must be true or false",
            ),
            (
                with_uri("includeDeleted="),
                "\"includeDeleted\" must be true or false",
            ),
            (
                with_uri("depth=%2B1"),
                "\"depth\" must be an integer, got \"+1\"",
            ),
            (with_uri("depth=1.0"), "\"depth\" must be an integer"),
            (with_uri("depth=%201"), "\"depth\" must be an integer"),
            (with_uri("depth="), "\"depth\" must be an integer"),
            (with_uri("depth=-"), "\"depth\" must be an integer"),
            (with_uri("depth=1e3"), "\"depth\" must be an integer"),
            (
                with_uri("depth=9223372036854775808"),
                "\"depth\" must be an integer",
            ),
            (
                with_uri("versions=1&versions=x"),
                "\"versions\" must be an integer",
            ),
            (
                with_uri("depth=1&depth=2"),
                "\"depth\" must not be repeated",
            ),
            ("uri=a&uri=b".to_owned(), "\"uri\" must not be repeated"),
            ("uri=not-an-at-uri".to_owned(), "invalid parameter \"uri\""),
            (
                with_uri("depth=11"),
                "Params must be valid: depth: must be <= 10",
            ),
            (
                with_uri("tags=ok&tags=toolong"),
                "Params must be valid: tags[1]:",
            ),
        ];
        for (query, expected) in cases {
            let message = parse(&query).unwrap_err();
            assert!(message.contains(expected), "{query}: {message}");
        }
    }

    #[test]
    fn nul_in_the_query_is_refused_naming_the_parameter() {
        let error = refuse_nul_in_query(Some("a=1&convoId=ab%00cd")).unwrap_err();
        assert_eq!(error.status(), 400);
        assert_eq!(
            error.message(),
            "parameter \"convoId\" must not contain U+0000 (NUL)"
        );
        assert!(refuse_nul_in_query(Some("x%00=1")).is_err());
        assert!(refuse_nul_in_query(Some("a=%2500")).is_ok());
        assert!(refuse_nul_in_query(None).is_ok());
    }

    #[test]
    fn integer_extremes() {
        let params = parse(&with_uri("depth=-9223372036854775808")).unwrap();
        assert_eq!(params.depth, i64::MIN);
    }

    #[test]
    fn encodes_in_route_order_with_repeated_keys() {
        let params = TestParams {
            uri: crate::runtime::AtUri::new(URI).unwrap(),
            include_deleted: true,
            depth: 3,
            tags: Some(vec!["a b".into(), "c&d".into()]),
            versions: None,
        };
        let query = encode_params(&ROUTE, &params).unwrap();
        assert_eq!(
            query,
            "uri=at%3A%2F%2Fdid%3Aplc%3Aabc%2Fcom.example.thing%2F1&includeDeleted=true&depth=3&tags=a+b&tags=c%26d"
        );
        assert_eq!(parse(&query).unwrap(), params);
    }

    #[test]
    fn encodes_empty_params() {
        #[derive(Serialize)]
        struct Empty {}
        assert_eq!(encode_params(&ROUTE, &Empty {}).unwrap(), "");
        assert_eq!(encode_params(&ROUTE, &()).unwrap(), "");
    }
}
