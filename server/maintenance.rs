//! Periodic cleanup: rows that can no longer matter are deleted, so tables
//! do not grow without bound.

use std::time::Duration;

use sqlx::PgPool;

use crate::auth::PgReplayStore;
use crate::keypackages;

/// One cleanup pass; returns how many rows went, for logs and tests.
pub async fn run_once(db: &PgPool) -> Result<Cleaned, sqlx::Error> {
    Ok(Cleaned {
        token_ids: PgReplayStore::new(db.clone()).delete_expired().await?,
        key_packages: keypackages::delete_expired_unused(db).await?,
    })
}

/// What a cleanup pass deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cleaned {
    pub token_ids: u64,
    pub key_packages: u64,
}

/// Runs [`run_once`] every `interval` until the task is dropped. A failed
/// pass is logged and retried at the next tick.
pub async fn run_periodically(db: PgPool, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match run_once(&db).await {
            Ok(cleaned) => tracing::debug!(?cleaned, "cleanup pass"),
            Err(error) => tracing::warn!(%error, "cleanup pass failed"),
        }
    }
}
