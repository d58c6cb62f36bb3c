//! The lexicon compiler: AT Protocol lexicon JSON in, typed Rust out.
//!
//! The pipeline, one module per stage:
//! [`load`] (JSON -> [`model`]) -> [`resolve`] (catalog, refs, recursion) ->
//! [`plan`] (Rust names, modules, collisions) -> [`emit`] (quote -> syn ->
//! prettyplease) -> [`write`](mod@write) (deterministic files, `--check`).
//!
//! [`digest`] is the only part the service's build script needs, so it is
//! the only one compiled without the `cli` feature.

pub mod digest;

#[cfg(feature = "cli")]
pub mod diagnostics;
#[cfg(feature = "cli")]
pub mod emit;
#[cfg(feature = "cli")]
pub mod load;
#[cfg(feature = "cli")]
pub mod model;
#[cfg(feature = "cli")]
pub mod plan;
#[cfg(feature = "cli")]
pub mod resolve;
#[cfg(feature = "cli")]
pub mod write;

#[cfg(feature = "cli")]
pub use pipeline::{Generated, generate};

#[cfg(feature = "cli")]
mod pipeline {
    use std::path::Path;

    use crate::diagnostics::Diagnostics;
    use crate::{digest, emit, load, plan, resolve, write};

    /// Everything one run produces: the files to write, relative to the
    /// output crate's root.
    pub struct Generated {
        pub files: write::FileSet,
        /// Names the planner chose to avoid a collision (never errors).
        pub notes: Vec<crate::diagnostics::Diagnostic>,
    }

    /// Runs the whole pipeline over a lexicon directory. Every problem found
    /// in any stage before emission is reported, not only the first.
    pub fn generate(lexicon_dir: &Path) -> Result<Generated, Diagnostics> {
        let (documents, mut problems) = load::load_dir(lexicon_dir);
        let (catalog, resolve_problems) = resolve::resolve(&documents);
        problems.extend(resolve_problems);
        problems.into_result(())?;
        let plan = plan::plan(&catalog);
        let digest = digest::lexicon_digest(lexicon_dir).map_err(|e| {
            Diagnostics::single(lexicon_dir, "", format!("cannot read lexicons: {e}"))
        })?;
        let files = emit::emit(&catalog, &plan, &digest);
        let mut notes = plan.notes.clone();
        notes.sort();
        Ok(Generated { files, notes })
    }
}
