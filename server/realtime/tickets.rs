//! One-use tickets for subscribeConvoEvents, for clients that cannot send an
//! Authorization header with a WebSocket upgrade (browsers). A ticket is
//! issued to an authenticated caller for one of its devices, is valid for
//! a short time, and authenticates one upgrade request, on any replica.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::store::{self, TicketOwner};
use crate::convos::sha256;
use crate::device::DeviceId;
use crate::error::ServiceError;

/// Issues a ticket for `device` (a device of the caller), valid for
/// `lifetime`. Only its hash is stored.
pub async fn issue(
    db: &PgPool,
    device: &DeviceId,
    lifetime: std::time::Duration,
) -> Result<(String, DateTime<Utc>), ServiceError> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| ServiceError::Internal(format!("random: {e}")))?;
    let ticket = URL_SAFE_NO_PAD.encode(secret);
    let lifetime = chrono::Duration::from_std(lifetime)
        .map_err(|e| ServiceError::Internal(format!("ticket lifetime: {e}")))?;
    let expires_at = Utc::now() + lifetime;
    let did = device.did().as_str();
    store::insert_ticket(
        db,
        &sha256(ticket.as_bytes()),
        did,
        &device.to_string(),
        expires_at,
    )
    .await?;
    Ok((ticket, expires_at))
}

/// The owner of `ticket` if it is valid; it cannot be used again.
pub async fn redeem(db: &PgPool, ticket: &str) -> Result<Option<TicketOwner>, sqlx::Error> {
    store::redeem_ticket(db, &sha256(ticket.as_bytes())).await
}
