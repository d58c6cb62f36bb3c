//! Stage 3: Rust names. Every NSID gets a module path, every def and every
//! inline type that needs a name (objects, unions, strings with a value set)
//! gets a type name, keyed by the JSON pointer of the node it comes from.
//! Names that collide after case conversion are disambiguated
//! deterministically (the rules: README, "Names"), never refused; every rename
//! is reported as a note.

use std::collections::{BTreeMap, HashMap, HashSet};

use heck::{ToShoutySnakeCase, ToSnakeCase, ToUpperCamelCase};

use crate::model::*;
use crate::resolve::Catalog;

/// Names the emitter looks up; computed once, collision-checked.
pub struct Plan {
    /// NSID -> module path segments below `crate::lexicons`.
    modules: HashMap<String, Vec<String>>,
    /// (NSID, JSON pointer) -> Rust type name (or constant name, for tokens).
    types: HashMap<(String, String), String>,
    /// (NSID, property pointer) -> Rust field name.
    fields: HashMap<(String, String), String>,
    /// (NSID, object pointer) -> the names of its `extra` and `type_tag` fields.
    specials: HashMap<(String, String), (String, String)>,
    /// Every rename made to avoid a collision, for the run's notes.
    pub notes: Vec<crate::diagnostics::Diagnostic>,
    /// (NSID, JSON pointer) -> the renames made there, for the docs.
    renames: HashMap<(String, String), String>,
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

    /// The renames made for the node at `pointer`, if any (for its docs).
    pub fn rename_note(&self, nsid: &str, pointer: &str) -> Option<&str> {
        self.renames
            .get(&(nsid.to_owned(), pointer.to_owned()))
            .map(String::as_str)
    }

    /// The field name planned for the property whose field is at `pointer`.
    pub fn field_name(&self, nsid: &str, pointer: &str) -> &str {
        self.fields
            .get(&(nsid.to_owned(), pointer.to_owned()))
            .unwrap_or_else(|| panic!("no field planned for {nsid}#{pointer}"))
    }

    /// The names of the undeclared-fields field and the record `$type` field
    /// of the object at `pointer`.
    pub fn special_fields(&self, nsid: &str, pointer: &str) -> (&str, &str) {
        let (extra, type_tag) = self
            .specials
            .get(&(nsid.to_owned(), pointer.to_owned()))
            .unwrap_or_else(|| panic!("no object planned for {nsid}#{pointer}"));
        (extra, type_tag)
    }
}

/// `base`, or `base` + `sep` + the first number from 2 up that is not taken.
fn first_free(base: &str, sep: &str, taken: impl Fn(&str) -> bool) -> String {
    if !taken(base) {
        return base.to_owned();
    }
    (2..)
        .map(|n| format!("{base}{sep}{n}"))
        .find(|name| !taken(name))
        .expect("some suffix is free")
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
pub fn value_variants(values: &[String], open: bool) -> Vec<String> {
    value_variants_noted(values, open).0
}

/// [`value_variants`], and the indices of the values that got a numeric suffix.
fn value_variants_noted(values: &[String], open: bool) -> (Vec<String>, Vec<usize>) {
    let short = |v: &str| camel(v.rsplit(['#', '.']).next().unwrap_or(v));
    disambiguate(values, short, camel, if open { &["Other"] } else { &[] })
}

/// Variant names for union members (`nsid#view` -> `View`, a main ref ->
/// its NSID name), qualified with the NSID name where they clash.
pub fn union_variants(refs: &[String], open: bool) -> Vec<String> {
    union_variants_noted(refs, open).0
}

/// [`union_variants`], and the indices of the members that got a numeric suffix.
fn union_variants_noted(refs: &[String], open: bool) -> (Vec<String>, Vec<usize>) {
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

/// Short names where they are unique, long names where short ones clash,
/// and where even those clash, in list order, the first keeps the name and
/// each later one gets the first free numeric suffix (`A`, `A2`, `A3`).
fn disambiguate(
    items: &[String],
    short: impl Fn(&str) -> String,
    long: impl Fn(&str) -> String,
    reserved: &[&str],
) -> (Vec<String>, Vec<usize>) {
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
    let mut taken: Vec<String> = reserved.iter().map(|r| (*r).to_owned()).collect();
    let mut suffixed = Vec::new();
    for (i, name) in names.iter_mut().enumerate() {
        let free = first_free(name, "", |n| taken.iter().any(|t| t == n));
        if free != *name {
            suffixed.push(i);
            *name = free;
        }
        taken.push(name.clone());
    }
    (names, suffixed)
}

/// Notes for the variants that got a numeric suffix.
fn variant_notes(
    items: &[String],
    (names, suffixed): (Vec<String>, Vec<usize>),
    what: &str,
) -> Vec<String> {
    suffixed
        .into_iter()
        .map(|i| {
            format!(
                "{what} {:?} is the variant {}: its plain name is already taken",
                items[i], names[i]
            )
        })
        .collect()
}

/// Plans every name. It never fails: collisions are disambiguated and noted
/// (`Plan::notes`; the rules: README, "Names").
pub fn plan(catalog: &Catalog) -> Plan {
    let mut plan = Plan {
        modules: HashMap::new(),
        types: HashMap::new(),
        fields: HashMap::new(),
        specials: HashMap::new(),
        notes: Vec::new(),
        renames: HashMap::new(),
    };
    // Module paths: one per NSID prefix, in NSID order; a prefix whose
    // snake_case module a sibling prefix already has gets `_2`, `_3`, ...
    let mut prefixes: HashMap<String, Vec<String>> = HashMap::new();
    let mut taken: HashSet<Vec<String>> = HashSet::new();
    for doc in &catalog.documents {
        let mut path: Vec<String> = Vec::new();
        let mut original = String::new();
        for segment in doc.id.split('.') {
            if !original.is_empty() {
                original.push('.');
            }
            original.push_str(segment);
            if let Some(known) = prefixes.get(&original) {
                path = known.clone();
                continue;
            }
            let plain = snake_ident(segment);
            let module = first_free(&plain, "_", |name| {
                let mut candidate = path.clone();
                candidate.push(name.to_owned());
                taken.contains(&candidate)
            });
            if module != plain {
                plan.notes.push(crate::diagnostics::Diagnostic {
                    file: doc.file.clone(),
                    pointer: "/id".to_owned(),
                    message: format!(
                        "NSID prefix {original} is the Rust module {module}: {plain} is already taken"
                    ),
                });
            }
            path.push(module);
            taken.insert(path.clone());
            prefixes.insert(original.clone(), path.clone());
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
            taken: BTreeMap::new(),
            types: &mut plan.types,
            fields: &mut plan.fields,
            specials: &mut plan.specials,
            notes: &mut plan.notes,
            renames: &mut plan.renames,
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
    plan
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
    /// Rust type or constant name -> pointer that took it, per namespace.
    taken: BTreeMap<(bool, String), String>,
    types: &'a mut HashMap<(String, String), String>,
    fields: &'a mut HashMap<(String, String), String>,
    specials: &'a mut HashMap<(String, String), (String, String)>,
    notes: &'a mut Vec<crate::diagnostics::Diagnostic>,
    renames: &'a mut HashMap<(String, String), String>,
}

impl Namer<'_> {
    fn document(&mut self) {
        // Fixed names claim first, then def names, so a def can never take a
        // fixed name and a name the planner invents for an inline type can
        // never take a def's.
        for def in &self.doc.defs {
            match &def.def {
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
                Def::Record(_) => {
                    self.claim(false, "NSID", &def.pointer);
                }
                Def::Object(_) | Def::Type(_) | Def::Token(_) => {}
            }
        }
        let mut def_names = HashMap::new();
        for def in &self.doc.defs {
            let (is_type, name) = match &def.def {
                Def::Record(_) | Def::Object(_) | Def::Type(_) => {
                    (true, def_type_name(&def.def, &def.name))
                }
                Def::Token(_) => (false, token_const_name(&self.doc.id, &def.name)),
                _ => continue,
            };
            let name = self.claim(is_type, &name, &def.pointer);
            if !is_type {
                self.types
                    .insert((self.doc.id.clone(), def.pointer.clone()), name.clone());
            }
            def_names.insert(def.pointer.clone(), name);
        }
        for def in &self.doc.defs {
            let type_name = def_names.get(&def.pointer).cloned().unwrap_or_default();
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

    /// Takes a name in the module's type (`true`) or value namespace: `name`
    /// if it is free, else the first free `name2`, `name3`, ... (noted).
    fn claim(&mut self, is_type: bool, name: &str, pointer: &str) -> String {
        let free = first_free(name, "", |n| {
            self.taken.contains_key(&(is_type, n.to_owned()))
        });
        if free != name {
            let other = &self.taken[&(is_type, name.to_owned())];
            self.note(
                pointer,
                format!("named {free}: {name} is already the name of {other}"),
            );
        }
        self.taken
            .insert((is_type, free.clone()), pointer.to_owned());
        free
    }

    fn note(&mut self, pointer: &str, message: String) {
        let docs = self
            .renames
            .entry((self.doc.id.clone(), pointer.to_owned()))
            .or_default();
        if !docs.is_empty() {
            docs.push_str("; ");
        }
        docs.push_str(&message);
        self.notes.push(crate::diagnostics::Diagnostic {
            file: self.doc.file.clone(),
            pointer: pointer.to_owned(),
            message,
        });
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
                self.claim(true, &name, pointer)
            }
        };
        self.types
            .insert((self.doc.id.clone(), pointer.to_owned()), name.clone());
        name
    }

    fn object(&mut self, object: &Object, name: &str, claim: Claim) {
        let name = self.name_type(&object.pointer, name, claim, "Object");
        // Field names in declaration order: the first property keeps its
        // snake_case name, a later one that collides gets `_2`, `_3`, ...
        let mut fields: Vec<String> = Vec::new();
        for p in &object.properties {
            let plain = snake_ident(&p.name);
            let ident = first_free(&plain, "_", |n| fields.iter().any(|f| f == n));
            if ident != plain {
                self.note(
                    &p.field.pointer,
                    format!(
                        "property {:?} is the Rust field {ident}: {plain} is already taken",
                        p.name
                    ),
                );
            }
            self.fields.insert(
                (self.doc.id.clone(), p.field.pointer.clone()),
                ident.clone(),
            );
            fields.push(ident);
            let parent = name.trim_end_matches('_');
            self.field(
                &p.field,
                &format!("{parent}{}", camel(&p.name)),
                Claim::Invented,
            );
        }
        // The undeclared fields and a record's `$type` come after them.
        let extra = first_free("extra", "_", |n| fields.iter().any(|f| f == n));
        let type_tag = first_free("type_tag", "_", |n| fields.iter().any(|f| f == n));
        for (field, plain) in [(&extra, "extra"), (&type_tag, "type_tag")] {
            if field != plain {
                self.note(
                    &object.pointer,
                    format!("the generated field {plain} is {field}: a property is named {plain}"),
                );
            }
        }
        self.specials.insert(
            (self.doc.id.clone(), object.pointer.clone()),
            (extra, type_tag),
        );
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
                let names = union_variants_noted(&u.refs, !u.closed);
                for note in variant_notes(&u.refs, names, "union member") {
                    self.note(&field.pointer, note);
                }
            }
            FieldType::String(s) if s.value_set().is_some() => {
                self.name_type(&field.pointer, name, claim, "Enum");
                let (values, closed) = s.value_set().expect("checked");
                let names = value_variants_noted(values, !closed);
                for note in variant_notes(values, names, "value") {
                    self.note(&field.pointer, note);
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
            value_variants(&v(&["com.example.defs#reasonSpam", "other"]), true),
            ["ReasonSpam", "OtherValue"]
        );
        assert_eq!(value_variants(&v(&["a", "A"]), false), ["A", "A2"]);
        assert_eq!(
            value_variants(&v(&["foo bar", "fooBar", "Other"]), true),
            ["FooBar", "FooBar2", "OtherValue"]
        );
        assert_eq!(
            union_variants(
                &v(&["a.b.images#view", "a.b.video#view", "a.b.post#main"]),
                true
            ),
            ["ImagesView", "VideoView", "Post"]
        );
    }
}
