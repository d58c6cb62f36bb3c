//! The AT Protocol data model, format-neutral.
//!
//! Untyped data (lexicon `unknown`, open-union members this lexicon version
//! does not list, an object's fields its schema does not declare) is held in
//! its JSON form: a [`serde_json::Value`] whose links are `{"$link": cid}` and
//! whose bytes are `{"$bytes": base64}`. That form is lossless, because the
//! data model reserves both wrapper objects, so the same value is read from
//! JSON or DAG-CBOR and written back to either byte-for-byte:
//!
//! - [`deserialize_value`] reads any self-describing format: DAG-CBOR links
//!   (tag 42) and byte strings become the wrapper objects, integer-like floats
//!   (`1.0`) become integers as in the reference implementation, and other
//!   floats are refused (the data model has none).
//! - [`Data`] writes a value back: unchanged to JSON, and to binary formats
//!   with links as CIDs and bytes as byte strings.
//! - [`check`] enforces the data model's rules on a value read from JSON:
//!   `$type` a non-empty string, well-formed `$link`, `$bytes` and blob objects.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};

use crate::runtime::Cid;
use crate::runtime::bytes::{BASE64, decode_base64};

/// The largest integer a float can hold exactly (2^53), the range in which
/// the reference implementation treats an integral float as an integer.
const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_991.0;

/// Why a value is not valid in the data model; `path` is a JSON pointer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{reason}", if path.is_empty() { String::new() } else { format!("{path}: ") })]
pub struct DataError {
    /// Where in the value (a JSON pointer, empty for the value itself).
    pub path: String,
    /// What is wrong there.
    pub reason: String,
}

/// Reads a data-model value from any self-describing format into its JSON
/// form (see the module docs).
pub fn deserialize_value<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Value, D::Error> {
    deserializer.deserialize_any(ValueVisitor)
}

/// An integral float as an integer, as the reference reads `1.0`.
pub(crate) fn integer_from_float(value: f64) -> Option<i64> {
    (value.is_finite() && value.fract() == 0.0 && value.abs() <= MAX_SAFE_INTEGER)
        .then_some(value as i64)
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a data-model value")
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<Value, E> {
        Ok(Value::Bool(value))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Value, E> {
        Ok(Value::from(value))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Value, E> {
        Ok(Value::from(value))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Value, E> {
        integer_from_float(value).map(Value::from).ok_or_else(|| {
            E::custom(format_args!(
                "the data model has no floats, got {value} (only integers are allowed)"
            ))
        })
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Value, E> {
        Ok(Value::String(value.to_owned()))
    }

    fn visit_string<E: de::Error>(self, value: String) -> Result<Value, E> {
        Ok(Value::String(value))
    }

    fn visit_bytes<E: de::Error>(self, value: &[u8]) -> Result<Value, E> {
        Ok(wrapper("$bytes", base64::Engine::encode(&BASE64, value)))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserialize_value(deserializer)
    }

    /// A DAG-CBOR link (tag 42): its content is the binary CID.
    fn visit_newtype_struct<D: Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Value, D::Error> {
        let link = deserializer.deserialize_bytes(CidBytes)?;
        Ok(wrapper("$link", link))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(item) = seq.next_element_seed(ValueSeed)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value_seed(ValueSeed)?;
            if object.insert(key.clone(), value).is_some() {
                return Err(de::Error::custom(format_args!("duplicate key {key:?}")));
            }
        }
        Ok(Value::Object(object))
    }
}

/// `Deserialize` for one nested value.
pub(crate) struct ValueSeed;

impl<'de> DeserializeSeed<'de> for ValueSeed {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserialize_value(deserializer)
    }
}

/// A binary CID (the content of a DAG-CBOR tag 42, multibase prefix already
/// removed) as its string form.
pub(crate) struct CidBytes;

impl<'de> Visitor<'de> for CidBytes {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a binary CID")
    }

    fn visit_bytes<E: de::Error>(self, value: &[u8]) -> Result<String, E> {
        ipld_core::cid::Cid::try_from(value)
            .map(|cid| cid.to_string())
            .map_err(|error| E::custom(format_args!("invalid binary CID: {error}")))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<String, A::Error> {
        let mut bytes = Vec::new();
        while let Some(byte) = seq.next_element::<u8>()? {
            bytes.push(byte);
        }
        self.visit_bytes(&bytes)
    }
}

fn wrapper(key: &str, value: String) -> Value {
    let mut object = Map::new();
    object.insert(key.to_owned(), Value::String(value));
    Value::Object(object)
}

/// Writes a value in its JSON form (see the module docs) to any format.
#[derive(Debug, Clone, Copy)]
pub struct Data<'a>(pub &'a Value);

impl Serialize for Data<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            return self.0.serialize(serializer);
        }
        match self.0 {
            Value::Number(number) => serialize_number(number, serializer),
            Value::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(&Data(item))?;
                }
                seq.end()
            }
            Value::Object(object) => {
                if let Some(link) = single(object, "$link") {
                    let cid = ipld_core::cid::Cid::try_from(link).map_err(|error| {
                        serde::ser::Error::custom(format_args!("invalid $link {link:?}: {error}"))
                    })?;
                    return cid.serialize(serializer);
                }
                if let Some(encoded) = single(object, "$bytes") {
                    let bytes = decode_base64(encoded).map_err(serde::ser::Error::custom)?;
                    return serializer.serialize_bytes(&bytes);
                }
                let mut map = serializer.serialize_map(Some(object.len()))?;
                for (key, value) in object {
                    map.serialize_entry(key, &Data(value))?;
                }
                map.end()
            }
            other => other.serialize(serializer),
        }
    }
}

fn serialize_number<S: Serializer>(number: &Number, serializer: S) -> Result<S::Ok, S::Error> {
    if let Some(value) = number.as_i64() {
        serializer.serialize_i64(value)
    } else if let Some(value) = number.as_u64() {
        serializer.serialize_u64(value)
    } else {
        let value = number.as_f64().unwrap_or(f64::NAN);
        match integer_from_float(value) {
            Some(value) => serializer.serialize_i64(value),
            None => Err(serde::ser::Error::custom(format_args!(
                "the data model has no floats, got {value}"
            ))),
        }
    }
}

/// The string of a one-key object `{key: "<string>"}`.
fn single<'a>(object: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    match (object.len(), object.get(key)) {
        (1, Some(Value::String(value))) => Some(value),
        _ => None,
    }
}

/// The CID of a DAG-CBOR encoding (CIDv1, codec dag-cbor, sha2-256), as
/// repositories address records: `cid_of_dag_cbor(&serde_ipld_dagcbor::to_vec(&record)?)`.
pub fn cid_of_dag_cbor(bytes: &[u8]) -> Cid {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(bytes);
    let hash = ipld_core::cid::multihash::Multihash::<64>::wrap(0x12, &digest)
        .expect("a sha2-256 digest fits a 64-byte multihash");
    let cid = ipld_core::cid::Cid::new_v1(0x71, hash).to_string();
    Cid::new(cid).expect("a CIDv1 string is a valid cid")
}

/// Checks the data model's rules on a value in JSON form.
pub fn check(value: &Value) -> Result<(), DataError> {
    check_at(value, &mut String::new())
}

fn check_at(value: &Value, path: &mut String) -> Result<(), DataError> {
    let fail = |path: &str, reason: String| {
        Err(DataError {
            path: path.to_owned(),
            reason,
        })
    };
    match value {
        Value::Number(number) if number.is_f64() => {
            fail(path, format!("the data model has no floats, got {number}"))
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("/{i}"));
                check_at(item, path)?;
                path.truncate(len);
            }
            Ok(())
        }
        Value::Object(object) => check_map_at(object, path),
        _ => Ok(()),
    }
}

/// [`check`] for an object.
pub fn check_map(object: &Map<String, Value>) -> Result<(), DataError> {
    check_map_at(object, &mut String::new())
}

fn check_map_at(object: &Map<String, Value>, path: &mut String) -> Result<(), DataError> {
    check_object(object).map_err(|reason| DataError {
        path: path.clone(),
        reason,
    })?;
    for (key, item) in object {
        let len = path.len();
        path.push('/');
        path.push_str(&key.replace('~', "~0").replace('/', "~1"));
        check_at(item, path)?;
        path.truncate(len);
    }
    Ok(())
}

/// The rules on one object: `$type`, and the `$link`, `$bytes` and blob shapes.
fn check_object(object: &Map<String, Value>) -> Result<(), String> {
    match object.get("$type") {
        None => {}
        Some(Value::String(type_name)) if !type_name.is_empty() => {}
        Some(Value::String(_)) => return Err("$type must not be empty".to_owned()),
        Some(other) => return Err(format!("$type must be a string, got {other}")),
    }
    if let Some(link) = object.get("$link") {
        let Some(link) = single(object, "$link") else {
            return Err(format!(
                "a $link object has exactly one key with a CID string, got {link} with {} keys",
                object.len()
            ));
        };
        Cid::new(link).map_err(|error| error.to_string())?;
        ipld_core::cid::Cid::try_from(link)
            .map_err(|error| format!("invalid $link {link:?}: {error}"))?;
    }
    if let Some(bytes) = object.get("$bytes") {
        let Some(encoded) = single(object, "$bytes") else {
            return Err(format!(
                "a $bytes object has exactly one key with a base64 string, got {bytes} with {} keys",
                object.len()
            ));
        };
        decode_base64(encoded)?;
    }
    if object.get("$type").and_then(Value::as_str) == Some("blob") {
        crate::runtime::Blob::deserialize(Value::Object(object.clone()))
            .map_err(|error| format!("invalid blob: {error}"))?;
    }
    Ok(())
}

/// Whether an object is one of the data model's special objects (a link,
/// bytes or a blob) rather than a plain map.
pub(crate) fn special_kind(object: &Map<String, Value>) -> Option<&'static str> {
    if object.contains_key("$link") {
        Some("a $link")
    } else if object.contains_key("$bytes") {
        Some("$bytes")
    } else if object.get("$type").and_then(Value::as_str) == Some("blob") {
        Some("a blob")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CID: &str = "bafyreiclp443lavogvhj3d2ob2cxbfuscni2k5jk7bebjzg7khl3esabwq";

    fn read(json: &str) -> Result<Value, String> {
        let value = deserialize_value(&mut serde_json::Deserializer::from_str(json))
            .map_err(|e| e.to_string())?;
        check(&value).map_err(|e| e.to_string())?;
        Ok(value)
    }

    #[test]
    fn integral_floats_are_integers_and_others_are_refused() {
        assert_eq!(read(r#"{"a":123.0}"#).unwrap()["a"], Value::from(123));
        let error = read(r#"{"a":123.5}"#).unwrap_err();
        assert!(error.contains("no floats"), "{error}");
    }

    #[test]
    fn special_objects_are_checked() {
        assert!(read(&format!(r#"{{"l":{{"$link":"{CID}"}}}}"#)).is_ok());
        assert!(read(r#"{"b":{"$bytes":"123"}}"#).is_ok());
        for (json, expected) in [
            (r#"{"t":{"$type":""}}"#, "/t: $type must not be empty"),
            (r#"{"t":{"$type":1}}"#, "/t: $type must be a string"),
            (r#"{"t":{"$type":null}}"#, "/t: $type must be a string"),
            (r#"{"l":{"$link":"."}}"#, "/l: "),
            (r#"{"l":{"$link":1}}"#, "/l: a $link object"),
            (r#"{"b":{"$bytes":[1]}}"#, "/b: a $bytes object"),
            (r#"{"b":{"$bytes":"AA","x":1}}"#, "/b: a $bytes object"),
            (r#"{"b":{"$type":"blob","size":1}}"#, "/b: invalid blob"),
        ] {
            let error = read(json).unwrap_err();
            assert!(error.starts_with(expected), "{json}: {error}");
        }
    }

    #[test]
    fn dag_cbor_links_and_bytes_round_trip() {
        let json = format!(r#"{{"b":{{"$bytes":"AQID"}},"l":{{"$link":"{CID}"}},"n":[1,-2]}}"#);
        let value = read(&json).unwrap();
        let cbor = serde_ipld_dagcbor::to_vec(&Data(&value)).unwrap();
        let ipld: ipld_core::ipld::Ipld = serde_ipld_dagcbor::from_slice(&cbor).unwrap();
        let ipld_core::ipld::Ipld::Map(map) = ipld else {
            panic!("not a map")
        };
        assert_eq!(map["b"], ipld_core::ipld::Ipld::Bytes(vec![1, 2, 3]));
        assert!(matches!(map["l"], ipld_core::ipld::Ipld::Link(_)));
        let back = deserialize_value(&mut serde_ipld_dagcbor::de::Deserializer::from_slice(&cbor))
            .unwrap();
        assert_eq!(back, value);
    }
}
