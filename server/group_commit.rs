//! Group commit: small writes of concurrent requests, made together.
//!
//! One task owns a kind of write (token ids, audit events). Requests queue
//! their items and wait; the task takes everything queued (at least one
//! item), writes it in one statement, answers each request, and goes again,
//! as a database group-commits. Under load many requests share one round
//! trip and one transaction; alone, a request waits for its own statement
//! only. While the database cannot be reached, the items that queued during
//! a failed attempt get its answer at once rather than each waiting out one
//! more attempt, so a client still learns of an outage within about one
//! acquire timeout.

use std::future::Future;

use tokio::sync::{mpsc, oneshot};

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

/// The queue of one kind of write, and its task.
pub struct GroupCommit<B: Batch> {
    queue: mpsc::Sender<(B::Item, oneshot::Sender<B::Answer>)>,
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
        tokio::spawn(run(batch, jobs));
        Self { queue }
    }

    /// Writes `item` with the next batch and returns its answer; `None` if
    /// the task has stopped (only while the runtime shuts down).
    pub async fn submit(&self, item: B::Item) -> Option<B::Answer> {
        let (answer, answered) = oneshot::channel();
        self.queue.send((item, answer)).await.ok()?;
        answered.await.ok()
    }
}

async fn run<B: Batch>(batch: B, mut queue: mpsc::Receiver<(B::Item, oneshot::Sender<B::Answer>)>) {
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut jobs, MAX_BATCH).await > 0 {
        let (items, waiting): (Vec<_>, Vec<_>) = jobs.drain(..).unzip();
        let answers = batch.write(&items).await;
        if let Some(failure) = answers.iter().find(|answer| B::unavailable(answer)) {
            while let Ok((_, queued)) = queue.try_recv() {
                let _ = queued.send(failure.clone());
            }
        }
        // A request that gave up waiting no longer needs its answer.
        for (answer, waiting) in answers.into_iter().zip(waiting) {
            let _ = waiting.send(answer);
        }
    }
}
