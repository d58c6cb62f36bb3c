//! Lexicon `record` definitions: which collection a type lives in and how
//! its records are keyed.

use std::fmt;
use std::marker::PhantomData;

use crate::runtime::{Nsid, RecordKey, Tid};

/// A type defined by a lexicon `record`; the generator implements it.
pub trait Record {
    /// The collection NSID, e.g. `app.bsky.feed.post`.
    const NSID: &'static str;
    /// How records of this collection are keyed (the lexicon `key` field).
    const KEY: RecordKeyType;
}

/// The lexicon record `key` field: `"tid"`, `"nsid"`, `"any"` or
/// `"literal:<value>"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKeyType {
    /// Keys are TIDs (`"tid"`).
    Tid,
    /// Keys are NSIDs (`"nsid"`).
    Nsid,
    /// Any valid record key (`"any"`).
    Any,
    /// Exactly one key, e.g. `self` for `"literal:self"`.
    Literal(&'static str),
}

impl RecordKeyType {
    /// Whether `rkey` is allowed by this key type.
    pub fn allows(&self, rkey: &RecordKey) -> bool {
        match self {
            Self::Tid => Tid::new(rkey.as_str()).is_ok(),
            Self::Nsid => Nsid::new(rkey.as_str()).is_ok(),
            Self::Any => true,
            Self::Literal(literal) => rkey.as_str() == *literal,
        }
    }
}

/// A record's `$type`, as a field of the record's struct: always written (the
/// collection NSID), and on input either absent or the collection NSID.
/// Generated records hold it as `#[serde(rename = "$type", default)] pub
/// type_tag: RecordType<Self>`; it carries no data.
pub struct RecordType<T>(PhantomData<fn() -> T>);

impl<T> Default for RecordType<T> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T> Clone for RecordType<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for RecordType<T> {}

impl<T> PartialEq for RecordType<T> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl<T: Record> fmt::Debug for RecordType<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RecordType({})", T::NSID)
    }
}

impl<T: Record> serde::Serialize for RecordType<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(T::NSID)
    }
}

impl<'de, T: Record> serde::Deserialize<'de> for RecordType<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let type_name = <String as serde::Deserialize>::deserialize(deserializer)?;
        if type_name == T::NSID || type_name.strip_suffix("#main") == Some(T::NSID) {
            Ok(Self::default())
        } else {
            Err(serde::de::Error::custom(format_args!(
                "a {} record has $type {:?}, got {}",
                T::NSID,
                T::NSID,
                crate::runtime::text::Quoted(&type_name)
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Profile;

    impl Record for Profile {
        const NSID: &'static str = "app.bsky.actor.profile";
        const KEY: RecordKeyType = RecordKeyType::Literal("self");
    }

    fn rkey(value: &str) -> RecordKey {
        RecordKey::new(value).unwrap()
    }

    #[test]
    fn record_type_is_written_and_checked() {
        let tag = RecordType::<Profile>::default();
        assert_eq!(
            serde_json::to_string(&tag).unwrap(),
            r#""app.bsky.actor.profile""#
        );
        for ok in [
            r#""app.bsky.actor.profile""#,
            r#""app.bsky.actor.profile#main""#,
        ] {
            serde_json::from_str::<RecordType<Profile>>(ok).unwrap();
        }
        let error = serde_json::from_str::<RecordType<Profile>>(r#""app.bsky.feed.post""#)
            .unwrap_err()
            .to_string();
        assert!(error.contains("has $type"), "{error}");
    }

    #[test]
    fn record_constants() {
        assert_eq!(Profile::NSID, "app.bsky.actor.profile");
        assert_eq!(Profile::KEY, RecordKeyType::Literal("self"));
    }

    #[test]
    fn key_types_allow_their_keys() {
        assert!(RecordKeyType::Tid.allows(&rkey("3jzfcijpj2z2a")));
        assert!(!RecordKeyType::Tid.allows(&rkey("self")));
        assert!(RecordKeyType::Nsid.allows(&rkey("com.example.fooBar")));
        assert!(!RecordKeyType::Nsid.allows(&rkey("self")));
        assert!(RecordKeyType::Any.allows(&rkey("pre:fix")));
        assert!(RecordKeyType::Literal("self").allows(&rkey("self")));
        assert!(!RecordKeyType::Literal("self").allows(&rkey("other")));
    }
}
