//! Periodic cleanup: rows that can no longer matter are deleted, so tables
//! do not grow without bound.

use std::sync::Arc;
use std::time::Duration;

use crate::auth::PgReplayStore;
use crate::state::AppState;
use crate::{audit, idempotency, keypackages, realtime};

/// One cleanup pass; returns how many rows went, for logs and tests. Idle
/// rate-limit budgets are dropped too.
pub async fn run_once(state: &AppState) -> Result<Cleaned, sqlx::Error> {
    let db = &state.db;
    state.limits.forget_idle();
    Ok(Cleaned {
        token_ids: PgReplayStore::delete_expired(db).await?,
        key_packages: keypackages::delete_expired_unused(db).await?,
        idempotency_keys: idempotency::delete_expired(db).await?,
        audit_events: audit::delete_older_than(db, state.audit_retention).await?,
        stream_tickets: realtime::store::delete_expired_tickets(db).await?,
    })
}

/// What a cleanup pass deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cleaned {
    pub token_ids: u64,
    pub key_packages: u64,
    pub idempotency_keys: u64,
    pub audit_events: u64,
    pub stream_tickets: u64,
}

/// Runs [`run_once`] every `interval` until the task is dropped. A failed
/// pass is logged and retried at the next tick.
pub async fn run_periodically(state: Arc<AppState>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match run_once(&state).await {
            Ok(cleaned) => tracing::debug!(?cleaned, "cleanup pass"),
            Err(error) => tracing::warn!(%error, "cleanup pass failed"),
        }
    }
}
