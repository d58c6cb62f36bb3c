//! The lexicon `blob` type: a reference to uploaded binary data.
//!
//! Two JSON forms exist on the network. The current, typed form is
//! `{"$type": "blob", "ref": {"$link": "<cid>"}, "mimeType": "...", "size": N}`.
//! Records written before it use the legacy form `{"cid": "<cid>", "mimeType":
//! "..."}`, which has no size. We read both and always write the typed form,
//! as the data-model spec asks of implementations.

use serde::Deserialize;
use serde::ser::{SerializeStruct, Serializer};

use crate::runtime::text::Quoted;
use crate::runtime::{Cid, CidLink};

/// A blob reference (lexicon `blob`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Blob {
    /// The CID of the blob's content.
    pub r#ref: CidLink,
    /// The declared MIME type, e.g. `image/png`.
    pub mime_type: String,
    /// The size in bytes, or `-1` when it is unknown because the blob was read
    /// from the legacy form. `-1` is what the reference TypeScript
    /// implementation uses, so a legacy blob re-serialises the same way there
    /// and here. Prefer [`Blob::size_known`].
    pub size: i64,
}

impl Blob {
    /// The size in bytes, if known (`None` for a blob read in legacy form).
    pub fn size_known(&self) -> Option<u64> {
        u64::try_from(self.size).ok()
    }

    /// Whether the MIME type matches one lexicon `accept` pattern: an exact
    /// type (`image/png`), a type family (`image/*`) or anything (`*/*`).
    /// Comparison ignores ASCII case and MIME parameters (`; charset=...`).
    pub fn matches_accept(&self, pattern: &str) -> bool {
        let mime = self
            .mime_type
            .split_once(';')
            .map_or(self.mime_type.as_str(), |(essence, _)| essence)
            .trim();
        if pattern == "*/*" {
            return true;
        }
        match pattern.strip_suffix("/*") {
            Some(family) => mime
                .split_once('/')
                .is_some_and(|(kind, _)| kind.eq_ignore_ascii_case(family)),
            None => mime.eq_ignore_ascii_case(pattern),
        }
    }
}

impl serde::Serialize for Blob {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut blob = serializer.serialize_struct("Blob", 4)?;
        blob.serialize_field("$type", "blob")?;
        blob.serialize_field("ref", &self.r#ref)?;
        blob.serialize_field("mimeType", &self.mime_type)?;
        blob.serialize_field("size", &self.size)?;
        blob.end()
    }
}

/// Every key either form may carry; which ones must be present depends on
/// `$type`. Unknown keys are ignored, like in any lexicon object.
#[derive(Deserialize)]
struct Wire {
    #[serde(rename = "$type")]
    kind: Option<String>,
    #[serde(rename = "ref")]
    link: Option<CidLink>,
    #[serde(rename = "mimeType")]
    mime_type: String,
    size: Option<i64>,
    cid: Option<Cid>,
}

impl<'de> serde::Deserialize<'de> for Blob {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;

        let wire = Wire::deserialize(deserializer)?;
        match wire.kind.as_deref() {
            Some("blob") => {
                let r#ref = wire.link.ok_or_else(|| D::Error::missing_field("ref"))?;
                let size = wire.size.ok_or_else(|| D::Error::missing_field("size"))?;
                if size < 0 {
                    return Err(D::Error::custom(format_args!(
                        "blob size must not be negative, got {size}"
                    )));
                }
                Ok(Self {
                    r#ref,
                    mime_type: wire.mime_type,
                    size,
                })
            }
            Some(other) => Err(D::Error::custom(format_args!(
                "expected $type \"blob\", got {}",
                Quoted(other)
            ))),
            None => match wire.cid {
                Some(cid) => Ok(Self {
                    r#ref: CidLink(cid),
                    mime_type: wire.mime_type,
                    size: -1,
                }),
                None => Err(D::Error::custom(
                    "blob without \"$type\": \"blob\" must be the legacy form {\"cid\", \"mimeType\"}",
                )),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CID: &str = "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4";

    fn blob(mime_type: &str) -> Blob {
        Blob {
            r#ref: CidLink(Cid::new(CID).unwrap()),
            mime_type: mime_type.to_owned(),
            size: 10,
        }
    }

    #[test]
    fn typed_form_round_trips_with_type_first() {
        let json = format!(
            r#"{{"$type":"blob","ref":{{"$link":"{CID}"}},"mimeType":"image/png","size":1234}}"#
        );
        let read: Blob = serde_json::from_str(&json).unwrap();
        assert_eq!(read.r#ref.0, CID);
        assert_eq!(read.mime_type, "image/png");
        assert_eq!(read.size_known(), Some(1234));
        assert_eq!(serde_json::to_string(&read).unwrap(), json);
    }

    #[test]
    fn legacy_form_is_read_and_written_typed() {
        let legacy = format!(r#"{{"cid":"{CID}","mimeType":"image/jpeg"}}"#);
        let read: Blob = serde_json::from_str(&legacy).unwrap();
        assert_eq!(read.size, -1);
        assert_eq!(read.size_known(), None);
        assert_eq!(
            serde_json::to_string(&read).unwrap(),
            format!(
                r#"{{"$type":"blob","ref":{{"$link":"{CID}"}},"mimeType":"image/jpeg","size":-1}}"#
            )
        );
    }

    #[test]
    fn rejects_incomplete_or_mistyped_blobs() {
        let cases = [
            (
                r#"{"$type":"blob","mimeType":"a/b","size":1}"#.to_owned(),
                "missing field `ref`",
            ),
            (
                format!(r#"{{"$type":"blob","ref":{{"$link":"{CID}"}},"mimeType":"a/b"}}"#),
                "missing field `size`",
            ),
            (
                format!(
                    r#"{{"$type":"blob","ref":{{"$link":"{CID}"}},"mimeType":"a/b","size":-1}}"#
                ),
                "must not be negative",
            ),
            (
                format!(
                    r#"{{"$type":"image","ref":{{"$link":"{CID}"}},"mimeType":"a/b","size":1}}"#
                ),
                "expected $type \"blob\"",
            ),
            (r#"{"mimeType":"a/b"}"#.to_owned(), "legacy form"),
            (format!(r#"{{"cid":"{CID}"}}"#), "missing field `mimeType`"),
            (
                r#"{"cid":"nope","mimeType":"a/b"}"#.to_owned(),
                "invalid cid",
            ),
        ];
        for (json, expected) in cases {
            let error = serde_json::from_str::<Blob>(&json).unwrap_err().to_string();
            assert!(error.contains(expected), "{json}: {error}");
        }
    }

    #[test]
    fn accept_patterns() {
        let png = blob("image/png");
        assert!(png.matches_accept("image/png"));
        assert!(png.matches_accept("image/*"));
        assert!(png.matches_accept("*/*"));
        assert!(!png.matches_accept("image/jpeg"));
        assert!(!png.matches_accept("video/*"));
        assert!(!png.matches_accept("image"));
        assert!(blob("Image/PNG").matches_accept("image/png"));
        assert!(blob("text/plain; charset=utf-8").matches_accept("text/plain"));
        assert!(!blob("imagery/png").matches_accept("image/*"));
    }
}
