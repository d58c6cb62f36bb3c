//! The digest of a lexicon directory, recorded in the generated code so a
//! build can tell that `generated/` no longer matches `lexicon/`, and the
//! digest of each generated file's own text, recorded in its header so a
//! build can tell that a generated file was edited by hand.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The marker that precedes the digest in the generated root module.
pub const DIGEST_MARKER: &str = "// lexicon-digest: ";

/// The marker that precedes a generated file's digest of its own text.
pub const CONTENT_MARKER: &str = "// content-digest: ";

/// SHA-256 (hex) of a generated file's text without its content-digest line.
pub fn content_digest(text: &str) -> String {
    let mut hasher = Sha256::new();
    for line in text.split_inclusive('\n') {
        if !line.starts_with(CONTENT_MARKER) {
            hasher.update(line.as_bytes());
        }
    }
    hex(&hasher.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The `*.rs` files below `dir` (relative to `dir`, sorted) whose recorded
/// content digest is missing or does not match their text: edited by hand.
pub fn edited_files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    collect(dir, dir, "rs", &mut files)?;
    files.sort();
    let mut edited = Vec::new();
    for relative in files {
        let text = fs::read_to_string(dir.join(&relative)).unwrap_or_default();
        let recorded = text
            .lines()
            .find_map(|line| line.strip_prefix(CONTENT_MARKER))
            .map(str::trim);
        if recorded != Some(content_digest(&text).as_str()) {
            edited.push(relative);
        }
    }
    Ok(edited)
}

/// SHA-256 over every `*.json` file under `dir`, in sorted relative-path
/// order, each as `path NUL length NUL bytes`, so renames, moves and edits
/// all change it. Returns lowercase hex.
pub fn lexicon_digest(dir: &Path) -> io::Result<String> {
    let mut files = Vec::new();
    collect_json(dir, dir, &mut files)?;
    files.sort();
    let mut hasher = Sha256::new();
    for relative in &files {
        let bytes = fs::read(dir.join(relative))?;
        let name = relative.to_string_lossy().replace('\\', "/");
        hasher.update(name.as_bytes());
        hasher.update([0]);
        hasher.update(bytes.len().to_string().as_bytes());
        hasher.update([0]);
        hasher.update(&bytes);
    }
    Ok(hex(&hasher.finalize()))
}

/// Every `*.json` file below `dir`, as paths relative to `root`.
pub fn collect_json(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    collect(root, dir, "json", out)
}

/// Every file with `extension` below `dir`, as paths relative to `root`.
fn collect(root: &Path, dir: &Path, extension: &str, out: &mut Vec<PathBuf>) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect(root, &path, extension, out)?;
        } else if path.extension().is_some_and(|e| e == extension) {
            out.push(path.strip_prefix(root).unwrap_or(&path).to_path_buf());
        }
    }
    Ok(())
}

/// The digest recorded in a generated root module's text, if any.
pub fn recorded_digest(root_module: &str) -> Option<&str> {
    root_module
        .lines()
        .find_map(|line| line.strip_prefix(DIGEST_MARKER))
        .map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_changes_with_content_and_name() {
        let dir = std::env::temp_dir().join(format!("codegen-digest-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("a")).unwrap();
        fs::write(dir.join("a/x.json"), "{}").unwrap();
        let first = lexicon_digest(&dir).unwrap();
        assert_eq!(first, lexicon_digest(&dir).unwrap());
        fs::write(dir.join("a/x.json"), "{ }").unwrap();
        let edited = lexicon_digest(&dir).unwrap();
        assert_ne!(first, edited);
        fs::rename(dir.join("a/x.json"), dir.join("a/y.json")).unwrap();
        assert_ne!(edited, lexicon_digest(&dir).unwrap());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn hand_edits_are_found() {
        let dir = std::env::temp_dir().join(format!("codegen-edited-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("a")).unwrap();
        let body = "// @generated\n\npub struct X;\n";
        let stamped = format!("{CONTENT_MARKER}{}\n{body}", content_digest(body));
        fs::write(dir.join("a/x.rs"), &stamped).unwrap();
        fs::write(dir.join("y.rs"), &stamped).unwrap();
        assert!(edited_files(&dir).unwrap().is_empty());
        fs::write(dir.join("a/x.rs"), stamped.replace("X", "Y")).unwrap();
        fs::write(dir.join("y.rs"), body).unwrap();
        assert_eq!(
            edited_files(&dir).unwrap(),
            [PathBuf::from("a/x.rs"), PathBuf::from("y.rs")]
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn recorded_digest_is_found() {
        let text = "// @generated\n// lexicon-digest: abc123\n\npub mod x;\n";
        assert_eq!(recorded_digest(text), Some("abc123"));
        assert_eq!(recorded_digest("pub mod x;"), None);
    }
}
