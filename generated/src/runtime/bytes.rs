//! The lexicon `bytes` type.
//!
//! In JSON, bytes are an object `{"$bytes": "<base64>"}` using the standard
//! alphabet. We write it without padding, as the data-model spec prescribes,
//! and read it with or without padding because clients differ. Binary formats
//! (`is_human_readable() == false`, e.g. DAG-CBOR for event streams) carry
//! bytes natively, so there the value is a plain byte string.

use std::fmt;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde::de::{self, Deserializer, Visitor};
use serde::ser::{SerializeMap, Serializer};

use crate::runtime::single_key;

/// The JSON key of the bytes wrapper object.
const KEY: &str = "$bytes";

/// Standard alphabet; unpadded on output, padding optional on input, and
/// non-zero trailing bits in the last symbol accepted (`"123"`), as the
/// reference implementation decodes them.
pub(crate) const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Decodes the base64 of a `$bytes` object (see [`BASE64`]).
pub(crate) fn decode_base64(encoded: &str) -> Result<Vec<u8>, String> {
    BASE64
        .decode(encoded)
        .map_err(|error| format!("invalid base64 in \"{KEY}\": {error}"))
}

/// Raw bytes (lexicon `bytes`). JSON form: `{"$bytes": "<base64>"}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Bytes(pub Vec<u8>);

impl From<Vec<u8>> for Bytes {
    fn from(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }
}

impl From<Bytes> for Vec<u8> {
    fn from(bytes: Bytes) -> Self {
        bytes.0
    }
}

impl AsRef<[u8]> for Bytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl serde::Serialize for Bytes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if !serializer.is_human_readable() {
            return serializer.serialize_bytes(&self.0);
        }
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry(KEY, &BASE64.encode(&self.0))?;
        map.end()
    }
}

impl<'de> serde::Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // By shape rather than by `is_human_readable`: serde's buffering
        // (flattened fields, untagged content) reports every format as
        // human-readable, so a DAG-CBOR byte string can arrive either way.
        deserializer.deserialize_any(ByteBuf).map(Self)
    }
}

/// Reads a native byte string (binary formats) or a `{"$bytes"}` object.
struct ByteBuf;

impl<'de> Visitor<'de> for ByteBuf {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a byte string or an object {{\"{KEY}\": base64}}")
    }

    fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Vec<u8>, A::Error> {
        let encoded = single_key::visit(map, KEY)?;
        decode_base64(&encoded).map_err(de::Error::custom)
    }

    fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<Vec<u8>, E> {
        Ok(bytes.to_vec())
    }

    fn visit_byte_buf<E: de::Error>(self, bytes: Vec<u8>) -> Result<Vec<u8>, E> {
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(json: &str) -> Result<Bytes, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn writes_unpadded_standard_base64() {
        let bytes = Bytes(vec![0xfb, 0xff, 0x01]); // "+/8B" needs the standard alphabet
        assert_eq!(
            serde_json::to_string(&bytes).unwrap(),
            r#"{"$bytes":"+/8B"}"#
        );
        let two = Bytes(b"hi".to_vec());
        assert_eq!(serde_json::to_string(&two).unwrap(), r#"{"$bytes":"aGk"}"#);
        assert_eq!(
            serde_json::to_string(&Bytes::default()).unwrap(),
            r#"{"$bytes":""}"#
        );
    }

    #[test]
    fn reads_with_and_without_padding() {
        assert_eq!(read(r#"{"$bytes":"aGk"}"#).unwrap(), Bytes(b"hi".to_vec()));
        assert_eq!(read(r#"{"$bytes":"aGk="}"#).unwrap(), Bytes(b"hi".to_vec()));
        assert_eq!(
            read(r#"{"$bytes":"+/8B"}"#).unwrap().0,
            vec![0xfb, 0xff, 0x01]
        );
        assert_eq!(read(r#"{"$bytes":""}"#).unwrap(), Bytes::default());
        // Non-zero trailing bits in the last symbol, as the interop "valid
        // record" vector has it: decoded like the reference does.
        assert_eq!(read(r#"{"$bytes":"123"}"#).unwrap().0, vec![0xd7, 0x6d]);
    }

    #[test]
    fn round_trips() {
        let bytes = Bytes((0..=255).collect());
        let json = serde_json::to_string(&bytes).unwrap();
        assert_eq!(read(&json).unwrap(), bytes);
    }

    #[test]
    fn rejects_garbage() {
        for json in [
            r#"{"$bytes":"not base64!"}"#,
            r#"{"$bytes":"-_8B"}"#, // URL-safe alphabet
            r#"{"$bytes":"aGk=="}"#,
            r#"{"$bytes":"a"}"#,
        ] {
            let error = read(json).unwrap_err().to_string();
            assert!(error.contains("invalid base64"), "{json}: {error}");
        }
    }

    #[test]
    fn rejects_malformed_wrappers() {
        let cases = [
            (r#"{"$bytes":"aGk","extra":1}"#, "unexpected key \"extra\""),
            (r#"{"$bytes":5}"#, "expected a string in \"$bytes\""),
            (r#"{"$bytes":null}"#, "expected a string in \"$bytes\""),
            (r#"{}"#, "missing field `$bytes`"),
            (
                r#"{"$bytes":"aGk","$bytes":"aGk"}"#,
                "duplicate field `$bytes`",
            ),
            (
                r#""aGk""#,
                "expected a byte string or an object {\"$bytes\": base64}",
            ),
            (r#"[1,2]"#, "expected a byte string or an object"),
        ];
        for (json, expected) in cases {
            let error = read(json).unwrap_err().to_string();
            assert!(error.contains(expected), "{json}: {error}");
        }
    }

    #[test]
    fn conversions() {
        let bytes = Bytes::from(vec![1, 2]);
        assert_eq!(bytes.as_ref(), &[1, 2]);
        assert_eq!(Vec::from(bytes), vec![1, 2]);
    }
}
