//! One subscription: registered with the hub first, then the `#catchUp`
//! (read after registering, so nothing falls between the heads and the
//! live entries), then whatever fan-out queues, until the client leaves or
//! the hub ends the stream.

use std::collections::VecDeque;
use std::sync::Arc;

use catbird_generated::lexicons::blue::catbird::mls::subscribe_convo_events::{
    CatchUp, ConvoHead, Error, Info, InfoName, Message,
};
use catbird_generated::runtime::xrpc::{MethodError, SubscriptionStream};
use chrono::Utc;
use futures_util::StreamExt as _;
use sqlx::PgPool;

use super::hub::{Hub, Item, KickWatch, SubscribeError, Subscription};
use super::store;
use crate::device::DeviceId;
use crate::error::ServiceError;
use crate::mls_crypto::to_hex;

/// Opens the stream of `device` (the caller's, checked by the caller).
pub async fn open(
    hub: &Arc<Hub>,
    db: &PgPool,
    device: &DeviceId,
) -> Result<SubscriptionStream<Message, Error>, ServiceError> {
    let subscription = hub
        .subscribe(device.did().as_str(), &device.to_string())
        .map_err(|error| match error {
            SubscribeError::TooMany { .. } => ServiceError::TooManyConnections(error.to_string()),
            SubscribeError::ShuttingDown => ServiceError::Unavailable(error.to_string()),
        })?;
    let first = catch_up(db, subscription.device()).await?;
    let feed = Feed {
        kick: subscription.kick_watch(),
        subscription,
        db: db.clone(),
        pending: VecDeque::from([first]),
        done: false,
    };
    let frames = futures_util::stream::unfold(feed, |mut feed| async move {
        let message = feed.next().await?;
        count(&message);
        Some((Ok::<_, MethodError<Error>>(message), feed))
    });
    Ok(frames.boxed())
}

/// The heads of every conversation where `device` holds a leaf.
async fn catch_up(db: &PgPool, device: &str) -> Result<Message, ServiceError> {
    let heads = store::heads(db, device).await?;
    Ok(Message::CatchUp(CatchUp {
        extra: Default::default(),
        convos: heads
            .into_iter()
            .map(|head| ConvoHead {
                extra: Default::default(),
                convo_id: to_hex(&head.group_id),
                last_seq: head.last_seq,
                epoch: head.epoch,
            })
            .collect(),
    }))
}

struct Feed {
    subscription: Subscription,
    kick: KickWatch,
    db: PgPool,
    pending: VecDeque<Message>,
    done: bool,
}

impl Feed {
    async fn next(&mut self) -> Option<Message> {
        loop {
            if let Some(message) = self.pending.pop_front() {
                return Some(message);
            }
            if self.done {
                return None;
            }
            tokio::select! {
                biased;
                reason = self.kick.kicked() => {
                    self.done = true;
                    self.pending.push_back(info(reason, "this stream ends: reconnect and catch up"));
                }
                item = self.subscription.queue.recv() => match item {
                    Some(Item::Frame(message, accepted_at)) => {
                        if let Some(accepted_at) = accepted_at {
                            let latency = (Utc::now() - accepted_at).to_std().unwrap_or_default();
                            metrics::histogram!("realtime_fanout_latency_seconds")
                                .record(latency.as_secs_f64());
                        }
                        return Some(Arc::unwrap_or_clone(message));
                    }
                    Some(Item::Resync) => {
                        self.pending.push_back(info(
                            InfoName::Resync,
                            "live events may have been missed: catch up from the #catchUp that follows",
                        ));
                        match catch_up(&self.db, self.subscription.device()).await {
                            Ok(heads) => self.pending.push_back(heads),
                            // Without heads the client cannot know what it
                            // missed: end the stream, it reconnects.
                            Err(error) => {
                                tracing::warn!(%error, "realtime: catch-up failed; closing the stream");
                                self.done = true;
                            }
                        }
                    }
                    None => return None,
                },
            }
        }
    }
}

fn info(name: InfoName, message: &str) -> Message {
    Message::Info(Info {
        extra: Default::default(),
        name,
        message: Some(message.to_owned()),
    })
}

fn count(message: &Message) {
    let kind = match message {
        Message::LogEntry(_) => "logEntry",
        Message::Welcome(_) => "welcome",
        Message::Membership(_) => "membership",
        Message::Ephemeral(_) => "ephemeral",
        Message::CatchUp(_) => "catchUp",
        Message::Info(_) => "info",
        Message::Unknown(_) => "unknown",
    };
    metrics::counter!("realtime_frames_total", "type" => kind).increment(1);
}
