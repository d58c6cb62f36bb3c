//! The conversation log: sendMessage, getMessages, getEpoch.

use catbird_generated::lexicons::blue::catbird::mls::defs::{GapInfo, MessageView};
use catbird_generated::lexicons::blue::catbird::mls::send_message;
use catbird_generated::runtime::{Bytes, Datetime, Did};
use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::store::log::EntryKind;
use super::{ConvoSettings, require_convo, require_member, sha256, store};
use crate::db;
use crate::error::ServiceError;
use crate::groups::engine::{self, EngineError};
use crate::mls_crypto;

/// An accepted application message.
pub struct Sent {
    pub seq: i64,
    pub epoch: i64,
    pub received_at: DateTime<Utc>,
}

/// sendMessage: checks the PrivateMessage's clear header against the
/// conversation and appends it with the next seq, at the current epoch only.
pub async fn send(
    db: &PgPool,
    caller: &Did,
    group_id: &[u8],
    settings: &ConvoSettings,
    input: &send_message::Input,
) -> Result<Sent, ServiceError> {
    let (msg_id, ciphertext, epoch) = (input.msg_id.as_str(), &input.ciphertext.0[..], input.epoch);
    if let Some(padded) = input.padded_size
        && i64::try_from(ciphertext.len()).unwrap_or(i64::MAX) > padded
    {
        return Err(ServiceError::InvalidCiphertext(format!(
            "the ciphertext is {} bytes, longer than paddedSize {padded}",
            ciphertext.len()
        )));
    }
    check_header(group_id, epoch, ciphertext)?;
    let hash = sha256(ciphertext);

    let mut conn = db.acquire().await?;
    require_convo(&mut conn, group_id).await?;
    require_member(&mut conn, group_id, caller, settings).await?;
    if let Some(previous) = store::log::find_by_id(&mut conn, group_id, msg_id).await? {
        return same_message(previous, &hash, msg_id);
    }
    drop(conn);

    let mut tx = db.begin().await?;
    let Some(seq) = store::next_seq_at_epoch(&mut tx, group_id, epoch).await? else {
        return Err(ServiceError::EpochMismatch(format!(
            "the conversation is no longer at epoch {epoch}: process the log and encrypt again"
        )));
    };
    let entry = store::log::NewEntry {
        seq,
        id: msg_id,
        epoch,
        kind: EntryKind::Application,
        payload: ciphertext,
        payload_hash: &hash,
        sender: None,
        proposed_removal: None,
    };
    match store::log::append(&mut tx, group_id, &entry).await {
        Ok(received_at) => {
            tx.commit().await?;
            Ok(Sent {
                seq,
                epoch,
                received_at,
            })
        }
        // The same msgId was sent concurrently and won: answer as a repeat.
        Err(sqlx::Error::Database(error)) if error.is_unique_violation() => {
            drop(tx);
            let mut conn = db.acquire().await?;
            let previous = store::log::find_by_id(&mut conn, group_id, msg_id)
                .await?
                .ok_or_else(|| ServiceError::Internal("a message vanished".into()))?;
            same_message(previous, &hash, msg_id)
        }
        Err(error) => Err(error.into()),
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
        Ok(Sent {
            seq: previous.seq,
            epoch: previous.epoch,
            received_at: previous.created_at,
        })
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
