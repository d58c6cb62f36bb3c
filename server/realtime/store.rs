//! The realtime SQL: announced entries and who may receive them, the heads
//! of a device's conversations, ephemeral announcements, tickets.
//!
//! A device may receive the entry at `seq` while one of its leaves covers
//! it: `joined_seq < seq <= left_seq` (an open `left_seq` while current).

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

use crate::convos::store::LeftReason;
use crate::convos::store::log::{self, Entry};

/// The announced entry at `seq`.
pub async fn entry(
    db: &mut PgConnection,
    group_id: &[u8],
    seq: i64,
) -> Result<Option<Entry>, sqlx::Error> {
    let mut entries = log::read_log(db, group_id, seq - 1, seq, 1).await?;
    Ok(entries.pop())
}

/// The devices whose leaves cover `seq`, now: membership is read at
/// fan-out time, not when a stream connected.
pub async fn recipients(
    db: &mut PgConnection,
    group_id: &[u8],
    seq: i64,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT DISTINCT device_id AS \"device_id!\" FROM convo_devices \
         WHERE convo_id = $1 AND joined_seq < $2 AND (left_seq IS NULL OR left_seq >= $2)",
        group_id,
        seq
    )
    .fetch_all(db)
    .await
}

/// The devices holding a leaf now (for ephemeral messages).
pub async fn current_devices(
    db: &mut PgConnection,
    group_id: &[u8],
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT DISTINCT device_id AS \"device_id!\" FROM convo_devices \
         WHERE convo_id = $1 AND left_seq IS NULL AND left_at IS NULL",
        group_id
    )
    .fetch_all(db)
    .await
}

/// A device that joined or left through one commit.
pub struct Change {
    pub device_id: String,
    pub did: String,
    /// `None`: the commit added it.
    pub left: Option<LeftReason>,
}

/// The devices the commit at `seq` added or took out.
pub async fn membership_changes(
    db: &mut PgConnection,
    group_id: &[u8],
    seq: i64,
) -> Result<Vec<Change>, sqlx::Error> {
    sqlx::query_as!(
        Change,
        r#"SELECT device_id AS "device_id!", did AS "did!", NULL AS "left: LeftReason"
             FROM convo_devices WHERE convo_id = $1 AND joined_seq = $2
           UNION ALL
           SELECT device_id, did, coalesce(left_reason, 'removed') FROM convo_devices
             WHERE convo_id = $1 AND left_seq = $2"#,
        group_id,
        seq
    )
    .fetch_all(db)
    .await
}

/// A Welcome the commit at `seq` made.
pub struct NewWelcome {
    pub device_id: String,
    pub epoch: i64,
}

pub async fn welcomes_of_commit(
    db: &mut PgConnection,
    group_id: &[u8],
    seq: i64,
) -> Result<Vec<NewWelcome>, sqlx::Error> {
    sqlx::query_as!(
        NewWelcome,
        "SELECT device_id, epoch FROM welcomes WHERE convo_id = $1 AND commit_seq = $2",
        group_id,
        seq
    )
    .fetch_all(db)
    .await
}

/// One conversation of a device, with its head.
pub struct Head {
    pub group_id: Vec<u8>,
    pub last_seq: i64,
    pub epoch: i64,
}

/// The conversations where `device` holds a leaf, with their heads.
pub async fn heads(db: &PgPool, device: &str) -> Result<Vec<Head>, sqlx::Error> {
    sqlx::query_as!(
        Head,
        "SELECT c.group_id, c.last_seq, c.epoch FROM convos c \
         WHERE EXISTS (SELECT 1 FROM convo_devices d WHERE d.convo_id = c.group_id \
                         AND d.device_id = $1 AND d.left_seq IS NULL AND d.left_at IS NULL) \
         ORDER BY c.group_id",
        device
    )
    .fetch_all(db)
    .await
}

/// Announces an ephemeral message to every replica.
pub async fn announce(db: &PgPool, payload: &str) -> Result<(), sqlx::Error> {
    sqlx::query!("SELECT pg_notify($1, $2)", super::CHANNEL, payload)
        .execute(db)
        .await?;
    Ok(())
}

/// Stores a ticket (by its hash) for `did`'s `device` until `expires_at`.
pub async fn insert_ticket(
    db: &PgPool,
    hash: &[u8],
    did: &str,
    device: &str,
    expires_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO stream_tickets (ticket_hash, did, device_id, expires_at) \
         VALUES ($1, $2, $3, $4)",
        hash,
        did,
        device,
        expires_at
    )
    .execute(db)
    .await?;
    Ok(())
}

/// A redeemed ticket's owner.
pub struct TicketOwner {
    pub did: String,
    pub device_id: String,
}

/// Takes a ticket: it exists, has not expired, and is gone afterwards (one
/// statement, so two redemptions never both succeed).
pub async fn redeem_ticket(db: &PgPool, hash: &[u8]) -> Result<Option<TicketOwner>, sqlx::Error> {
    sqlx::query_as!(
        TicketOwner,
        "DELETE FROM stream_tickets WHERE ticket_hash = $1 AND expires_at > now() \
         RETURNING did, device_id",
        hash
    )
    .fetch_optional(db)
    .await
}

/// Deletes expired tickets; returns how many.
pub async fn delete_expired_tickets(db: &PgPool) -> Result<u64, sqlx::Error> {
    let deleted = sqlx::query!("DELETE FROM stream_tickets WHERE expires_at <= now()")
        .execute(db)
        .await?;
    Ok(deleted.rows_affected())
}
