//! Event-stream frames: one WebSocket binary message per event, a DAG-CBOR
//! header (`{"t": "#name", "op": 1}` or `{"op": -1}` for an error) followed
//! by the DAG-CBOR body.
//!
//! DAG-CBOR orders map keys by length first, so the header's `t` precedes
//! `op`. The header is written by hand: it is two small fields, and doing so
//! keeps [`encode_frame`] infallible.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::runtime::xrpc::XrpcError;

/// The header `op` of a message frame.
pub const OP_MESSAGE: i64 = 1;
/// The header `op` of an error frame.
pub const OP_ERROR: i64 = -1;

/// One member of an event stream's message union.
///
/// The generator implements this for each subscription's `Message` enum.
pub trait EventMessage: Sized + Send + 'static {
    /// The frame header's `t`: `#name` for members of the stream's own
    /// lexicon, `nsid#name` otherwise.
    fn frame_type(&self) -> String;
    /// The DAG-CBOR body: the variant's struct without `$type`.
    fn encode_body(&self) -> Result<Vec<u8>, XrpcError>;
    /// The message of type `frame_type` from its DAG-CBOR body.
    fn decode(frame_type: &str, body: &[u8]) -> Result<Self, XrpcError>;
}

/// A decoded frame header.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FrameHeader {
    /// [`OP_MESSAGE`] or [`OP_ERROR`].
    pub op: i64,
    /// The message type, for message frames.
    #[serde(default)]
    pub t: Option<String>,
}

/// The DAG-CBOR bytes of a frame body.
pub fn encode_frame_body<T: Serialize>(value: &T) -> Result<Vec<u8>, XrpcError> {
    serde_ipld_dagcbor::to_vec(value).map_err(|error| XrpcError::internal(&error))
}

/// A frame body from its DAG-CBOR bytes (no trailing data allowed).
pub fn decode_frame_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, XrpcError> {
    serde_ipld_dagcbor::from_slice(body).map_err(|error| {
        XrpcError::invalid_request(format!("invalid DAG-CBOR frame body: {error}"))
    })
}

/// A whole frame: the header `{t?, op}` then `body` (already DAG-CBOR).
pub fn encode_frame(header_op: i64, t: Option<&str>, body: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(16 + t.map_or(0, str::len) + body.len());
    let entries = if t.is_some() { 2 } else { 1 };
    push_head(&mut frame, MAJOR_MAP, entries);
    if let Some(t) = t {
        push_text(&mut frame, "t");
        push_text(&mut frame, t);
    }
    push_text(&mut frame, "op");
    match u64::try_from(header_op) {
        Ok(positive) => push_head(&mut frame, MAJOR_UNSIGNED, positive),
        // CBOR stores a negative n as -1 - n, which fits u64 for any i64.
        Err(_) => push_head(
            &mut frame,
            MAJOR_NEGATIVE,
            u64::try_from(!header_op).unwrap_or(0),
        ),
    }
    frame.extend_from_slice(body);
    frame
}

/// Splits a frame into its header and the body bytes that follow it.
pub fn split_frame(bytes: &[u8]) -> Result<(FrameHeader, &[u8]), XrpcError> {
    let mut cursor = std::io::Cursor::new(bytes);
    let header: FrameHeader = serde_ipld_dagcbor::de::from_reader_once(&mut cursor)
        .map_err(|error| XrpcError::invalid_request(format!("invalid frame header: {error}")))?;
    let consumed = usize::try_from(cursor.position()).unwrap_or(usize::MAX);
    let body = bytes
        .get(consumed..)
        .ok_or_else(|| XrpcError::invalid_request("invalid frame header: past the end"))?;
    Ok((header, body))
}

/// The body of an error frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ErrorFrame {
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A complete error frame `{op: -1}` + `{error, message}`.
#[cfg(feature = "server")]
pub(crate) fn error_frame(error: &str, message: &str) -> Vec<u8> {
    let body = ErrorFrame {
        error: error.to_owned(),
        message: Some(message.to_owned()),
    };
    // Two strings always encode; the fallback keeps this panic-free.
    let body = serde_ipld_dagcbor::to_vec(&body).unwrap_or_default();
    encode_frame(OP_ERROR, None, &body)
}

const MAJOR_UNSIGNED: u8 = 0;
const MAJOR_NEGATIVE: u8 = 1;
const MAJOR_TEXT: u8 = 3;
const MAJOR_MAP: u8 = 5;

/// A CBOR head in its shortest form, as DAG-CBOR requires.
fn push_head(out: &mut Vec<u8>, major: u8, value: u64) {
    let major = major << 5;
    if let Ok(small) = u8::try_from(value) {
        if small < 24 {
            out.push(major | small);
        } else {
            out.extend_from_slice(&[major | 24, small]);
        }
    } else if let Ok(short) = u16::try_from(value) {
        out.push(major | 25);
        out.extend_from_slice(&short.to_be_bytes());
    } else if let Ok(word) = u32::try_from(value) {
        out.push(major | 26);
        out.extend_from_slice(&word.to_be_bytes());
    } else {
        out.push(major | 27);
        out.extend_from_slice(&value.to_be_bytes());
    }
}

fn push_text(out: &mut Vec<u8>, text: &str) {
    push_head(
        out,
        MAJOR_TEXT,
        u64::try_from(text.len()).unwrap_or(u64::MAX),
    );
    out.extend_from_slice(text.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{Bytes, Cid, CidLink};

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Small {
        seq: i64,
        data: Bytes,
    }

    #[test]
    fn message_frame_bytes() {
        // header {"t": "#x", "op": 1}: the shorter key first.
        assert_eq!(
            hex(&encode_frame(OP_MESSAGE, Some("#x"), &[])),
            "a26174622378626f7001"
        );
        // body {"seq": 5, "data": b"\x01\x02"}: "seq" sorts before "data".
        let body = encode_frame_body(&Small {
            seq: 5,
            data: Bytes(vec![1, 2]),
        })
        .unwrap();
        assert_eq!(hex(&body), "a263736571056464617461420102");
        let frame = encode_frame(OP_MESSAGE, Some("#x"), &body);
        let (header, rest) = split_frame(&frame).unwrap();
        assert_eq!(header.op, 1);
        assert_eq!(header.t.as_deref(), Some("#x"));
        let decoded: Small = decode_frame_body(rest).unwrap();
        assert_eq!(decoded.data, Bytes(vec![1, 2]));
    }

    #[test]
    fn error_frame_bytes() {
        let frame = error_frame("FutureCursor", "too new");
        let (header, body) = split_frame(&frame).unwrap();
        assert_eq!(header, FrameHeader { op: -1, t: None });
        assert_eq!(hex(&frame[..5]), "a1626f7020");
        // {"error": "FutureCursor", "message": "too new"}
        assert_eq!(
            hex(body),
            "a2656572726f726c467574757265437572736f72676d65737361676567746f6f206e6577"
        );
    }

    #[test]
    fn header_ops_of_every_size() {
        for op in [0, 23, 24, 255, 256, 65_536, -1, -25, i64::MIN, i64::MAX] {
            let frame = encode_frame(op, None, b"");
            let (header, body) = split_frame(&frame).unwrap();
            assert_eq!(header.op, op);
            assert!(body.is_empty());
            let reference =
                serde_ipld_dagcbor::to_vec(&std::collections::BTreeMap::from([("op", op)]))
                    .unwrap();
            assert_eq!(frame, reference, "op {op}");
        }
    }

    #[test]
    fn bad_frames() {
        assert!(split_frame(b"").is_err());
        assert!(split_frame(&[0xa1, 0x62, b'o']).is_err());
        assert!(decode_frame_body::<Small>(&[0xa0, 0x00]).is_err());
    }

    #[test]
    fn bytes_are_a_cbor_byte_string() {
        // DAG-CBOR is not human-readable, so `Bytes` is major type 2, not
        // the JSON `{"$bytes": ...}` wrapper.
        let encoded = encode_frame_body(&Bytes(vec![0xff])).unwrap();
        assert_eq!(hex(&encoded), "41ff");
        assert_eq!(
            decode_frame_body::<Bytes>(&encoded).unwrap(),
            Bytes(vec![0xff])
        );
    }

    #[test]
    fn cid_links_are_tag_42() {
        let cid = "bafyreidfayvfkicffzikfhbdrqvjobjzpmvcfc7kzbih2noclhf3vqywue";
        let link = CidLink(Cid::new(cid).unwrap());
        let encoded = encode_frame_body(&link).unwrap();
        // tag 42 (d8 2a), byte string of 37 bytes (58 25), the identity
        // multibase prefix 00, then the binary CID (01 71 12 20 ...).
        assert_eq!(hex(&encoded[..9]), "d82a58250001711220");
        assert_eq!(decode_frame_body::<CidLink>(&encoded).unwrap(), link);
    }
}
