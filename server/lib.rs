//! The catbird-mls delivery service. It implements the handler traits that
//! `codegen` writes into the `catbird-generated` crate from `lexicon/`.
//!
//! The service itself lands with the service-foundation work; for now the
//! crate only ties the build to the generated code (see `build.rs`).

pub use catbird_generated as generated;

/// The service's version, as reported by `--version` and health checks.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
