//! Two-phase Welcome delivery: available -> in_flight (fetched, a grace
//! window starts) -> consumed (confirmed, or the window ended unconfirmed).
//! A failed confirmation hands it back (available).

use catbird_generated::lexicons::blue::catbird::mls::defs::WelcomeState;
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

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
    sqlx::query!(
        "INSERT INTO welcomes (convo_id, device_id, key_package_ref, welcome, epoch, commit_seq, state) \
         VALUES ($1, $2, $3, $4, $5, $6, 'available') \
         ON CONFLICT (convo_id, device_id) DO UPDATE SET key_package_ref = EXCLUDED.key_package_ref, \
           welcome = EXCLUDED.welcome, epoch = EXCLUDED.epoch, commit_seq = EXCLUDED.commit_seq, \
           state = 'available', in_flight_until = NULL, error_details = NULL, updated_at = now()",
        group_id,
        device.to_string(),
        key_package_ref,
        welcome,
        epoch,
        commit_seq,
    )
    .execute(tx)
    .await?;
    count_transition("none", "available");
    Ok(())
}

/// Withdraws the unconsumed Welcomes of these devices (removed, or joined
/// by external commit).
pub async fn withdraw(
    tx: &mut PgConnection,
    group_id: &[u8],
    devices: &[String],
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "DELETE FROM welcomes WHERE convo_id = $1 AND device_id = ANY($2) AND state <> 'consumed'",
        group_id,
        devices,
    )
    .execute(tx)
    .await?;
    Ok(())
}

/// A Welcome as handed to its device.
pub struct Fetched {
    pub welcome: Vec<u8>,
    pub state_before: WelcomeState,
    pub epoch: i64,
    pub commit_seq: i64,
    pub in_flight_until: DateTime<Utc>,
}

struct Row {
    welcome: Vec<u8>,
    epoch: i64,
    commit_seq: i64,
    state: String,
    in_flight_until: Option<DateTime<Utc>>,
}

/// The state a row is really in: an in-flight Welcome whose grace window
/// ended unconfirmed counts as consumed.
fn effective_state(row: &Row, now: DateTime<Utc>) -> &str {
    match (row.state.as_str(), row.in_flight_until) {
        ("in_flight", Some(until)) if until <= now => "consumed",
        (state, _) => state,
    }
}

async fn lock_row(
    tx: &mut PgConnection,
    group_id: &[u8],
    device: &DeviceId,
) -> Result<Row, ServiceError> {
    sqlx::query_as!(
        Row,
        "SELECT welcome, epoch, commit_seq, state, in_flight_until FROM welcomes \
         WHERE convo_id = $1 AND device_id = $2 FOR UPDATE",
        group_id,
        device.to_string(),
    )
    .fetch_optional(tx)
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

/// Moves a Welcome from state `from` to `state`, counted in
/// `welcome_transitions_total`.
async fn set_state(
    tx: &mut PgConnection,
    group_id: &[u8],
    device: &DeviceId,
    from: &str,
    state: &'static str,
    in_flight_until: Option<DateTime<Utc>>,
    error_details: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE welcomes SET state = $3, in_flight_until = $4, \
           error_details = COALESCE($5, error_details), updated_at = now() \
         WHERE convo_id = $1 AND device_id = $2",
        group_id,
        device.to_string(),
        state,
        in_flight_until,
        error_details,
    )
    .execute(tx)
    .await?;
    count_transition(from, state);
    Ok(())
}

/// Counts a change of state; a refetch within the window, or touching a
/// consumed one, is none.
fn count_transition(from: &str, to: &'static str) {
    if from == to {
        return;
    }
    let from = match from {
        "available" => "available",
        "in_flight" => "in_flight",
        "consumed" => "consumed",
        _ => "none",
    };
    metrics::counter!("welcome_transitions_total", "from" => from, "to" => to).increment(1);
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
    let (state_before, until) = match from {
        "available" => (WelcomeState::Available, now + grace),
        "in_flight" => (
            WelcomeState::InFlight,
            row.in_flight_until.unwrap_or(now + grace),
        ),
        _ => {
            // Record that the window ended, so the row says what it is.
            set_state(
                &mut tx, group_id, device, &row.state, "consumed", None, None,
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
        "in_flight",
        Some(until),
        None,
    )
    .await?;
    tx.commit().await?;
    Ok(Fetched {
        welcome: row.welcome,
        state_before,
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
) -> Result<WelcomeState, ServiceError> {
    let now = Utc::now();
    let mut tx = db.begin().await?;
    let row = lock_row(&mut tx, group_id, device).await?;
    let from = effective_state(&row, now);
    let state = match (success, from) {
        (true, _) => {
            set_state(&mut tx, group_id, device, from, "consumed", None, None).await?;
            WelcomeState::Consumed
        }
        (false, "consumed") => return Err(consumed(device)),
        (false, _) => {
            let details = error_details;
            set_state(&mut tx, group_id, device, from, "available", None, details).await?;
            WelcomeState::Available
        }
    };
    tx.commit().await?;
    Ok(state)
}

/// Whether a Welcome waits for the device (available, or in flight within
/// its window).
pub async fn pending(
    db: &mut PgConnection,
    group_id: &[u8],
    device: &str,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM welcomes WHERE convo_id = $1 AND device_id = $2
             AND (state = 'available' OR (state = 'in_flight' AND in_flight_until > now())))
           AS "pending!""#,
        group_id,
        device,
    )
    .fetch_one(db)
    .await
}
