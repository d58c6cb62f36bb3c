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
use tokio::sync::{mpsc, oneshot};

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
/// Ids are recorded in batches, as a database group-commits: one task owns
/// the inserts; while its statement runs, the ids of other requests queue,
/// and the next statement records all of them. Each request still waits
/// until its own id is in the table, so a replay on any replica is refused
/// exactly as before, but under load many requests share one round trip
/// and one transaction instead of each paying for its own.
#[derive(Debug, Clone)]
pub struct PgReplayStore {
    claims: mpsc::Sender<Claim>,
}

/// One request's id, waiting to be recorded.
#[derive(Debug)]
struct Claim {
    jti: String,
    issuer: String,
    expires_at: DateTime<Utc>,
    first_use: oneshot::Sender<Result<bool, AuthError>>,
}

/// The most ids one statement records.
const MAX_BATCH: usize = 256;

impl PgReplayStore {
    /// A store on `pool`; starts its recording task on the current Tokio
    /// runtime. The task ends when the last clone of the store is dropped.
    pub fn new(pool: PgPool) -> Self {
        let (claims, queue) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(record_batches(pool, queue));
        Self { claims }
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
        let gone = || AuthError::Internal("the token id recorder has stopped".into());
        let (first_use, answer) = oneshot::channel();
        let claim = Claim {
            jti: jti.to_owned(),
            issuer: issuer.as_str().to_owned(),
            expires_at,
            first_use,
        };
        self.claims.send(claim).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

/// The recording task: takes whatever has queued (at least one id), records
/// it in one statement, answers each request, and goes again.
async fn record_batches(pool: PgPool, mut queue: mpsc::Receiver<Claim>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let recorded = record(&pool, &batch).await;
        if let Err(AuthError::Unavailable(_)) = &recorded {
            // The ids that queued meanwhile waited as long as this attempt
            // did: answer them with its 503 now rather than make each wait
            // for one more attempt, which would double the time a client
            // waits to learn that the database is down.
            while let Ok(claim) = queue.try_recv() {
                batch.push(claim);
            }
        }
        let mut seen = HashSet::with_capacity(batch.len());
        for claim in batch.drain(..) {
            let key = (claim.issuer, claim.jti);
            // The same id twice in one batch: only its first occurrence
            // can be the first use.
            let first_in_batch = seen.insert(key.clone());
            let answer = match &recorded {
                Ok(new) => Ok(first_in_batch && new.contains(&key)),
                Err(error) => Err(error.clone()),
            };
            // A request that gave up waiting no longer needs the answer.
            let _ = claim.first_use.send(answer);
        }
    }
}

/// Records the batch's ids in one statement, so two concurrent uses (in
/// one batch, or on two replicas) cannot both win: a new id is inserted; an
/// existing row is only taken over if it has expired (an issuer reusing an
/// id after its old token's expiry is not a replay) and cleanup has not
/// removed it yet. Returns the ids that were new.
async fn record(pool: &PgPool, batch: &[Claim]) -> Result<HashSet<(String, String)>, AuthError> {
    // `ON CONFLICT DO UPDATE` may not touch a row twice in one statement:
    // each id goes in once.
    let mut unique = HashSet::with_capacity(batch.len());
    let (mut jtis, mut issuers, mut expiries) = (Vec::new(), Vec::new(), Vec::new());
    for claim in batch {
        if unique.insert((claim.issuer.as_str(), claim.jti.as_str())) {
            jtis.push(claim.jti.clone());
            issuers.push(claim.issuer.clone());
            expiries.push(claim.expires_at);
        }
    }
    let rows = sqlx::query!(
        "INSERT INTO auth_jti (jti, issuer, expires_at) \
         SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[]) \
         ON CONFLICT (issuer, jti) DO UPDATE SET expires_at = EXCLUDED.expires_at \
         WHERE auth_jti.expires_at < now() \
         RETURNING issuer, jti",
        &jtis,
        &issuers,
        &expiries,
    )
    .fetch_all(pool)
    .await
    .map_err(|error| super::storage_failure("recording token ids", &error))?;
    Ok(rows.into_iter().map(|row| (row.issuer, row.jti)).collect())
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
