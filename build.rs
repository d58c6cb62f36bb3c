//! Fails the build when `lexicon/` changed since `generated/` was written,
//! so a lexicon edit can never ship with stale types, and when a generated
//! file was edited by hand (each records the digest of its own text).

use std::path::Path;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lexicons = root.join("lexicon");
    let generated = root.join("generated/src/lexicons");
    let generated_root = generated.join("mod.rs");
    println!("cargo::rerun-if-changed={}", lexicons.display());
    // A directory: cargo reruns this when any file below it changes.
    println!("cargo::rerun-if-changed={}", generated.display());

    let current = codegen::digest::lexicon_digest(&lexicons)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", lexicons.display()));
    let text = std::fs::read_to_string(&generated_root).unwrap_or_default();
    let recorded = codegen::digest::recorded_digest(&text);
    if recorded != Some(current.as_str()) {
        println!(
            "cargo::error=lexicon/ changed since generated/ was written: run `cargo run --bin codegen` and commit the result"
        );
    }
    let edited = codegen::digest::edited_files(&generated)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", generated.display()));
    for file in edited {
        println!(
            "cargo::error=generated/src/lexicons/{} was edited by hand (it is not what codegen wrote): run `cargo run --bin codegen` and commit the result",
            file.display()
        );
    }
}
