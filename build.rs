//! Fails the build when `lexicon/` changed since `generated/` was written,
//! so a lexicon edit can never ship with stale types.

use std::path::Path;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lexicons = root.join("lexicon");
    let generated_root = root.join("generated/src/lexicons/mod.rs");
    println!("cargo::rerun-if-changed={}", lexicons.display());
    println!("cargo::rerun-if-changed={}", generated_root.display());

    let current = codegen::digest::lexicon_digest(&lexicons)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", lexicons.display()));
    let text = std::fs::read_to_string(&generated_root).unwrap_or_default();
    let recorded = codegen::digest::recorded_digest(&text);
    if recorded != Some(current.as_str()) {
        println!(
            "cargo::error=lexicon/ changed since generated/ was written: run `cargo run --bin codegen` and commit the result"
        );
    }
}
