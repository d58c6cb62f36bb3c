//! The log, `convo_messages` (migration `0003_conversations.sql`).

use catbird_generated::lexicons::blue::catbird::mls::defs::MessageKind;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::idempotency::KeyRow;

/// What a log entry is, as the `kind` column stores it (a text column whose
/// CHECK constraint admits exactly these values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum EntryKind {
    Application,
    Commit,
    Proposal,
}

impl EntryKind {
    /// The stored value, for logs and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Application => "application",
            Self::Commit => "commit",
            Self::Proposal => "proposal",
        }
    }
}

impl From<EntryKind> for MessageKind {
    fn from(kind: EntryKind) -> Self {
        match kind {
            EntryKind::Application => Self::Application,
            EntryKind::Commit => Self::Commit,
            EntryKind::Proposal => Self::Proposal,
        }
    }
}

/// One log entry to append.
pub struct NewEntry<'a> {
    pub seq: i64,
    pub id: &'a str,
    pub epoch: i64,
    pub kind: EntryKind,
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
        entry.kind as EntryKind,
        entry.payload,
        entry.payload_hash,
        entry.sender,
        entry.proposed_removal,
    )
    .fetch_one(tx)
    .await
}

/// What [`append_application`] found: the entry it appended, or the facts
/// that say why it did not.
pub struct Appended {
    pub seq: Option<i64>,
    pub created_at: Option<DateTime<Utc>>,
    pub convo_exists: bool,
    pub member: bool,
}

/// sendMessage's append in one statement (one round trip, one transaction):
/// the caller must be a current member, the conversation at `epoch`; then
/// the counter row is locked and advanced, the entry inserted and the
/// idempotency key, if any, recorded as answered by it. Nothing is written
/// unless all of it is. A unique violation (msgId, payload or key taken)
/// fails the whole statement.
pub async fn append_application(
    db: &mut PgConnection,
    group_id: &[u8],
    caller: &str,
    entry: &NewEntry<'_>,
    key: Option<&KeyRow<'_>>,
) -> Result<Appended, sqlx::Error> {
    sqlx::query_as!(
        Appended,
        r#"WITH member AS (
               SELECT FROM convo_users
               WHERE convo_id = $1 AND did = $2 AND left_at IS NULL AND banned_at IS NULL
           ), next AS (
               UPDATE convos SET last_seq = last_seq + 1, last_message_at = now()
               WHERE group_id = $1 AND epoch = $3 AND EXISTS (SELECT FROM member)
               RETURNING last_seq
           ), appended AS (
               INSERT INTO convo_messages (convo_id, seq, id, epoch, kind, payload, payload_hash)
               SELECT $1, last_seq, $4, $3, 'application', $5, $6 FROM next
               RETURNING seq, created_at
           ), keyed AS (
               INSERT INTO idempotency_keys (caller, method, key, request_hash, state, claim,
                                             lease_until, status, content_type, convo_id, seq,
                                             expires_at)
               SELECT $2, $7, $8, $9, 'done', '\x', now(), 200, 'application/json', $1, seq,
                      now() + make_interval(secs => $10)
               FROM appended WHERE $8::text IS NOT NULL
           )
           SELECT appended.seq AS "seq?", appended.created_at AS "created_at?",
                  EXISTS (SELECT FROM convos WHERE group_id = $1) AS "convo_exists!",
                  EXISTS (SELECT FROM member) AS "member!"
           FROM (SELECT) AS one LEFT JOIN appended ON true"#,
        group_id,
        caller,
        entry.epoch,
        entry.id,
        entry.payload,
        entry.payload_hash,
        key.map(|key| key.method),
        key.map(|key| key.key),
        key.map(|key| key.request_hash),
        key.map_or(0.0, |key| key.ttl_seconds),
    )
    .fetch_one(db)
    .await
}

/// An entry already in the log, for answering a resubmission.
pub struct Previous {
    pub seq: i64,
    pub epoch: i64,
    pub kind: EntryKind,
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
        // Served by the unique index convo_messages_payload (migration 0006).
        r#"SELECT seq, epoch, kind AS "kind: EntryKind", payload_hash, sender, created_at
           FROM convo_messages
           WHERE convo_id = $1 AND payload_hash = $2 AND kind <> 'application'"#,
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
        r#"SELECT seq, epoch, kind AS "kind: EntryKind", payload_hash, sender, created_at
           FROM convo_messages WHERE convo_id = $1 AND id = $2"#,
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
         WHERE convo_id = $1 AND epoch = $2 AND kind = $3",
        group_id,
        epoch,
        EntryKind::Proposal as EntryKind,
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
    pub kind: EntryKind,
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
        r#"SELECT seq, id, epoch, kind AS "kind: EntryKind", payload, sender, created_at
           FROM convo_messages WHERE convo_id = $1 AND seq > $2 AND seq <= $3
           ORDER BY seq LIMIT $4"#,
        group_id,
        after,
        upto,
        limit
    )
    .fetch_all(db)
    .await
}

/// The entry at `seq`, if any.
pub async fn find_by_seq(
    db: &mut PgConnection,
    group_id: &[u8],
    seq: i64,
) -> Result<Option<Previous>, sqlx::Error> {
    sqlx::query_as!(
        Previous,
        r#"SELECT seq, epoch, kind AS "kind: EntryKind", payload_hash, sender, created_at
           FROM convo_messages WHERE convo_id = $1 AND seq = $2"#,
        group_id,
        seq
    )
    .fetch_optional(db)
    .await
}
