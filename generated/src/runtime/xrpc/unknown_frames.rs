//! Messages of an open stream union that this lexicon version does not
//! list. Frame bodies carry no `$type` (the header's `t` names the kind), so
//! the kind is put back as `$type` on the raw object when a frame is read and
//! taken out again when one is written. Bodies are read through the IPLD data
//! model, so links and bytes survive as `{"$link"}` / `{"$bytes"}`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use ipld_core::ipld::Ipld;
use serde_json::{Map, Value};

use crate::runtime::Unknown;
use crate::runtime::xrpc::{XrpcError, decode_frame_body, encode_frame_body};

/// Reads a frame body of kind `frame_type` (`#name` or a full `nsid#name`)
/// on the stream `stream_nsid`, keeping its kind as `$type`.
pub fn decode_unknown_frame(
    stream_nsid: &str,
    frame_type: &str,
    body: &[u8],
) -> Result<Unknown, XrpcError> {
    let Value::Object(mut object) = ipld_to_json(decode_frame_body::<Ipld>(body)?) else {
        return Err(XrpcError::invalid_request(format!(
            "frame body of {frame_type:?} is not a map"
        )));
    };
    let full = match frame_type.strip_prefix('#') {
        Some(name) => format!("{stream_nsid}#{name}"),
        None => frame_type.to_owned(),
    };
    object.insert("$type".to_owned(), Value::String(full));
    Ok(Unknown(object))
}

/// The header `t` for an unknown message: `#name` within the stream's own
/// lexicon, else its full `$type`.
pub fn unknown_frame_type(stream_nsid: &str, message: &Unknown) -> String {
    let full = message.type_name().unwrap_or_default();
    match full.split_once('#') {
        Some((nsid, name)) if nsid == stream_nsid => format!("#{name}"),
        _ => full.to_owned(),
    }
}

/// The body of an unknown message: the object without its `$type`.
pub fn encode_unknown_frame_body(message: &Unknown) -> Result<Vec<u8>, XrpcError> {
    let mut body = message.0.clone();
    body.shift_remove("$type");
    encode_frame_body(&body)
}

/// IPLD to the lexicon JSON form (links as `$link`, bytes as `$bytes`).
fn ipld_to_json(value: Ipld) -> Value {
    match value {
        Ipld::Null => Value::Null,
        Ipld::Bool(b) => Value::Bool(b),
        Ipld::Integer(i) => i64::try_from(i)
            .map(Value::from)
            .or_else(|_| u64::try_from(i).map(Value::from))
            .unwrap_or_else(|_| Value::String(i.to_string())),
        Ipld::Float(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
        Ipld::String(s) => Value::String(s),
        Ipld::Bytes(bytes) => single("$bytes", Value::String(STANDARD_NO_PAD.encode(bytes))),
        Ipld::List(items) => Value::Array(items.into_iter().map(ipld_to_json).collect()),
        Ipld::Map(map) => {
            Value::Object(map.into_iter().map(|(k, v)| (k, ipld_to_json(v))).collect())
        }
        Ipld::Link(cid) => single("$link", Value::String(cid.to_string())),
    }
}

fn single(key: &str, value: Value) -> Value {
    let mut map = Map::new();
    map.insert(key.to_owned(), value);
    Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_kinds_keep_their_type_links_and_bytes() {
        let cid: ipld_core::cid::Cid =
            "bafyreidfayvfkicffzikfhbdrqvjobjzpmvcfc7kzbih2noclhf3vqywue"
                .parse()
                .unwrap();
        let body = serde_ipld_dagcbor::to_vec(&Ipld::Map(
            [
                ("cid".to_owned(), Ipld::Link(cid)),
                ("data".to_owned(), Ipld::Bytes(vec![1, 2, 3])),
                ("seq".to_owned(), Ipld::Integer(9)),
            ]
            .into(),
        ))
        .unwrap();
        let message = decode_unknown_frame("com.example.stream", "#migrated", &body).unwrap();
        assert_eq!(message.type_name(), Some("com.example.stream#migrated"));
        assert_eq!(message.0["cid"]["$link"], cid.to_string());
        assert_eq!(message.0["data"]["$bytes"], "AQID");
        assert_eq!(message.0["seq"], 9);
        assert_eq!(
            unknown_frame_type("com.example.stream", &message),
            "#migrated"
        );
        assert_eq!(
            unknown_frame_type("com.example.other", &message),
            "com.example.stream#migrated"
        );
        let written: Value =
            decode_frame_body(&encode_unknown_frame_body(&message).unwrap()).unwrap();
        assert!(
            written.get("$type").is_none(),
            "bodies carry no $type: {written}"
        );
    }
}
