//! Where announcements come from. [`EventSource`] is the seam for another
//! bus; [`PgEventSource`] listens on PostgreSQL.
//!
//! Announcements are text: `e <convo hex> <seq>` for a log entry (written
//! by the `convo_messages` trigger), `x <convo hex> <epoch> <sender DID>
//! <base64 ciphertext>` for an ephemeral message (written by sendEphemeral;
//! it is never stored, so it travels whole, within NOTIFY's 8000 bytes).

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sqlx::PgPool;
use sqlx::postgres::PgListener;

use super::CHANNEL;

/// One announcement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Announcement {
    /// A log entry was appended.
    Entry { group_id: Vec<u8>, seq: i64 },
    /// An ephemeral message, whole.
    Ephemeral {
        group_id: Vec<u8>,
        epoch: i64,
        sender: String,
        ciphertext: Vec<u8>,
    },
}

impl Announcement {
    /// The NOTIFY payload of an ephemeral message (log entries are
    /// announced by the database itself).
    pub fn ephemeral_payload(
        group_id: &[u8],
        epoch: i64,
        sender: &str,
        ciphertext: &[u8],
    ) -> String {
        format!(
            "x {} {epoch} {sender} {}",
            crate::mls_crypto::to_hex(group_id),
            STANDARD.encode(ciphertext)
        )
    }

    /// Parses a payload; `None` for anything else (logged by the caller).
    pub fn parse(payload: &str) -> Option<Self> {
        let mut parts = payload.split(' ');
        let kind = parts.next()?;
        let group_id = crate::mls_crypto::from_hex(parts.next()?)?;
        let announcement = match kind {
            "e" => Self::Entry {
                group_id,
                seq: parts.next()?.parse().ok()?,
            },
            "x" => Self::Ephemeral {
                group_id,
                epoch: parts.next()?.parse().ok()?,
                sender: parts.next()?.to_owned(),
                ciphertext: STANDARD.decode(parts.next()?).ok()?,
            },
            _ => return None,
        };
        parts.next().is_none().then_some(announcement)
    }
}

/// Why [`EventSource::next`] has nothing to give.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The connection was lost: announcements made meanwhile are gone.
    #[error("the announcement connection was lost: {0}")]
    Lost(String),
}

/// A source of announcements, in commit order.
pub trait EventSource: Send {
    /// The next announcement's payload. After [`SourceError::Lost`] call
    /// [`EventSource::reconnect`]; subscribers must then resync.
    fn next(&mut self) -> impl Future<Output = Result<String, SourceError>> + Send;

    /// Connects (again) and starts listening; announcements made before it
    /// returns may have been missed.
    fn reconnect(&mut self) -> impl Future<Output = Result<(), SourceError>> + Send;
}

/// PostgreSQL `LISTEN` on one dedicated connection (outside the pool's
/// budget: a listener holds its connection for good).
pub struct PgEventSource {
    pool: PgPool,
    listener: Option<PgListener>,
}

impl PgEventSource {
    /// Not connected yet: call [`EventSource::reconnect`] first.
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            listener: None,
        }
    }
}

impl EventSource for PgEventSource {
    async fn next(&mut self) -> Result<String, SourceError> {
        let Some(listener) = self.listener.as_mut() else {
            return Err(SourceError::Lost("not connected".into()));
        };
        // `try_recv` reports a lost connection as `None` (`recv` would hide
        // it and reconnect silently); an error (e.g. the backend was
        // terminated) is a loss too.
        let lost = match listener.try_recv().await {
            Ok(Some(notification)) => return Ok(notification.payload().to_owned()),
            Ok(None) => "connection closed".to_owned(),
            Err(error) => error.to_string(),
        };
        self.listener = None;
        Err(SourceError::Lost(lost))
    }

    async fn reconnect(&mut self) -> Result<(), SourceError> {
        self.listener = None;
        let lost = |error: sqlx::Error| SourceError::Lost(error.to_string());
        let mut listener = PgListener::connect_with(&self.pool).await.map_err(lost)?;
        listener.listen(CHANNEL).await.map_err(lost)?;
        self.listener = Some(listener);
        Ok(())
    }
}

/// How long to wait before reconnect attempt `attempt` (0-based): quick at
/// first, at most a few seconds.
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << attempt.min(5)).min(3_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements_round_trip_and_garbage_is_refused() {
        let ephemeral = Announcement::ephemeral_payload(&[0xab, 0x01], 7, "did:plc:a", b"hi");
        assert_eq!(
            Announcement::parse(&ephemeral),
            Some(Announcement::Ephemeral {
                group_id: vec![0xab, 0x01],
                epoch: 7,
                sender: "did:plc:a".into(),
                ciphertext: b"hi".to_vec(),
            })
        );
        assert_eq!(
            Announcement::parse("e ab01 42"),
            Some(Announcement::Entry {
                group_id: vec![0xab, 0x01],
                seq: 42
            })
        );
        for garbage in [
            "",
            "e",
            "e zz 1",
            "e ab01",
            "e ab01 x",
            "e ab01 1 2",
            "q ab01 1",
        ] {
            assert_eq!(Announcement::parse(garbage), None, "{garbage:?}");
        }
        assert_eq!(backoff(0), Duration::from_millis(100));
        assert_eq!(backoff(30), Duration::from_millis(3_000));
    }
}
