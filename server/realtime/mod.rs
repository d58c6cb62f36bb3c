//! Realtime: `subscribeConvoEvents`, one event stream per device, fed by
//! the log across replicas.
//!
//! The durable log is the only source of truth; a stream only tells a
//! device what it could also read with getMessages, so a client that missed
//! frames repairs itself from the seq it holds (the resume contract is in
//! the lexicon). Across replicas, every append is announced with
//! PostgreSQL `NOTIFY` in its own transaction (a trigger, ids only); each
//! replica listens on one connection, reads each announced entry once, and
//! hands it to its local subscribers whose device may see it at that seq.
//!
//! | module | job |
//! |---|---|
//! | [`bus`] | where announcements come from (a trait; PostgreSQL `LISTEN`) |
//! | [`hub`] | this replica's subscribers: bounded queues, per-user caps |
//! | [`fanout`] | the task that turns announcements into frames |
//! | [`stream`] | one subscription: catch-up, then the queue |
//! | [`ephemeral`] | sendEphemeral: checked, announced, never stored |
//! | [`tickets`] | one-use tickets for clients without headers |
//! | [`store`] | the SQL |

pub mod bus;
pub mod ephemeral;
pub mod fanout;
pub mod hub;
pub mod store;
pub mod stream;
pub mod tickets;

use std::sync::Arc;
use std::time::Duration;

pub use hub::Hub;

use ephemeral::EphemeralLimits;

/// What the realtime methods share: this replica's hub and the limits.
pub struct Realtime {
    pub hub: Arc<Hub>,
    pub settings: RealtimeSettings,
    pub ephemeral: EphemeralLimits,
}

impl Realtime {
    /// Starts this replica's fan-out task, listening on PostgreSQL.
    pub fn spawn_fanout(&self, db: &sqlx::PgPool) -> tokio::task::JoinHandle<()> {
        let source = bus::PgEventSource::new(db.clone());
        tokio::spawn(fanout::run(source, db.clone(), Arc::clone(&self.hub)))
    }

    pub fn new(settings: RealtimeSettings, ephemeral: EphemeralLimits) -> Self {
        Self {
            hub: Arc::new(Hub::new(settings)),
            settings,
            ephemeral,
        }
    }
}

/// The PostgreSQL channel every replica listens on.
pub const CHANNEL: &str = "catbird_events";

/// Realtime settings.
#[derive(Debug, Clone, Copy)]
pub struct RealtimeSettings {
    /// Frames a subscriber may have waiting; past it, it is disconnected.
    pub queue_frames: usize,
    /// Open streams per user (DID) on one replica.
    pub max_streams_per_user: usize,
    /// How long a ticket from getSubscriptionTicket is valid.
    pub ticket_lifetime: Duration,
}
