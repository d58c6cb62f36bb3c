//! The conversation tables (migration `0003_conversations.sql`).

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::groups::engine::Member;

/// A conversation row, locked for the rest of the transaction.
pub struct Locked {
    pub epoch: i64,
    pub last_seq: i64,
    pub state: Vec<u8>,
    pub cipher_suite: String,
}

/// Locks a conversation: every write to its log and epoch goes through this
/// lock, so the counter is gapless and one commit per epoch wins.
pub async fn lock(tx: &mut PgConnection, group_id: &[u8]) -> Result<Option<Locked>, sqlx::Error> {
    sqlx::query_as!(
        Locked,
        "SELECT epoch, last_seq, state, cipher_suite FROM convos WHERE group_id = $1 FOR UPDATE",
        group_id
    )
    .fetch_optional(tx)
    .await
}

/// What every read needs of a conversation.
pub struct Convo {
    pub group_id: Vec<u8>,
    pub cipher_suite: String,
    pub creator: String,
    pub name: Option<String>,
    pub description: Option<String>,
    pub epoch: i64,
    pub last_seq: i64,
    pub created_at: DateTime<Utc>,
    pub last_message_at: Option<DateTime<Utc>>,
}

pub async fn find(db: &mut PgConnection, group_id: &[u8]) -> Result<Option<Convo>, sqlx::Error> {
    sqlx::query_as!(
        Convo,
        "SELECT group_id, cipher_suite, creator, name, description, epoch, last_seq, created_at, \
                last_message_at \
         FROM convos WHERE group_id = $1",
        group_id
    )
    .fetch_optional(db)
    .await
}

/// Stores a new conversation; false if the group id is taken.
#[allow(clippy::too_many_arguments)] // One column each.
pub async fn insert(
    tx: &mut PgConnection,
    group_id: &[u8],
    cipher_suite: &str,
    creator: &str,
    name: Option<&str>,
    description: Option<&str>,
    epoch: i64,
    state: &[u8],
    group_info: &[u8],
    created_with: &[u8],
) -> Result<bool, sqlx::Error> {
    let result = sqlx::query!(
        "INSERT INTO convos (group_id, cipher_suite, creator, name, description, epoch, state, \
                             group_info, created_with) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (group_id) DO NOTHING",
        group_id,
        cipher_suite,
        creator,
        name,
        description,
        epoch,
        state,
        group_info,
        created_with,
    )
    .execute(tx)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// Who created a conversation and with which GroupInfo (its SHA-256).
pub async fn creation(
    db: &mut PgConnection,
    group_id: &[u8],
) -> Result<Option<(String, Vec<u8>)>, sqlx::Error> {
    let row = sqlx::query!(
        "SELECT creator, created_with FROM convos WHERE group_id = $1",
        group_id
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| (r.creator, r.created_with)))
}

/// Moves a locked conversation to its next epoch after an accepted commit.
/// The `epoch = old` condition is a second guard besides the lock.
pub async fn advance(
    tx: &mut PgConnection,
    group_id: &[u8],
    old_epoch: i64,
    new_epoch: i64,
    seq: i64,
    state: &[u8],
    group_info: &[u8],
) -> Result<bool, sqlx::Error> {
    let result = sqlx::query!(
        "UPDATE convos SET epoch = $3, last_seq = $4, state = $5, group_info = $6, \
                last_message_at = now() \
         WHERE group_id = $1 AND epoch = $2",
        group_id,
        old_epoch,
        new_epoch,
        seq,
        state,
        group_info,
    )
    .execute(tx)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// Records a queued proposal: the log counter and the state move, the
/// epoch does not.
pub async fn record_proposal(
    tx: &mut PgConnection,
    group_id: &[u8],
    seq: i64,
    state: &[u8],
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE convos SET last_seq = $2, state = $3, last_message_at = now() WHERE group_id = $1",
        group_id,
        seq,
        state,
    )
    .execute(tx)
    .await?;
    Ok(())
}

/// Takes the next seq for an application message of `epoch`, or `None` when
/// the conversation is at another epoch (or does not exist). One statement:
/// the row lock it takes orders it against commits.
pub async fn next_seq_at_epoch(
    tx: &mut PgConnection,
    group_id: &[u8],
    epoch: i64,
) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar!(
        "UPDATE convos SET last_seq = last_seq + 1, last_message_at = now() \
         WHERE group_id = $1 AND epoch = $2 RETURNING last_seq",
        group_id,
        epoch,
    )
    .fetch_optional(tx)
    .await
}

/// The current GroupInfo and its epoch.
pub async fn group_info(
    db: &mut PgConnection,
    group_id: &[u8],
) -> Result<Option<(Vec<u8>, i64)>, sqlx::Error> {
    let row = sqlx::query!(
        "SELECT group_info, epoch FROM convos WHERE group_id = $1",
        group_id
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| (r.group_info, r.epoch)))
}

// ---- users and devices ------------------------------------------------------

/// A user's standing in a conversation.
pub struct User {
    pub is_admin: bool,
    pub visible_after_seq: i64,
    pub left_at: Option<DateTime<Utc>>,
    pub banned_at: Option<DateTime<Utc>>,
}

pub async fn user(
    db: &mut PgConnection,
    group_id: &[u8],
    did: &str,
) -> Result<Option<User>, sqlx::Error> {
    sqlx::query_as!(
        User,
        "SELECT is_admin, visible_after_seq, left_at, banned_at FROM convo_users \
         WHERE convo_id = $1 AND did = $2",
        group_id,
        did
    )
    .fetch_optional(db)
    .await
}

pub async fn insert_creator(
    tx: &mut PgConnection,
    group_id: &[u8],
    did: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO convo_users (convo_id, did, is_admin) VALUES ($1, $2, true)",
        group_id,
        did
    )
    .execute(tx)
    .await?;
    Ok(())
}

pub async fn set_banned(
    tx: &mut PgConnection,
    group_id: &[u8],
    did: &str,
    banned: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE convo_users SET banned_at = CASE WHEN $3 THEN now() END \
         WHERE convo_id = $1 AND did = $2",
        group_id,
        did,
        banned,
    )
    .execute(tx)
    .await?;
    Ok(())
}

/// Why a commit took devices out of the tree, as fan-out reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeftReason {
    Removed,
    Banned,
    Left,
}

impl LeftReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Removed => "removed",
            Self::Banned => "banned",
            Self::Left => "left",
        }
    }
}

/// Makes the device rows equal to the merged tree of the commit at `seq`:
/// leaves that are gone get `left_at` and `left_seq` (with `reason`), new
/// ones get a row joined at `seq`. Then the user rows follow: a user with a
/// device is current (a returning user's membership restarts at `seq`); a
/// user without one has left.
pub async fn sync_members(
    tx: &mut PgConnection,
    group_id: &[u8],
    members: &[Member],
    seq: i64,
    reason: LeftReason,
) -> Result<(), sqlx::Error> {
    let leaves: Vec<i32> = members.iter().map(|m| m.leaf_index as i32).collect();
    let devices: Vec<String> = members.iter().map(|m| m.device.to_string()).collect();
    let dids: Vec<String> = members
        .iter()
        .map(|m| m.device.did().as_str().to_owned())
        .collect();
    sqlx::query!(
        "UPDATE convo_devices d SET left_at = now(), left_seq = $4, left_reason = $5 \
         WHERE d.convo_id = $1 AND d.left_at IS NULL AND NOT EXISTS ( \
           SELECT 1 FROM unnest($2::int[], $3::text[]) AS m(leaf, device) \
           WHERE m.leaf = d.leaf_index AND m.device = d.device_id)",
        group_id,
        &leaves,
        &devices,
        seq,
        reason.as_str(),
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        "INSERT INTO convo_devices (convo_id, leaf_index, device_id, did, joined_seq) \
         SELECT $1, m.leaf, m.device, m.did, $5 FROM unnest($2::int[], $3::text[], $4::text[]) \
           AS m(leaf, device, did) \
         WHERE NOT EXISTS (SELECT 1 FROM convo_devices d WHERE d.convo_id = $1 \
           AND d.left_at IS NULL AND d.leaf_index = m.leaf AND d.device_id = m.device)",
        group_id,
        &leaves,
        &devices,
        &dids,
        seq,
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        "INSERT INTO convo_users (convo_id, did, visible_after_seq) \
         SELECT DISTINCT $1::bytea, did, $2::bigint FROM convo_devices \
         WHERE convo_id = $1 AND left_at IS NULL \
         ON CONFLICT (convo_id, did) DO UPDATE \
           SET left_at = NULL, visible_after_seq = EXCLUDED.visible_after_seq \
           WHERE convo_users.left_at IS NOT NULL",
        group_id,
        seq,
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        "UPDATE convo_users u SET left_at = now() \
         WHERE u.convo_id = $1 AND u.left_at IS NULL AND NOT EXISTS ( \
           SELECT 1 FROM convo_devices d \
           WHERE d.convo_id = $1 AND d.did = u.did AND d.left_at IS NULL)",
        group_id,
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Whether the user holds a leaf in the conversation now.
pub async fn is_current_member(
    db: &mut PgConnection,
    group_id: &[u8],
    did: &str,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM convo_devices
           WHERE convo_id = $1 AND did = $2 AND left_at IS NULL) AS "exists!""#,
        group_id,
        did
    )
    .fetch_one(db)
    .await
}

/// The devices holding a leaf now.
pub async fn current_device_ids(
    db: &mut PgConnection,
    group_id: &[u8],
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT device_id FROM convo_devices WHERE convo_id = $1 AND left_at IS NULL",
        group_id
    )
    .fetch_all(db)
    .await
}

/// A current member device, with its user's admin flag.
pub struct MemberRow {
    pub convo_id: Vec<u8>,
    pub device_id: String,
    pub did: String,
    pub leaf_index: i32,
    pub joined_at: DateTime<Utc>,
    pub is_admin: bool,
}

pub async fn current_members(
    db: &mut PgConnection,
    group_ids: &[Vec<u8>],
) -> Result<Vec<MemberRow>, sqlx::Error> {
    sqlx::query_as!(
        MemberRow,
        "SELECT d.convo_id, d.device_id, d.did, d.leaf_index, d.joined_at, u.is_admin \
         FROM convo_devices d JOIN convo_users u ON u.convo_id = d.convo_id AND u.did = d.did \
         WHERE d.convo_id = ANY($1) AND d.left_at IS NULL ORDER BY d.convo_id, d.leaf_index",
        group_ids
    )
    .fetch_all(db)
    .await
}

// ---- the log ----------------------------------------------------------------

/// One log entry to append.
pub struct NewEntry<'a> {
    pub seq: i64,
    pub id: &'a str,
    pub epoch: i64,
    pub kind: &'a str,
    pub payload: &'a [u8],
    pub payload_hash: &'a [u8],
    pub sender: Option<&'a str>,
    pub proposed_removal: Option<i32>,
}

/// Appends an entry; returns when it was accepted.
pub async fn append(
    tx: &mut PgConnection,
    group_id: &[u8],
    entry: &NewEntry<'_>,
) -> Result<DateTime<Utc>, sqlx::Error> {
    sqlx::query_scalar!(
        "INSERT INTO convo_messages (convo_id, seq, id, epoch, kind, payload, payload_hash, \
                                     sender, proposed_removal) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING created_at",
        group_id,
        entry.seq,
        entry.id,
        entry.epoch,
        entry.kind,
        entry.payload,
        entry.payload_hash,
        entry.sender,
        entry.proposed_removal,
    )
    .fetch_one(tx)
    .await
}

/// An entry already in the log, for answering a resubmission.
pub struct Previous {
    pub seq: i64,
    pub epoch: i64,
    pub kind: String,
    pub payload_hash: Vec<u8>,
    pub sender: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// The commit or proposal with these bytes, if the log has it.
pub async fn find_handshake(
    db: &mut PgConnection,
    group_id: &[u8],
    payload_hash: &[u8],
) -> Result<Option<Previous>, sqlx::Error> {
    sqlx::query_as!(
        Previous,
        "SELECT seq, epoch, kind, payload_hash, sender, created_at FROM convo_messages \
         WHERE convo_id = $1 AND payload_hash = $2 AND kind <> 'application'",
        group_id,
        payload_hash
    )
    .fetch_optional(db)
    .await
}

/// The entry with this id, if any.
pub async fn find_by_id(
    db: &mut PgConnection,
    group_id: &[u8],
    id: &str,
) -> Result<Option<Previous>, sqlx::Error> {
    sqlx::query_as!(
        Previous,
        "SELECT seq, epoch, kind, payload_hash, sender, created_at FROM convo_messages \
         WHERE convo_id = $1 AND id = $2",
        group_id,
        id
    )
    .fetch_optional(db)
    .await
}

/// The leaves that self-remove proposals of `epoch` ask to remove.
pub async fn proposed_removals(
    db: &mut PgConnection,
    group_id: &[u8],
    epoch: i64,
) -> Result<Vec<i32>, sqlx::Error> {
    let rows = sqlx::query_scalar!(
        "SELECT proposed_removal FROM convo_messages \
         WHERE convo_id = $1 AND epoch = $2 AND kind = 'proposal'",
        group_id,
        epoch
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().flatten().collect())
}

/// A log entry as read.
pub struct Entry {
    pub seq: i64,
    pub id: String,
    pub epoch: i64,
    pub kind: String,
    pub payload: Vec<u8>,
    pub sender: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// Entries with `after < seq <= upto`, ascending, at most `limit`.
pub async fn read_log(
    db: &mut PgConnection,
    group_id: &[u8],
    after: i64,
    upto: i64,
    limit: i64,
) -> Result<Vec<Entry>, sqlx::Error> {
    sqlx::query_as!(
        Entry,
        "SELECT seq, id, epoch, kind, payload, sender, created_at FROM convo_messages \
         WHERE convo_id = $1 AND seq > $2 AND seq <= $3 ORDER BY seq LIMIT $4",
        group_id,
        after,
        upto,
        limit
    )
    .fetch_all(db)
    .await
}

// ---- KeyPackages ------------------------------------------------------------

/// Marks a KeyPackage used by an accepted commit of `group_id`; `None` if it
/// was never published here, has expired, or another commit used it
/// (last-resort ones may be used again). Returns its device.
pub async fn use_key_package(
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
