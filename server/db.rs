//! The PostgreSQL pool and the embedded migrations.

use std::time::Duration;

use catbird_generated::runtime::Did;
use sqlx::PgPool;

use crate::error::ServiceError;
use sqlx::postgres::PgPoolOptions;

/// The migrations under `migrations/`, compiled into the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Connects with limits that suit a request-per-connection service: a
/// bounded pool, a short acquire timeout so overload shows as errors rather
/// than a pile-up, and recycled idle connections.
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .min_connections(1)
        .acquire_timeout(Duration::from_secs(5))
        .idle_timeout(Duration::from_secs(300))
        .connect(url)
        .await
}

/// Applies every pending migration.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

/// A DID read back from a table: validated on the way in, so a failure here
/// is our bug, not the caller's.
pub fn stored_did(did: &str) -> Result<Did, ServiceError> {
    Did::new(did).map_err(|e| ServiceError::Internal(format!("stored DID {did:?}: {e}")))
}

/// Whether the database answers.
pub async fn reachable(pool: &PgPool) -> bool {
    sqlx::query_scalar!("SELECT 1 AS \"one!\"")
        .fetch_one(pool)
        .await
        .is_ok()
}
