//! Problems found in lexicons, each tied to a file and a JSON pointer.

use std::fmt;
use std::path::{Path, PathBuf};

/// One problem: where it is (file and RFC 6901 pointer) and what it is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Diagnostic {
    pub file: PathBuf,
    pub pointer: String,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}#{}: {}",
            self.file.display(),
            self.pointer,
            self.message
        )
    }
}

/// All problems of a run, sorted so output is stable.
#[derive(Debug, Default)]
pub struct Diagnostics(Vec<Diagnostic>);

impl Diagnostics {
    pub fn single(file: &Path, pointer: &str, message: impl Into<String>) -> Self {
        let mut all = Self::default();
        all.push(file, pointer, message);
        all
    }

    pub fn push(&mut self, file: &Path, pointer: &str, message: impl Into<String>) {
        self.0.push(Diagnostic {
            file: file.to_path_buf(),
            pointer: pointer.to_owned(),
            message: message.into(),
        });
    }

    pub fn extend(&mut self, other: Diagnostics) {
        self.0.extend(other.0);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter()
    }

    /// `Ok(value)` when nothing was reported, otherwise every problem.
    pub fn into_result<T>(mut self, value: T) -> Result<T, Diagnostics> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            self.0.sort();
            self.0.dedup();
            Err(self)
        }
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.0 {
            writeln!(f, "error: {d}")?;
        }
        write!(f, "{} problem(s) found", self.0.len())
    }
}

/// Appends one reference token to a JSON pointer, escaping `~` and `/`.
pub fn pointer_join(base: &str, token: &str) -> String {
    format!("{base}/{}", token.replace('~', "~0").replace('/', "~1"))
}
