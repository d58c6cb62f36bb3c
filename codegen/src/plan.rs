//! Stage 3: Rust names. Every NSID gets a module path, every def and every
//! inline type that needs a name (objects, unions, strings with a value set)
//! gets a type name, keyed by the JSON pointer of the node it comes from.
//! Collisions after case conversion are errors, never silently renamed.

use std::collections::{BTreeMap, HashMap};

use heck::{ToShoutySnakeCase, ToSnakeCase, ToUpperCamelCase};

use crate::diagnostics::Diagnostics;
use crate::model::*;
use crate::resolve::Catalog;

/// Names the emitter looks up; computed once, collision-checked.
pub struct Plan {
    /// NSID -> module path segments below `crate::lexicons`.
    modules: HashMap<String, Vec<String>>,
    /// (NSID, JSON pointer) -> Rust type name.
    types: HashMap<(String, String), String>,
}

impl Plan {
    pub fn module(&self, nsid: &str) -> &[String] {
        &self.modules[nsid]
    }

    /// The type name planned for the node at `pointer` in document `nsid`.
    pub fn type_name(&self, nsid: &str, pointer: &str) -> &str {
        self.types
            .get(&(nsid.to_owned(), pointer.to_owned()))
            .unwrap_or_else(|| panic!("no type planned for {nsid}#{pointer}"))
    }
}

/// Type-namespace names the generated code uses unqualified. A def whose
/// name would shadow one gets a trailing underscore, like keywords do.
const PRELUDE_TYPES: &[&str] = &[
    "AsRef", "Box", "From", "Option", "Result", "Self", "String", "Vec",
];
const STRICT_KEYWORDS: &[&str] = &["self", "super", "crate", "Self", "_"];
const KEYWORDS: &[&str] = &[
    "as", "async", "await", "break", "const", "continue", "dyn", "else", "enum", "extern", "false",
    "fn", "for", "gen", "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub",
    "ref", "return", "static", "struct", "trait", "true", "type", "unsafe", "use", "where",
    "while", "abstract", "become", "box", "do", "final", "macro", "override", "priv", "try",
    "typeof", "unsized", "virtual", "yield",
];

/// A snake_case identifier for a module or field name: keywords become raw
/// identifiers, the few that cannot be raw get a trailing underscore.
pub fn snake_ident(name: &str) -> String {
    let mut snake = name.to_snake_case();
    if snake.is_empty() || snake.starts_with(|c: char| c.is_ascii_digit()) {
        snake.insert(0, '_');
    }
    if STRICT_KEYWORDS.contains(&snake.as_str()) {
        format!("{snake}_")
    } else if KEYWORDS.contains(&snake.as_str()) {
        format!("r#{snake}")
    } else {
        snake
    }
}

/// An UpperCamelCase name, prefixed when it would not start with a letter.
pub fn camel(name: &str) -> String {
    let camel = name.to_upper_camel_case();
    if camel.starts_with(|c: char| c.is_ascii_alphabetic()) {
        camel
    } else {
        format!("V{camel}")
    }
}

pub fn shouty(name: &str) -> String {
    let s = name.to_shouty_snake_case();
    if s.starts_with(|c: char| c.is_ascii_alphabetic()) {
        s
    } else {
        format!("V{s}")
    }
}

/// The last segment of an NSID (`com.example.getThing` -> `getThing`).
pub fn nsid_name(nsid: &str) -> &str {
    nsid.rsplit('.').next().unwrap_or(nsid)
}

/// Rust name of a def's type: a main record is `Record`, any other main
/// def `Main` (its module already carries the NSID's name).
pub fn def_type_name(def: &Def, name: &str) -> String {
    let camel = match (name, def) {
        ("main", Def::Record(_)) => "Record".to_owned(),
        ("main", _) => "Main".to_owned(),
        _ => camel(name),
    };
    if PRELUDE_TYPES.contains(&camel.as_str()) {
        format!("{camel}_")
    } else {
        camel
    }
}

/// Rust name of a token constant.
pub fn token_const_name(nsid: &str, def: &str) -> String {
    if def == "main" {
        shouty(nsid_name(nsid))
    } else {
        shouty(def)
    }
}

/// Variant names for the values of a string enum (closed or open).
/// A value is named by its last segment (`nsid#reasonSpam` -> `ReasonSpam`);
/// when two values clash, the clashing ones use their whole text.
pub fn value_variants(values: &[String], open: bool) -> Result<Vec<String>, String> {
    let short = |v: &str| camel(v.rsplit(['#', '.']).next().unwrap_or(v));
    disambiguate(values, short, camel, if open { &["Other"] } else { &[] })
}

/// Variant names for union members (`nsid#view` -> `View`, a main ref ->
/// its NSID name), qualified with the NSID name where they clash.
pub fn union_variants(refs: &[String], open: bool) -> Result<Vec<String>, String> {
    let short = |r: &str| {
        let (nsid, def) = r.split_once('#').unwrap_or((r, "main"));
        if def == "main" {
            camel(nsid_name(nsid))
        } else {
            camel(def)
        }
    };
    let long = |r: &str| {
        let (nsid, def) = r.split_once('#').unwrap_or((r, "main"));
        if def == "main" {
            camel(nsid_name(nsid))
        } else {
            camel(&format!("{}_{def}", nsid_name(nsid)))
        }
    };
    disambiguate(refs, short, long, if open { &["Unknown"] } else { &[] })
}

fn disambiguate(
    items: &[String],
    short: impl Fn(&str) -> String,
    long: impl Fn(&str) -> String,
    reserved: &[&str],
) -> Result<Vec<String>, String> {
    let mut names: Vec<String> = items.iter().map(|i| short(i)).collect();
    let clashes = |names: &[String], i: usize| {
        reserved.contains(&names[i].as_str())
            || names
                .iter()
                .enumerate()
                .any(|(j, n)| j != i && *n == names[i])
    };
    let clashing: Vec<usize> = (0..names.len()).filter(|&i| clashes(&names, i)).collect();
    for &i in &clashing {
        names[i] = long(&items[i]);
        if reserved.contains(&names[i].as_str()) {
            names[i].push_str("Value");
        }
    }
    for i in 0..names.len() {
        if let Some(j) = (0..names.len()).find(|&j| j != i && names[j] == names[i]) {
            return Err(format!(
                "{:?} and {:?} both become the Rust name {}",
                items[i], items[j], names[i]
            ));
        }
    }
    Ok(names)
}

/// Plans every name; problems come back beside the plan (see `resolve`).
pub fn plan(catalog: &Catalog) -> (Plan, Diagnostics) {
    let mut diags = Diagnostics::default();
    let mut plan = Plan {
        modules: HashMap::new(),
        types: HashMap::new(),
    };
    // Module paths, and clashes between sibling modules.
    let mut siblings: BTreeMap<Vec<String>, (String, &Document)> = BTreeMap::new();
    for doc in &catalog.documents {
        let mut path = Vec::new();
        for segment in doc.id.split('.') {
            path.push(snake_ident(segment));
            let original: String = doc
                .id
                .split('.')
                .take(path.len())
                .collect::<Vec<_>>()
                .join(".");
            match siblings.get(&path) {
                Some((other, _)) if *other != original => diags.push(
                    &doc.file,
                    "/id",
                    format!(
                        "NSID prefix {original} and {other} both become the Rust module {}",
                        path.join("::")
                    ),
                ),
                Some(_) => {}
                None => {
                    siblings.insert(path.clone(), (original, doc));
                }
            }
        }
        plan.modules.insert(doc.id.clone(), path);
    }
    // A namespace with methods gets a handler trait, a client, `router` and
    // `ROUTES` in its module, next to the items of a document with its id.
    let with_methods: Vec<&str> = catalog
        .documents
        .iter()
        .filter(|d| {
            d.def("main").is_some_and(|m| {
                matches!(
                    m.def,
                    Def::Query(_) | Def::Procedure(_) | Def::Subscription(_)
                )
            })
        })
        .filter_map(|d| d.id.rsplit_once('.').map(|(namespace, _)| namespace))
        .collect();
    for doc in &catalog.documents {
        let mut namer = Namer {
            doc,
            diags: &mut diags,
            taken: BTreeMap::new(),
            types: &mut plan.types,
        };
        if with_methods.contains(&doc.id.as_str()) {
            for (is_type, name) in [
                (true, "Handler"),
                (true, "Client"),
                (false, "router"),
                (false, "ROUTES"),
            ] {
                namer.claim(is_type, name, "/id");
            }
        }
        namer.document();
    }
    (plan, diags)
}

/// Where a type name comes from.
#[derive(Clone, Copy)]
enum Claim {
    /// A def's name, claimed before any inline type is named.
    Taken,
    /// Invented for an inline type from its parent and field.
    Invented,
}

struct Namer<'a> {
    doc: &'a Document,
    diags: &'a mut Diagnostics,
    /// Rust type or constant name -> pointer that took it, per namespace.
    taken: BTreeMap<(bool, String), String>,
    types: &'a mut HashMap<(String, String), String>,
}

impl Namer<'_> {
    fn document(&mut self) {
        // Defs and fixed names claim first, so a name the planner invents
        // for an inline type can never take one of them.
        for def in &self.doc.defs {
            match &def.def {
                Def::Record(_) | Def::Object(_) | Def::Type(_) => {
                    self.claim(true, &def_type_name(&def.def, &def.name), &def.pointer);
                }
                Def::Query(_) | Def::Procedure(_) => {
                    for name in ["Params", "Input", "Output", "Error", "Response"] {
                        self.claim(true, name, &def.pointer);
                    }
                    for name in ["NSID", "INPUT_ENCODING", "OUTPUT_ENCODING", "ROUTE"] {
                        self.claim(false, name, &def.pointer);
                    }
                }
                Def::Subscription(_) => {
                    for name in ["Params", "Message", "Error", "Response"] {
                        self.claim(true, name, &def.pointer);
                    }
                    self.claim(false, "NSID", &def.pointer);
                    self.claim(false, "ROUTE", &def.pointer);
                }
                Def::PermissionSet(_) => {
                    for name in ["NSID", "TITLE", "DETAIL", "PERMISSIONS", "METHODS"] {
                        self.claim(false, name, &def.pointer);
                    }
                }
                Def::Token(_) => self.claim(
                    false,
                    &token_const_name(&self.doc.id, &def.name),
                    &def.pointer,
                ),
            }
            if matches!(def.def, Def::Record(_)) {
                self.claim(false, "NSID", &def.pointer);
            }
        }
        for def in &self.doc.defs {
            let type_name = def_type_name(&def.def, &def.name);
            match &def.def {
                Def::Record(r) => self.object(&r.object, &type_name, Claim::Taken),
                Def::Object(o) => self.object(o, &type_name, Claim::Taken),
                Def::Type(field) => self.field(field, &type_name, Claim::Taken),
                Def::Query(m) | Def::Procedure(m) => {
                    if let Some(p) = &m.parameters {
                        self.object(p, "Params", Claim::Taken);
                    }
                    for (body, name) in [(&m.input, "Input"), (&m.output, "Output")] {
                        if let Some(schema) = body.as_ref().and_then(|b| b.schema.as_ref()) {
                            self.field(schema, name, Claim::Taken);
                        }
                    }
                }
                Def::Subscription(s) => {
                    if let Some(p) = &s.parameters {
                        self.object(p, "Params", Claim::Taken);
                    }
                    if let Some(m) = &s.message {
                        self.field(m, "Message", Claim::Taken);
                    }
                }
                Def::PermissionSet(_) | Def::Token(_) => {}
            }
        }
    }

    /// Takes a name in the module's type (`true`) or value namespace.
    fn claim(&mut self, is_type: bool, name: &str, pointer: &str) {
        let key = (is_type, name.to_owned());
        if let Some(other) = self.taken.get(&key) {
            self.diags.push(
                &self.doc.file,
                pointer,
                format!("the Rust name {name} collides with the one planned for {other}"),
            );
            return;
        }
        self.taken.insert(key, pointer.to_owned());
    }

    /// Records the type name of the node at `pointer`.
    fn name_type(&mut self, pointer: &str, name: &str, claim: Claim, kind: &str) -> String {
        let name = match claim {
            Claim::Taken => name.to_owned(),
            Claim::Invented => {
                // `{Parent}{Field}`, or with its kind appended when a def or
                // an earlier inline type already has that name.
                let free = |n: &str| {
                    !self.taken.contains_key(&(true, n.to_owned())) && !PRELUDE_TYPES.contains(&n)
                };
                let name = if free(name) {
                    name.to_owned()
                } else {
                    format!("{name}{kind}")
                };
                self.claim(true, &name, pointer);
                name
            }
        };
        self.types
            .insert((self.doc.id.clone(), pointer.to_owned()), name.clone());
        name
    }

    fn object(&mut self, object: &Object, name: &str, claim: Claim) {
        let name = self.name_type(&object.pointer, name, claim, "Object");
        let mut fields: BTreeMap<String, &str> = BTreeMap::new();
        for p in &object.properties {
            let ident = snake_ident(&p.name);
            if let Some(other) = fields.insert(ident.clone(), &p.name) {
                self.diags.push(
                    &self.doc.file,
                    &p.field.pointer,
                    format!(
                        "properties {other:?} and {:?} both become the Rust field {ident}",
                        p.name
                    ),
                );
            }
            let parent = name.trim_end_matches('_');
            self.field(
                &p.field,
                &format!("{parent}{}", camel(&p.name)),
                Claim::Invented,
            );
        }
    }

    /// Names the inline types inside a field. A def or body schema always
    /// needs its name (a type alias for primitives); an inline field only
    /// when it defines a struct or an enum.
    fn field(&mut self, field: &Field, name: &str, claim: Claim) {
        let named = !matches!(claim, Claim::Invented);
        match &field.ty {
            FieldType::Object(o) => self.object(o, name, claim),
            FieldType::Union(u) => {
                self.name_type(&field.pointer, name, claim, "Union");
                if let Err(e) = union_variants(&u.refs, !u.closed) {
                    self.diags.push(&self.doc.file, &field.pointer, e);
                }
            }
            FieldType::String(s) if s.value_set().is_some() => {
                self.name_type(&field.pointer, name, claim, "Enum");
                let (values, closed) = s.value_set().expect("checked");
                if let Err(e) = value_variants(values, !closed) {
                    self.diags.push(&self.doc.file, &field.pointer, e);
                }
            }
            FieldType::Array(a) => {
                let name = if named {
                    self.name_type(&field.pointer, name, claim, "")
                } else {
                    name.to_owned()
                };
                let parent = name.trim_end_matches('_');
                self.field(&a.items, &format!("{parent}Item"), Claim::Invented);
            }
            _ if named => {
                self.name_type(&field.pointer, name, claim, "");
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers() {
        assert_eq!(snake_ident("getThing"), "get_thing");
        assert_eq!(snake_ident("type"), "r#type");
        assert_eq!(snake_ident("self"), "self_");
        assert_eq!(snake_ident("3d"), "_3d");
        assert_eq!(camel("reasonSpam"), "ReasonSpam");
        assert_eq!(camel("!hide"), "Hide");
        assert_eq!(camel("3d"), "V3d");
    }

    #[test]
    fn variant_names_disambiguate() {
        let v = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            value_variants(&v(&["com.example.defs#reasonSpam", "other"]), true).unwrap(),
            ["ReasonSpam", "OtherValue"]
        );
        assert_eq!(
            union_variants(
                &v(&["a.b.images#view", "a.b.video#view", "a.b.post#main"]),
                true
            )
            .unwrap(),
            ["ImagesView", "VideoView", "Post"]
        );
        assert!(value_variants(&v(&["hide", "Hide"]), false).is_err());
    }
}
