//! The `key_packages` table (migrations `0002_key_packages.sql`, and
//! `0003_conversations.sql` for the commit that used one).

use catbird_generated::runtime::Did;
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor, PgPool};

use super::validate::ValidKeyPackage;

/// A stored KeyPackage as handed out.
#[derive(Debug)]
pub struct StoredKeyPackage {
    pub did: String,
    pub device_id: String,
    pub key_package_ref: Vec<u8>,
    pub key_package: Vec<u8>,
    pub last_resort: bool,
}

/// Serialises publishes of one device until the transaction ends, so that
/// the per-device limit holds under concurrent publishes.
pub async fn lock_device(tx: &mut PgConnection, device_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "SELECT pg_advisory_xact_lock(hashtextextended('key_packages:' || $1, 0))",
        device_id
    )
    .execute(tx)
    .await?;
    Ok(())
}

/// Stores one KeyPackage; storing the same one again changes nothing. A
/// last-resort KeyPackage becomes the device's current one for its cipher
/// suite and the previous one is marked replaced (kept, because a Welcome
/// may still name it).
pub async fn insert(tx: &mut PgConnection, package: &ValidKeyPackage) -> Result<(), sqlx::Error> {
    let device_id = package.device.to_string();
    if package.last_resort {
        sqlx::query!(
            "UPDATE key_packages SET replaced_at = now() \
             WHERE device_id = $1 AND cipher_suite = $2 AND last_resort \
               AND replaced_at IS NULL AND key_package_ref <> $3",
            device_id,
            package.cipher_suite.as_str(),
            package.reference,
        )
        .execute(&mut *tx)
        .await?;
    }
    // Re-publishing a replaced last-resort KeyPackage makes it current again.
    sqlx::query!(
        "INSERT INTO key_packages \
           (key_package_ref, did, device_id, cipher_suite, key_package, last_resort, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (key_package_ref) DO UPDATE SET replaced_at = NULL \
           WHERE key_packages.last_resort",
        package.reference,
        package.device.did().as_str(),
        device_id,
        package.cipher_suite.as_str(),
        package.message,
        package.last_resort,
        package.expires_at,
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Unused, unexpired, non-last-resort KeyPackages of a device, in one
/// cipher suite or in all.
pub async fn count_unused(
    db: impl PgExecutor<'_>,
    did: &Did,
    device_id: &str,
    cipher_suite: Option<&str>,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT count(*) AS "count!" FROM key_packages
           WHERE did = $1 AND device_id = $2 AND ($3::text IS NULL OR cipher_suite = $3)
             AND NOT last_resort AND handed_out_at IS NULL AND expires_at > now()"#,
        did.as_str(),
        device_id,
        cipher_suite,
    )
    .fetch_one(db)
    .await
}

/// Whether the device has a current, unexpired last-resort KeyPackage.
pub async fn has_last_resort(
    db: impl PgExecutor<'_>,
    did: &Did,
    device_id: &str,
    cipher_suite: Option<&str>,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM key_packages
           WHERE did = $1 AND device_id = $2 AND ($3::text IS NULL OR cipher_suite = $3)
             AND last_resort AND replaced_at IS NULL AND expires_at > now()) AS "exists!""#,
        did.as_str(),
        device_id,
        cipher_suite,
    )
    .fetch_one(db)
    .await
}

/// Every device of these users that has ever published a KeyPackage in
/// this cipher suite, as `(did, device_id)`.
pub async fn devices(
    tx: &mut PgConnection,
    dids: &[String],
    cipher_suite: &str,
) -> Result<Vec<(String, String)>, sqlx::Error> {
    let rows = sqlx::query!(
        "SELECT DISTINCT did, device_id FROM key_packages \
         WHERE did = ANY($1) AND cipher_suite = $2 ORDER BY did, device_id",
        dids,
        cipher_suite,
    )
    .fetch_all(tx)
    .await?;
    Ok(rows.into_iter().map(|r| (r.did, r.device_id)).collect())
}

/// Hands out the oldest unused KeyPackage of each device, marking it used
/// in the same statement. `SKIP LOCKED`: a KeyPackage that a concurrent
/// fetch is taking is skipped rather than waited for, so two fetches never
/// get the same one and never block each other.
pub async fn take_unused(
    tx: &mut PgConnection,
    device_ids: &[String],
    cipher_suite: &str,
    taker: &Did,
    now: DateTime<Utc>,
) -> Result<Vec<StoredKeyPackage>, sqlx::Error> {
    sqlx::query_as!(
        StoredKeyPackage,
        "WITH picked AS ( \
           SELECT p.key_package_ref FROM unnest($1::text[]) AS d(device_id) \
           CROSS JOIN LATERAL ( \
             SELECT c.key_package_ref FROM key_packages c \
             WHERE c.device_id = d.device_id AND c.cipher_suite = $2 AND NOT c.last_resort \
               AND c.handed_out_at IS NULL AND c.expires_at > $4 \
             ORDER BY c.published_at, c.key_package_ref LIMIT 1 \
             FOR UPDATE SKIP LOCKED) p) \
         UPDATE key_packages k SET handed_out_at = $4, handed_out_to = $3 \
         FROM picked WHERE k.key_package_ref = picked.key_package_ref \
         RETURNING k.did, k.device_id, k.key_package_ref, k.key_package, k.last_resort",
        device_ids,
        cipher_suite,
        taker.as_str(),
        now,
    )
    .fetch_all(tx)
    .await
}

/// The current, unexpired last-resort KeyPackages of these devices.
pub async fn last_resort(
    tx: &mut PgConnection,
    device_ids: &[String],
    cipher_suite: &str,
    now: DateTime<Utc>,
) -> Result<Vec<StoredKeyPackage>, sqlx::Error> {
    sqlx::query_as!(
        StoredKeyPackage,
        "SELECT did, device_id, key_package_ref, key_package, last_resort FROM key_packages \
         WHERE device_id = ANY($1) AND cipher_suite = $2 AND last_resort \
           AND replaced_at IS NULL AND expires_at > $3",
        device_ids,
        cipher_suite,
        now,
    )
    .fetch_all(tx)
    .await
}

/// Marks a KeyPackage used by an accepted commit of `group_id`, in that
/// commit's transaction; `None` if it was never published here, has
/// expired, or another commit used it (last-resort ones may be used again).
/// Returns its device.
pub async fn mark_used(
    tx: &mut PgConnection,
    key_package_ref: &[u8],
    group_id: &[u8],
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar!(
        "UPDATE key_packages SET used_at = now(), used_in = $2 \
         WHERE key_package_ref = $1 AND expires_at > now() AND (last_resort OR used_at IS NULL) \
         RETURNING device_id",
        key_package_ref,
        group_id,
    )
    .fetch_optional(tx)
    .await
}

/// Deletes KeyPackages that expired unused more than a day ago: nobody can
/// be handed them, and no Welcome can name them. Used ones stay, for
/// Welcome routing.
pub async fn delete_expired_unused(db: &PgPool) -> Result<u64, sqlx::Error> {
    let result = sqlx::query!(
        "DELETE FROM key_packages \
         WHERE handed_out_at IS NULL AND expires_at < now() - interval '1 day'"
    )
    .execute(db)
    .await?;
    Ok(result.rows_affected())
}
