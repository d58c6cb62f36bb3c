//! The log, `convo_messages` (migration `0003_conversations.sql`).

use catbird_generated::lexicons::blue::catbird::mls::defs::MessageKind;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;

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
        // The literal, not a parameter: it is the predicate of the partial
        // unique index convo_messages_handshake, which only a query with the
        // same predicate can use.
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
