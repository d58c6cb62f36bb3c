//! Messages of an open stream union that this lexicon version does not
//! list. Frame bodies carry no `$type` (the header's `t` names the kind), so
//! the kind is put back as `$type` on the raw object when a frame is read and
//! taken out again when one is written. Bodies are read and written through
//! the data model ([`crate::runtime::data`]), so links and bytes survive as
//! `{"$link"}` / `{"$bytes"}` and a passed-through frame keeps its bytes.

use serde_json::Value;

use crate::runtime::Unknown;
use crate::runtime::xrpc::{XrpcError, decode_frame_body, encode_frame_body};

/// Reads a frame body of kind `frame_type` (`#name` or a full `nsid#name`)
/// on the stream `stream_nsid`, keeping its kind as `$type`.
pub fn decode_unknown_frame(
    stream_nsid: &str,
    frame_type: &str,
    body: &[u8],
) -> Result<Unknown, XrpcError> {
    let Unknown(mut object) = decode_frame_body::<Unknown>(body).map_err(|error| {
        XrpcError::invalid_request(format!("frame body of {frame_type:?}: {error}"))
    })?;
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
    let mut body = message.clone();
    body.0.shift_remove("$type");
    encode_frame_body(&body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipld_core::ipld::Ipld;

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
        let written: Unknown =
            decode_frame_body(&encode_unknown_frame_body(&message).unwrap()).unwrap();
        assert!(
            written.0.get("$type").is_none(),
            "bodies carry no $type: {written:?}"
        );
    }

    #[test]
    fn an_unknown_frame_passes_through_byte_identical() {
        let cid: ipld_core::cid::Cid =
            "bafyreidfayvfkicffzikfhbdrqvjobjzpmvcfc7kzbih2noclhf3vqywue"
                .parse()
                .unwrap();
        let nested = Ipld::Map(
            [
                ("blocks".to_owned(), Ipld::Bytes(vec![0, 255, 7])),
                ("prev".to_owned(), Ipld::Null),
                ("ops".to_owned(), Ipld::List(vec![Ipld::Link(cid)])),
            ]
            .into(),
        );
        let body = serde_ipld_dagcbor::to_vec(&Ipld::Map(
            [
                ("commit".to_owned(), Ipld::Link(cid)),
                ("seq".to_owned(), Ipld::Integer(-4)),
                ("car".to_owned(), nested),
                ("tooBig".to_owned(), Ipld::Bool(false)),
            ]
            .into(),
        ))
        .unwrap();
        let message = decode_unknown_frame("com.example.stream", "#future", &body).unwrap();
        assert_eq!(encode_unknown_frame_body(&message).unwrap(), body);
        let frame = crate::runtime::xrpc::encode_frame(
            1,
            Some(&unknown_frame_type("com.example.stream", &message)),
            &body,
        );
        assert!(frame.ends_with(&body));
    }
}
