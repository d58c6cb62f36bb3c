//! The conversation log: sendMessage, getMessages, getEpoch.

use catbird_generated::lexicons::blue::catbird::mls::defs::{GapInfo, MessageView};
use catbird_generated::lexicons::blue::catbird::mls::send_message;
use catbird_generated::runtime::{Bytes, Datetime, Did};
use chrono::{DateTime, Utc};
use sqlx::PgPool;

use catbird_generated::runtime::xrpc::MethodError;
use sqlx::PgConnection;

use super::appender::Appender;
use super::store::log::{BatchEntry, BatchKey, EntryKind};
use super::{ConvoSettings, not_found, require_convo, require_member, sha256, store};
use crate::db;
use crate::error::ServiceError;
use crate::groups::engine::{self, EngineError};
use crate::idempotency::{self, KeyRow, Recorded};
use crate::mls_crypto;

/// An accepted application message.
pub struct Sent {
    pub seq: i64,
    pub epoch: i64,
    pub received_at: DateTime<Utc>,
}

/// Why sendMessage did not append, as the method answers it.
pub type SendError = MethodError<send_message::Error>;

/// How many times sendMessage runs its statement when an idempotency key
/// changes under it (an expired row deleted, a concurrent refusal stored).
const SEND_ATTEMPTS: usize = 3;

/// sendMessage: checks the PrivateMessage's clear header against the
/// conversation and appends it with the next seq, at the current epoch only,
/// in one statement ([`store::log::append_application`]). The rarer answers
/// (a repeat, a refusal, a recorded idempotency key) are worked out after
/// it, from what the statement reported.
///
/// Concurrent senders to one conversation share the statement first
/// ([`Appender`]); what the shared statement does not take runs here alone.
pub async fn send(
    db: &PgPool,
    appender: &Appender,
    caller: &Did,
    group_id: &[u8],
    input: &send_message::Input,
    key: Option<&KeyRow<'_>>,
) -> Result<Sent, SendError> {
    let hash = check_message(group_id, input)?;
    let entry = BatchEntry {
        caller: caller.as_str().to_owned(),
        id: input.msg_id.clone(),
        epoch: input.epoch,
        payload: input.ciphertext.0.clone(),
        payload_hash: hash.clone(),
        key: key.map(|key| BatchKey {
            method: key.method.to_owned(),
            key: key.key.to_owned(),
            request_hash: key.request_hash.to_vec(),
            ttl_seconds: key.ttl_seconds,
        }),
    };
    if let Some(taken) = appender.append(group_id, entry).await? {
        if key.is_some() {
            idempotency::executed_with_key();
        }
        return Ok(Sent {
            seq: taken.seq,
            epoch: input.epoch,
            received_at: taken.created_at,
        });
    }
    let mut conn = db.acquire().await.map_err(ServiceError::from)?;
    for _ in 0..SEND_ATTEMPTS {
        let error = match append(&mut conn, caller, group_id, input, &hash, key).await {
            Ok(sent) => {
                if key.is_some() {
                    idempotency::executed_with_key();
                }
                return Ok(sent);
            }
            Err(error) => error,
        };
        let Some(key) = key else {
            return resolve(&mut conn, group_id, input, error)
                .await
                .map_err(Into::into);
        };
        // The key's answer comes first, as if it had been checked before.
        match idempotency::recorded(&mut conn, key)
            .await
            .map_err(ServiceError::from)?
        {
            Some(Recorded::Entry { seq }) => {
                let entry = store::log::find_by_seq(&mut conn, group_id, seq)
                    .await
                    .map_err(ServiceError::from)?
                    .ok_or_else(|| ServiceError::Internal("a keyed message vanished".into()))?;
                return Ok(sent(&entry));
            }
            Some(Recorded::Response { status, body }) => {
                return Err(idempotency::stored_error(status, &body));
            }
            Some(Recorded::OtherInput) => {
                return Err(ServiceError::IdempotencyKeyReused(format!(
                    "idempotencyKey {:?} was already used for {} with a different input",
                    key.key, key.method
                ))
                .into());
            }
            Some(Recorded::InProgress) => {
                return Err(ServiceError::IdempotencyKeyInProgress(format!(
                    "a request with idempotencyKey {:?} is still executing; retry with the same key for its response",
                    key.key
                ))
                .into());
            }
            Some(Recorded::Expired) => {
                idempotency::forget_expired(&mut conn, key)
                    .await
                    .map_err(ServiceError::from)?;
                continue;
            }
            None => {}
        }
        if is_violation(&error, KEY_TAKEN) {
            // Its row went away meanwhile: run again.
            continue;
        }
        let refusal: SendError = match resolve(&mut conn, group_id, input, error).await {
            // A repeat of a msgId sent without this key: its original result.
            Ok(sent) => return Ok(sent),
            Err(error) if error.name().is_some() => error.into(),
            // Our own failure: nothing is stored, a retry executes anew.
            Err(error) => return Err(error.into()),
        };
        if idempotency::record_refusal(&mut conn, key, &refusal)
            .await
            .map_err(ServiceError::from)?
        {
            return Err(refusal);
        }
        // Another request with the key was recorded first: answer as it.
    }
    Err(ServiceError::Internal("an idempotency key kept changing under sendMessage".into()).into())
}

/// The unique index of idempotency keys.
const KEY_TAKEN: &str = "idempotency_keys_pkey";
/// The unique indexes of the log: msgId and payload per conversation.
const MSG_ID_TAKEN: &str = "convo_messages_convo_id_id_key";
const PAYLOAD_TAKEN: &str = "convo_messages_payload";

/// What sendMessage can refuse without the database: a ciphertext longer
/// than its `paddedSize`, a clear header of another conversation or epoch.
/// Returns the ciphertext's hash.
fn check_message(group_id: &[u8], input: &send_message::Input) -> Result<Vec<u8>, ServiceError> {
    let ciphertext = &input.ciphertext.0[..];
    if let Some(padded) = input.padded_size
        && i64::try_from(ciphertext.len()).unwrap_or(i64::MAX) > padded
    {
        return Err(ServiceError::InvalidCiphertext(format!(
            "the ciphertext is {} bytes, longer than paddedSize {padded}",
            ciphertext.len()
        )));
    }
    check_header(group_id, input.epoch, ciphertext)?;
    Ok(sha256(ciphertext))
}

/// One run of the append statement; every refusal it can tell by itself.
/// A unique violation comes back as the database error, for [`resolve`].
async fn append(
    conn: &mut PgConnection,
    caller: &Did,
    group_id: &[u8],
    input: &send_message::Input,
    hash: &[u8],
    key: Option<&KeyRow<'_>>,
) -> Result<Sent, ServiceError> {
    let (msg_id, ciphertext, epoch) = (input.msg_id.as_str(), &input.ciphertext.0[..], input.epoch);
    let entry = store::log::NewEntry {
        seq: 0, // the statement takes the next one
        id: msg_id,
        epoch,
        kind: EntryKind::Application,
        payload: ciphertext,
        payload_hash: hash,
        sender: None,
        proposed_removal: None,
    };
    let appended =
        store::log::append_application(conn, group_id, caller.as_str(), &entry, key).await?;
    match appended {
        store::log::Appended {
            seq: Some(seq),
            created_at: Some(received_at),
            ..
        } => Ok(Sent {
            seq,
            epoch,
            received_at,
        }),
        appended if !appended.convo_exists => Err(not_found(&mls_crypto::to_hex(group_id))),
        appended if !appended.member => Err(ServiceError::NotMember(format!(
            "{} has no device in this conversation",
            caller.as_str()
        ))),
        // A resent msgId is answered by its entry, whatever the epoch now.
        _ => match store::log::find_by_id(conn, group_id, msg_id).await? {
            Some(previous) => same_message(previous, hash, msg_id),
            None => Err(ServiceError::EpochMismatch(format!(
                "the conversation is no longer at epoch {epoch}: process the log and encrypt again"
            ))),
        },
    }
}

/// A unique violation of the append, as the method answers it: a msgId
/// already in the log is a repeat (the original result) or a conflict; a
/// ciphertext already in the log under another msgId is a replay. Other
/// errors stay as they are.
async fn resolve(
    conn: &mut PgConnection,
    group_id: &[u8],
    input: &send_message::Input,
    error: ServiceError,
) -> Result<Sent, ServiceError> {
    if !is_violation(&error, MSG_ID_TAKEN) && !is_violation(&error, PAYLOAD_TAKEN) {
        return Err(error);
    }
    let msg_id = input.msg_id.as_str();
    if let Some(previous) = store::log::find_by_id(conn, group_id, msg_id).await? {
        return same_message(previous, &sha256(&input.ciphertext.0), msg_id);
    }
    Err(ServiceError::DuplicateCiphertext(
        "this ciphertext is already in the conversation's log under another msgId: \
         a message is sent once"
            .into(),
    ))
}

fn is_violation(error: &ServiceError, constraint: &str) -> bool {
    matches!(error, ServiceError::Database(sqlx::Error::Database(db))
        if db.is_unique_violation() && db.constraint() == Some(constraint))
}

fn sent(previous: &store::log::Previous) -> Sent {
    Sent {
        seq: previous.seq,
        epoch: previous.epoch,
        received_at: previous.created_at,
    }
}

/// The clear header of an application message: a PrivateMessage of this
/// conversation at `epoch` (the service cannot read more of it).
pub fn check_header(group_id: &[u8], epoch: i64, ciphertext: &[u8]) -> Result<(), ServiceError> {
    let claimed_epoch = u64::try_from(epoch)
        .map_err(|_| ServiceError::InvalidCiphertext("epoch is negative".into()))?;
    engine::check_application_header(group_id, claimed_epoch, ciphertext).map_err(|error| {
        match error {
            EngineError::WrongGroup => ServiceError::InvalidCiphertext(
                "the PrivateMessage belongs to another conversation".into(),
            ),
            EngineError::EpochMismatch { got, .. } => ServiceError::InvalidCiphertext(format!(
                "the PrivateMessage is for epoch {got}, not epoch {epoch}"
            )),
            other => other.into(),
        }
    })?;
    Ok(())
}

/// A msgId already in the log: the same message again gets its original
/// result, another one is a conflict.
fn same_message(
    previous: store::log::Previous,
    hash: &[u8],
    msg_id: &str,
) -> Result<Sent, ServiceError> {
    if previous.kind == EntryKind::Application && previous.payload_hash == hash {
        Ok(sent(&previous))
    } else {
        Err(ServiceError::DuplicateMessageId(format!(
            "msgId {msg_id:?} is already used in this conversation by another message"
        )))
    }
}

/// A page of the log.
pub struct Page {
    pub messages: Vec<MessageView>,
    pub last_seq: i64,
    pub gap_info: GapInfo,
}

/// getMessages: entries after `since_seq` within the caller's visible range,
/// from the log and the counter only.
pub async fn read(
    db: &PgPool,
    caller: &Did,
    group_id: &[u8],
    settings: &ConvoSettings,
    since_seq: i64,
    limit: i64,
) -> Result<Page, ServiceError> {
    let mut conn = db.acquire().await?;
    let convo = require_convo(&mut conn, group_id).await?;
    let (_, visible_after) = require_member(&mut conn, group_id, caller, settings).await?;
    let after = since_seq.max(visible_after);
    let entries = store::log::read_log(&mut conn, group_id, after, convo.last_seq, limit).await?;
    // The page covers (after, last returned]; with nothing newer it is empty.
    let last_seq = entries.last().map_or(after, |e| e.seq);
    let returned: Vec<i64> = entries.iter().map(|e| e.seq).collect();
    let missing_seqs: Vec<i64> = (after + 1..=last_seq)
        .filter(|seq| returned.binary_search(seq).is_err())
        .collect();
    let convo_id = mls_crypto::to_hex(group_id);
    let messages = entries
        .into_iter()
        .map(|entry| view(&convo_id, entry))
        .collect::<Result<_, ServiceError>>()?;
    Ok(Page {
        messages,
        last_seq,
        gap_info: GapInfo {
            extra: Default::default(),
            has_gaps: !missing_seqs.is_empty(),
            missing_seqs,
            total_messages: convo.last_seq,
        },
    })
}

/// A log entry as getMessages (and the event stream) show it.
pub fn view(convo_id: &str, entry: store::log::Entry) -> Result<MessageView, ServiceError> {
    Ok(MessageView {
        extra: Default::default(),
        id: entry.id,
        convo_id: convo_id.to_owned(),
        seq: entry.seq,
        epoch: entry.epoch,
        kind: entry.kind.into(),
        payload: Bytes(entry.payload),
        sender: entry.sender.as_deref().map(db::stored_did).transpose()?,
        created_at: Datetime::from(entry.created_at),
    })
}

/// getEpoch: the current epoch, for members.
pub async fn epoch(
    db: &PgPool,
    caller: &Did,
    group_id: &[u8],
    settings: &ConvoSettings,
) -> Result<i64, ServiceError> {
    let mut conn = db.acquire().await?;
    let convo = require_convo(&mut conn, group_id).await?;
    require_member(&mut conn, group_id, caller, settings).await?;
    Ok(convo.epoch)
}
