//! Conversations: the group lifecycle on top of the MLS core
//! ([`crate::groups::engine`]). This layer owns policy (who may do what)
//! and storage (the log, the epoch, members, Welcomes), each operation in
//! one transaction.
//!
//! | module | job |
//! |---|---|
//! | [`create`] | createConvo |
//! | [`commits`] | every commit: addMembers, commitGroupChange, removeMember, processExternalCommit; leaveConvo's proposal |
//! | [`group_cache`] | parsed groups kept between commits, checked against the stored state version |
//! | [`log`] | sendMessage, getMessages, getEpoch |
//! | [`welcomes`] | two-phase Welcome delivery |
//! | [`listing`] | getConvos, getExpectedConversations, getGroupInfo |
//! | [`store`] | the SQL |

pub mod appender;
pub mod commits;
pub mod create;
pub mod group_cache;
pub mod listing;
pub mod log;
pub mod store;
pub mod welcomes;

use catbird_generated::runtime::Did;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use sqlx::PgConnection;

use crate::error::ServiceError;
use crate::mls_crypto;

/// Group lifecycle settings.
#[derive(Debug, Clone, Copy)]
pub struct ConvoSettings {
    /// How long a fetched Welcome may be fetched again before it counts as
    /// consumed.
    pub welcome_grace: chrono::Duration,
    /// How long a user whose last device left may still rejoin.
    pub rejoin_window: chrono::Duration,
}

/// A conversation id (`convoId`): the MLS group id in lowercase hex.
pub fn group_id(convo_id: &str) -> Result<Vec<u8>, ServiceError> {
    lowercase_hex(convo_id).ok_or_else(|| not_found(convo_id))
}

/// Group ids travel as lowercase hex; anything else names no group.
fn lowercase_hex(text: &str) -> Option<Vec<u8>> {
    let lowercase = !text.bytes().any(|b| b.is_ascii_uppercase());
    mls_crypto::from_hex(text).filter(|_| lowercase)
}

pub(crate) fn not_found(convo_id: &str) -> ServiceError {
    ServiceError::ConvoNotFound(format!("no conversation {convo_id}"))
}

pub(crate) fn sha256(bytes: &[u8]) -> Vec<u8> {
    Sha256::digest(bytes).to_vec()
}

/// A user's relation to a conversation, as the access rules see it.
pub enum Standing {
    /// Holds at least one leaf.
    Current {
        is_admin: bool,
        visible_after_seq: i64,
    },
    /// The user's last device left at `left_at`, within the rejoin window.
    Recent {
        left_at: DateTime<Utc>,
    },
    Banned,
    /// Never a member, or left longer ago than the rejoin window.
    Outsider,
}

impl Standing {
    /// The standing of a user with this row (`None`: never a member).
    pub fn of(user: Option<store::User>, settings: &ConvoSettings) -> Self {
        let Some(user) = user else {
            return Self::Outsider;
        };
        match (user.banned_at, user.left_at) {
            (Some(_), _) => Self::Banned,
            (None, None) => Self::Current {
                is_admin: user.is_admin,
                visible_after_seq: user.visible_after_seq,
            },
            (None, Some(left_at)) if left_at + settings.rejoin_window > Utc::now() => {
                Self::Recent { left_at }
            }
            (None, Some(_)) => Self::Outsider,
        }
    }

    /// Rejoin access (getGroupInfo, processExternalCommit): current members
    /// and recent past members, never banned users. Returns when a past
    /// member's window closes.
    pub fn rejoin_access(
        self,
        did: &Did,
        settings: &ConvoSettings,
    ) -> Result<Option<DateTime<Utc>>, ServiceError> {
        match self {
            Self::Current { .. } => Ok(None),
            Self::Recent { left_at } => Ok(Some(left_at + settings.rejoin_window)),
            Self::Banned => Err(ServiceError::Banned(format!(
                "{} is banned from this conversation",
                did.as_str()
            ))),
            Self::Outsider => Err(ServiceError::NotMember(format!(
                "{} is neither a member nor a member who left within the rejoin window",
                did.as_str()
            ))),
        }
    }
}

/// Where `did` stands in the conversation (which must exist).
pub async fn standing(
    db: &mut PgConnection,
    group_id: &[u8],
    did: &Did,
    settings: &ConvoSettings,
) -> Result<Standing, ServiceError> {
    let user = store::user(db, group_id, did.as_str()).await?;
    Ok(Standing::of(user, settings))
}

/// The caller must hold a leaf: returns its admin flag and visible range.
pub async fn require_member(
    db: &mut PgConnection,
    group_id: &[u8],
    did: &Did,
    settings: &ConvoSettings,
) -> Result<(bool, i64), ServiceError> {
    match standing(db, group_id, did, settings).await? {
        Standing::Current {
            is_admin,
            visible_after_seq,
        } => Ok((is_admin, visible_after_seq)),
        _ => Err(ServiceError::NotMember(format!(
            "{} has no device in this conversation",
            did.as_str()
        ))),
    }
}

/// Fails with ConvoNotFound unless the conversation exists.
pub async fn require_convo(
    db: &mut PgConnection,
    group_id: &[u8],
) -> Result<store::Convo, ServiceError> {
    store::find(db, group_id)
        .await?
        .ok_or_else(|| not_found(&mls_crypto::to_hex(group_id)))
}
