//! Two-phase Welcome delivery: available -> in_flight (fetched, a grace
//! window starts) -> consumed (confirmed, or the window ended unconfirmed).
//! A failed confirmation hands it back (available).

use catbird_generated::lexicons::blue::catbird::mls::defs;
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

use super::store::welcomes::{self as table, Row, WelcomeState};
use crate::device::DeviceId;
use crate::error::ServiceError;

/// Stores the Welcome of a device added by the commit at `commit_seq`. A
/// device added again (after a removal) gets the new Welcome.
pub async fn store(
    tx: &mut PgConnection,
    group_id: &[u8],
    device: &DeviceId,
    key_package_ref: &[u8],
    welcome: &[u8],
    epoch: i64,
    commit_seq: i64,
) -> Result<(), sqlx::Error> {
    table::insert(
        tx,
        group_id,
        &device.to_string(),
        key_package_ref,
        welcome,
        epoch,
        commit_seq,
    )
    .await?;
    count_transition(None, WelcomeState::Available);
    Ok(())
}

/// Withdraws the unconsumed Welcomes of these devices (removed, or joined
/// by external commit).
pub async fn withdraw(
    tx: &mut PgConnection,
    group_id: &[u8],
    devices: &[String],
) -> Result<(), sqlx::Error> {
    table::delete_unconsumed(tx, group_id, devices).await
}

/// A Welcome as handed to its device.
pub struct Fetched {
    pub welcome: Vec<u8>,
    pub state_before: defs::WelcomeState,
    pub epoch: i64,
    pub commit_seq: i64,
    pub in_flight_until: DateTime<Utc>,
}

/// The state a row is really in: an in-flight Welcome whose grace window
/// ended unconfirmed counts as consumed.
fn effective_state(row: &Row, now: DateTime<Utc>) -> WelcomeState {
    match (row.state, row.in_flight_until) {
        (WelcomeState::InFlight, Some(until)) if until <= now => WelcomeState::Consumed,
        (state, _) => state,
    }
}

async fn lock_row(
    tx: &mut PgConnection,
    group_id: &[u8],
    device: &DeviceId,
) -> Result<Row, ServiceError> {
    table::lock(tx, group_id, &device.to_string())
        .await?
        .ok_or_else(|| {
            ServiceError::WelcomeNotFound(format!(
                "no Welcome is stored for {device} in this conversation"
            ))
        })
}

fn consumed(device: &DeviceId) -> ServiceError {
    ServiceError::WelcomeConsumed(format!(
        "the Welcome for {device} was already consumed; rejoin with getGroupInfo and processExternalCommit if the device lost its group"
    ))
}

/// Moves a Welcome from state `from` to `to`, counted in
/// `welcome_transitions_total`.
async fn set_state(
    tx: &mut PgConnection,
    group_id: &[u8],
    device: &DeviceId,
    from: WelcomeState,
    to: WelcomeState,
    in_flight_until: Option<DateTime<Utc>>,
    error_details: Option<&str>,
) -> Result<(), sqlx::Error> {
    table::set_state(
        tx,
        group_id,
        &device.to_string(),
        to,
        in_flight_until,
        error_details,
    )
    .await?;
    count_transition(Some(from), to);
    Ok(())
}

/// Counts a change of state (`from` is `None` for a new Welcome); a refetch
/// within the window, or touching a consumed one, is none.
fn count_transition(from: Option<WelcomeState>, to: WelcomeState) {
    if from == Some(to) {
        return;
    }
    let from = from.map_or("none", WelcomeState::as_str);
    metrics::counter!("welcome_transitions_total", "from" => from, "to" => to.as_str())
        .increment(1);
}

/// getWelcome: hands the Welcome out and starts (or keeps) its grace window.
pub async fn fetch(
    db: &PgPool,
    group_id: &[u8],
    device: &DeviceId,
    grace: chrono::Duration,
) -> Result<Fetched, ServiceError> {
    let now = Utc::now();
    let mut tx = db.begin().await?;
    let row = lock_row(&mut tx, group_id, device).await?;
    let from = effective_state(&row, now);
    let until = match from {
        WelcomeState::Available => now + grace,
        WelcomeState::InFlight => row.in_flight_until.unwrap_or(now + grace),
        WelcomeState::Consumed => {
            // Record that the window ended, so the row says what it is.
            set_state(
                &mut tx,
                group_id,
                device,
                row.state,
                WelcomeState::Consumed,
                None,
                None,
            )
            .await?;
            tx.commit().await?;
            return Err(consumed(device));
        }
    };
    set_state(
        &mut tx,
        group_id,
        device,
        from,
        WelcomeState::InFlight,
        Some(until),
        None,
    )
    .await?;
    tx.commit().await?;
    Ok(Fetched {
        welcome: row.welcome,
        state_before: from.into(),
        epoch: row.epoch,
        commit_seq: row.commit_seq,
        in_flight_until: until,
    })
}

/// confirmWelcome: success consumes it (again, harmlessly); a failure hands
/// it back unless it is already consumed.
pub async fn confirm(
    db: &PgPool,
    group_id: &[u8],
    device: &DeviceId,
    success: bool,
    error_details: Option<&str>,
) -> Result<defs::WelcomeState, ServiceError> {
    let now = Utc::now();
    let mut tx = db.begin().await?;
    let row = lock_row(&mut tx, group_id, device).await?;
    let from = effective_state(&row, now);
    let (to, details) = match (success, from) {
        (true, _) => (WelcomeState::Consumed, None),
        (false, WelcomeState::Consumed) => return Err(consumed(device)),
        (false, _) => (WelcomeState::Available, error_details),
    };
    set_state(&mut tx, group_id, device, from, to, None, details).await?;
    tx.commit().await?;
    Ok(to.into())
}
