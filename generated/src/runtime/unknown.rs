//! The lexicon `unknown` type, also used for unrecognised members of open
//! unions.
//!
//! The lexicon spec requires an `unknown` value to be an object (it may carry
//! a `$type`), so anything else is rejected on input. The object is kept as
//! received, key order included, and written back unchanged: a service that
//! passes data through must not reshape what it does not understand.

use serde_json::{Map, Value};

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
        self.0.serialize(serializer)
    }
}

impl<'de> serde::Deserialize<'de> for Unknown {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Value::deserialize(deserializer)? {
            Value::Object(object) => Ok(Self(object)),
            other => Err(serde::de::Error::custom(format_args!(
                "expected a JSON object for a lexicon unknown value, got {}",
                kind(&other)
            ))),
        }
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
        let numeric: Unknown = serde_json::from_str(r#"{"$type":7}"#).unwrap();
        assert_eq!(numeric.type_name(), None);
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
        ] {
            let error = serde_json::from_str::<Unknown>(json)
                .unwrap_err()
                .to_string();
            assert!(error.contains("expected a JSON object"), "{json}: {error}");
            assert!(error.ends_with(kind), "{json}: {error}");
        }
    }
}
