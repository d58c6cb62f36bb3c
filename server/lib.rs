//! The catbird-mls delivery service. It implements the handler traits that
//! `codegen` writes into the `catbird-generated` crate from `lexicon/`.
//!
//! Map: [`config`] (flags and environment) -> [`state`] (what handlers
//! share) -> [`app`] (the HTTP surface) -> [`service`] (the auth hook and
//! the generated handler trait, routing each method to its area:
//! [`keypackages`], [`convos`]). Shared: [`auth`] (service auth),
//! [`error`] (typed errors to XRPC errors, in one place), [`db`] (pool,
//! migrations), [`connections`] (connection limits and timeouts), [`maintenance`] (cleanup jobs), [`telemetry`] (logs,
//! metrics). Around every method: [`ratelimit`], [`idempotency`],
//! [`audit`]; [`rollout`] switches external commits; [`realtime`] streams
//! the log to devices. The MLS engine,
//! `did#device` identities and cipher suites come from the pure crate
//! `catbird-mls-core` (re-exported as [`groups`], [`device`],
//! [`mls_crypto`]). No two modules use each other (checked by the
//! `layers` test).

pub mod app;
pub mod audit;
pub mod auth;
pub mod config;
pub mod connections;
pub mod convos;
pub mod db;
pub mod did_web;
pub mod error;
pub mod group_commit;
pub mod idempotency;
pub mod keypackages;
pub mod maintenance;
pub mod ratelimit;
pub mod realtime;
pub mod rollout;
pub mod service;
pub mod state;
pub mod telemetry;

pub use catbird_generated as generated;
/// The pure parts shared with clients, under the names the service uses.
pub use catbird_mls_core::{device, groups, mls_crypto};

/// The service's version, as reported by `--version` and health checks.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
