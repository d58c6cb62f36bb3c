//! The lexicon `unknown` type, also used for unrecognised members of open
//! unions.
//!
//! The lexicon spec requires an `unknown` value to be an object (it may carry
//! a `$type`) that is not one of the data model's special objects (`$link`,
//! `$bytes`, a blob), and its content must be valid data-model data
//! ([`crate::runtime::data::check`]); anything else is rejected on input. The
//! object is kept as received, key order included, and written back
//! unchanged, to JSON or DAG-CBOR: a service that passes data through must
//! not reshape what it does not understand.
//!
//! [`Extra`] holds the fields an object's schema does not declare, under the
//! same rules, so open objects keep them through a round trip.

use serde_json::{Map, Value};

use crate::runtime::data::{self, Data};

/// An arbitrary JSON object (lexicon `unknown`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Unknown(pub Map<String, Value>);

impl Unknown {
    /// The object's `$type`, if it has a string one.
    pub fn type_name(&self) -> Option<&str> {
        self.0.get("$type").and_then(Value::as_str)
    }
}

impl From<Map<String, Value>> for Unknown {
    fn from(object: Map<String, Value>) -> Self {
        Self(object)
    }
}

impl serde::Serialize for Unknown {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serialize_object(&self.0, serializer)
    }
}

impl<'de> serde::Deserialize<'de> for Unknown {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let object = data_object(deserializer, "a lexicon unknown value")?;
        match data::special_kind(&object) {
            Some(kind) => Err(serde::de::Error::custom(format_args!(
                "expected a JSON object for a lexicon unknown value, got {kind} object"
            ))),
            None => Ok(Self(object)),
        }
    }
}

/// Reads an object of data-model data from any format (see [`data`]).
pub(crate) fn data_object<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
    what: &str,
) -> Result<Map<String, Value>, D::Error> {
    match data::deserialize_value(deserializer)? {
        Value::Object(object) => {
            data::check_map(&object).map_err(serde::de::Error::custom)?;
            Ok(object)
        }
        other => Err(serde::de::Error::custom(format_args!(
            "expected a JSON object for {what}, got {}",
            kind(&other)
        ))),
    }
}

/// Writes an object of data-model data to any format (see [`data`]).
pub(crate) fn serialize_object<S: serde::Serializer>(
    object: &Map<String, Value>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = serializer.serialize_map(Some(object.len()))?;
    for (key, value) in object {
        map.serialize_entry(key, &Data(value))?;
    }
    map.end()
}

/// The fields of an object that its schema does not declare, kept as
/// received (in data-model JSON form) and written back after the declared
/// ones. Generated structs hold it as `#[serde(flatten)] pub extra: Extra`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Extra(pub Map<String, Value>);

impl Extra {
    /// Whether there are no undeclared fields.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The value of an undeclared field.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key)
    }
}

impl serde::Serialize for Extra {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serialize_object(&self.0, serializer)
    }
}

impl<'de> serde::Deserialize<'de> for Extra {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        data_object(deserializer, "an object's fields").map(Self)
    }
}

/// The JSON kind of a value, for error messages.
pub(crate) fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_object_exactly() {
        let json = r#"{"zeta":1,"$type":"com.example.thing","alpha":{"b":[1,2],"a":null}}"#;
        let unknown: Unknown = serde_json::from_str(json).unwrap();
        assert_eq!(unknown.type_name(), Some("com.example.thing"));
        assert_eq!(serde_json::to_string(&unknown).unwrap(), json);
    }

    #[test]
    fn type_name_is_optional() {
        let unknown: Unknown = serde_json::from_str(r#"{"a":1}"#).unwrap();
        assert_eq!(unknown.type_name(), None);
        for json in [r#"{"$type":7}"#, r#"{"$type":""}"#, r#"{"$type":null}"#] {
            let error = serde_json::from_str::<Unknown>(json).unwrap_err();
            assert!(error.to_string().contains("$type must"), "{json}: {error}");
        }
        assert_eq!(serde_json::to_string(&Unknown::default()).unwrap(), "{}");
    }

    #[test]
    fn rejects_non_objects() {
        for (json, kind) in [
            ("null", "null"),
            ("true", "a boolean"),
            ("1", "a number"),
            (r#""x""#, "a string"),
            ("[]", "an array"),
            (r#"{"$bytes":"123"}"#, "$bytes object"),
            (
                r#"{"$link":"bafyreiclp443lavogvhj3d2ob2cxbfuscni2k5jk7bebjzg7khl3esabwq"}"#,
                "a $link object",
            ),
        ] {
            let error = serde_json::from_str::<Unknown>(json)
                .unwrap_err()
                .to_string();
            assert!(error.contains("expected a JSON object"), "{json}: {error}");
            assert!(error.contains(kind), "{json}: {error}");
        }
    }
}
