//! sendEphemeral: an application message for the current epoch, checked
//! like sendMessage, announced to every replica and delivered to the
//! member devices connected now. It is never stored.

use std::num::NonZeroU32;

use catbird_generated::lexicons::blue::catbird::mls::send_ephemeral;
use catbird_generated::runtime::Did;
use governor::{DefaultKeyedRateLimiter, Quota};
use sqlx::PgPool;

use super::bus::Announcement;
use super::store;
use crate::convos::{ConvoSettings, log, require_convo, require_member};
use crate::error::ServiceError;

/// The ephemeral limits: size, and messages per minute per user.
pub struct EphemeralLimits {
    max_bytes: usize,
    per_user: Option<DefaultKeyedRateLimiter<String>>,
}

impl EphemeralLimits {
    /// `per_minute` of `None` is unlimited.
    pub fn new(max_bytes: usize, per_minute: Option<NonZeroU32>) -> Self {
        Self {
            max_bytes,
            per_user: per_minute
                .map(|rate| DefaultKeyedRateLimiter::dashmap(Quota::per_minute(rate))),
        }
    }
}

pub async fn send(
    db: &PgPool,
    caller: &Did,
    group_id: &[u8],
    settings: &ConvoSettings,
    limits: &EphemeralLimits,
    input: &send_ephemeral::Input,
) -> Result<i64, ServiceError> {
    let ciphertext = &input.ciphertext.0;
    if ciphertext.len() > limits.max_bytes {
        return Err(ServiceError::MessageTooLarge(format!(
            "an ephemeral message holds at most {} bytes; this one has {}",
            limits.max_bytes,
            ciphertext.len()
        )));
    }
    log::check_header(group_id, input.epoch, ciphertext)?;
    let mut conn = db.acquire().await?;
    let convo = require_convo(&mut conn, group_id).await?;
    require_member(&mut conn, group_id, caller, settings).await?;
    drop(conn);
    if convo.epoch != input.epoch {
        return Err(ServiceError::EpochMismatch(format!(
            "the conversation is at epoch {}, not {}",
            convo.epoch, input.epoch
        )));
    }
    // Spent only by messages that would be delivered.
    if let Some(budget) = &limits.per_user
        && budget.check_key(&caller.as_str().to_owned()).is_err()
    {
        return Err(ServiceError::RateLimitExceeded(
            "too many ephemeral messages; they are dropped, not queued: send fewer".into(),
        ));
    }
    let payload =
        Announcement::ephemeral_payload(group_id, input.epoch, caller.as_str(), ciphertext);
    store::announce(db, &payload).await?;
    metrics::counter!("realtime_ephemeral_messages_total").increment(1);
    Ok(input.epoch)
}
