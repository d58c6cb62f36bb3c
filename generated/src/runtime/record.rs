//! Lexicon `record` definitions: which collection a type lives in and how
//! its records are keyed.

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
