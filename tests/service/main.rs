//! The service's integration tests, one binary: a real server per test on a
//! loopback port, over its own PostgreSQL database (`#[sqlx::test]` on the
//! cluster of `scripts/pg-start`), driven by the client SDK
//! (`catbird-mls-client`) and plain HTTP. One module per area; `common` is
//! the harness.

mod common;

mod audit_and_rollout;
mod auth;
mod bad_input;
mod concurrency;
mod engine;
mod faults;
mod group_append;
mod idempotency;
mod key_package_use;
mod keypackages;
mod layers;
mod lifecycle;
mod operations;
mod operator;
mod rate_limits;
mod realtime;
mod rejoin;
mod replayed_messages;
mod replicas;
mod welcomes;
