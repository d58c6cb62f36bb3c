//! Lexicon `integer` fields, read like the reference implementation reads
//! them: an integral float (`1.0`, `"width": 1000.0`) is the integer it
//! equals; any other float is refused.
//!
//! The generator puts one of these on every integer field (and every array of
//! integers), matching the field's presence:
//!
//! | field is | attribute |
//! |---|---|
//! | required or defaulted | `deserialize_with = "crate::runtime::integer::required"` |
//! | optional | `deserialize_with = "crate::runtime::integer::optional"` |
//! | required + nullable | `deserialize_with = "crate::runtime::integer::nullable"` |
//! | optional + nullable | `deserialize_with = "crate::runtime::integer::tri_state"` |

use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};

use crate::runtime::TriState;
use crate::runtime::data::integer_from_float;

/// A value built from lexicon integers: `i64`, or arrays of them.
pub trait IntegerLike: Sized {
    /// Reads the value, accepting integral floats where integers go.
    fn deserialize_lenient<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error>;
}

impl IntegerLike for i64 {
    fn deserialize_lenient<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(IntegerVisitor)
    }
}

impl<T: IntegerLike> IntegerLike for Vec<T> {
    fn deserialize_lenient<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_seq(ListVisitor(PhantomData))
    }
}

/// `Deserialize` through [`IntegerLike`].
struct Lenient<T>(T);

impl<'de, T: IntegerLike> Deserialize<'de> for Lenient<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        T::deserialize_lenient(deserializer).map(Self)
    }
}

/// A required (or defaulted) integer field.
pub fn required<'de, D: Deserializer<'de>, T: IntegerLike>(deserializer: D) -> Result<T, D::Error> {
    T::deserialize_lenient(deserializer)
}

/// An optional, not nullable integer field (see
/// [`crate::runtime::optional_not_null`]).
pub fn optional<'de, D: Deserializer<'de>, T: IntegerLike>(
    deserializer: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize_lenient(deserializer).map(Some)
}

/// A required, nullable integer field (see
/// [`crate::runtime::required_nullable`]).
pub fn nullable<'de, D: Deserializer<'de>, T: IntegerLike>(
    deserializer: D,
) -> Result<Option<T>, D::Error> {
    Option::<Lenient<T>>::deserialize(deserializer).map(|value| value.map(|v| v.0))
}

/// An optional, nullable integer field (see [`TriState`]).
pub fn tri_state<'de, D: Deserializer<'de>, T: IntegerLike>(
    deserializer: D,
) -> Result<TriState<T>, D::Error> {
    nullable(deserializer).map(TriState::from)
}

struct IntegerVisitor;

impl Visitor<'_> for IntegerVisitor {
    type Value = i64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an integer")
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<i64, E> {
        Ok(value)
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<i64, E> {
        i64::try_from(value)
            .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(value), &"an i64 integer"))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<i64, E> {
        integer_from_float(value)
            .ok_or_else(|| E::invalid_type(de::Unexpected::Float(value), &self))
    }
}

struct ListVisitor<T>(PhantomData<T>);

impl<'de, T: IntegerLike> Visitor<'de> for ListVisitor<T> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of integers")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(Lenient(item)) = seq.next_element::<Lenient<T>>()? {
            items.push(item);
        }
        Ok(items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Deserialize)]
    struct Dims {
        #[serde(deserialize_with = "required")]
        width: i64,
        #[serde(default, deserialize_with = "optional")]
        height: Option<i64>,
        #[serde(deserialize_with = "nullable")]
        depth: Option<i64>,
        #[serde(default, deserialize_with = "tri_state")]
        weight: TriState<i64>,
        #[serde(default, deserialize_with = "required")]
        list: Vec<Vec<i64>>,
    }

    fn read(json: &str) -> Result<Dims, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn integral_floats_are_integers() {
        let dims =
            read(r#"{"width":1000.0,"height":2.0,"depth":null,"weight":-3.0,"list":[[1.0,2]]}"#)
                .unwrap();
        assert_eq!(
            dims,
            Dims {
                width: 1000,
                height: Some(2),
                depth: None,
                weight: TriState::Value(-3),
                list: vec![vec![1, 2]],
            }
        );
        let dims = read(r#"{"width":1,"depth":4}"#).unwrap();
        assert_eq!((dims.height, dims.depth), (None, Some(4)));
        assert_eq!(dims.weight, TriState::Absent);
    }

    #[test]
    fn other_values_are_refused() {
        for (json, expected) in [
            (r#"{"width":1.5,"depth":1}"#, "floating point `1.5`"),
            (r#"{"width":"1","depth":1}"#, "expected an integer"),
            (
                r#"{"width":1,"height":null,"depth":1}"#,
                "expected an integer",
            ),
            (r#"{"width":1}"#, "missing field `depth`"),
            (
                r#"{"width":1,"depth":1,"list":[[0.5]]}"#,
                "floating point `0.5`",
            ),
            (r#"{"width":1e300,"depth":1}"#, "floating point"),
            (
                r#"{"width":18446744073709551615,"depth":1}"#,
                "an i64 integer",
            ),
        ] {
            let error = read(json).unwrap_err();
            assert!(error.contains(expected), "{json}: {error}");
        }
    }
}
