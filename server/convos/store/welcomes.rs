//! The `welcomes` table (migration `0003_conversations.sql`); the state
//! machine over it is `convos::welcomes`.

use catbird_generated::lexicons::blue::catbird::mls::defs;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;

/// Where a stored Welcome is in its two phases, as the `state` column stores
/// it (a text column whose CHECK constraint admits exactly these values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum WelcomeState {
    Available,
    InFlight,
    Consumed,
}

impl WelcomeState {
    /// The stored value, for logs and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Available => "available",
            Self::InFlight => "in_flight",
            Self::Consumed => "consumed",
        }
    }
}

impl From<WelcomeState> for defs::WelcomeState {
    fn from(state: WelcomeState) -> Self {
        match state {
            WelcomeState::Available => Self::Available,
            WelcomeState::InFlight => Self::InFlight,
            WelcomeState::Consumed => Self::Consumed,
        }
    }
}

/// Stores an available Welcome for a device; one the device already has in
/// this conversation (it was added again after a removal) is replaced.
pub async fn insert(
    tx: &mut PgConnection,
    group_id: &[u8],
    device_id: &str,
    key_package_ref: &[u8],
    welcome: &[u8],
    epoch: i64,
    commit_seq: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO welcomes (convo_id, device_id, key_package_ref, welcome, epoch, commit_seq, state) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (convo_id, device_id) DO UPDATE SET key_package_ref = EXCLUDED.key_package_ref, \
           welcome = EXCLUDED.welcome, epoch = EXCLUDED.epoch, commit_seq = EXCLUDED.commit_seq, \
           state = EXCLUDED.state, in_flight_until = NULL, error_details = NULL, updated_at = now()",
        group_id,
        device_id,
        key_package_ref,
        welcome,
        epoch,
        commit_seq,
        WelcomeState::Available as WelcomeState,
    )
    .execute(tx)
    .await?;
    Ok(())
}

/// Deletes the unconsumed Welcomes of these devices.
pub async fn delete_unconsumed(
    tx: &mut PgConnection,
    group_id: &[u8],
    device_ids: &[String],
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "DELETE FROM welcomes WHERE convo_id = $1 AND device_id = ANY($2) AND state <> $3",
        group_id,
        device_ids,
        WelcomeState::Consumed as WelcomeState,
    )
    .execute(tx)
    .await?;
    Ok(())
}

/// A stored Welcome.
pub struct Row {
    pub welcome: Vec<u8>,
    pub epoch: i64,
    pub commit_seq: i64,
    pub state: WelcomeState,
    pub in_flight_until: Option<DateTime<Utc>>,
}

/// The device's Welcome in this conversation, locked for the rest of the
/// transaction.
pub async fn lock(
    tx: &mut PgConnection,
    group_id: &[u8],
    device_id: &str,
) -> Result<Option<Row>, sqlx::Error> {
    sqlx::query_as!(
        Row,
        r#"SELECT welcome, epoch, commit_seq, state AS "state: WelcomeState", in_flight_until
           FROM welcomes WHERE convo_id = $1 AND device_id = $2 FOR UPDATE"#,
        group_id,
        device_id,
    )
    .fetch_optional(tx)
    .await
}

/// Sets a Welcome's state and window; `error_details`, when given, replaces
/// the recorded ones (a success keeps what an earlier failure reported).
pub async fn set_state(
    tx: &mut PgConnection,
    group_id: &[u8],
    device_id: &str,
    state: WelcomeState,
    in_flight_until: Option<DateTime<Utc>>,
    error_details: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE welcomes SET state = $3, in_flight_until = $4, \
           error_details = COALESCE($5, error_details), updated_at = now() \
         WHERE convo_id = $1 AND device_id = $2",
        group_id,
        device_id,
        state as WelcomeState,
        in_flight_until,
        error_details,
    )
    .execute(tx)
    .await?;
    Ok(())
}
