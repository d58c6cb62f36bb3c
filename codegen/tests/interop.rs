//! The AT Protocol interop lexicon vectors (`interop/lexicon/lexicon-*.json`,
//! vendored, see `interop/SOURCE.md`): every "valid" document generates, every
//! "invalid" one is refused. Prints one `interop <file>: total N, agreed M`
//! line per vector file (`scripts/interop` collects them).

use std::path::{Path, PathBuf};

use serde_json::Value;

fn vectors(file: &str) -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../interop")
        .join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).expect("a JSON array of vectors")
}

/// Generates one vector's lexicon alone, written where its `id` says (so
/// only the document's own problems can refuse it).
fn generates(lexicon: &Value, case: &str) -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("codegen-interop-{}-{case}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let relative: PathBuf = match lexicon["id"].as_str() {
        Some(id) => format!("{}.json", id.replace('.', "/")).into(),
        None => "vector.json".into(),
    };
    let path = dir.join(relative);
    std::fs::create_dir_all(path.parent().expect("has a parent")).expect("temp dir");
    std::fs::write(&path, serde_json::to_vec(lexicon).expect("serializes")).expect("writes");
    let result = codegen::generate(&dir)
        .map(|_| ())
        .map_err(|e| e.to_string());
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run(file: &str, valid: bool) {
    let vectors = vectors(file);
    let mut disagreements = Vec::new();
    for (i, vector) in vectors.iter().enumerate() {
        let name = vector["name"].as_str().unwrap_or("?");
        match (
            generates(&vector["lexicon"], &format!("{valid}-{i}")),
            valid,
        ) {
            (Ok(()), true) | (Err(_), false) => {}
            (Ok(()), false) => disagreements.push(format!("{name}: generated")),
            (Err(e), true) => disagreements.push(format!("{name}: refused: {e}")),
        }
    }
    println!(
        "interop {file}: total {}, agreed {}",
        vectors.len(),
        vectors.len() - disagreements.len()
    );
    assert!(disagreements.is_empty(), "{file}: {disagreements:#?}");
}

#[test]
fn valid_lexicons_generate() {
    run("lexicon/lexicon-valid.json", true);
}

#[test]
fn invalid_lexicons_are_refused() {
    run("lexicon/lexicon-invalid.json", false);
}
