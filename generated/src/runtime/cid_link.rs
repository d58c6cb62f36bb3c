//! The lexicon `cid-link` type: a content hash link, JSON `{"$link": "<cid>"}`.

use serde::ser::{SerializeMap, Serializer};

use crate::runtime::Cid;
use crate::runtime::single_key;

/// The JSON key of the link wrapper object.
const KEY: &str = "$link";

/// A link to content by CID (lexicon `cid-link`). JSON form:
/// `{"$link": "bafyrei..."}`; the CID string is validated on input.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CidLink(pub Cid);

impl From<Cid> for CidLink {
    fn from(cid: Cid) -> Self {
        Self(cid)
    }
}

impl serde::Serialize for CidLink {
    /// JSON gets the `{"$link": ...}` object; binary formats (DAG-CBOR in
    /// event streams) get the native form, tag 42 over the binary CID.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if !serializer.is_human_readable() {
            let cid = ipld_core::cid::Cid::try_from(self.0.as_str())
                .map_err(|error| serde::ser::Error::custom(format_args!("invalid cid: {error}")))?;
            return cid.serialize(serializer);
        }
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry(KEY, self.0.as_str())?;
        map.end()
    }
}

impl<'de> serde::Deserialize<'de> for CidLink {
    /// By shape rather than by `is_human_readable`: serde's buffering
    /// (flattened fields) reports every format as human-readable, so a
    /// DAG-CBOR link can arrive either way.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(LinkVisitor)
    }
}

/// Reads a native link (DAG-CBOR tag 42) or a `{"$link"}` object.
struct LinkVisitor;

impl<'de> serde::de::Visitor<'de> for LinkVisitor {
    type Value = CidLink;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "a link or an object {{\"{KEY}\": string}}")
    }

    fn visit_newtype_struct<D: serde::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<CidLink, D::Error> {
        let cid = deserializer.deserialize_bytes(crate::runtime::data::CidBytes)?;
        Cid::new(cid).map(CidLink).map_err(serde::de::Error::custom)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<CidLink, A::Error> {
        let cid = single_key::visit(map, KEY)?;
        Cid::new(cid).map(CidLink).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CID: &str = "bafyreidfayvfkicffzikfhbdrqvjobjzpmvcfc7kzbih2noclhf3vqywue";

    #[test]
    fn round_trips_as_a_link_object() {
        let json = format!(r#"{{"$link":"{CID}"}}"#);
        let link: CidLink = serde_json::from_str(&json).unwrap();
        assert_eq!(link.0, CID);
        assert_eq!(serde_json::to_string(&link).unwrap(), json);
    }

    #[test]
    fn rejects_invalid_cids_and_wrappers() {
        let cases = [
            (r#"{"$link":"short"}"#.to_owned(), "invalid cid \"short\""),
            (
                format!(r#"{{"$link":"{CID}","x":1}}"#),
                "unexpected key \"x\"",
            ),
            (
                r#"{"$link":1}"#.to_owned(),
                "expected a string in \"$link\"",
            ),
            (format!(r#""{CID}""#), "expected a link or an object"),
        ];
        for (json, expected) in cases {
            let error = serde_json::from_str::<CidLink>(&json)
                .unwrap_err()
                .to_string();
            assert!(error.contains(expected), "{json}: {error}");
        }
    }
}
