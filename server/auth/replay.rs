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

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Mutex;

use catbird_generated::runtime::Did;
use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::group_commit::{Batch, GroupCommit};

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
///
/// The ids of concurrent requests are recorded in one statement
/// ([`GroupCommit`]). Each request still waits until its own id is in the
/// table, so a replay on any replica is refused before its handler runs.
#[derive(Debug, Clone)]
pub struct PgReplayStore {
    ids: GroupCommit<TokenIds>,
}

impl PgReplayStore {
    /// A store on `pool`; starts its recording task on the current Tokio
    /// runtime.
    pub fn new(pool: PgPool) -> Self {
        Self {
            ids: GroupCommit::start(TokenIds { pool }),
        }
    }

    /// Deletes the ids whose tokens have expired; returns how many. Run it
    /// periodically (the table only grows otherwise).
    pub async fn delete_expired(pool: &PgPool) -> Result<u64, sqlx::Error> {
        let result = sqlx::query!("DELETE FROM auth_jti WHERE expires_at < now()")
            .execute(pool)
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
        let id = TokenId {
            issuer: issuer.as_str().to_owned(),
            jti: jti.to_owned(),
            expires_at,
        };
        self.ids.submit(id).await.unwrap_or_else(|| {
            Err(AuthError::Internal(
                "the token id recorder has stopped".into(),
            ))
        })
    }
}

/// One request's token id.
#[derive(Debug)]
struct TokenId {
    issuer: String,
    jti: String,
    expires_at: DateTime<Utc>,
}

/// Token ids, written in batches.
struct TokenIds {
    pool: PgPool,
}

impl Batch for TokenIds {
    type Item = TokenId;
    /// First use (`true`) or a replay.
    type Answer = Result<bool, AuthError>;

    /// One statement, so two concurrent uses (in one batch, or on two
    /// replicas) cannot both win: a new id is inserted; an existing row is
    /// only taken over if it has expired (an issuer reusing an id after its
    /// old token's expiry is not a replay) and cleanup has not removed it
    /// yet. The same id twice in a batch wins once.
    async fn write(&self, ids: &[TokenId]) -> Vec<Self::Answer> {
        // `ON CONFLICT DO UPDATE` may not touch a row twice in one
        // statement, so each id goes in once; in the order of the primary
        // key, so that two batches holding the same ids (a replay racing on
        // two replicas) lock them in the same order and cannot deadlock.
        let mut unique: Vec<&TokenId> = ids.iter().collect();
        unique.sort_by(|a, b| (&a.issuer, &a.jti).cmp(&(&b.issuer, &b.jti)));
        unique.dedup_by(|a, b| (&a.issuer, &a.jti) == (&b.issuer, &b.jti));
        let issuers: Vec<&str> = unique.iter().map(|id| id.issuer.as_str()).collect();
        let jtis: Vec<&str> = unique.iter().map(|id| id.jti.as_str()).collect();
        let expiries: Vec<DateTime<Utc>> = unique.iter().map(|id| id.expires_at).collect();
        let recorded = sqlx::query!(
            "INSERT INTO auth_jti (jti, issuer, expires_at) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[]) \
             ON CONFLICT (issuer, jti) DO UPDATE SET expires_at = EXCLUDED.expires_at \
             WHERE auth_jti.expires_at < now() \
             RETURNING issuer, jti",
            &jtis as &[&str],
            &issuers as &[&str],
            &expiries,
        )
        .fetch_all(&self.pool)
        .await;
        let mut new: HashSet<(String, String)> = match recorded {
            Ok(rows) => rows.into_iter().map(|row| (row.issuer, row.jti)).collect(),
            Err(error) => {
                let failure = super::storage_failure("recording token ids", &error);
                return vec![Err(failure); ids.len()];
            }
        };
        // The first of equal ids takes the first use.
        ids.iter()
            .map(|id| Ok(new.remove(&(id.issuer.clone(), id.jti.clone()))))
            .collect()
    }

    fn unavailable(answer: &Self::Answer) -> bool {
        matches!(answer, Err(AuthError::Unavailable(_)))
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
