//! The catbird-mls delivery service. It implements the handler traits that
//! `codegen` writes into the `catbird-generated` crate from `lexicon/`.
//!
//! Map: [`config`] (flags and environment) -> [`app`] (the HTTP surface) ->
//! [`service`] (the auth hook and the generated handler trait, routing each
//! method to its area: [`keypackages`], ...). Shared: [`auth`] (service
//! auth), [`device`] (`did#device` identities), [`mls_crypto`] (OpenMLS
//! crypto and cipher suites), [`error`] (typed errors to XRPC errors, in one
//! place), [`db`] (pool, migrations), [`maintenance`] (cleanup jobs),
//! [`telemetry`] (logs, metrics). Around every method: [`ratelimit`],
//! [`idempotency`], [`audit`]; [`rollout`] switches external commits.

pub mod app;
pub mod audit;
pub mod auth;
pub mod config;
pub mod convos;
pub mod db;
pub mod demo;
pub mod device;
pub mod error;
pub mod groups;
pub mod idempotency;
pub mod keypackages;
pub mod maintenance;
pub mod mls_crypto;
pub mod ratelimit;
pub mod rollout;
pub mod service;
pub mod telemetry;

pub use catbird_generated as generated;

/// The service's version, as reported by `--version` and health checks.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
