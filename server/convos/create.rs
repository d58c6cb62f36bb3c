//! createConvo: the service starts following a group its creator has just
//! made, from the creator's signed GroupInfo for epoch 0.

use catbird_generated::lexicons::blue::catbird::mls::defs::{
    CipherSuite, ConvoMetadata, ConvoView,
};
use catbird_generated::runtime::Did;
use sqlx::PgPool;

use super::group_cache::GroupCache;
use super::{listing, sha256, store};
use crate::error::ServiceError;
use crate::groups::engine;
use crate::mls_crypto;

pub async fn create(
    db: &PgPool,
    groups: &GroupCache,
    caller: &Did,
    convo_id: &str,
    cipher_suite: &CipherSuite,
    group_info: &[u8],
    metadata: Option<&ConvoMetadata>,
) -> Result<ConvoView, ServiceError> {
    let suite = mls_crypto::requested_cipher_suite(cipher_suite.as_str())?;
    let group_id = super::lowercase_hex(convo_id).ok_or_else(|| {
        ServiceError::InvalidGroupInfo(format!("groupId {convo_id:?} is not lowercase hex"))
    })?;
    let created_with = sha256(group_info);
    let mut conn = db.acquire().await?;
    if let Some(existing) = repeat_or_conflict(&mut conn, &group_id, caller, &created_with).await? {
        return Ok(existing);
    }
    drop(conn);

    let group = engine::bootstrap(&group_id, &suite, group_info, caller)?;
    if group.members.len() != 1 {
        return Err(ServiceError::InvalidGroupInfo(format!(
            "a new conversation has exactly one member, the creator's device; this group has {}",
            group.members.len()
        )));
    }
    let mut tx = db.begin().await?;
    let inserted = store::insert(
        &mut tx,
        &group_id,
        suite.as_str(),
        caller.as_str(),
        metadata.and_then(|m| m.name.as_deref()),
        metadata.and_then(|m| m.description.as_deref()),
        group.epoch as i64,
        &group.state,
        group_info,
        &created_with,
    )
    .await?;
    let Some(version) = inserted else {
        // Created concurrently: answer as if we had come second.
        drop(tx);
        let mut conn = db.acquire().await?;
        return match repeat_or_conflict(&mut conn, &group_id, caller, &created_with).await? {
            Some(existing) => Ok(existing),
            None => Err(ServiceError::Internal("a conversation vanished".into())),
        };
    };
    store::insert_creator(&mut tx, &group_id, caller.as_str()).await?;
    store::sync_members(
        &mut tx,
        &group_id,
        &[],
        &group.members,
        0,
        store::LeftReason::Removed,
    )
    .await?;
    tx.commit().await?;
    groups.put(&group_id, version, group.group);

    let mut conn = db.acquire().await?;
    listing::view(&mut conn, &group_id).await
}

/// For an existing conversation: the same caller repeating the same call
/// gets it back; anything else is a conflict.
async fn repeat_or_conflict(
    conn: &mut sqlx::PgConnection,
    group_id: &[u8],
    caller: &Did,
    created_with: &[u8],
) -> Result<Option<ConvoView>, ServiceError> {
    match store::creation(conn, group_id).await? {
        None => Ok(None),
        Some((creator, hash)) if creator == caller.as_str() && hash == created_with => {
            listing::view(conn, group_id).await.map(Some)
        }
        Some(_) => Err(ServiceError::ConvoAlreadyExists(format!(
            "a conversation with groupId {} already exists",
            mls_crypto::to_hex(group_id)
        ))),
    }
}
