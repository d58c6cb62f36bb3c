//! The external-commit rollout switch: on or off, a share of users and an
//! allow-list. It lives in one database row (`external_commit_rollout`),
//! read on every processExternalCommit (by the statement that locks the
//! conversation, `convos::store::lock`) and changed with
//! `catbird-mls external-commits`, so operators move it without a rebuild
//! or a restart, for every service process at once.

use serde::Serialize;
use sha2::{Digest as _, Sha256};
use sqlx::PgPool;

use crate::error::ServiceError;

/// The switch's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rollout {
    pub enabled: bool,
    /// Share of users (0..=100), by a stable hash of the DID.
    pub percent: u8,
    /// DIDs that may always use external commits while enabled.
    pub allow_list: Vec<String>,
}

/// A change to the switch; `None` leaves a setting as it is.
#[derive(Debug, Clone, Default)]
pub struct Change {
    pub enabled: Option<bool>,
    pub percent: Option<u8>,
    pub allow: Vec<String>,
    pub disallow: Vec<String>,
}

impl Change {
    /// Whether this changes nothing.
    pub fn is_empty(&self) -> bool {
        self.enabled.is_none()
            && self.percent.is_none()
            && self.allow.is_empty()
            && self.disallow.is_empty()
    }
}

impl Rollout {
    /// `ExternalCommitNotEnabled` unless `did` may rejoin by external
    /// commit; the message tells the client how to fall back.
    pub fn check(&self, did: &str) -> Result<(), ServiceError> {
        if self.admits(did) {
            return Ok(());
        }
        let why = if self.enabled {
            "external commits are not yet rolled out to this account"
        } else {
            "external commits are switched off"
        };
        Err(ServiceError::ExternalCommitNotEnabled(format!(
            "{why}: rejoin through a Welcome (another member re-adds this device with addMembers)"
        )))
    }

    pub fn from_row(enabled: bool, percent: i16, allow_list: Vec<String>) -> Self {
        Self {
            enabled,
            // The table's CHECK keeps it within 0..=100.
            percent: u8::try_from(percent).unwrap_or(0),
            allow_list,
        }
    }

    /// Whether `did` may rejoin by external commit.
    pub fn admits(&self, did: &str) -> bool {
        self.enabled
            && (self.allow_list.iter().any(|allowed| allowed == did) || bucket(did) < self.percent)
    }
}

/// The user's place in the rollout, 0..100: the same for a DID in every
/// process and version, so raising the percentage only ever adds users.
pub fn bucket(did: &str) -> u8 {
    let digest = Sha256::digest(did.as_bytes());
    let head = u64::from_be_bytes(
        digest[..8]
            .try_into()
            .expect("a SHA-256 digest has 32 bytes"),
    );
    u8::try_from(head % 100).expect("below 100")
}

/// The current state.
pub async fn load(db: &PgPool) -> Result<Rollout, sqlx::Error> {
    let row = sqlx::query!("SELECT enabled, percent, allow_list FROM external_commit_rollout")
        .fetch_one(db)
        .await?;
    Ok(Rollout::from_row(row.enabled, row.percent, row.allow_list))
}

/// Applies a change in one statement (concurrent changes do not lose each
/// other's allow-list edits) and returns the new state.
pub async fn change(db: &PgPool, change: &Change) -> Result<Rollout, sqlx::Error> {
    let row = sqlx::query!(
        r#"UPDATE external_commit_rollout SET
               enabled = COALESCE($1, enabled),
               percent = COALESCE($2, percent),
               allow_list = ARRAY(
                   SELECT DISTINCT did FROM unnest(allow_list || $3::text[]) AS did
                   WHERE NOT did = ANY($4::text[]) ORDER BY did),
               updated_at = now()
           RETURNING enabled, percent, allow_list"#,
        change.enabled,
        change.percent.map(i16::from),
        &change.allow,
        &change.disallow,
    )
    .fetch_one(db)
    .await?;
    Ok(Rollout::from_row(row.enabled, row.percent, row.allow_list))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rollout(enabled: bool, percent: u8, allow: &[&str]) -> Rollout {
        Rollout {
            enabled,
            percent,
            allow_list: allow.iter().map(|did| (*did).to_owned()).collect(),
        }
    }

    #[test]
    fn buckets_are_stable_and_spread() {
        assert_eq!(bucket("did:plc:alice"), bucket("did:plc:alice"));
        let dids: Vec<String> = (0..1000).map(|i| format!("did:plc:user{i}")).collect();
        let below_half = dids.iter().filter(|did| bucket(did) < 50).count();
        assert!(
            (400..600).contains(&below_half),
            "{below_half} of 1000 below 50"
        );
    }

    #[test]
    fn switch_percent_and_allow_list() {
        let did = "did:plc:alice";
        assert!(!rollout(false, 100, &[did]).admits(did));
        assert!(!rollout(true, 0, &[]).admits(did));
        assert!(rollout(true, 0, &[did]).admits(did));
        assert!(rollout(true, 100, &[]).admits(did));
        let place = bucket(did);
        assert!(rollout(true, place + 1, &[]).admits(did));
        assert!(!rollout(true, place, &[]).admits(did));
    }
}
