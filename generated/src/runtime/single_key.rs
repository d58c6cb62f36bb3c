//! Reading the data model's one-key wrapper objects, `{"$bytes": ..}` and
//! `{"$link": ..}`.
//!
//! Both are exactly one key with a string value. Anything else (a missing key,
//! an extra key, a number) is rejected with a message that names the wrapper,
//! because a silently ignored extra key would hide a malformed client.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};

/// Reads the rest of a one-key wrapper object whose map has been opened.
pub(crate) fn visit<'de, A: MapAccess<'de>>(map: A, key: &'static str) -> Result<String, A::Error> {
    SingleKey { key }.visit_map(map)
}

struct SingleKey {
    key: &'static str,
}

impl<'de> Visitor<'de> for SingleKey {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an object {{\"{}\": string}}", self.key)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<String, A::Error> {
        let mut found: Option<String> = None;
        while let Some(name) = map.next_key::<String>()? {
            if name != self.key {
                return Err(de::Error::custom(format_args!(
                    "unexpected key {} in a \"{}\" object",
                    crate::runtime::text::Quoted(&name),
                    self.key
                )));
            }
            if found.is_some() {
                return Err(de::Error::duplicate_field(self.key));
            }
            found = Some(map.next_value_seed(StringValue { key: self.key })?);
        }
        found.ok_or_else(|| de::Error::missing_field(self.key))
    }
}

/// The value under the key: a string, with an error naming the key otherwise.
struct StringValue {
    key: &'static str,
}

impl<'de> de::DeserializeSeed<'de> for StringValue {
    type Value = String;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<String, D::Error> {
        deserializer.deserialize_string(self)
    }
}

impl Visitor<'_> for StringValue {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a string in \"{}\"", self.key)
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<String, E> {
        Ok(value.to_owned())
    }

    fn visit_string<E: de::Error>(self, value: String) -> Result<String, E> {
        Ok(value)
    }
}
