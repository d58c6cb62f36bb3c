//! Stage 2: one catalog of every def by `nsid#name`; every ref checked;
//! recursive type cycles found (they need a `Box` to have a finite size).

use std::collections::{HashMap, HashSet};

use crate::diagnostics::Diagnostics;
use crate::model::*;

/// All documents, indexed by def.
pub struct Catalog {
    pub documents: Vec<Document>,
    index: HashMap<String, (usize, usize)>,
    /// Strongly connected component of each def in the by-value reference
    /// graph; a def is only in `cyclic` if its component is a cycle.
    component: HashMap<String, usize>,
    cyclic: HashSet<usize>,
}

impl Catalog {
    /// The document and def a normalised `nsid#name` ref points at.
    pub fn get(&self, full_ref: &str) -> Option<(&Document, &NamedDef)> {
        let &(d, i) = self.index.get(full_ref)?;
        let doc = &self.documents[d];
        Some((doc, &doc.defs[i]))
    }

    /// Whether `owner` holding `target` by value closes a cycle, so the
    /// reference must be boxed.
    pub fn needs_box(&self, owner: &str, target: &str) -> bool {
        match (self.component.get(owner), self.component.get(target)) {
            (Some(a), Some(b)) => a == b && self.cyclic.contains(a),
            _ => false,
        }
    }
}

/// Builds the catalog; its problems come back beside it so a run can report
/// them together with those of the other stages.
pub fn resolve(documents: &[Document]) -> (Catalog, Diagnostics) {
    let mut index = HashMap::new();
    for (d, doc) in documents.iter().enumerate() {
        for (i, def) in doc.defs.iter().enumerate() {
            index.insert(format!("{}#{}", doc.id, def.name), (d, i));
        }
    }
    let mut catalog = Catalog {
        documents: documents.to_vec(),
        index,
        component: HashMap::new(),
        cyclic: HashSet::new(),
    };
    let mut diags = Diagnostics::default();
    let mut edges: HashMap<String, Vec<String>> = HashMap::new();
    for doc in &catalog.documents {
        for def in &doc.defs {
            let key = format!("{}#{}", doc.id, def.name);
            let mut checker = RefChecker {
                catalog: &catalog,
                doc,
                diags: &mut diags,
                by_value: Vec::new(),
            };
            checker.def(&def.def);
            edges.insert(key, checker.by_value);
        }
    }
    let (component, cyclic) = strongly_connected(&edges);
    catalog.component = component;
    catalog.cyclic = cyclic;
    (catalog, diags)
}

struct RefChecker<'a> {
    catalog: &'a Catalog,
    doc: &'a Document,
    diags: &'a mut Diagnostics,
    /// Defs this def holds by value (not behind a `Vec`).
    by_value: Vec<String>,
}

impl RefChecker<'_> {
    fn def(&mut self, def: &Def) {
        match def {
            Def::Record(r) => self.object(&r.object, true),
            Def::Query(m) | Def::Procedure(m) => {
                if let Some(p) = &m.parameters {
                    self.object(p, true);
                }
                for body in m.input.iter().chain(&m.output) {
                    if let Some(schema) = &body.schema {
                        self.field(schema, true);
                    }
                }
            }
            Def::Subscription(s) => {
                if let Some(p) = &s.parameters {
                    self.object(p, true);
                }
                if let Some(m) = &s.message {
                    self.field(m, true);
                }
            }
            Def::Object(o) => self.object(o, true),
            Def::Type(f) => self.field(f, true),
            Def::PermissionSet(_) | Def::Token(_) => {}
        }
    }

    fn object(&mut self, object: &Object, by_value: bool) {
        for p in &object.properties {
            self.field(&p.field, by_value);
        }
    }

    fn field(&mut self, field: &Field, by_value: bool) {
        match &field.ty {
            FieldType::Ref(target) => {
                let pointer = format!("{}/ref", field.pointer);
                if let Some(kind) = self.target(target, &pointer, "ref") {
                    if kind == "token" {
                        self.diags.push(
                            &self.doc.file,
                            &pointer,
                            format!("ref to token {target}: tokens are values, refer to them with knownValues"),
                        );
                    } else if by_value {
                        self.by_value.push(target.clone());
                    }
                }
            }
            FieldType::Union(u) => {
                for (i, target) in u.refs.iter().enumerate() {
                    let pointer = format!("{}/refs/{i}", field.pointer);
                    if let Some(kind) = self.target(target, &pointer, "union member") {
                        if kind != "object" && kind != "record" {
                            self.diags.push(
                                &self.doc.file,
                                &pointer,
                                format!("union member {target} is a {kind}; union members must be objects or records"),
                            );
                        } else if by_value {
                            self.by_value.push(target.clone());
                        }
                    }
                }
            }
            FieldType::Array(a) => self.field(&a.items, false),
            FieldType::Object(o) => self.object(o, by_value),
            _ => {}
        }
    }

    /// The kind of the def a ref names, or a diagnostic if it names nothing
    /// a value can have.
    fn target(&mut self, target: &str, pointer: &str, what: &str) -> Option<&'static str> {
        let Some((_, def)) = self.catalog.get(target) else {
            self.diags.push(
                &self.doc.file,
                pointer,
                format!("dangling {what}: no def {target}"),
            );
            return None;
        };
        let kind = def.def.kind();
        if matches!(
            kind,
            "query" | "procedure" | "subscription" | "permission-set"
        ) {
            self.diags.push(
                &self.doc.file,
                pointer,
                format!("{what} to {target}, which is a {kind}"),
            );
            return None;
        }
        Some(kind)
    }
}

/// Tarjan's algorithm, iteratively. Returns each node's component and the
/// set of components that contain a cycle (more than one node, or a
/// self-loop).
fn strongly_connected(
    edges: &HashMap<String, Vec<String>>,
) -> (HashMap<String, usize>, HashSet<usize>) {
    let mut nodes: Vec<&String> = edges.keys().collect();
    nodes.sort();
    let mut index_of: HashMap<&str, usize> = HashMap::new();
    let mut low: HashMap<&str, usize> = HashMap::new();
    let mut on_stack: HashSet<&str> = HashSet::new();
    let mut stack: Vec<&str> = Vec::new();
    let mut component: HashMap<String, usize> = HashMap::new();
    let mut cyclic = HashSet::new();
    let mut next = 0;
    let mut components = 0;
    let empty = Vec::new();
    for &root in &nodes {
        if index_of.contains_key(root.as_str()) {
            continue;
        }
        // (node, next edge to visit)
        let mut work: Vec<(&str, usize)> = vec![(root.as_str(), 0)];
        while let Some(&mut (node, ref mut edge)) = work.last_mut() {
            if *edge == 0 && !index_of.contains_key(node) {
                index_of.insert(node, next);
                low.insert(node, next);
                next += 1;
                stack.push(node);
                on_stack.insert(node);
            }
            let targets = edges.get(node).unwrap_or(&empty);
            if let Some(target) = targets.get(*edge) {
                *edge += 1;
                let target = target.as_str();
                if !edges.contains_key(target) {
                    continue;
                }
                if !index_of.contains_key(target) {
                    work.push((target, 0));
                } else if on_stack.contains(target) {
                    let t = index_of[target];
                    let l = low.get_mut(node).expect("visited");
                    *l = (*l).min(t);
                }
                continue;
            }
            work.pop();
            if let Some(&(parent, _)) = work.last() {
                let l = low[node];
                let p = low.get_mut(parent).expect("visited");
                *p = (*p).min(l);
            }
            if low[node] == index_of[node] {
                let mut members = Vec::new();
                while let Some(member) = stack.pop() {
                    on_stack.remove(member);
                    members.push(member);
                    if member == node {
                        break;
                    }
                }
                let self_loop = targets.iter().any(|t| t == node);
                if members.len() > 1 || self_loop {
                    cyclic.insert(components);
                }
                for m in members {
                    component.insert(m.to_owned(), components);
                }
                components += 1;
            }
        }
    }
    (component, cyclic)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(pairs: &[(&str, &[&str])]) -> HashMap<String, Vec<String>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
            .collect()
    }

    #[test]
    fn finds_cycles_and_self_loops() {
        let g = graph(&[
            ("a", &["b"]),
            ("b", &["c"]),
            ("c", &["a"]),
            ("d", &["d"]),
            ("e", &["a"]),
        ]);
        let (comp, cyclic) = strongly_connected(&g);
        assert_eq!(comp["a"], comp["b"]);
        assert_eq!(comp["b"], comp["c"]);
        assert!(cyclic.contains(&comp["a"]));
        assert!(cyclic.contains(&comp["d"]));
        assert!(!cyclic.contains(&comp["e"]));
        assert_ne!(comp["e"], comp["a"]);
    }
}
