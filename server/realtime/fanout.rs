//! The fan-out task of a replica: announcements in, frames out. Each
//! announced entry is read once and queued for every local stream whose
//! device may see it at its seq (read now, so a device removed meanwhile
//! gets nothing after the commit that removed it). Whenever the
//! announcement connection is (re)established, every stream resyncs:
//! announcements made while it was down are gone.

use std::sync::Arc;

use catbird_generated::lexicons::blue::catbird::mls::subscribe_convo_events::{
    Ephemeral, LogEntry, Membership, MembershipChange, Message, Welcome,
};
use catbird_generated::runtime::{Bytes, Did};
use sqlx::PgPool;

use super::bus::{Announcement, EventSource, backoff};
use super::hub::{Hub, Item};
use super::store;
use crate::convos::log;
use crate::convos::store::LeftReason;
use crate::convos::store::log::EntryKind;
use crate::mls_crypto::to_hex;

/// Runs until the task is dropped.
pub async fn run(mut source: impl EventSource, db: PgPool, hub: Arc<Hub>) {
    let mut first = true;
    let mut attempt = 0;
    loop {
        if let Err(error) = source.reconnect().await {
            tracing::warn!(%error, attempt, "realtime: cannot listen for announcements; retrying");
            tokio::time::sleep(backoff(attempt)).await;
            attempt = attempt.saturating_add(1);
            continue;
        }
        attempt = 0;
        if first {
            // Streams may have opened before the first connection.
            if !hub.is_empty() {
                hub.resync_all();
            }
        } else {
            metrics::counter!("realtime_listener_reconnects_total").increment(1);
            tracing::info!("realtime: listening again; every stream resyncs");
            hub.resync_all();
        }
        first = false;
        loop {
            match source.next().await {
                Ok(payload) => {
                    if let Err(error) = handle(&db, &hub, &payload).await {
                        // The entry cannot be read now: the streams learn
                        // of it by catching up instead.
                        tracing::warn!(%error, "realtime: fan-out failed; streams resync");
                        hub.resync_all();
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "realtime: announcements lost");
                    break;
                }
            }
        }
    }
}

async fn handle(db: &PgPool, hub: &Hub, payload: &str) -> Result<(), sqlx::Error> {
    let Some(announcement) = Announcement::parse(payload) else {
        tracing::warn!(payload, "realtime: unknown announcement ignored");
        return Ok(());
    };
    if hub.is_empty() {
        return Ok(());
    }
    match announcement {
        Announcement::Entry { group_id, seq } => entry(db, hub, &group_id, seq).await,
        Announcement::Ephemeral {
            group_id,
            epoch,
            sender,
            ciphertext,
        } => {
            let mut conn = db.acquire().await?;
            let devices = store::current_devices(&mut conn, &group_id).await?;
            let Ok(sender) = Did::new(sender) else {
                return Ok(());
            };
            let item = Item::Frame(
                Arc::new(Message::Ephemeral(Ephemeral {
                    extra: Default::default(),
                    convo_id: to_hex(&group_id),
                    epoch,
                    sender,
                    ciphertext: Bytes(ciphertext),
                })),
                None,
            );
            for device in hub.connected(devices.iter().map(String::as_str)) {
                hub.deliver(&device, &item);
            }
            Ok(())
        }
    }
}

/// One log entry: to the devices covering its seq; for a commit also the
/// Welcomes it made and the membership it changed.
async fn entry(db: &PgPool, hub: &Hub, group_id: &[u8], seq: i64) -> Result<(), sqlx::Error> {
    let mut conn = db.acquire().await?;
    let Some(entry) = store::entry(&mut conn, group_id, seq).await? else {
        // Announced in a transaction that committed: it is there.
        tracing::error!(seq, "realtime: an announced entry is missing");
        return Ok(());
    };
    let recipients = store::recipients(&mut conn, group_id, seq).await?;
    let local = hub.connected(recipients.iter().map(String::as_str));
    let convo_id = to_hex(group_id);
    let is_commit = entry.kind == EntryKind::Commit;
    let accepted_at = entry.created_at;
    let view = match log::view(&convo_id, entry) {
        Ok(view) => view,
        Err(error) => {
            tracing::error!(%error, seq, "realtime: an announced entry does not read back");
            return Ok(());
        }
    };
    let frame = Item::Frame(
        Arc::new(Message::LogEntry(LogEntry {
            extra: Default::default(),
            message: view,
        })),
        Some(accepted_at),
    );
    for device in &local {
        hub.deliver(device, &frame);
    }
    if !is_commit {
        return Ok(());
    }

    let welcomes = store::welcomes_of_commit(&mut conn, group_id, seq).await?;
    let changes = store::membership_changes(&mut conn, group_id, seq).await?;
    drop(conn);
    for welcome in &welcomes {
        let item = Item::Frame(
            Arc::new(Message::Welcome(Welcome {
                extra: Default::default(),
                convo_id: convo_id.clone(),
                commit_seq: seq,
                epoch: welcome.epoch,
            })),
            Some(accepted_at),
        );
        hub.deliver(&welcome.device_id, &item);
    }
    // Members, and the devices that joined, hear of every change.
    let mut audience = local;
    let added = changes.iter().filter(|c| c.left.is_none());
    audience.extend(hub.connected(added.map(|c| c.device_id.as_str())));
    audience.sort();
    audience.dedup();
    for change in changes {
        let Ok(did) = Did::new(change.did) else {
            continue;
        };
        let item = Item::Frame(
            Arc::new(Message::Membership(Membership {
                extra: Default::default(),
                convo_id: convo_id.clone(),
                seq,
                device_id: change.device_id,
                did,
                change: match change.left {
                    None => MembershipChange::Added,
                    Some(LeftReason::Removed) => MembershipChange::Removed,
                    Some(LeftReason::Banned) => MembershipChange::Banned,
                    Some(LeftReason::Left) => MembershipChange::Left,
                },
            })),
            Some(accepted_at),
        );
        for device in &audience {
            hub.deliver(device, &item);
        }
    }
    Ok(())
}
