//! Helpers for lexicon unions, whose serde impls the generator writes.
//!
//! A union member is an object tagged with `"$type": "<nsid>#<name>"` (or just
//! `"<nsid>"` for a `main` def). serde's internally tagged enums cannot express
//! this well: the same member has two spellings (`x` and `x#main`), open
//! unions must keep unrecognised members intact, and `$type` must be written
//! even for a single-member union. So the generated code dispatches on
//! [`UnionObject::type_name`] and writes with [`serialize_typed`].
//!
//! Members travel through a `serde_json` object in the data model's JSON form
//! on the way in ([`crate::runtime::data`]), so DAG-CBOR links and bytes inside
//! a member survive, and an unknown member is written back exactly.

use serde::de::{DeserializeOwned, Error};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::runtime::Unknown;
use crate::runtime::text::Quoted;

/// Serializes `value` (a struct or map) as an object with
/// `"$type": type_name` as its first key, followed by the value's own fields.
pub fn serialize_typed<S: Serializer, T: Serialize + ?Sized>(
    type_name: &str,
    value: &T,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct Typed<'a, T: ?Sized> {
        #[serde(rename = "$type")]
        type_name: &'a str,
        #[serde(flatten)]
        value: &'a T,
    }
    Typed { type_name, value }.serialize(serializer)
}

/// A union member as read from the wire: an object with a string `$type`,
/// not yet converted to a variant.
#[derive(Debug, Clone, PartialEq)]
pub struct UnionObject {
    type_name: String,
    object: Map<String, Value>,
}

impl UnionObject {
    /// The member's `$type`.
    pub fn type_name(&self) -> &str {
        &self.type_name
    }

    /// The whole object, `$type` included.
    pub fn as_object(&self) -> &Map<String, Value> {
        &self.object
    }

    /// Deserializes the variant's struct from the object without its `$type`
    /// (the union writes it back). An error names the `$type` it was reading.
    pub fn into_variant<T: DeserializeOwned, E: Error>(self) -> Result<T, E> {
        let Self {
            type_name,
            mut object,
        } = self;
        object.shift_remove("$type");
        serde_json::from_value(Value::Object(object))
            .map_err(|error| E::custom(format_args!("invalid {}: {error}", Quoted(&type_name))))
    }

    /// Keeps the object exactly as received, `$type` included, for the
    /// unknown variant of an open union.
    pub fn into_unknown(self) -> Unknown {
        Unknown(self.object)
    }

    /// The error for a closed union that does not list this `$type`.
    pub fn unexpected<E: Error>(&self, expected: &'static [&'static str]) -> E {
        E::custom(format_args!(
            "unexpected $type {}, expected one of: {}",
            Quoted(&self.type_name),
            expected.join(", ")
        ))
    }
}

impl<'de> Deserialize<'de> for UnionObject {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let object =
            crate::runtime::unknown::data_object(deserializer, "a union object with $type")?;
        // `data_object` has checked that a `$type` is a non-empty string.
        let Some(Value::String(type_name)) = object.get("$type") else {
            return Err(D::Error::custom("union object without $type"));
        };
        let type_name = type_name.clone();
        Ok(Self { type_name, object })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Images {
        alt_text: String,
        count: i64,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct External {
        uri: String,
    }

    /// An open union, written the way the generator writes one.
    #[derive(Debug, Clone, PartialEq)]
    enum Embed {
        Images(Images),
        External(External),
        Unknown(Unknown),
    }

    impl serde::Serialize for Embed {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            match self {
                Self::Images(v) => crate::runtime::serialize_typed("app.bsky.embed.images", v, s),
                Self::External(v) => {
                    crate::runtime::serialize_typed("app.bsky.embed.external", v, s)
                }
                Self::Unknown(v) => v.serialize(s),
            }
        }
    }

    impl<'de> serde::Deserialize<'de> for Embed {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            let object = crate::runtime::UnionObject::deserialize(d)?;
            match object.type_name() {
                "app.bsky.embed.images" | "app.bsky.embed.images#main" => {
                    object.into_variant().map(Self::Images)
                }
                "app.bsky.embed.external" | "app.bsky.embed.external#main" => {
                    object.into_variant().map(Self::External)
                }
                _ => Ok(Self::Unknown(object.into_unknown())),
            }
        }
    }

    /// A closed union with one member: `$type` is still written and required.
    #[derive(Debug, PartialEq)]
    enum Only {
        External(External),
    }

    impl serde::Serialize for Only {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            match self {
                Self::External(v) => crate::runtime::serialize_typed("com.example.only#ext", v, s),
            }
        }
    }

    impl<'de> serde::Deserialize<'de> for Only {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            let object = crate::runtime::UnionObject::deserialize(d)?;
            match object.type_name() {
                "com.example.only#ext" => object.into_variant().map(Self::External),
                _ => Err(object.unexpected(&["com.example.only#ext"])),
            }
        }
    }

    #[test]
    fn serialize_typed_writes_type_first() {
        #[derive(Serialize)]
        struct A {
            a: i64,
        }
        let mut out = Vec::new();
        serialize_typed("x", &A { a: 1 }, &mut serde_json::Serializer::new(&mut out)).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), r#"{"$type":"x","a":1}"#);
    }

    #[test]
    fn known_members_round_trip() {
        let json = r#"{"$type":"app.bsky.embed.images","altText":"a cat","count":2}"#;
        let embed: Embed = serde_json::from_str(json).unwrap();
        assert_eq!(
            embed,
            Embed::Images(Images {
                alt_text: "a cat".into(),
                count: 2
            })
        );
        assert_eq!(serde_json::to_string(&embed).unwrap(), json);
    }

    #[test]
    fn main_suffix_is_the_same_member() {
        let json = r#"{"$type":"app.bsky.embed.external#main","uri":"https://a.example"}"#;
        let embed: Embed = serde_json::from_str(json).unwrap();
        assert_eq!(
            embed,
            Embed::External(External {
                uri: "https://a.example".into()
            })
        );
        // Written back in the short form.
        assert_eq!(
            serde_json::to_string(&embed).unwrap(),
            r#"{"$type":"app.bsky.embed.external","uri":"https://a.example"}"#
        );
    }

    #[test]
    fn unknown_members_are_kept_byte_identical() {
        let json = r#"{"zed":[1,{"y":null,"x":"é"}],"$type":"com.example.future#thing","a":-7}"#;
        let embed: Embed = serde_json::from_str(json).unwrap();
        let Embed::Unknown(unknown) = &embed else {
            panic!("expected Unknown, got {embed:?}")
        };
        assert_eq!(unknown.type_name(), Some("com.example.future#thing"));
        assert_eq!(serde_json::to_string(&embed).unwrap(), json);
    }

    #[test]
    fn variant_errors_name_the_member() {
        let error = serde_json::from_str::<Embed>(r#"{"$type":"app.bsky.embed.images","count":2}"#)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains(r#"invalid "app.bsky.embed.images""#),
            "{error}"
        );
        assert!(error.contains("missing field `altText`"), "{error}");
    }

    #[test]
    fn objects_without_a_string_type_are_rejected() {
        let cases = [
            (r#"{"uri":"x"}"#, "union object without $type"),
            (r#"{"$type":5,"uri":"x"}"#, "$type must be a string, got 5"),
            (
                r#""app.bsky.embed.images""#,
                "expected a JSON object for a union object with $type, got a string",
            ),
            ("null", "got null"),
        ];
        for (json, expected) in cases {
            let error = serde_json::from_str::<Embed>(json).unwrap_err().to_string();
            assert!(error.contains(expected), "{json}: {error}");
        }
    }

    #[test]
    fn closed_unions_reject_unlisted_types() {
        let only: Only =
            serde_json::from_str(r#"{"$type":"com.example.only#ext","uri":"u"}"#).unwrap();
        assert_eq!(only, Only::External(External { uri: "u".into() }));
        assert_eq!(
            serde_json::to_string(&only).unwrap(),
            r#"{"$type":"com.example.only#ext","uri":"u"}"#
        );
        let error = serde_json::from_str::<Only>(r#"{"$type":"com.example.other","uri":"u"}"#)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains(
                r#"unexpected $type "com.example.other", expected one of: com.example.only#ext"#
            ),
            "{error}"
        );
    }

    #[test]
    fn unions_nest_inside_structs_and_arrays() {
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct Post {
            embeds: Vec<Embed>,
        }
        let json = r#"{"embeds":[{"$type":"app.bsky.embed.external","uri":"u"},{"$type":"x.y.z","k":true}]}"#;
        let post: Post = serde_json::from_str(json).unwrap();
        assert!(matches!(post.embeds[1], Embed::Unknown(_)));
        assert_eq!(serde_json::to_string(&post).unwrap(), json);
    }
}
