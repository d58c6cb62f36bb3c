//! The lexicon loader (and the rest of the codegen pipeline behind it):
//! any document must either generate or be refused with diagnostics that
//! each name a file and say what is wrong; never a panic.
//!
//! Seeds are the project's lexicons (`lexicon/`) and the codegen fixtures
//! (`codegen/fixtures/lexicon/`). Each input is written into a scratch
//! lexicon directory at the path its `id` asks for, beside the documents
//! other seeds refer to (so a seed's refs resolve and the whole pipeline,
//! emission included, runs), and `codegen::generate` runs over it.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use codegen::load::is_nsid;
use serde_json::Value;

use crate::{Outcome, Shape, Target, Violation};

pub struct LexiconTarget {
    seeds: Vec<Vec<u8>>,
    /// Referenced documents by their path in the scratch directory.
    base: Vec<(PathBuf, Vec<u8>)>,
    scratch: tempfile::TempDir,
}

/// The trees of valid lexicons the seeds come from.
const SEED_TREES: &[&str] = &["lexicon", "codegen/fixtures/lexicon"];

impl LexiconTarget {
    pub fn new() -> Self {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut seeds = Vec::new();
        for tree in SEED_TREES {
            let root = repo.join(tree);
            let mut files = Vec::new();
            codegen::digest::collect_json(&root, &root, &mut files)
                .unwrap_or_else(|error| panic!("reading {}: {error}", root.display()));
            files.sort();
            for file in files {
                seeds.push(fs::read(root.join(&file)).expect("a readable lexicon"));
            }
        }
        let referenced: BTreeSet<String> = seeds
            .iter()
            .filter_map(|seed| serde_json::from_slice::<Value>(seed).ok())
            .flat_map(|document| {
                let mut refs = Vec::new();
                collect_ref_nsids(&document, &mut refs);
                refs
            })
            .collect();
        let base = seeds
            .iter()
            .filter_map(|seed| {
                let id = document_id(seed)?;
                referenced
                    .contains(&id)
                    .then(|| (path_for_id(&id), seed.clone()))
            })
            .collect();
        let target = Self {
            seeds,
            base,
            scratch: tempfile::tempdir().expect("a scratch directory"),
        };
        target.reset();
        target
    }

    /// The scratch directory with only the referenced documents.
    fn reset(&self) {
        let root = self.scratch.path();
        if root.exists() {
            fs::remove_dir_all(root).expect("clearing the scratch directory");
        }
        for (path, bytes) in &self.base {
            write(&root.join(path), bytes);
        }
    }
}

impl Default for LexiconTarget {
    fn default() -> Self {
        Self::new()
    }
}

impl Target for LexiconTarget {
    fn name(&self) -> &'static str {
        "lexicon"
    }

    fn seeds(&self) -> &[Vec<u8>] {
        &self.seeds
    }

    fn shape(&self) -> Shape {
        Shape::Json
    }

    fn dictionary(&self) -> Vec<Vec<u8>> {
        [
            "type",
            "ref",
            "refs",
            "closed",
            "knownValues",
            "enum",
            "const",
            "default",
            "format",
            "maxLength",
            "minLength",
            "maxGraphemes",
            "minimum",
            "maximum",
            "required",
            "nullable",
            "properties",
            "items",
            "parameters",
            "input",
            "output",
            "encoding",
            "schema",
            "errors",
            "record",
            "key",
            "query",
            "procedure",
            "subscription",
            "message",
            "object",
            "union",
            "token",
            "bytes",
            "cid-link",
            "blob",
            "unknown",
            "string",
            "integer",
            "boolean",
            "array",
            "params",
            "permission-set",
            "#main",
            "main",
            "lexicon",
            "id",
            "defs",
            "did",
            "nsid",
            "at-uri",
            "datetime",
            "tid",
            "record-key",
            "type",
            "self",
            "tid",
            "any",
        ]
        .iter()
        .map(|word| word.as_bytes().to_vec())
        .collect()
    }

    fn check(&self, input: &[u8]) -> Result<Outcome, Violation> {
        let path = document_id(input)
            .filter(|id| is_nsid(id))
            .map_or_else(|| PathBuf::from("fuzz/input.json"), |id| path_for_id(&id));
        let file = self.scratch.path().join(&path);
        write(&file, input);
        let result = codegen::generate(self.scratch.path());
        self.reset();
        match result {
            Ok(_) => Ok(Outcome::Accepted),
            Err(problems) => {
                if problems.is_empty() {
                    return Err(Violation("refused without a diagnostic".into()));
                }
                match problems.iter().find(|d| d.message.trim().is_empty()) {
                    Some(empty) => Err(Violation(format!(
                        "a diagnostic without a message at {}#{}",
                        empty.file.display(),
                        empty.pointer
                    ))),
                    None => Ok(Outcome::Refused),
                }
            }
        }
    }
}

fn document_id(bytes: &[u8]) -> Option<String> {
    let document: Value = serde_json::from_slice(bytes).ok()?;
    document.get("id")?.as_str().map(str::to_owned)
}

fn path_for_id(id: &str) -> PathBuf {
    PathBuf::from(format!("{}.json", id.replace('.', "/")))
}

/// The NSIDs named by `ref`/`refs` values anywhere in `value`.
fn collect_ref_nsids(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(object) => {
            for (key, child) in object {
                let names: Vec<&str> = match (key.as_str(), child) {
                    ("ref", Value::String(name)) => vec![name],
                    ("refs", Value::Array(names)) => {
                        names.iter().filter_map(Value::as_str).collect()
                    }
                    _ => Vec::new(),
                };
                out.extend(
                    names
                        .into_iter()
                        .filter_map(|name| name.split('#').next())
                        .filter(|nsid| !nsid.is_empty())
                        .map(str::to_owned),
                );
                collect_ref_nsids(child, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|item| collect_ref_nsids(item, out)),
        _ => {}
    }
}

fn write(path: &Path, bytes: &[u8]) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).expect("a scratch lexicon directory");
    }
    fs::write(path, bytes).expect("writing a scratch lexicon");
}
