//! Stage 5: put the generated files on disk, or compare them with what is
//! there (`--check`). Only files that differ are written, and files the
//! generator owns but no longer produces are removed.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Generated files by path relative to the output crate.
pub type FileSet = BTreeMap<PathBuf, String>;

/// The directory (relative to the output crate) the generator owns.
pub const OWNED_DIR: &str = "src/lexicons";

/// How the tree on disk differs from a generated file set.
#[derive(Debug, Default)]
pub struct Drift {
    pub changed: Vec<PathBuf>,
    pub missing: Vec<PathBuf>,
    pub extra: Vec<PathBuf>,
}

impl Drift {
    pub fn is_empty(&self) -> bool {
        self.changed.is_empty() && self.missing.is_empty() && self.extra.is_empty()
    }
}

/// Compares `files` with the tree under `out`.
pub fn compare(out: &Path, files: &FileSet) -> io::Result<Drift> {
    let mut drift = Drift::default();
    for (path, text) in files {
        match fs::read(out.join(path)) {
            Ok(existing) if existing == text.as_bytes() => {}
            Ok(_) => drift.changed.push(path.clone()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => drift.missing.push(path.clone()),
            Err(e) => return Err(e),
        }
    }
    for path in owned_files(out)? {
        if !files.contains_key(&path) {
            drift.extra.push(path);
        }
    }
    Ok(drift)
}

/// Writes what differs and removes stale owned files; returns the drift
/// that was repaired.
pub fn write(out: &Path, files: &FileSet) -> io::Result<Drift> {
    let drift = compare(out, files)?;
    for path in drift.changed.iter().chain(&drift.missing) {
        let target = out.join(path);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::write(&target, &files[path])?;
    }
    for path in &drift.extra {
        fs::remove_file(out.join(path))?;
    }
    remove_empty_dirs(&out.join(OWNED_DIR))?;
    Ok(drift)
}

/// Every `.rs` file under the owned directory, relative to `out`.
fn owned_files(out: &Path) -> io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let root = out.join(OWNED_DIR);
    if root.is_dir() {
        walk(out, &root, &mut found)?;
    }
    found.sort();
    Ok(found)
}

fn walk(out: &Path, dir: &Path, found: &mut Vec<PathBuf>) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            walk(out, &path, found)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path.strip_prefix(out).unwrap_or(&path).to_path_buf());
        }
    }
    Ok(())
}

fn remove_empty_dirs(dir: &Path) -> io::Result<bool> {
    if !dir.is_dir() {
        return Ok(false);
    }
    let mut empty = true;
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if !(path.is_dir() && remove_empty_dirs(&path)?) {
            empty = false;
        }
    }
    if empty {
        fs::remove_dir(dir)?;
    }
    Ok(empty)
}
