//! Typed AT Protocol code for the lexicons under `lexicon/`.
//!
//! Two halves live here:
//!
//! - [`lexicons`] is written by the `codegen` binary from the lexicon JSON.
//!   Nobody edits it by hand; `codegen --check` fails when it is stale.
//! - [`runtime`] is the small hand-written library the generated code is
//!   built on: validated string formats, the lexicon data-model types
//!   (`$bytes`, `$link`, blobs, `unknown`), serde helpers for nullable fields
//!   and `$type` unions, and the `Validate` trait with its constraint checks.
//!
//! The runtime keeps the generated code small and declarative: every rule the
//! AT Protocol specs impose on data lives once, here, with its tests, instead
//! of being re-emitted into every generated module.

// Generated files are formatted by the generator (prettyplease), not rustfmt.
#[rustfmt::skip]
pub mod lexicons;
pub mod runtime;
