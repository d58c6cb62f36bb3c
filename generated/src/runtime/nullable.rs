//! Nullable fields and the lexicon `null` type.
//!
//! Lexicon distinguishes a field that is absent from one that is `null`:
//!
//! | field is | Rust type | serde attributes on the field |
//! |---|---|---|
//! | optional | `Option<T>` | `default, skip_serializing_if = "Option::is_none"` |
//! | required + nullable | `Option<T>` | `deserialize_with = "crate::runtime::required_nullable"` |
//! | optional + nullable | [`TriState<T>`] | `default, skip_serializing_if = "crate::runtime::TriState::is_absent"` |
//!
//! A required nullable field must be present but may be `null`; serde's
//! `Option` alone would let it be missing, hence [`required_nullable`].

use serde::de::{self, Deserialize, Deserializer, Visitor};
use serde::ser::{Serialize, Serializer};

/// An optional and nullable field: absent, `null`, or a value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum TriState<T> {
    /// The field is not in the object.
    #[default]
    Absent,
    /// The field is `null`.
    Null,
    /// The field has a value.
    Value(T),
}

impl<T> TriState<T> {
    /// Whether the field is absent (it is then skipped on output).
    pub fn is_absent(&self) -> bool {
        matches!(self, Self::Absent)
    }

    /// Whether the field is an explicit `null`.
    pub fn is_null(&self) -> bool {
        matches!(self, Self::Null)
    }

    /// The value, if there is one (absent and `null` both give `None`).
    pub fn as_option(&self) -> Option<&T> {
        match self {
            Self::Value(value) => Some(value),
            Self::Absent | Self::Null => None,
        }
    }

    /// The value by value, if there is one.
    pub fn into_option(self) -> Option<T> {
        match self {
            Self::Value(value) => Some(value),
            Self::Absent | Self::Null => None,
        }
    }
}

impl<T> From<Option<T>> for TriState<T> {
    /// `Some` becomes a value and `None` becomes an explicit `null`, the way
    /// serde maps `Option` to JSON. Use [`TriState::Absent`] to omit the field.
    fn from(option: Option<T>) -> Self {
        option.map_or(Self::Null, Self::Value)
    }
}

impl<T: Serialize> Serialize for TriState<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Value(value) => value.serialize(serializer),
            // Absent is normally skipped by `skip_serializing_if`; if it is not,
            // null is the closest thing to nothing.
            Self::Null | Self::Absent => serializer.serialize_none(),
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for TriState<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Only called when the field is present; absence comes from `default`.
        Option::<T>::deserialize(deserializer).map(Self::from)
    }
}

/// Deserializes a required, nullable field: `null` is `None`, a missing field
/// is an error. Use with `#[serde(deserialize_with = ...)]` and without
/// `default`: serde then reports a missing field instead of filling in `None`.
pub fn required_nullable<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer)
}

/// Deserializes an optional field that is not nullable: absent is `None`
/// (with `#[serde(default)]`), a value is `Some`, and `null` is an error, as
/// the lexicon spec says: `null` is only valid where `nullable` allows it.
pub fn optional_not_null<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

/// The lexicon `null` type: only ever `null`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Null;

impl Serialize for Null {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_unit()
    }
}

impl<'de> Deserialize<'de> for Null {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NullVisitor)
    }
}

/// Accepts `null` (unit or none) and nothing else. Every other `visit_*`
/// keeps serde's default, an "invalid type ..., expected null" error.
struct NullVisitor;

impl<'de> Visitor<'de> for NullVisitor {
    type Value = Null;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("null")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Null, E> {
        Ok(Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Null, E> {
        Ok(Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, serde::Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Profile {
        #[serde(default, skip_serializing_if = "TriState::is_absent")]
        display_name: TriState<String>,
        #[serde(deserialize_with = "required_nullable")]
        avatar: Option<String>,
    }

    fn round_trip(json: &str) -> Profile {
        let profile: Profile = serde_json::from_str(json).unwrap();
        assert_eq!(serde_json::to_string(&profile).unwrap(), json);
        profile
    }

    #[test]
    fn tri_state_round_trips_absent_null_and_value() {
        let absent = round_trip(r#"{"avatar":null}"#);
        assert_eq!(absent.display_name, TriState::Absent);
        let null = round_trip(r#"{"displayName":null,"avatar":null}"#);
        assert_eq!(null.display_name, TriState::Null);
        let value = round_trip(r#"{"displayName":"Alice","avatar":"a.png"}"#);
        assert_eq!(value.display_name, TriState::Value("Alice".to_owned()));
        assert_eq!(value.avatar.as_deref(), Some("a.png"));
    }

    #[test]
    fn tri_state_helpers() {
        let value = TriState::Value(3);
        assert_eq!(value.as_option(), Some(&3));
        assert!(!value.is_absent() && !value.is_null());
        assert!(TriState::<i32>::Null.is_null());
        assert_eq!(TriState::<i32>::Null.as_option(), None);
        assert_eq!(TriState::<i32>::default(), TriState::Absent);
        assert_eq!(TriState::from(Some(1)), TriState::Value(1));
        assert_eq!(TriState::<i32>::from(None), TriState::Null);
        assert_eq!(TriState::Value(1).into_option(), Some(1));
        // Not skipped, Absent still writes something valid.
        assert_eq!(
            serde_json::to_string(&TriState::<i32>::Absent).unwrap(),
            "null"
        );
    }

    #[test]
    fn required_nullable_needs_the_field() {
        let error = serde_json::from_str::<Profile>(r#"{"displayName":"Alice"}"#).unwrap_err();
        assert!(
            error.to_string().contains("missing field `avatar`"),
            "{error}"
        );
        let null = round_trip(r#"{"avatar":null}"#);
        assert_eq!(null.avatar, None);
    }

    #[test]
    fn null_type_is_only_null() {
        assert_eq!(serde_json::to_string(&Null).unwrap(), "null");
        assert_eq!(serde_json::from_str::<Null>("null").unwrap(), Null);
        for json in ["0", "false", r#""null""#, "{}", "[]"] {
            let error = serde_json::from_str::<Null>(json).unwrap_err().to_string();
            assert!(error.contains("expected null"), "{json}: {error}");
        }
    }
}
