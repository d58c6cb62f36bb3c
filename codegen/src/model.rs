//! The typed Lexicon v1 model the loader produces and every later stage
//! reads. Refs are already normalised to `nsid#name`, and every node that
//! can become a named Rust type carries its JSON pointer, which is both its
//! identity for the planner and its location for error messages.

use std::path::PathBuf;

use serde::Deserialize;

/// One lexicon document.
#[derive(Debug, Clone)]
pub struct Document {
    pub id: String,
    pub file: PathBuf,
    pub description: Option<String>,
    /// `main` first, then the other defs in source order.
    pub defs: Vec<NamedDef>,
}

#[derive(Debug, Clone)]
pub struct NamedDef {
    pub name: String,
    pub pointer: String,
    pub def: Def,
}

impl Document {
    pub fn def(&self, name: &str) -> Option<&NamedDef> {
        self.defs.iter().find(|d| d.name == name)
    }
}

#[derive(Debug, Clone)]
pub enum Def {
    Record(Record),
    Query(Method),
    Procedure(Method),
    Subscription(Subscription),
    PermissionSet(PermissionSet),
    Token(Token),
    Object(Object),
    /// Any other named type: string, integer, boolean, bytes, cid-link,
    /// blob, array, union, unknown.
    Type(Field),
}

impl Def {
    pub fn kind(&self) -> &'static str {
        match self {
            Def::Record(_) => "record",
            Def::Query(_) => "query",
            Def::Procedure(_) => "procedure",
            Def::Subscription(_) => "subscription",
            Def::PermissionSet(_) => "permission-set",
            Def::Token(_) => "token",
            Def::Object(_) => "object",
            Def::Type(field) => field.ty.kind(),
        }
    }

    pub fn description(&self) -> Option<&str> {
        match self {
            Def::Record(r) => r.description.as_deref(),
            Def::Query(m) | Def::Procedure(m) => m.description.as_deref(),
            Def::Subscription(s) => s.description.as_deref(),
            Def::PermissionSet(p) => p.description.as_deref(),
            Def::Token(t) => t.description.as_deref(),
            Def::Object(o) => o.description.as_deref(),
            Def::Type(f) => f.description.as_deref(),
        }
    }
}

/// A field type at some position (property, array items, body schema...).
#[derive(Debug, Clone)]
pub struct Field {
    pub pointer: String,
    pub description: Option<String>,
    pub ty: FieldType,
}

#[derive(Debug, Clone)]
pub enum FieldType {
    Null,
    Boolean(BooleanType),
    Integer(IntegerType),
    String(StringType),
    Bytes(BytesType),
    CidLink,
    Blob(BlobType),
    Array(ArrayType),
    Object(Object),
    /// Normalised `nsid#name`.
    Ref(String),
    Union(UnionType),
    Unknown,
}

impl FieldType {
    pub fn kind(&self) -> &'static str {
        match self {
            FieldType::Null => "null",
            FieldType::Boolean(_) => "boolean",
            FieldType::Integer(_) => "integer",
            FieldType::String(_) => "string",
            FieldType::Bytes(_) => "bytes",
            FieldType::CidLink => "cid-link",
            FieldType::Blob(_) => "blob",
            FieldType::Array(_) => "array",
            FieldType::Object(_) => "object",
            FieldType::Ref(_) => "ref",
            FieldType::Union(_) => "union",
            FieldType::Unknown => "unknown",
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BooleanType {
    pub default: Option<bool>,
    #[serde(rename = "const")]
    pub const_value: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IntegerType {
    pub minimum: Option<i64>,
    pub maximum: Option<i64>,
    #[serde(rename = "enum")]
    pub enum_values: Option<Vec<i64>>,
    #[serde(rename = "const")]
    pub const_value: Option<i64>,
    pub default: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StringType {
    pub format: Option<StringFormat>,
    pub max_length: Option<u64>,
    pub min_length: Option<u64>,
    pub max_graphemes: Option<u64>,
    pub min_graphemes: Option<u64>,
    pub known_values: Option<Vec<String>>,
    #[serde(rename = "enum")]
    pub enum_values: Option<Vec<String>>,
    #[serde(rename = "const")]
    pub const_value: Option<String>,
    pub default: Option<String>,
}

impl StringType {
    /// Strings with a value set become Rust enums: closed for `enum`, open
    /// (with `Other`) for `knownValues`.
    pub fn value_set(&self) -> Option<(&[String], bool)> {
        if let Some(values) = &self.enum_values {
            Some((values, true))
        } else {
            self.known_values.as_deref().map(|values| (values, false))
        }
    }
}

/// The string formats of Lexicon v1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StringFormat {
    AtIdentifier,
    AtUri,
    Cid,
    Datetime,
    Did,
    Handle,
    Language,
    Nsid,
    RecordKey,
    Tid,
    Uri,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BytesType {
    pub min_length: Option<u64>,
    pub max_length: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BlobType {
    pub accept: Option<Vec<String>>,
    pub max_size: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct ArrayType {
    pub items: Box<Field>,
    pub min_length: Option<u64>,
    pub max_length: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct Object {
    pub pointer: String,
    pub description: Option<String>,
    pub properties: Vec<Property>,
}

#[derive(Debug, Clone)]
pub struct Property {
    pub name: String,
    pub required: bool,
    pub nullable: bool,
    pub field: Field,
}

#[derive(Debug, Clone)]
pub struct UnionType {
    /// Normalised `nsid#name` refs, in source order.
    pub refs: Vec<String>,
    pub closed: bool,
}

#[derive(Debug, Clone)]
pub struct Token {
    pub description: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Record {
    pub description: Option<String>,
    /// `tid`, `nsid`, `any` or `literal:<value>`.
    pub key: String,
    pub object: Object,
}

/// A query or a procedure.
#[derive(Debug, Clone)]
pub struct Method {
    pub description: Option<String>,
    pub parameters: Option<Object>,
    pub input: Option<Body>,
    pub output: Option<Body>,
    pub errors: Vec<ErrorDef>,
}

#[derive(Debug, Clone)]
pub struct Body {
    pub pointer: String,
    pub description: Option<String>,
    pub encoding: String,
    /// An object, a ref or a union; `None` for raw bodies.
    pub schema: Option<Field>,
}

impl Body {
    pub fn is_json(&self) -> bool {
        self.encoding == "application/json"
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct ErrorDef {
    pub name: String,
    pub description: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Subscription {
    pub description: Option<String>,
    pub parameters: Option<Object>,
    /// The message union.
    pub message: Option<Field>,
    pub errors: Vec<ErrorDef>,
}

#[derive(Debug, Clone)]
pub struct PermissionSet {
    pub description: Option<String>,
    pub title: Option<String>,
    pub detail: Option<String>,
    pub permissions: Vec<Permission>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Permission {
    pub resource: String,
    #[serde(default)]
    pub action: Vec<String>,
    #[serde(default, deserialize_with = "one_or_many")]
    pub collection: Vec<String>,
    #[serde(default, deserialize_with = "one_or_many")]
    pub lxm: Vec<String>,
    pub aud: Option<String>,
    #[serde(default)]
    pub inherit_aud: bool,
    #[serde(default, deserialize_with = "one_or_many")]
    pub accept: Vec<String>,
    pub attr: Option<String>,
}

/// Permission fields may be a single string or a list of them.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(one) => vec![one],
        OneOrMany::Many(many) => many,
    })
}
