//! Stage 1: read every lexicon JSON file under a directory into the typed
//! [`model`](crate::model). Each problem is reported with its file and JSON
//! pointer, and loading goes on so one run lists all of them.

use std::fs;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use unicode_segmentation::UnicodeSegmentation;

use crate::diagnostics::{Diagnostics, pointer_join};
use crate::digest::collect_json;
use crate::model::*;

/// Loads every `*.json` file below `dir`, sorted by NSID. Documents come
/// back even when some had problems, so later stages can report theirs too;
/// a def that failed to load is stood in for by an `unknown` type so refs
/// to it do not also report as dangling.
pub fn load_dir(dir: &Path) -> (Vec<Document>, Diagnostics) {
    let mut diags = Diagnostics::default();
    let mut files = Vec::new();
    if let Err(e) = collect_json(dir, dir, &mut files) {
        diags.push(dir, "", format!("cannot read lexicon directory: {e}"));
        return (Vec::new(), diags);
    }
    files.sort();
    let mut documents = Vec::new();
    for relative in files {
        let path = dir.join(&relative);
        match fs::read(&path) {
            Ok(bytes) => {
                let mut loader = Loader {
                    file: path.clone(),
                    id: String::new(),
                    diags: &mut diags,
                };
                if let Some(doc) = loader.document(&bytes) {
                    let expected: PathBuf = format!("{}.json", doc.id.replace('.', "/")).into();
                    if relative != expected {
                        diags.push(
                            &path,
                            "/id",
                            format!(
                                "id {} does not match the file path: expected {}",
                                doc.id,
                                expected.display()
                            ),
                        );
                    }
                    documents.push(doc);
                }
            }
            Err(e) => diags.push(&path, "", format!("cannot read file: {e}")),
        }
    }
    documents.sort_by(|a, b| a.id.cmp(&b.id));
    for pair in documents.windows(2) {
        if pair[0].id == pair[1].id {
            diags.push(
                &pair[1].file,
                "/id",
                format!(
                    "duplicate lexicon id {} (also in {})",
                    pair[1].id,
                    pair[0].file.display()
                ),
            );
        }
    }
    (documents, diags)
}

struct Loader<'a> {
    file: PathBuf,
    id: String,
    diags: &'a mut Diagnostics,
}

/// Field types allowed where a value is stored (properties, array items).
const VALUE_TYPES: &[&str] = &[
    "null", "boolean", "integer", "string", "bytes", "cid-link", "blob", "array", "object", "ref",
    "union", "unknown",
];
/// Field types a named def may have (the reference's user types): no `ref`,
/// `union`, `unknown` or `null` at the top level.
const DEF_TYPES: &[&str] = &[
    "boolean", "integer", "string", "bytes", "cid-link", "blob", "array",
];
/// Types a query parameter may have (arrays: of the first three).
const PARAM_TYPES: &[&str] = &["boolean", "integer", "string"];

impl Loader<'_> {
    fn error(&mut self, pointer: &str, message: impl Into<String>) {
        self.diags.push(&self.file, pointer, message);
    }

    fn document(&mut self, bytes: &[u8]) -> Option<Document> {
        let root: Value = match serde_json::from_slice(bytes) {
            Ok(v) => v,
            Err(e) => {
                self.error("", format!("invalid JSON: {e}"));
                return None;
            }
        };
        let root = self.object(&root, "")?;
        match root.get("lexicon") {
            Some(Value::Number(n)) if n.as_u64() == Some(1) => {}
            Some(other) => self.error(
                "/lexicon",
                format!("unsupported lexicon version {other}, expected 1"),
            ),
            None => self.error("", "missing \"lexicon\": 1"),
        }
        let id = match root.get("id").and_then(Value::as_str) {
            Some(id) if is_nsid(id) => id.to_owned(),
            Some(id) => {
                self.error("/id", format!("{id:?} is not a valid NSID"));
                return None;
            }
            None => {
                self.error("/id", "missing string \"id\"");
                return None;
            }
        };
        self.id = id.clone();
        let description = self.optional_string(root, "", "description");
        let Some(defs_value) = root.get("defs") else {
            self.error("", "missing \"defs\"");
            return None;
        };
        let defs_map = self.object(defs_value, "/defs")?;
        let mut defs = Vec::new();
        for (name, value) in defs_map {
            let pointer = pointer_join("/defs", name);
            if !is_def_name(name) {
                self.error(&pointer, format!("{name:?} is not a valid def name"));
                continue;
            }
            let def = self.def(name, value, &pointer).unwrap_or_else(|| {
                Def::Type(Field {
                    pointer: pointer.clone(),
                    description: None,
                    ty: FieldType::Unknown,
                })
            });
            defs.push(NamedDef {
                name: name.clone(),
                pointer,
                def,
            });
        }
        defs.sort_by_key(|d| d.name != "main");
        Some(Document {
            id,
            file: self.file.clone(),
            description,
            defs,
        })
    }

    fn def(&mut self, name: &str, value: &Value, pointer: &str) -> Option<Def> {
        let map = self.object(value, pointer)?;
        let ty = self.type_name(map, pointer)?;
        let description = self.optional_string(map, pointer, "description");
        let primary = matches!(
            ty,
            "record" | "query" | "procedure" | "subscription" | "permission-set"
        );
        if primary && name != "main" {
            self.error(
                &pointer_join(pointer, "type"),
                format!("a {ty} must be the main def"),
            );
            return None;
        }
        Some(match ty {
            "record" => {
                let key = self
                    .optional_string(map, pointer, "key")
                    .unwrap_or_else(|| "any".to_owned());
                if !(matches!(key.as_str(), "tid" | "nsid" | "any") || key.starts_with("literal:"))
                {
                    self.error(
                        &pointer_join(pointer, "key"),
                        format!("unknown record key type {key:?}"),
                    );
                }
                let record_ptr = pointer_join(pointer, "record");
                let object = match map.get("record") {
                    Some(v) if v.get("type").and_then(Value::as_str) != Some("object") => {
                        self.error(
                            &record_ptr,
                            "a record's \"record\" must be of type \"object\"",
                        );
                        return None;
                    }
                    Some(v) => self.object_type(v, &record_ptr, VALUE_TYPES)?,
                    None => {
                        self.error(pointer, "a record needs a \"record\" object");
                        return None;
                    }
                };
                Def::Record(Record {
                    description,
                    key,
                    object,
                })
            }
            "query" | "procedure" => {
                let method = Method {
                    description,
                    parameters: self.params(map, pointer),
                    input: match ty {
                        "procedure" => self.body(map, pointer, "input"),
                        _ => {
                            if map.contains_key("input") {
                                self.error(&pointer_join(pointer, "input"), "a query has no input");
                            }
                            None
                        }
                    },
                    output: self.body(map, pointer, "output"),
                    errors: self.errors(map, pointer),
                };
                if ty == "query" {
                    Def::Query(method)
                } else {
                    Def::Procedure(method)
                }
            }
            "subscription" => {
                let message = match map.get("message") {
                    Some(m) => {
                        let ptr = pointer_join(pointer, "message");
                        let m = self.object(m, &ptr)?;
                        let schema_ptr = pointer_join(&ptr, "schema");
                        match m.get("schema") {
                            Some(s) => self.field(s, &schema_ptr, &["union"]),
                            None => {
                                self.error(&ptr, "a subscription message needs a \"schema\" union");
                                None
                            }
                        }
                    }
                    None => None,
                };
                Def::Subscription(Subscription {
                    description,
                    parameters: self.params(map, pointer),
                    message,
                    errors: self.errors(map, pointer),
                })
            }
            "permission-set" => {
                let permissions_ptr = pointer_join(pointer, "permissions");
                let permissions = match map.get("permissions") {
                    Some(v) => self.leaf::<Vec<Permission>>(v, &permissions_ptr)?,
                    None => Vec::new(),
                };
                Def::PermissionSet(PermissionSet {
                    description,
                    title: self.optional_string(map, pointer, "title"),
                    detail: self.optional_string(map, pointer, "detail"),
                    permissions,
                })
            }
            "token" => Def::Token(Token { description }),
            "object" => Def::Object(self.object_type(value, pointer, VALUE_TYPES)?),
            _ => Def::Type(self.field(value, pointer, DEF_TYPES)?),
        })
    }

    /// A field type, checked against the types allowed at this position.
    fn field(&mut self, value: &Value, pointer: &str, allowed: &[&str]) -> Option<Field> {
        let map = self.object(value, pointer)?;
        let ty = self.type_name(map, pointer)?;
        let type_ptr = pointer_join(pointer, "type");
        if !VALUE_TYPES.contains(&ty) && !is_known_def_type(ty) {
            self.error(&type_ptr, format!("unknown type {ty:?}"));
            return None;
        }
        if !allowed.contains(&ty) {
            self.error(
                &type_ptr,
                format!(
                    "type {ty:?} is not allowed here (allowed: {})",
                    allowed.join(", ")
                ),
            );
            return None;
        }
        let description = self.optional_string(map, pointer, "description");
        let ty = match ty {
            "null" => FieldType::Null,
            "boolean" => {
                let b: BooleanType = self.leaf(value, pointer)?;
                if let (Some(d), Some(c)) = (b.default, b.const_value)
                    && d != c
                {
                    self.error(
                        &pointer_join(pointer, "default"),
                        format!("default {d} differs from const {c}"),
                    );
                }
                FieldType::Boolean(b)
            }
            "integer" => {
                let i: IntegerType = self.leaf(value, pointer)?;
                self.check_integer(&i, pointer);
                FieldType::Integer(i)
            }
            "string" => {
                let s: StringType = self.leaf(value, pointer)?;
                self.check_string(&s, pointer);
                FieldType::String(s)
            }
            "bytes" => {
                let b: BytesType = self.leaf(value, pointer)?;
                self.check_bounds(
                    b.min_length,
                    b.max_length,
                    pointer,
                    "minLength",
                    "maxLength",
                );
                FieldType::Bytes(b)
            }
            "cid-link" => FieldType::CidLink,
            "blob" => FieldType::Blob(self.leaf(value, pointer)?),
            "unknown" => FieldType::Unknown,
            "array" => {
                let items_ptr = pointer_join(pointer, "items");
                let Some(items) = map.get("items") else {
                    self.error(pointer, "an array needs \"items\"");
                    return None;
                };
                let item_types: &[&str] = if allowed == PARAM_ARRAY {
                    PARAM_TYPES
                } else {
                    VALUE_TYPES
                };
                let items = self.field(items, &items_ptr, item_types)?;
                #[derive(serde::Deserialize)]
                #[serde(rename_all = "camelCase")]
                struct Bounds {
                    min_length: Option<u64>,
                    max_length: Option<u64>,
                }
                let bounds: Bounds = self.leaf(value, pointer)?;
                self.check_bounds(
                    bounds.min_length,
                    bounds.max_length,
                    pointer,
                    "minLength",
                    "maxLength",
                );
                FieldType::Array(ArrayType {
                    items: Box::new(items),
                    min_length: bounds.min_length,
                    max_length: bounds.max_length,
                })
            }
            "object" => FieldType::Object(self.object_type(value, pointer, VALUE_TYPES)?),
            "ref" => {
                let Some(target) = map.get("ref").and_then(Value::as_str) else {
                    self.error(pointer, "a ref needs a string \"ref\"");
                    return None;
                };
                FieldType::Ref(self.normalize_ref(target, &pointer_join(pointer, "ref"))?)
            }
            "union" => {
                #[derive(serde::Deserialize)]
                struct Union {
                    refs: Vec<String>,
                    #[serde(default)]
                    closed: bool,
                }
                let u: Union = self.leaf(value, pointer)?;
                let refs_ptr = pointer_join(pointer, "refs");
                let refs: Vec<String> = u
                    .refs
                    .iter()
                    .enumerate()
                    .filter_map(|(i, r)| {
                        self.normalize_ref(r, &pointer_join(&refs_ptr, &i.to_string()))
                    })
                    .collect();
                if u.closed && u.refs.is_empty() {
                    self.error(&refs_ptr, "a closed union needs at least one ref");
                }
                FieldType::Union(UnionType {
                    refs,
                    closed: u.closed,
                })
            }
            _ => unreachable!("checked against the allowed types above"),
        };
        Some(Field {
            pointer: pointer.to_owned(),
            description,
            ty,
        })
    }

    fn object_type(&mut self, value: &Value, pointer: &str, allowed: &[&str]) -> Option<Object> {
        let map = self.object(value, pointer)?;
        if let Some(ty) = map.get("type").and_then(Value::as_str)
            && ty != "object"
            && ty != "params"
        {
            self.error(
                &pointer_join(pointer, "type"),
                format!("expected an object, found type {ty:?}"),
            );
            return None;
        }
        let description = self.optional_string(map, pointer, "description");
        let required = self.string_list(map, pointer, "required");
        let nullable = self.string_list(map, pointer, "nullable");
        let props_ptr = pointer_join(pointer, "properties");
        let mut properties = Vec::new();
        if let Some(props) = map.get("properties") {
            let props = self.object(props, &props_ptr)?;
            for (name, value) in props {
                let ptr = pointer_join(&props_ptr, name);
                if let Some(field) = self.field(value, &ptr, allowed) {
                    properties.push(Property {
                        name: name.clone(),
                        required: required.contains(name),
                        nullable: nullable.contains(name),
                        field,
                    });
                }
            }
        }
        for (list, key) in [(&required, "required"), (&nullable, "nullable")] {
            for (i, name) in list.iter().enumerate() {
                if !map
                    .get("properties")
                    .and_then(Value::as_object)
                    .is_some_and(|p| p.contains_key(name))
                {
                    let ptr = pointer_join(&pointer_join(pointer, key), &i.to_string());
                    self.error(&ptr, format!("{name:?} is not a property of this object"));
                }
            }
        }
        Some(Object {
            pointer: pointer.to_owned(),
            description,
            properties,
        })
    }

    fn params(&mut self, map: &Map<String, Value>, pointer: &str) -> Option<Object> {
        let value = map.get("parameters")?;
        self.object_type(value, &pointer_join(pointer, "parameters"), PARAM_ARRAY)
    }

    fn body(&mut self, map: &Map<String, Value>, pointer: &str, key: &str) -> Option<Body> {
        let value = map.get(key)?;
        let ptr = pointer_join(pointer, key);
        let body = self.object(value, &ptr)?;
        let Some(encoding) = body.get("encoding").and_then(Value::as_str) else {
            self.error(&ptr, format!("{key} needs a string \"encoding\""));
            return None;
        };
        let schema = match body.get("schema") {
            Some(s) => Some(self.field(
                s,
                &pointer_join(&ptr, "schema"),
                &["object", "ref", "union"],
            )?),
            None => None,
        };
        Some(Body {
            description: self.optional_string(body, &ptr, "description"),
            pointer: ptr,
            encoding: encoding.to_owned(),
            schema,
        })
    }

    fn errors(&mut self, map: &Map<String, Value>, pointer: &str) -> Vec<ErrorDef> {
        let ptr = pointer_join(pointer, "errors");
        let errors: Vec<ErrorDef> = match map.get("errors") {
            Some(v) => self.leaf(v, &ptr).unwrap_or_default(),
            None => Vec::new(),
        };
        for (i, e) in errors.iter().enumerate() {
            if e.name.is_empty() || !e.name.chars().all(|c| c.is_ascii_alphanumeric()) {
                self.error(
                    &pointer_join(&pointer_join(&ptr, &i.to_string()), "name"),
                    format!("{:?} is not a valid error name", e.name),
                );
            }
        }
        errors
    }

    fn check_bounds(
        &mut self,
        min: Option<u64>,
        max: Option<u64>,
        pointer: &str,
        min_key: &str,
        max_key: &str,
    ) {
        if let (Some(min), Some(max)) = (min, max)
            && min > max
        {
            self.error(
                &pointer_join(pointer, min_key),
                format!("{min_key} {min} exceeds {max_key} {max}"),
            );
        }
    }

    fn check_integer(&mut self, i: &IntegerType, pointer: &str) {
        if let (Some(min), Some(max)) = (i.minimum, i.maximum)
            && min > max
        {
            self.error(
                &pointer_join(pointer, "minimum"),
                format!("minimum {min} exceeds maximum {max}"),
            );
        }
        for (key, value) in [("default", i.default), ("const", i.const_value)] {
            let Some(value) = value else { continue };
            let mut problems = Vec::new();
            if i.minimum.is_some_and(|min| value < min) {
                problems.push(format!(
                    "is below minimum {}",
                    i.minimum.unwrap_or_default()
                ));
            }
            if i.maximum.is_some_and(|max| value > max) {
                problems.push(format!(
                    "is above maximum {}",
                    i.maximum.unwrap_or_default()
                ));
            }
            if i.enum_values.as_ref().is_some_and(|e| !e.contains(&value)) {
                problems.push("is not in enum".to_owned());
            }
            if key == "default" && i.const_value.is_some_and(|c| c != value) {
                problems.push("differs from const".to_owned());
            }
            for p in problems {
                self.error(&pointer_join(pointer, key), format!("{key} {value} {p}"));
            }
        }
    }

    fn check_string(&mut self, s: &StringType, pointer: &str) {
        self.check_bounds(
            s.min_length,
            s.max_length,
            pointer,
            "minLength",
            "maxLength",
        );
        self.check_bounds(
            s.min_graphemes,
            s.max_graphemes,
            pointer,
            "minGraphemes",
            "maxGraphemes",
        );
        if s.enum_values.is_some() && s.known_values.is_some() {
            self.error(pointer, "a string may have enum or knownValues, not both");
        }
        for (key, value) in [("default", &s.default), ("const", &s.const_value)] {
            let Some(value) = value else { continue };
            let bytes = value.len() as u64;
            let graphemes = value.graphemes(true).count() as u64;
            let mut problems = Vec::new();
            if s.max_length.is_some_and(|max| bytes > max) {
                problems.push(format!(
                    "is longer than maxLength {}",
                    s.max_length.unwrap_or_default()
                ));
            }
            if s.min_length.is_some_and(|min| bytes < min) {
                problems.push(format!(
                    "is shorter than minLength {}",
                    s.min_length.unwrap_or_default()
                ));
            }
            if s.max_graphemes.is_some_and(|max| graphemes > max) {
                problems.push(format!(
                    "is longer than maxGraphemes {}",
                    s.max_graphemes.unwrap_or_default()
                ));
            }
            if s.min_graphemes.is_some_and(|min| graphemes < min) {
                problems.push(format!(
                    "is shorter than minGraphemes {}",
                    s.min_graphemes.unwrap_or_default()
                ));
            }
            if s.enum_values.as_ref().is_some_and(|e| !e.contains(value)) {
                problems.push("is not in enum".to_owned());
            }
            if key == "default" && s.const_value.as_ref().is_some_and(|c| c != value) {
                problems.push("differs from const".to_owned());
            }
            if s.format.is_some() {
                problems.push("is not supported on a string with a format".to_owned());
            }
            for p in problems {
                self.error(&pointer_join(pointer, key), format!("{key} {value:?} {p}"));
            }
        }
    }

    /// `#name` -> `<this id>#name`, `nsid` -> `nsid#main`.
    fn normalize_ref(&mut self, target: &str, pointer: &str) -> Option<String> {
        let (nsid, name) = match target.split_once('#') {
            Some(("", name)) => (self.id.as_str(), name),
            Some((nsid, name)) => (nsid, name),
            None => (target, "main"),
        };
        if !is_nsid(nsid) || !is_def_name(name) {
            self.error(pointer, format!("{target:?} is not a valid ref"));
            return None;
        }
        Some(format!("{nsid}#{name}"))
    }

    /// Deserialises a leaf node, reporting the exact pointer of a bad value.
    fn leaf<T: DeserializeOwned>(&mut self, value: &Value, pointer: &str) -> Option<T> {
        match serde_path_to_error::deserialize::<_, T>(value) {
            Ok(v) => Some(v),
            Err(e) => {
                let mut ptr = pointer.to_owned();
                for segment in e.path().iter() {
                    use serde_path_to_error::Segment;
                    match segment {
                        Segment::Seq { index } => ptr = pointer_join(&ptr, &index.to_string()),
                        Segment::Map { key } | Segment::Enum { variant: key } => {
                            ptr = pointer_join(&ptr, key)
                        }
                        Segment::Unknown => {}
                    }
                }
                self.error(&ptr, e.into_inner().to_string());
                None
            }
        }
    }

    fn object<'v>(&mut self, value: &'v Value, pointer: &str) -> Option<&'v Map<String, Value>> {
        let map = value.as_object();
        if map.is_none() {
            self.error(pointer, "expected a JSON object");
        }
        map
    }

    fn type_name<'v>(&mut self, map: &'v Map<String, Value>, pointer: &str) -> Option<&'v str> {
        let ty = map.get("type").and_then(Value::as_str);
        if ty.is_none() {
            self.error(pointer, "missing string \"type\"");
        }
        ty
    }

    fn optional_string(
        &mut self,
        map: &Map<String, Value>,
        pointer: &str,
        key: &str,
    ) -> Option<String> {
        match map.get(key)? {
            Value::String(s) => Some(s.clone()),
            _ => {
                self.error(
                    &pointer_join(pointer, key),
                    format!("\"{key}\" must be a string"),
                );
                None
            }
        }
    }

    fn string_list(&mut self, map: &Map<String, Value>, pointer: &str, key: &str) -> Vec<String> {
        match map.get(key) {
            Some(v) => self
                .leaf(v, &pointer_join(pointer, key))
                .unwrap_or_default(),
            None => Vec::new(),
        }
    }
}

/// Marker for "params position": arrays there may only hold param types.
const PARAM_ARRAY: &[&str] = &["boolean", "integer", "string", "array"];

fn is_known_def_type(ty: &str) -> bool {
    matches!(
        ty,
        "record" | "query" | "procedure" | "subscription" | "permission-set" | "token" | "params"
    )
}

fn is_def_name(name: &str) -> bool {
    name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// NSID syntax: at least three dot-separated segments of ASCII letters,
/// digits and hyphens, the last (the name) letters and digits only.
pub fn is_nsid(id: &str) -> bool {
    let segments: Vec<&str> = id.split('.').collect();
    if segments.len() < 3 || id.len() > 317 {
        return false;
    }
    let (name, authority) = segments.split_last().expect("at least three segments");
    authority.iter().all(|s| {
        !s.is_empty()
            && s.len() <= 63
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !s.starts_with('-')
            && !s.ends_with('-')
    }) && authority[0].starts_with(|c: char| c.is_ascii_alphabetic())
        && !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric())
}
