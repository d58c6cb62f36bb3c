//! Group commit: small writes of concurrent requests, made together.
//!
//! One task owns a kind of write (token ids, audit events). Requests queue
//! their items and wait; the task takes everything queued (at least one
//! item), writes it in one statement, answers each request, and goes again,
//! as a database group-commits. Under load many requests share one round
//! trip and one transaction; alone, a request waits for its own statement
//! only. Two statements may run at once, so a batch need not wait for the
//! one before it. While the database cannot be reached, the items that
//! queued during a failed attempt get its answer at once rather than each
//! waiting out one more attempt, so a client still learns of an outage
//! within about one acquire timeout.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::{Semaphore, mpsc, oneshot};

/// The most items one statement writes.
const MAX_BATCH: usize = 256;

/// A kind of write made in batches.
pub trait Batch: Send + Sync + 'static {
    type Item: Send + 'static;
    type Answer: Clone + Send + 'static;

    /// Writes `items` in one statement; one answer per item, in order.
    fn write(&self, items: &[Self::Item]) -> impl Future<Output = Vec<Self::Answer>> + Send;

    /// Whether `answer` says the database could not be reached.
    fn unavailable(answer: &Self::Answer) -> bool;
}

/// How many statements of one kind may run at once: while one runs, the
/// next batch can start instead of waiting for it.
const IN_FLIGHT: usize = 2;

/// An item, when it was queued, and where its answer goes.
type Job<B> = (
    <B as Batch>::Item,
    Instant,
    oneshot::Sender<<B as Batch>::Answer>,
);

/// The last attempt that found the database unavailable: when it ended,
/// and its answer.
type LastFailure<A> = Arc<Mutex<Option<(Instant, A)>>>;

/// The queue of one kind of write, and its task.
pub struct GroupCommit<B: Batch> {
    queue: mpsc::Sender<Job<B>>,
}

impl<B: Batch> Clone for GroupCommit<B> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
        }
    }
}

impl<B: Batch> std::fmt::Debug for GroupCommit<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit").finish_non_exhaustive()
    }
}

impl<B: Batch> GroupCommit<B> {
    /// Starts the task on the current Tokio runtime; it ends when the last
    /// clone of the returned queue is dropped.
    pub fn start(batch: B) -> Self {
        let (queue, jobs) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(run(Arc::new(batch), jobs));
        Self { queue }
    }

    /// Writes `item` with the next batch and returns its answer; `None` if
    /// the task has stopped (only while the runtime shuts down).
    pub async fn submit(&self, item: B::Item) -> Option<B::Answer> {
        let (answer, answered) = oneshot::channel();
        self.queue.send((item, Instant::now(), answer)).await.ok()?;
        answered.await.ok()
    }
}

async fn run<B: Batch>(batch: Arc<B>, mut queue: mpsc::Receiver<Job<B>>) {
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT));
    let failed: LastFailure<B::Answer> = Arc::default();
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    loop {
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        if queue.recv_many(&mut jobs, MAX_BATCH).await == 0 {
            return;
        }
        let failure = lock(&failed).clone();
        let (mut items, mut waiting) = (Vec::with_capacity(jobs.len()), Vec::new());
        for (item, queued_at, answer) in jobs.drain(..) {
            match &failure {
                // It waited through that attempt: it gets its answer now
                // rather than wait out one more.
                Some((ended, failure)) if queued_at < *ended => {
                    let _ = answer.send(failure.clone());
                }
                _ => {
                    items.push(item);
                    waiting.push(answer);
                }
            }
        }
        if items.is_empty() {
            continue;
        }
        let (batch, failed) = (batch.clone(), failed.clone());
        tokio::spawn(async move {
            let answers = batch.write(&items).await;
            if let Some(failure) = answers.iter().find(|answer| B::unavailable(answer)) {
                *lock(&failed) = Some((Instant::now(), failure.clone()));
            }
            // A request that gave up waiting no longer needs its answer.
            for (answer, waiting) in answers.into_iter().zip(waiting) {
                let _ = waiting.send(answer);
            }
            drop(permit);
        });
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
