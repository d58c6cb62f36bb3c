//! The digest of a lexicon directory, recorded in the generated code so a
//! build can tell that `generated/` no longer matches `lexicon/`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The marker that precedes the digest in the generated root module.
pub const DIGEST_MARKER: &str = "// lexicon-digest: ";

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
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Every `*.json` file below `dir`, as paths relative to `root`.
pub fn collect_json(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_json(root, &path, out)?;
        } else if path.extension().is_some_and(|e| e == "json") {
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
    fn recorded_digest_is_found() {
        let text = "// @generated\n// lexicon-digest: abc123\n\npub mod x;\n";
        assert_eq!(recorded_digest(text), Some("abc123"));
        assert_eq!(recorded_digest("pub mod x;"), None);
    }
}
