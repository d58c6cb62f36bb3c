//! Every SQL statement of the conversations area (migration
//! `0003_conversations.sql`): here the conversations, their users and
//! devices, and the reads that join them; the log and the Welcomes in their
//! own modules.

pub mod log;
pub mod welcomes;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::groups::engine::{Member, StateWrite, StoredState};
use crate::rollout::Rollout;
use welcomes::WelcomeState;

/// A conversation row, locked for the rest of the transaction.
pub struct Locked {
    pub epoch: i64,
    pub last_seq: i64,
    /// Which write of the group state is current (see [`load_state`]).
    pub state_version: i64,
    pub cipher_suite: String,
    /// The external-commit rollout switch, read in the same statement
    /// (processExternalCommit checks it: one round trip fewer).
    pub rollout: Rollout,
}

/// Locks a conversation: every write to its log and epoch goes through this
/// lock, so the counter is gapless and one commit per epoch wins. Returns
/// `did`'s user row and the rollout switch with it (the access checks need
/// them: one round trip). A missing switch row reads as switched off.
pub async fn lock(
    tx: &mut PgConnection,
    group_id: &[u8],
    did: &str,
) -> Result<Option<(Locked, Option<User>)>, sqlx::Error> {
    let row = sqlx::query!(
        r#"SELECT c.epoch, c.last_seq, c.state_version, c.cipher_suite,
                  u.is_admin AS "is_admin?", u.visible_after_seq AS "visible_after_seq?",
                  u.left_at, u.banned_at,
                  r.enabled AS "rollout_enabled?", r.percent AS "rollout_percent?",
                  r.allow_list AS "rollout_allow_list?"
           FROM convos c LEFT JOIN convo_users u ON u.convo_id = c.group_id AND u.did = $2
                LEFT JOIN external_commit_rollout r ON true
           WHERE c.group_id = $1 FOR UPDATE OF c"#,
        group_id,
        did,
    )
    .fetch_optional(tx)
    .await?;
    Ok(row.map(|r| {
        let user = user_of(r.is_admin, r.visible_after_seq, r.left_at, r.banned_at);
        let locked = Locked {
            epoch: r.epoch,
            last_seq: r.last_seq,
            state_version: r.state_version,
            cipher_suite: r.cipher_suite,
            rollout: Rollout::from_row(
                r.rollout_enabled.unwrap_or(false),
                r.rollout_percent.unwrap_or(0),
                r.rollout_allow_list.unwrap_or_default(),
            ),
        };
        (locked, user)
    }))
}

/// A user row from a LEFT JOIN: the columns are null when there is none
/// (`is_admin` and `visible_after_seq` are NOT NULL in the table).
fn user_of(
    is_admin: Option<bool>,
    visible_after_seq: Option<i64>,
    left_at: Option<DateTime<Utc>>,
    banned_at: Option<DateTime<Utc>>,
) -> Option<User> {
    Some(User {
        is_admin: is_admin?,
        visible_after_seq: visible_after_seq?,
        left_at,
        banned_at,
    })
}

/// A conversation's stored group state: the head and the tree's nodes
/// (migration `0007_group_state_nodes.sql`).
pub async fn load_state(
    tx: &mut PgConnection,
    group_id: &[u8],
) -> Result<StoredState, sqlx::Error> {
    let head = sqlx::query_scalar!("SELECT state FROM convos WHERE group_id = $1", group_id)
        .fetch_one(&mut *tx)
        .await?;
    let nodes = sqlx::query!(
        "SELECT node_index, node FROM group_state_nodes WHERE convo_id = $1",
        group_id
    )
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .map(|row| (row.node_index, row.node))
    .collect();
    Ok(StoredState { head, nodes })
}

/// Node rows as statement parameters: their indexes and bytes.
fn node_columns(nodes: &[(i32, Vec<u8>)]) -> (Vec<i32>, Vec<Vec<u8>>) {
    nodes.iter().cloned().unzip()
}

/// A new conversation's node rows.
async fn insert_nodes(
    tx: &mut PgConnection,
    group_id: &[u8],
    nodes: &[(i32, Vec<u8>)],
) -> Result<(), sqlx::Error> {
    if nodes.is_empty() {
        return Ok(());
    }
    let (indexes, nodes) = node_columns(nodes);
    sqlx::query!(
        "INSERT INTO group_state_nodes (convo_id, node_index, node) \
         SELECT $1, i, n FROM unnest($2::int[], $3::bytea[]) AS t(i, n) \
         ON CONFLICT (convo_id, node_index) DO UPDATE SET node = EXCLUDED.node",
        group_id,
        &indexes,
        &nodes,
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
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

/// Stores a new conversation with its group state; returns the state
/// version, or `None` if the group id is taken.
#[allow(clippy::too_many_arguments)] // One column each.
pub async fn insert(
    tx: &mut PgConnection,
    group_id: &[u8],
    cipher_suite: &str,
    creator: &str,
    name: Option<&str>,
    description: Option<&str>,
    epoch: i64,
    state: &StoredState,
    group_info: &[u8],
    created_with: &[u8],
) -> Result<Option<i64>, sqlx::Error> {
    let version = sqlx::query_scalar!(
        "INSERT INTO convos (group_id, cipher_suite, creator, name, description, epoch, state, \
                             group_info, created_with) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (group_id) DO NOTHING \
         RETURNING state_version",
        group_id,
        cipher_suite,
        creator,
        name,
        description,
        epoch,
        &state.head,
        group_info,
        created_with,
    )
    .fetch_optional(&mut *tx)
    .await?;
    if version.is_some() {
        insert_nodes(tx, group_id, &state.nodes).await?;
    }
    Ok(version)
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

/// What [`record_handshake`] wrote.
pub struct Recorded {
    /// The new state version.
    pub version: i64,
    /// When the log entry was accepted.
    pub accepted_at: DateTime<Utc>,
}

/// An accepted commit or queued proposal of a locked conversation, in one
/// statement: its log entry, the group state's changed node rows (blanked
/// and changed nodes never share an index) and the row: the counter, the
/// state head, and for a commit (`next`: the new epoch and GroupInfo) the
/// epoch. `None` if the conversation was not at the entry's epoch, a
/// second guard besides the lock; the caller then rolls back.
pub async fn record_handshake(
    tx: &mut PgConnection,
    group_id: &[u8],
    entry: &log::NewEntry<'_>,
    next: Option<(i64, &[u8])>,
    state: &StateWrite,
) -> Result<Option<Recorded>, sqlx::Error> {
    let (indexes, nodes) = node_columns(&state.nodes);
    let row = sqlx::query!(
        r#"WITH entry AS (
             INSERT INTO convo_messages (convo_id, seq, id, epoch, kind, payload, payload_hash,
                                         sender, proposed_removal)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING created_at),
           blanked AS (
             DELETE FROM group_state_nodes WHERE convo_id = $1 AND node_index = ANY($12)),
           written AS (
             INSERT INTO group_state_nodes (convo_id, node_index, node)
             SELECT $1, i, n FROM unnest($13::int[], $14::bytea[]) AS t(i, n)
             ON CONFLICT (convo_id, node_index) DO UPDATE SET node = EXCLUDED.node)
           UPDATE convos SET epoch = COALESCE($10, epoch), group_info = COALESCE($11, group_info),
                  last_seq = $2, state = $15, state_version = nextval('group_state_versions'),
                  last_message_at = now()
           WHERE group_id = $1 AND epoch = $4
           RETURNING state_version, (SELECT created_at FROM entry) AS "accepted_at!""#,
        group_id,
        entry.seq,
        entry.id,
        entry.epoch,
        entry.kind as log::EntryKind,
        entry.payload,
        entry.payload_hash,
        entry.sender,
        entry.proposed_removal,
        next.map(|(epoch, _)| epoch),
        next.map(|(_, group_info)| group_info),
        &state.blanked,
        &indexes,
        &nodes,
        &state.head,
    )
    .fetch_optional(&mut *tx)
    .await?;
    Ok(row.map(|row| Recorded {
        version: row.state_version,
        accepted_at: row.accepted_at,
    }))
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

/// The current GroupInfo and its epoch, with `did`'s user row.
pub async fn group_info(
    db: &mut PgConnection,
    group_id: &[u8],
    did: &str,
) -> Result<Option<(Vec<u8>, i64, Option<User>)>, sqlx::Error> {
    let row = sqlx::query!(
        r#"SELECT c.group_info, c.epoch,
                  u.is_admin AS "is_admin?", u.visible_after_seq AS "visible_after_seq?",
                  u.left_at, u.banned_at
           FROM convos c LEFT JOIN convo_users u ON u.convo_id = c.group_id AND u.did = $2
           WHERE c.group_id = $1"#,
        group_id,
        did,
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| {
        let user = user_of(r.is_admin, r.visible_after_seq, r.left_at, r.banned_at);
        (r.group_info, r.epoch, user)
    }))
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

/// Why a commit took devices out of the tree (`convo_devices.left_reason`),
/// as fan-out reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum LeftReason {
    Removed,
    Banned,
    Left,
}

/// Makes the device rows follow a commit at `seq`: the leaves whose device
/// changed (`left`, as before the commit) get `left_at` and `left_seq`
/// (with `reason`), the new occupants (`joined`) a row joined at `seq`.
/// Then the user rows of those devices' users follow: a user with a device
/// is current (a returning user's membership restarts at `seq`); a user
/// without one has left. A joining device's untaken Welcome is withdrawn.
/// Leaves the commit did not touch are not read: a self-update changes no
/// row.
pub async fn sync_members(
    tx: &mut PgConnection,
    group_id: &[u8],
    left: &[Member],
    joined: &[Member],
    seq: i64,
    reason: LeftReason,
) -> Result<(), sqlx::Error> {
    if !left.is_empty() {
        let (leaves, devices, _) = columns(left);
        sqlx::query!(
            "UPDATE convo_devices d SET left_at = now(), left_seq = $4, left_reason = $5 \
             FROM unnest($2::int[], $3::text[]) AS m(leaf, device) \
             WHERE d.convo_id = $1 AND d.left_at IS NULL \
               AND d.leaf_index = m.leaf AND d.device_id = m.device",
            group_id,
            &leaves,
            &devices,
            seq,
            reason as LeftReason,
        )
        .execute(&mut *tx)
        .await?;
    }
    if !joined.is_empty() {
        let (leaves, devices, dids) = columns(joined);
        // The device rows, their users' rows and the withdrawal of
        // Welcomes they have not taken (a device in the tree needs none:
        // an external joiner's goes; addMembers stores the new one after)
        // in one statement: none of its parts reads another's table.
        sqlx::query!(
            "WITH devices AS ( \
               INSERT INTO convo_devices (convo_id, leaf_index, device_id, did, joined_seq) \
               SELECT $1, m.leaf, m.device, m.did, $5 \
               FROM unnest($2::int[], $3::text[], $4::text[]) AS m(leaf, device, did)), \
             withdrawn AS ( \
               DELETE FROM welcomes WHERE convo_id = $1 AND device_id = ANY($3) AND state <> $6) \
             INSERT INTO convo_users (convo_id, did, visible_after_seq) \
             SELECT DISTINCT $1::bytea, did, $5::bigint FROM unnest($4::text[]) AS m(did) \
             ON CONFLICT (convo_id, did) DO UPDATE \
               SET left_at = NULL, visible_after_seq = EXCLUDED.visible_after_seq \
               WHERE convo_users.left_at IS NOT NULL",
            group_id,
            &leaves,
            &devices,
            &dids,
            seq,
            WelcomeState::Consumed as WelcomeState,
        )
        .execute(&mut *tx)
        .await?;
    }
    if !left.is_empty() {
        let (_, _, dids) = columns(left);
        sqlx::query!(
            "UPDATE convo_users u SET left_at = now() \
             WHERE u.convo_id = $1 AND u.did = ANY($2) AND u.left_at IS NULL AND NOT EXISTS ( \
               SELECT 1 FROM convo_devices d \
               WHERE d.convo_id = $1 AND d.did = u.did AND d.left_at IS NULL)",
            group_id,
            &dids,
        )
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// Leaf indexes, device ids and DIDs, as SQL arrays.
fn columns(members: &[Member]) -> (Vec<i32>, Vec<String>, Vec<String>) {
    let leaves = members.iter().map(|m| m.leaf_index as i32).collect();
    let devices = members.iter().map(|m| m.device.to_string()).collect();
    let dids = members
        .iter()
        .map(|m| m.device.did().as_str().to_owned())
        .collect();
    (leaves, devices, dids)
}

/// The leaves `did`'s devices hold now.
pub async fn current_leaves_of(
    tx: &mut PgConnection,
    group_id: &[u8],
    did: &str,
) -> Result<Vec<i32>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT leaf_index FROM convo_devices WHERE convo_id = $1 AND did = $2 AND left_at IS NULL",
        group_id,
        did
    )
    .fetch_all(tx)
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

// ---- reads for listings -------------------------------------------------------

/// One page of getConvos: the user's current conversations, newest first,
/// strictly before the `(created_at, group_id)` cursor when there is one;
/// at most `limit`.
pub async fn convos_of(
    db: &mut PgConnection,
    did: &str,
    before: Option<(DateTime<Utc>, &[u8])>,
    limit: i64,
) -> Result<Vec<Convo>, sqlx::Error> {
    let (before_time, before_id) = before.unzip();
    sqlx::query_as!(
        Convo,
        "SELECT c.group_id, c.cipher_suite, c.creator, c.name, c.description, c.epoch, c.last_seq, \
                c.created_at, c.last_message_at \
         FROM convos c JOIN convo_users u ON u.convo_id = c.group_id \
         WHERE u.did = $1 AND u.left_at IS NULL \
           AND ($2::timestamptz IS NULL OR (c.created_at, c.group_id) < ($2, $3)) \
         ORDER BY c.created_at DESC, c.group_id DESC LIMIT $4",
        did,
        before_time,
        before_id.unwrap_or_default(),
        limit,
    )
    .fetch_all(db)
    .await
}

/// A conversation where a device is expected, as getExpectedConversations
/// needs it.
pub struct Expected {
    pub group_id: Vec<u8>,
    pub epoch: i64,
    pub left_at: Option<DateTime<Utc>>,
    /// The device holds a leaf now.
    pub has_leaf: bool,
    /// A Welcome waits for the device: available, or in flight within its
    /// window.
    pub welcome_pending: bool,
}

/// One page of getExpectedConversations: the user's conversations that are
/// not banned and current or left after `left_after`, by group id after
/// `after`; at most `limit`. The device's leaf and Welcome are subqueries,
/// so a page is one statement however many conversations it holds.
pub async fn expected(
    db: &mut PgConnection,
    did: &str,
    device_id: &str,
    left_after: DateTime<Utc>,
    after: &[u8],
    limit: i64,
) -> Result<Vec<Expected>, sqlx::Error> {
    sqlx::query_as!(
        Expected,
        r#"SELECT c.group_id, c.epoch, u.left_at,
                  EXISTS (SELECT 1 FROM convo_devices d WHERE d.convo_id = c.group_id
                          AND d.device_id = $2 AND d.left_at IS NULL) AS "has_leaf!",
                  EXISTS (SELECT 1 FROM welcomes w WHERE w.convo_id = c.group_id
                          AND w.device_id = $2
                          AND (w.state = $6 OR (w.state = $7 AND w.in_flight_until > now())))
                    AS "welcome_pending!"
           FROM convo_users u JOIN convos c ON c.group_id = u.convo_id
           WHERE u.did = $1 AND u.banned_at IS NULL
             AND (u.left_at IS NULL OR u.left_at > $3) AND c.group_id > $4
           ORDER BY c.group_id LIMIT $5"#,
        did,
        device_id,
        left_after,
        after,
        limit,
        WelcomeState::Available as WelcomeState,
        WelcomeState::InFlight as WelcomeState,
    )
    .fetch_all(db)
    .await
}
