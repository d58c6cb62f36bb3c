//! Reading conversations: views, getConvos, getExpectedConversations and
//! getGroupInfo.

use std::collections::HashMap;

use catbird_generated::lexicons::blue::catbird::mls::defs::{
    CipherSuite, ConvoMetadata, ConvoView, ExpectedConversation, MemberView,
};
use catbird_generated::runtime::{Datetime, Did};
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

use super::{ConvoSettings, Standing, require_convo, store};
use crate::db;
use crate::device::DeviceId;
use crate::error::ServiceError;
use crate::mls_crypto;

/// The view of one conversation.
pub async fn view(db: &mut PgConnection, group_id: &[u8]) -> Result<ConvoView, ServiceError> {
    let convo = require_convo(db, group_id).await?;
    let members = store::current_members(db, &[group_id.to_vec()]).await?;
    to_view(convo, members)
}

fn to_view(convo: store::Convo, members: Vec<store::MemberRow>) -> Result<ConvoView, ServiceError> {
    let has_metadata = convo.name.is_some() || convo.description.is_some();
    let metadata = has_metadata.then_some(ConvoMetadata {
        extra: Default::default(),
        name: convo.name,
        description: convo.description,
    });
    Ok(ConvoView {
        extra: Default::default(),
        group_id: mls_crypto::to_hex(&convo.group_id),
        creator: db::stored_did(&convo.creator)?,
        members: members
            .into_iter()
            .map(|m| {
                Ok(MemberView {
                    extra: Default::default(),
                    device_id: m.device_id,
                    did: db::stored_did(&m.did)?,
                    joined_at: Datetime::from(m.joined_at),
                    is_admin: m.is_admin,
                    leaf_index: i64::from(m.leaf_index),
                })
            })
            .collect::<Result<_, ServiceError>>()?,
        epoch: convo.epoch,
        cipher_suite: CipherSuite::from(convo.cipher_suite.as_str()),
        created_at: Datetime::from(convo.created_at),
        last_message_at: convo.last_message_at.map(Datetime::from),
        metadata,
    })
}

/// getConvos: the caller's current conversations, newest first. The cursor
/// is the last one's (createdAt in microseconds, groupId).
pub async fn convos_of(
    db: &PgPool,
    caller: &Did,
    limit: i64,
    cursor: Option<&str>,
) -> Result<(Vec<ConvoView>, Option<String>), ServiceError> {
    let before = cursor.map(parse_cursor).transpose()?;
    let before = before.as_ref().map(|(time, id)| (*time, id.as_slice()));
    let mut conn = db.acquire().await?;
    // One more than asked for says whether there is a next page.
    let mut convos = store::convos_of(&mut conn, caller.as_str(), before, limit + 1).await?;
    let next = page_cursor(&mut convos, limit, |c| {
        format!(
            "{}.{}",
            c.created_at.timestamp_micros(),
            mls_crypto::to_hex(&c.group_id)
        )
    });
    let ids: Vec<Vec<u8>> = convos.iter().map(|c| c.group_id.clone()).collect();
    let mut members: HashMap<Vec<u8>, Vec<store::MemberRow>> = HashMap::new();
    for member in store::current_members(&mut conn, &ids).await? {
        members
            .entry(member.convo_id.clone())
            .or_default()
            .push(member);
    }
    let views = convos
        .into_iter()
        .map(|convo| {
            let theirs = members.remove(&convo.group_id).unwrap_or_default();
            to_view(convo, theirs)
        })
        .collect::<Result<_, _>>()?;
    Ok((views, next))
}

/// Keeps `limit` items and returns the cursor of the last one if there
/// were more.
fn page_cursor<T>(items: &mut Vec<T>, limit: i64, cursor: impl Fn(&T) -> String) -> Option<String> {
    let limit = usize::try_from(limit).unwrap_or(0);
    if items.len() <= limit {
        return None;
    }
    items.truncate(limit);
    items.last().map(cursor)
}

/// A getConvos cursor: `<createdAt in microseconds>.<groupId in hex>`.
fn parse_cursor(cursor: &str) -> Result<(DateTime<Utc>, Vec<u8>), ServiceError> {
    let (micros, id) = cursor.split_once('.').ok_or_else(|| bad_cursor(cursor))?;
    let micros = micros.parse().map_err(|_| bad_cursor(cursor))?;
    let time = DateTime::from_timestamp_micros(micros).ok_or_else(|| bad_cursor(cursor))?;
    let id = mls_crypto::from_hex(id).ok_or_else(|| bad_cursor(cursor))?;
    Ok((time, id))
}

fn bad_cursor(cursor: &str) -> ServiceError {
    ServiceError::InvalidCursor(format!("{cursor:?} is not a cursor of this method"))
}

/// getExpectedConversations: where the device should be, by convoId.
pub async fn expected(
    db: &PgPool,
    caller: &Did,
    device: &DeviceId,
    settings: &ConvoSettings,
    limit: i64,
    cursor: Option<&str>,
) -> Result<(Vec<ExpectedConversation>, Option<String>), ServiceError> {
    let after = match cursor {
        None => Vec::new(),
        Some(cursor) => mls_crypto::from_hex(cursor).ok_or_else(|| bad_cursor(cursor))?,
    };
    let window_start = Utc::now() - settings.rejoin_window;
    let mut conn = db.acquire().await?;
    let mut rows = store::expected(
        &mut conn,
        caller.as_str(),
        &device.to_string(),
        window_start,
        &after,
        limit + 1,
    )
    .await?;
    let next = page_cursor(&mut rows, limit, |r| mls_crypto::to_hex(&r.group_id));
    let conversations = rows
        .into_iter()
        .map(|row| ExpectedConversation {
            extra: Default::default(),
            convo_id: mls_crypto::to_hex(&row.group_id),
            epoch: row.epoch,
            needs_rejoin: !row.has_leaf && !row.welcome_pending,
            welcome_pending: row.welcome_pending,
            left_at: row.left_at.map(Datetime::from),
        })
        .collect();
    Ok((conversations, next))
}

/// getGroupInfo: the current GroupInfo, for members and recent past
/// members; for the latter with the end of their rejoin window.
pub async fn group_info(
    db: &PgPool,
    caller: &Did,
    group_id: &[u8],
    settings: &ConvoSettings,
) -> Result<(Vec<u8>, i64, Option<DateTime<Utc>>), ServiceError> {
    // One statement: the conversation with the caller's user row.
    let mut conn = db.acquire().await?;
    let (group_info, epoch, user) = store::group_info(&mut conn, group_id, caller.as_str())
        .await?
        .ok_or_else(|| super::not_found(&crate::mls_crypto::to_hex(group_id)))?;
    let expires_at = Standing::of(user, settings).rejoin_access(caller, settings)?;
    Ok((group_info, epoch, expires_at))
}
