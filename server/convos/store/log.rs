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

/// One message of a group append ([`append_application_batch`]).
pub struct BatchEntry {
    pub caller: String,
    pub id: String,
    pub epoch: i64,
    pub payload: Vec<u8>,
    pub payload_hash: Vec<u8>,
    /// The idempotency key, if the request has one.
    pub key: Option<BatchKey>,
}

/// An idempotency key to record with its message (see [`KeyRow`]).
pub struct BatchKey {
    pub method: String,
    pub key: String,
    pub request_hash: Vec<u8>,
    pub ttl_seconds: f64,
}

/// A message a group append took: its position in the batch, its seq.
pub struct BatchAppended {
    pub position: i64,
    pub seq: i64,
    pub created_at: DateTime<Utc>,
}

/// Several sendMessage appends to one conversation in one statement: the
/// conversation row locked and advanced once, the entries inserted with
/// consecutive seqs in batch order, their idempotency keys recorded, one
/// commit. Only messages from current members at the batch's epoch (the
/// first message's) are taken, all of them or, if the conversation moved
/// on, none; the others are left for [`append_application`], which tells
/// why. A unique violation (a msgId, a payload or a key taken, also within
/// the batch) fails the whole statement, and nothing is written.
pub async fn append_application_batch(
    db: &mut PgConnection,
    group_id: &[u8],
    batch: &[BatchEntry],
) -> Result<Vec<BatchAppended>, sqlx::Error> {
    let callers: Vec<&str> = batch.iter().map(|e| e.caller.as_str()).collect();
    let ids: Vec<&str> = batch.iter().map(|e| e.id.as_str()).collect();
    let epochs: Vec<i64> = batch.iter().map(|e| e.epoch).collect();
    let payloads: Vec<&[u8]> = batch.iter().map(|e| &e.payload[..]).collect();
    let hashes: Vec<&[u8]> = batch.iter().map(|e| &e.payload_hash[..]).collect();
    let keys: Vec<Option<&BatchKey>> = batch.iter().map(|e| e.key.as_ref()).collect();
    let methods: Vec<Option<&str>> = keys.iter().map(|k| k.map(|k| k.method.as_str())).collect();
    let key_names: Vec<Option<&str>> = keys.iter().map(|k| k.map(|k| k.key.as_str())).collect();
    let request_hashes: Vec<Option<&[u8]>> = keys
        .iter()
        .map(|k| k.map(|k| &k.request_hash[..]))
        .collect();
    let ttls: Vec<f64> = keys
        .iter()
        .map(|k| k.map_or(0.0, |k| k.ttl_seconds))
        .collect();
    sqlx::query_as!(
        BatchAppended,
        r#"WITH input AS (
               SELECT * FROM unnest($2::text[], $3::text[], $4::int8[], $5::bytea[], $6::bytea[],
                                    $7::text[], $8::text[], $9::bytea[], $10::float8[])
                   WITH ORDINALITY AS input(caller, id, epoch, payload, payload_hash,
                                            method, key, request_hash, ttl, position)
           ), admitted AS (
               SELECT input.*, row_number() OVER (ORDER BY position) AS n
               FROM input
               WHERE epoch = $4[1] AND EXISTS (
                   SELECT FROM convo_users
                   WHERE convo_id = $1 AND did = input.caller
                     AND left_at IS NULL AND banned_at IS NULL)
           ), next AS (
               UPDATE convos SET last_seq = last_seq + (SELECT count(*) FROM admitted),
                                 last_message_at = now()
               WHERE group_id = $1 AND epoch = $4[1] AND EXISTS (SELECT FROM admitted)
               RETURNING last_seq - (SELECT count(*) FROM admitted) AS base
           ), appended AS (
               INSERT INTO convo_messages (convo_id, seq, id, epoch, kind, payload, payload_hash)
               SELECT $1, next.base + admitted.n, admitted.id, admitted.epoch, 'application',
                      admitted.payload, admitted.payload_hash
               FROM admitted, next
               RETURNING seq, created_at
           ), keyed AS (
               INSERT INTO idempotency_keys (caller, method, key, request_hash, state, claim,
                                             lease_until, status, content_type, convo_id, seq,
                                             expires_at)
               SELECT admitted.caller, admitted.method, admitted.key, admitted.request_hash,
                      'done', '\x', now(), 200, 'application/json', $1, next.base + admitted.n,
                      now() + make_interval(secs => admitted.ttl)
               FROM admitted, next WHERE admitted.key IS NOT NULL
           )
           SELECT admitted.position AS "position!", appended.seq AS "seq!",
                  appended.created_at AS "created_at!"
           FROM admitted, next, appended WHERE appended.seq = next.base + admitted.n"#,
        group_id,
        &callers as &[&str],
        &ids as &[&str],
        &epochs,
        &payloads as &[&[u8]],
        &hashes as &[&[u8]],
        &methods as &[Option<&str>],
        &key_names as &[Option<&str>],
        &request_hashes as &[Option<&[u8]>],
        &ttls,
    )
    .fetch_all(db)
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
