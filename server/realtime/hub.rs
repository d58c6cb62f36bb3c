//! This replica's subscribers, by device. Each has a bounded queue: a
//! subscriber that does not keep up is told and dropped, never buffered
//! without limit and never allowed to slow the others down.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use catbird_generated::lexicons::blue::catbird::mls::subscribe_convo_events::{InfoName, Message};
use chrono::{DateTime, Utc};
use tokio::sync::{Notify, mpsc};

use super::RealtimeSettings;

/// What waits in a subscriber's queue.
#[derive(Debug, Clone)]
pub enum Item {
    /// A frame, shared by every stream it goes to, with when its log
    /// entry was accepted (for the fan-out latency metric).
    Frame(Arc<Message>, Option<DateTime<Utc>>),
    /// Announcements may have been lost: send `#info resync` and a fresh
    /// `#catchUp`.
    Resync,
}

/// Why [`Hub::subscribe`] refused.
#[derive(Debug, thiserror::Error)]
pub enum SubscribeError {
    #[error("{did} already has {max} event streams open here")]
    TooMany { did: String, max: usize },
    #[error("the service is shutting down")]
    ShuttingDown,
}

/// The subscribers of this replica.
pub struct Hub {
    settings: RealtimeSettings,
    inner: Mutex<Inner>,
    next_id: AtomicU64,
    shutting_down: AtomicBool,
}

#[derive(Default)]
struct Inner {
    by_device: HashMap<String, Vec<Arc<Subscriber>>>,
    per_user: HashMap<String, usize>,
}

struct Subscriber {
    id: u64,
    did: String,
    device: String,
    queue: mpsc::Sender<Item>,
    kick: Kick,
    /// Still counted in the hub (a slow consumer leaves it at once, its
    /// stream only when its last frame went out or timed out).
    registered: AtomicBool,
}

/// What [`Subscriber::offer`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Offered {
    Queued,
    /// The queue was full: the subscriber is told to leave.
    TooSlow,
}

/// Ends a subscription from outside its queue (which may be full).
#[derive(Default)]
struct Kick {
    reason: Mutex<Option<InfoName>>,
    notify: Notify,
}

/// One registered stream; dropping it unregisters it.
pub struct Subscription {
    hub: Arc<Hub>,
    subscriber: Arc<Subscriber>,
    /// The frames fan-out queued for this stream.
    pub queue: mpsc::Receiver<Item>,
}

impl Hub {
    pub fn new(settings: RealtimeSettings) -> Self {
        Self {
            settings,
            inner: Mutex::default(),
            next_id: AtomicU64::new(0),
            shutting_down: AtomicBool::new(false),
        }
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        // The lock guards plain maps updated in one step: a panic while it
        // was held cannot leave them half-changed.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a stream for `device` of user `did`, within the per-user
    /// limit. From now on it receives what fan-out delivers.
    pub fn subscribe(
        self: &Arc<Self>,
        did: &str,
        device: &str,
    ) -> Result<Subscription, SubscribeError> {
        if self.shutting_down.load(Ordering::Acquire) {
            return Err(SubscribeError::ShuttingDown);
        }
        let (queue, receiver) = mpsc::channel(self.settings.queue_frames.max(1));
        let subscriber = Arc::new(Subscriber {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            did: did.to_owned(),
            device: device.to_owned(),
            queue,
            kick: Kick::default(),
            registered: AtomicBool::new(true),
        });
        let mut inner = self.inner();
        let streams = inner.per_user.entry(did.to_owned()).or_default();
        if *streams >= self.settings.max_streams_per_user {
            return Err(SubscribeError::TooMany {
                did: did.to_owned(),
                max: self.settings.max_streams_per_user,
            });
        }
        *streams += 1;
        inner
            .by_device
            .entry(device.to_owned())
            .or_default()
            .push(Arc::clone(&subscriber));
        let count: usize = inner.per_user.values().sum();
        drop(inner);
        metrics::gauge!("realtime_subscribers").set(count as f64);
        Ok(Subscription {
            hub: Arc::clone(self),
            subscriber,
            queue: receiver,
        })
    }

    /// Takes a subscriber out (once, whoever asks first).
    fn unsubscribe(&self, subscriber: &Subscriber) {
        if !subscriber.registered.swap(false, Ordering::AcqRel) {
            return;
        }
        let (did, device) = (subscriber.did.as_str(), subscriber.device.as_str());
        let mut inner = self.inner();
        if let Some(list) = inner.by_device.get_mut(device) {
            list.retain(|s| s.id != subscriber.id);
            if list.is_empty() {
                inner.by_device.remove(device);
            }
        }
        if let Some(count) = inner.per_user.get_mut(did) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                inner.per_user.remove(did);
            }
        }
        let count: usize = inner.per_user.values().sum();
        drop(inner);
        metrics::gauge!("realtime_subscribers").set(count as f64);
    }

    /// How many streams are registered here.
    pub fn streams(&self) -> usize {
        self.inner().per_user.values().sum()
    }

    /// Whether any stream is open here (fan-out skips its reads otherwise).
    pub fn is_empty(&self) -> bool {
        self.inner().by_device.is_empty()
    }

    /// The devices with a stream here, among `devices`.
    pub fn connected<'a>(&self, devices: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        let inner = self.inner();
        devices
            .into_iter()
            .filter(|device| inner.by_device.contains_key(*device))
            .map(str::to_owned)
            .collect()
    }

    /// Queues `item` for every stream of `device`; a stream whose queue is
    /// full is disconnected as a slow consumer.
    pub fn deliver(&self, device: &str, item: &Item) {
        let subscribers = self
            .inner()
            .by_device
            .get(device)
            .cloned()
            .unwrap_or_default();
        for subscriber in subscribers {
            if subscriber.offer(item.clone()) == Offered::TooSlow {
                // No more frames for it; its stream ends on its own.
                self.unsubscribe(&subscriber);
            }
        }
    }

    /// Tells every stream to resync (announcements may have been lost).
    pub fn resync_all(&self) {
        for subscriber in self.all() {
            if subscriber.offer(Item::Resync) == Offered::TooSlow {
                self.unsubscribe(&subscriber);
            }
        }
        metrics::counter!("realtime_resyncs_total").increment(1);
    }

    /// Ends every stream with `#info restarting` and refuses new ones: the
    /// replica is shutting down, its clients should reconnect elsewhere.
    pub fn shut_down(&self) {
        self.shutting_down.store(true, Ordering::Release);
        for subscriber in self.all() {
            subscriber.kick(InfoName::Restarting);
        }
    }

    fn all(&self) -> Vec<Arc<Subscriber>> {
        self.inner().by_device.values().flatten().cloned().collect()
    }
}

impl Subscriber {
    /// Queues `item`, unless the stream is ending anyway.
    fn offer(&self, item: Item) -> Offered {
        if self.kicked() {
            return Offered::Queued;
        }
        match self.queue.try_send(item) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => Offered::Queued,
            Err(mpsc::error::TrySendError::Full(_)) => {
                if self.kick(InfoName::SlowConsumer) {
                    metrics::counter!("realtime_slow_consumer_disconnects_total").increment(1);
                }
                Offered::TooSlow
            }
        }
    }

    fn kicked(&self) -> bool {
        let slot = self.kick.reason.lock();
        slot.unwrap_or_else(PoisonError::into_inner).is_some()
    }

    /// Ends the stream with `reason`; false if it was ending already.
    fn kick(&self, reason: InfoName) -> bool {
        let mut slot = self
            .kick
            .reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if slot.is_some() {
            return false;
        }
        *slot = Some(reason);
        // notify_one keeps a permit when nobody waits yet.
        self.kick.notify.notify_one();
        true
    }
}

/// Watches for the end of one subscription (see [`Subscription::kick_watch`]).
pub struct KickWatch(Arc<Subscriber>);

impl KickWatch {
    /// Resolves when the stream must end, with the reason to tell the client.
    pub async fn kicked(&self) -> InfoName {
        loop {
            let reason = self.0.kick.reason.lock();
            if let Some(reason) = reason.unwrap_or_else(PoisonError::into_inner).clone() {
                return reason;
            }
            self.0.kick.notify.notified().await;
        }
    }
}

impl Subscription {
    /// A watch for the end of this subscription, usable while its queue is
    /// being read.
    pub fn kick_watch(&self) -> KickWatch {
        KickWatch(Arc::clone(&self.subscriber))
    }

    /// The device this stream is for.
    pub fn device(&self) -> &str {
        &self.subscriber.device
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.unsubscribe(&self.subscriber);
    }
}
