//! Group append: concurrent sendMessage calls to one conversation share a
//! statement.
//!
//! Every append to a conversation locks its row to take the next seq, and
//! PostgreSQL serialises the commits of all transactions that notify (the
//! realtime trigger announces each entry): senders to one conversation wait
//! for each other however short each statement is. So the first sender to a
//! conversation starts a runner; senders that arrive while its statement
//! runs queue, and the next statement appends all of them, as a database
//! group-commits: one row lock, one commit for the lot, each message still
//! with its own seq, in arrival order. Conversations never share a batch,
//! so a slow commit in one never holds up another.
//!
//! A batch is only the fast path. A message it does not take (a refusal, a
//! repeat, a conflict anywhere in the batch) goes through sendMessage's own
//! statement, which tells exactly why; only "the database is unavailable"
//! is answered from the batch, so that an outage is not waited out twice.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio::sync::oneshot;

use super::store::log::{self, BatchEntry};
use crate::error::{self, ServiceError};

/// The most messages one statement appends.
const MAX_BATCH: usize = 256;
/// The most ciphertext bytes one statement carries (a batch holds at least
/// one message, however large).
const MAX_BATCH_BYTES: usize = 4 << 20;

/// A message the group append took.
#[derive(Debug, Clone, Copy)]
pub struct Taken {
    pub seq: i64,
    pub created_at: DateTime<Utc>,
}

type Answer = Result<Option<Taken>, ServiceError>;

/// A message waiting for its conversation's next statement, and where its
/// answer goes.
type Waiting = (BatchEntry, oneshot::Sender<Answer>);

/// The waiting messages, by group id.
type QueueMap = HashMap<Vec<u8>, Vec<Waiting>>;
type Queues = Arc<Mutex<QueueMap>>;

/// The group appender of one service process.
#[derive(Clone)]
pub struct Appender {
    db: PgPool,
    queues: Queues,
}

impl Appender {
    /// An appender on `db`.
    pub fn new(db: PgPool) -> Self {
        Self {
            db,
            queues: Queues::default(),
        }
    }

    /// Appends `entry` to the conversation with the next batch: `Some` with
    /// its seq if the batch took it, `None` if it is left to sendMessage's
    /// own statement.
    pub async fn append(&self, group_id: &[u8], entry: BatchEntry) -> Answer {
        let (taken, answer) = oneshot::channel();
        let first = {
            let mut queues = lock(&self.queues);
            match queues.get_mut(group_id) {
                Some(queue) => {
                    queue.push((entry, taken));
                    false
                }
                None => {
                    queues.insert(group_id.to_vec(), vec![(entry, taken)]);
                    true
                }
            }
        };
        if first {
            tokio::spawn(run(self.db.clone(), self.queues.clone(), group_id.to_vec()));
        }
        // A runner that went away answers nothing: the caller's own
        // statement does the work.
        answer.await.unwrap_or(Ok(None))
    }
}

fn lock(queues: &Queues) -> MutexGuard<'_, QueueMap> {
    queues
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A conversation's runner: appends what has queued, answers, and goes
/// again until the queue is empty, then removes it (under the same lock,
/// so a sender either joins this runner's queue or starts the next runner).
async fn run(db: PgPool, queues: Queues, group_id: Vec<u8>) {
    let _abandon = AbandonOnPanic {
        queues: &queues,
        group_id: &group_id,
    };
    loop {
        let (entries, senders): (Vec<_>, Vec<_>) = {
            let mut queues = lock(&queues);
            let Some(queue) = queues.get_mut(&group_id) else {
                return;
            };
            if queue.is_empty() {
                queues.remove(&group_id);
                return;
            }
            queue.drain(..batch_len(queue)).unzip()
        };
        metrics::histogram!("send_message_batch_messages").record(entries.len() as f64);
        let Some(taken) = append_batch(&db, &group_id, &entries).await else {
            // The database cannot be reached: the senders that queued
            // meanwhile get the 503 now too, as in `crate::group_commit`.
            let queued = lock(&queues)
                .get_mut(&group_id)
                .map(std::mem::take)
                .unwrap_or_default();
            let unavailable = || ServiceError::Unavailable(error::DATABASE_UNAVAILABLE.into());
            for sender in senders
                .into_iter()
                .chain(queued.into_iter().map(|(_, s)| s))
            {
                let _ = sender.send(Err(unavailable()));
            }
            continue;
        };
        for (sender, taken) in senders.into_iter().zip(taken) {
            // A sender that gave up waiting no longer needs its answer.
            let _ = sender.send(Ok(taken));
        }
    }
}

/// How many of the queue's first messages the next statement takes.
fn batch_len(queue: &[Waiting]) -> usize {
    let mut bytes = 0;
    let within_budget = queue.iter().take(MAX_BATCH).take_while(|(entry, _)| {
        bytes += entry.payload.len();
        bytes <= MAX_BATCH_BYTES
    });
    within_budget.count().max(1)
}

/// One statement for `entries`: what it took of each, by position; `None`
/// if the database cannot be reached.
async fn append_batch(
    db: &PgPool,
    group_id: &[u8],
    entries: &[BatchEntry],
) -> Option<Vec<Option<Taken>>> {
    let result = async {
        let mut conn = db.acquire().await?;
        log::append_application_batch(&mut conn, group_id, entries).await
    }
    .await;
    let mut taken = vec![None; entries.len()];
    match result {
        Ok(rows) => {
            for row in rows {
                let slot = usize::try_from(row.position - 1)
                    .ok()
                    .and_then(|i| taken.get_mut(i));
                if let Some(slot) = slot {
                    *slot = Some(Taken {
                        seq: row.seq,
                        created_at: row.created_at,
                    });
                }
            }
        }
        Err(error) if error::unavailable(&error) => {
            tracing::warn!(%error, "database unavailable");
            return None;
        }
        // A conflict in the batch: every message goes its own way.
        Err(error) => tracing::debug!(%error, messages = entries.len(), "group append refused"),
    }
    Some(taken)
}

/// Should a runner panic, its queue goes with it: the waiting senders get
/// no answer and use their own statements, and the conversation's next
/// sender starts a new runner.
struct AbandonOnPanic<'a> {
    queues: &'a Queues,
    group_id: &'a [u8],
}

impl Drop for AbandonOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            lock(self.queues).remove(self.group_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting(bytes: usize) -> Waiting {
        let entry = BatchEntry {
            caller: "did:plc:alice".into(),
            id: "m".into(),
            epoch: 0,
            payload: vec![0; bytes],
            payload_hash: vec![],
            key: None,
        };
        (entry, oneshot::channel().0)
    }

    #[test]
    fn a_batch_is_bounded_by_messages_and_bytes() {
        let small: Vec<_> = (0..300).map(|_| waiting(100)).collect();
        assert_eq!(batch_len(&small), MAX_BATCH);
        let megabytes: Vec<_> = (0..5).map(|_| waiting(1 << 20)).collect();
        assert_eq!(batch_len(&megabytes), 4);
        let huge: Vec<_> = (0..3).map(|_| waiting(MAX_BATCH_BYTES + 1)).collect();
        assert_eq!(batch_len(&huge), 1, "one message, however large");
    }
}
