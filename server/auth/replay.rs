//! Replay protection: each token id (`jti`) is accepted once per issuer.
//!
//! A service-auth token is a bearer credential; whoever sees one (a log, a
//! proxy) could send it again until it expires. Remembering every accepted
//! `jti` until its token's expiry closes that window, and after expiry the
//! token fails the `exp` check anyway, so the memory is bounded by the rate
//! of valid requests times the token lifetime.
//!
//! The verifier records a `jti` only after the signature verified, so forged
//! tokens cannot use up someone else's ids.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;

use catbird_generated::runtime::Did;
use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::AuthError;

/// Remembers token ids.
pub trait ReplayStore: Send + Sync {
    /// Records `jti` from `issuer`, to be remembered until `expires_at`.
    /// `Ok(true)` if this is its first use, `Ok(false)` if it was seen
    /// before (a replay).
    fn first_use(
        &self,
        jti: &str,
        issuer: &Did,
        expires_at: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, AuthError>> + Send;
}

/// Remembers ids in one process's memory: for unit tests and single-process
/// tools. Several service processes must share a [`PgReplayStore`] instead,
/// or a token could be replayed once against each.
#[derive(Debug, Default)]
pub struct MemoryReplayStore {
    seen: Mutex<HashMap<(Did, String), DateTime<Utc>>>,
}

impl MemoryReplayStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl ReplayStore for MemoryReplayStore {
    async fn first_use(
        &self,
        jti: &str,
        issuer: &Did,
        expires_at: DateTime<Utc>,
    ) -> Result<bool, AuthError> {
        let now = Utc::now();
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Amortised cleanup: drop expired ids whenever the map doubles.
        if seen.len() >= 1024 && seen.len().is_power_of_two() {
            seen.retain(|_, expiry| *expiry > now);
        }
        let key = (issuer.clone(), jti.to_owned());
        match seen.get(&key) {
            Some(expiry) if *expiry > now => Ok(false),
            _ => {
                seen.insert(key, expires_at);
                Ok(true)
            }
        }
    }
}

/// Remembers ids in the `auth_jti` table (migration `0001_auth_jti.sql`), so
/// every service process sharing the database sees every use.
#[derive(Debug, Clone)]
pub struct PgReplayStore {
    pool: PgPool,
}

impl PgReplayStore {
    /// A store on `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Deletes the ids whose tokens have expired; returns how many. Run it
    /// periodically (the table only grows otherwise).
    pub async fn delete_expired(&self) -> Result<u64, sqlx::Error> {
        let result = sqlx::query!("DELETE FROM auth_jti WHERE expires_at < now()")
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected())
    }
}

impl ReplayStore for PgReplayStore {
    async fn first_use(
        &self,
        jti: &str,
        issuer: &Did,
        expires_at: DateTime<Utc>,
    ) -> Result<bool, AuthError> {
        // One statement, so two concurrent uses cannot both win: the insert
        // succeeds for a new id; an existing row is only taken over if it
        // has expired (an issuer reusing an id after its old token's expiry
        // is not a replay) and cleanup has not removed it yet.
        let result = sqlx::query!(
            "INSERT INTO auth_jti (jti, issuer, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (issuer, jti) DO UPDATE SET expires_at = EXCLUDED.expires_at \
             WHERE auth_jti.expires_at < now()",
            jti,
            issuer.as_str(),
            expires_at,
        )
        .execute(&self.pool)
        .await
        .map_err(|error| super::storage_failure("recording a token id", &error))?;
        Ok(result.rows_affected() == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_store_accepts_each_id_once_per_issuer() {
        let store = MemoryReplayStore::new();
        let alice = Did::new("did:plc:alice").unwrap();
        let bob = Did::new("did:plc:bob").unwrap();
        let later = Utc::now() + chrono::Duration::minutes(1);
        assert!(store.first_use("a", &alice, later).await.unwrap());
        assert!(!store.first_use("a", &alice, later).await.unwrap());
        assert!(store.first_use("a", &bob, later).await.unwrap());
        assert!(store.first_use("b", &alice, later).await.unwrap());
    }

    #[tokio::test]
    async fn memory_store_forgets_expired_ids() {
        let store = MemoryReplayStore::new();
        let alice = Did::new("did:plc:alice").unwrap();
        let past = Utc::now() - chrono::Duration::seconds(1);
        assert!(store.first_use("a", &alice, past).await.unwrap());
        assert!(store.first_use("a", &alice, past).await.unwrap());
    }
}
