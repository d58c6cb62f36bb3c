//! Concurrency on one conversation, with real OpenMLS clients.
//!
//! - Two members commit in the same epoch at the same time: exactly one
//!   commit is accepted (200), the other gets 409 EpochMismatch; the loser
//!   discards its pending commit, catches up from the log, commits again and
//!   is accepted, and both members end at the service's epoch. Submitting
//!   either commit again does not change the outcome.
//! - Eight devices (two users with four devices each) send 50 messages each
//!   at the same time: every send succeeds, the seqs are exactly 1..=401
//!   (the commit that added the devices is seq 1) in the log as getMessages
//!   reads it and in the database, each message appears once, a reader
//!   paging while the log grows gets every entry once, and every device
//!   decrypts every message of the seven others.
//! - Paging by two through a log that spans several epochs returns every
//!   entry exactly once, in seq order, with non-decreasing epochs, no gaps,
//!   totalMessages equal to the counter and lastSeq reaching it.
//!
//! The first test drives its members with OpenMLS directly ([`Member`]),
//! because the demo's `Device` cannot prepare a commit without submitting
//! it; the others use `Device`.

use std::collections::{BTreeMap, BTreeSet};

use crate::common::member::Member;
use crate::common::{TestApp, read_log};
use catbird_generated::lexicons::blue::catbird::mls::defs::{MessageKind, MessageView};
use catbird_generated::lexicons::blue::catbird::mls::{
    Client, commit_group_change, get_epoch, get_messages,
};
use catbird_generated::runtime::xrpc::ClientError;
use catbird_generated::runtime::xrpc::http::StatusCode;
use catbird_mls_client::LocalIdentity;
use catbird_mls_client::{Device, DeviceError, Received};
use catbird_mls_core::mls_crypto::from_hex;
use openmls::prelude::MlsMessageIn;
use openmls::prelude::tls_codec::Deserialize as _;
use sqlx::PgPool;

// ---- two commits for one epoch -------------------------------------------------

#[sqlx::test(migrations = "./migrations")]
async fn concurrent_commits_for_one_epoch_one_wins_and_the_loser_retries(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (alice_user, bob_user) = (app.user("alice"), app.user("bob"));
    let mut alice = Member::new(&app, &alice_user, "phone");
    let mut bob = Member::new(&app, &bob_user, "phone");
    let convo = alice.create_convo().await;
    bob.publish_key_package().await;
    alice.add(&convo, &bob_user.did).await;
    bob.join(&convo).await;
    let mut members = [alice, bob];
    let mut commit_seqs = vec![1];

    // Several rounds, so that the race is run more than once.
    for round in 0..3 {
        let epoch = members[0].epoch(&convo);
        assert_eq!(members[1].epoch(&convo), epoch);
        let prepared = [
            members[0].prepare_self_update(&convo),
            members[1].prepare_self_update(&convo),
        ];
        let results = tokio::join!(
            members[0].submit(&convo, &prepared[0]),
            members[1].submit(&convo, &prepared[1]),
        );
        let (winner, accepted, rejected) = match results {
            (Ok(accepted), Err(rejected)) => (0, accepted, rejected),
            (Err(rejected), Ok(accepted)) => (1, accepted, rejected),
            other => panic!(
                "round {round}: exactly one of two commits for epoch {epoch} must be accepted: {other:?}"
            ),
        };
        let loser = 1 - winner;
        assert_eq!(accepted.epoch, epoch as i64 + 1, "round {round}");
        assert_epoch_mismatch(rejected, &format!("round {round}: the losing commit"));
        // Submitted again, the winner gets its original result and the
        // loser its conflict: the race has one outcome.
        let again = members[winner].submit(&convo, &prepared[winner]).await;
        assert_eq!(again.unwrap(), accepted, "round {round}: the winner again");
        let again = members[loser].submit(&convo, &prepared[loser]).await;
        assert_epoch_mismatch(
            again.unwrap_err(),
            &format!("round {round}: the loser again"),
        );
        members[winner].merge(&convo, accepted.seq);
        commit_seqs.push(accepted.seq);

        // The loser discards its commit, reads the winner's from the log,
        // and commits again in the new epoch.
        members[loser].discard(&convo);
        assert_eq!(
            members[loser].epoch(&convo),
            epoch,
            "the loser did not merge"
        );
        assert_eq!(members[loser].sync(&convo).await, Vec::<String>::new());
        assert_eq!(members[loser].epoch(&convo), epoch + 1);
        let retried = members[loser].prepare_self_update(&convo);
        let accepted = members[loser].submit(&convo, &retried).await.unwrap();
        assert_eq!(accepted.epoch, epoch as i64 + 2, "round {round}: the retry");
        members[loser].merge(&convo, accepted.seq);
        commit_seqs.push(accepted.seq);
        assert_eq!(members[winner].sync(&convo).await, Vec::<String>::new());

        let service = get_epoch_of(&app, &alice_user, &convo).await;
        assert_eq!(service, epoch as i64 + 2, "round {round}: getEpoch");
        for member in &members {
            assert_eq!(
                member.epoch(&convo) as i64,
                service,
                "round {round}: {}",
                member.id()
            );
        }
    }

    // One log entry per accepted commit, none for the rejected ones.
    let log = read_log(&app.client(&alice_user), &convo).await;
    let seqs: Vec<i64> = log.iter().map(|entry| entry.seq).collect();
    assert_eq!(seqs, (1..=7).collect::<Vec<_>>());
    assert_eq!(commit_seqs, seqs);
    assert!(log.iter().all(|entry| entry.kind == MessageKind::Commit));

    // Both members are in the same group state: they can talk.
    let [alice, bob] = &mut members;
    alice.send(&convo, "in sync?").await;
    assert_eq!(bob.sync(&convo).await, ["in sync?"]);
    bob.send(&convo, "in sync.").await;
    assert_eq!(alice.sync(&convo).await, ["in sync."]);
}

// ---- many concurrent senders -----------------------------------------------------

const DEVICE_NAMES: [&str; 4] = ["phone", "laptop", "tablet", "watch"];
const MESSAGES_PER_DEVICE: usize = 50;

#[sqlx::test(migrations = "./migrations")]
async fn eight_concurrent_senders_get_a_gapless_log_that_everyone_decrypts(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (alice, bob) = (app.user("alice"), app.user("bob"));
    let mut creator = Device::new(&alice.did, DEVICE_NAMES[0], app.client(&alice)).unwrap();
    let convo = creator.create_convo("crowd").await.unwrap();
    let mut devices = vec![];
    for user in [&alice, &bob] {
        for name in DEVICE_NAMES {
            if user.did == alice.did && name == DEVICE_NAMES[0] {
                continue;
            }
            let mut device = Device::new(&user.did, name, app.client(user)).unwrap();
            device.publish_key_packages(1).await.unwrap();
            devices.push(device);
        }
    }
    let added = creator
        .add(&convo, &[alice.did.clone(), bob.did.clone()])
        .await
        .unwrap();
    assert_eq!(added.len(), 7, "one commit adds the seven other devices");
    for device in &mut devices {
        assert_eq!(device.join_from_welcome(&convo).await.unwrap(), 1);
    }
    devices.insert(0, creator);

    let total = (DEVICE_NAMES.len() * 2 * MESSAGES_PER_DEVICE) as i64;
    let last_seq = total + 1;

    // Every device sends its messages one after another, all devices at
    // the same time. A failed send (any status) fails the test. Meanwhile
    // a reader pages through the log as it grows.
    let reader = tokio::spawn(read_while_growing(
        app.client(&bob),
        convo.clone(),
        last_seq,
    ));
    let mut senders = tokio::task::JoinSet::new();
    for mut device in devices {
        let convo = convo.clone();
        senders.spawn(async move {
            let mut sent = Vec::with_capacity(MESSAGES_PER_DEVICE);
            for n in 0..MESSAGES_PER_DEVICE {
                let text = format!("{} says {n}", device.id());
                let seq = device
                    .send(&convo, &text)
                    .await
                    .unwrap_or_else(|error| panic!("{} sending {n}: {error}", device.id()));
                sent.push(Received {
                    seq,
                    sender: device.id().to_string(),
                    text,
                });
            }
            (device, sent)
        });
    }
    let finished = senders.join_all().await;

    let mut by_seq = BTreeMap::new();
    for sent in finished.iter().flat_map(|(_, sent)| sent) {
        assert!(
            by_seq.insert(sent.seq, sent.clone()).is_none(),
            "seq {} was given to two messages",
            sent.seq
        );
    }
    assert_eq!(
        by_seq.keys().copied().collect::<Vec<_>>(),
        (2..=last_seq).collect::<Vec<_>>(),
        "sendMessage's seqs: 2..={last_seq}, after the add commit"
    );

    // The log as getMessages reads it: 1..=last_seq, the commit then every
    // message exactly once, no gaps.
    let log = read_log(&app.client(&alice), &convo).await;
    assert_eq!(
        log.iter().map(|entry| entry.seq).collect::<Vec<_>>(),
        (1..=last_seq).collect::<Vec<_>>()
    );
    assert_eq!(log[0].kind, MessageKind::Commit);
    assert!(
        log[1..]
            .iter()
            .all(|entry| entry.kind == MessageKind::Application && entry.epoch == 1)
    );
    let ids: BTreeSet<&str> = log.iter().map(|entry| entry.id.as_str()).collect();
    assert_eq!(ids.len(), log.len(), "every entry has its own id");

    // Paging while the log grew returned every entry once, as it is now
    // (bob's visible range starts after the commit that added his devices).
    let read_concurrently = reader.await.unwrap();
    assert_eq!(read_concurrently, log[1..], "paging during the sends");

    // The database agrees: exactly 1..=max, no duplicates.
    let stored: Vec<i64> =
        sqlx::query_scalar("SELECT seq FROM convo_messages WHERE convo_id = $1 ORDER BY seq")
            .bind(from_hex(&convo).unwrap())
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(stored, (1..=last_seq).collect::<Vec<_>>());

    // Every device decrypts every message of the seven others, in seq order.
    let devices = finished.into_iter().map(|(device, _)| device).collect();
    for (device, received) in sync_in_parallel(devices, &convo).await {
        let expected: Vec<Received> = by_seq
            .values()
            .filter(|sent| sent.sender != device.id().to_string())
            .cloned()
            .collect();
        assert_eq!(expected.len(), 7 * MESSAGES_PER_DEVICE);
        let received = received.unwrap_or_else(|error| panic!("{} syncing: {error}", device.id()));
        assert!(
            received == expected,
            "{} decrypted {} messages; expected the {} of the others, in seq order",
            device.id(),
            received.len(),
            expected.len()
        );
    }
}

/// Pages through the log, seven entries at a time, from the start until
/// `last_seq`, while others append to it: each page must continue where the
/// previous one stopped, without gaps or repeats.
async fn read_while_growing(client: Client, convo: String, last_seq: i64) -> Vec<MessageView> {
    let mut entries: Vec<MessageView> = Vec::new();
    let mut since = 0;
    while since < last_seq {
        let page = client
            .get_messages(&get_messages::Params {
                convo_id: convo.clone(),
                since_seq: since,
                limit: 7,
            })
            .await
            .unwrap();
        assert!(
            !page.gap_info.has_gaps,
            "after {since}: {:?}",
            page.gap_info
        );
        for entry in page.messages {
            let expected = entries.last().map_or(2, |previous| previous.seq + 1);
            assert_eq!(entry.seq, expected, "the page after {since}");
            entries.push(entry);
        }
        assert_eq!(
            page.last_seq,
            entries.last().map_or(since.max(1), |entry| entry.seq),
            "lastSeq after {since}"
        );
        since = page.last_seq;
    }
    entries
}

/// Every device's [`Device::sync`], each on its own thread. Decrypting is
/// CPU-bound (an Ed25519 verification per message, slow in debug builds),
/// so this lets CI's two cores share the work, while the server keeps
/// running on the test's own single-threaded runtime.
async fn sync_in_parallel(
    devices: Vec<Device>,
    convo: &str,
) -> Vec<(Device, Result<Vec<Received>, DeviceError>)> {
    let handles: Vec<_> = devices
        .into_iter()
        .map(|mut device| {
            let convo = convo.to_owned();
            tokio::task::spawn_blocking(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                let received = runtime.block_on(device.sync(&convo));
                (device, received)
            })
        })
        .collect();
    let mut synced = Vec::with_capacity(handles.len());
    for handle in handles {
        synced.push(handle.await.unwrap());
    }
    synced
}

// ---- paging across epochs ------------------------------------------------------------

/// One step of the paging test's conversation, by device (index).
enum Step {
    Send(usize, &'static str),
    SelfUpdate(usize),
}

const ALICE: usize = 0;
const BOB: usize = 1;

#[sqlx::test(migrations = "./migrations")]
async fn paging_by_two_across_epochs_returns_every_entry_once_in_order(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let (alice_user, bob_user) = (app.user("alice"), app.user("bob"));
    let mut alice = Device::new(&alice_user.did, "phone", app.client(&alice_user)).unwrap();
    let mut bob = Device::new(&bob_user.did, "phone", app.client(&bob_user)).unwrap();
    bob.publish_key_packages(1).await.unwrap();
    let convo = alice.create_convo("pages").await.unwrap();
    alice
        .add(&convo, std::slice::from_ref(&bob_user.did))
        .await
        .unwrap();
    bob.join_from_welcome(&convo).await.unwrap();
    // What the log must hold, by seq: (kind, epoch); a commit's epoch is
    // the one it ends.
    let mut expected = vec![(MessageKind::Commit, 0)];

    let script = [
        Step::Send(ALICE, "a1"),
        Step::Send(BOB, "b1"),
        Step::Send(ALICE, "a2"),
        Step::SelfUpdate(BOB),
        Step::Send(BOB, "b2"),
        Step::Send(ALICE, "a3"),
        Step::SelfUpdate(ALICE),
        Step::Send(ALICE, "a4"),
        Step::SelfUpdate(BOB),
        Step::SelfUpdate(BOB),
        Step::Send(ALICE, "a5"),
        Step::Send(BOB, "b3"),
    ];
    let mut devices = [alice, bob];
    let mut decrypted: [Vec<String>; 2] = Default::default();
    let mut epoch = 1;
    for step in &script {
        // The acting device first reads the log (it may be behind a commit).
        let actor = match step {
            Step::Send(actor, _) | Step::SelfUpdate(actor) => *actor,
        };
        decrypted[actor].extend(texts(devices[actor].sync(&convo).await.unwrap()));
        match step {
            Step::Send(_, text) => {
                let seq = devices[actor].send(&convo, text).await.unwrap();
                expected.push((MessageKind::Application, epoch));
                assert_eq!(seq, expected.len() as i64);
            }
            Step::SelfUpdate(_) => {
                expected.push((MessageKind::Commit, epoch));
                epoch += 1;
                assert_eq!(
                    devices[actor].self_update(&convo).await.unwrap(),
                    epoch as u64
                );
            }
        }
    }
    let counter = expected.len() as i64;
    assert_eq!(counter, 13);

    // The creator reads the whole log; bob from after the commit that added
    // him.
    for (user, first) in [(&alice_user, 1), (&bob_user, 2)] {
        let client = app.client(user);
        let entries = read_pages(&client, &convo, 2, counter).await;
        let seqs: Vec<i64> = entries.iter().map(|entry| entry.seq).collect();
        assert_eq!(
            seqs,
            (first..=counter).collect::<Vec<_>>(),
            "as {}",
            user.did.as_str()
        );
        let got: Vec<(MessageKind, i64)> = entries
            .iter()
            .map(|entry| (entry.kind, entry.epoch))
            .collect();
        assert_eq!(got, expected[first as usize - 1..], "kinds and epochs");
        assert!(
            entries
                .windows(2)
                .all(|pair| pair[0].epoch <= pair[1].epoch),
            "epochs never decrease along seq"
        );
        for entry in &entries {
            assert_eq!(
                clear_epoch(&entry.payload.0),
                entry.epoch as u64,
                "seq {}: the entry's epoch is its MLS message's",
                entry.seq
            );
        }
        // Paging by two returns what one big page does.
        assert_eq!(entries, read_log(&client, &convo).await);
    }

    // Each device decrypted everything the other sent, across the epochs.
    for (device, read) in devices.iter_mut().zip(&mut decrypted) {
        read.extend(texts(device.sync(&convo).await.unwrap()));
    }
    assert_eq!(decrypted[ALICE], ["b1", "b2", "b3"]);
    assert_eq!(decrypted[BOB], ["a1", "a2", "a3", "a4", "a5"]);
}

/// Every entry after `sinceSeq` = 0, `limit` per page, checking each page:
/// at most `limit` entries, ascending and contiguous, no gaps, lastSeq the
/// last entry's seq, totalMessages the counter; the last page is empty and
/// its lastSeq is the counter.
async fn read_pages(client: &Client, convo: &str, limit: i64, counter: i64) -> Vec<MessageView> {
    let mut entries: Vec<MessageView> = Vec::new();
    let mut since = 0;
    loop {
        let page = client
            .get_messages(&get_messages::Params {
                convo_id: convo.to_owned(),
                since_seq: since,
                limit,
            })
            .await
            .unwrap();
        let what = format!("the page after {since}");
        assert!(page.messages.len() <= limit as usize, "{what}");
        assert!(!page.gap_info.has_gaps, "{what}: {:?}", page.gap_info);
        assert!(page.gap_info.missing_seqs.is_empty(), "{what}");
        assert_eq!(
            page.gap_info.total_messages, counter,
            "{what}: totalMessages"
        );
        let Some(last) = page.messages.last() else {
            assert_eq!(page.last_seq, since, "{what}: an empty page stays put");
            assert_eq!(since, counter, "{what}: paging ended before the counter");
            return entries;
        };
        assert_eq!(page.last_seq, last.seq, "{what}: lastSeq");
        for entry in &page.messages {
            assert!(
                entry.seq > since,
                "{what}: seq {} is not after it",
                entry.seq
            );
            if let Some(previous) = entries.last() {
                assert_eq!(entry.seq, previous.seq + 1, "{what}: contiguous seqs");
            }
            entries.push(entry.clone());
        }
        since = page.last_seq;
    }
}

/// A commitGroupChange answer is 409 EpochMismatch.
fn assert_epoch_mismatch(error: ClientError<commit_group_change::Error>, what: &str) {
    assert_eq!(
        (error.status(), error.declared()),
        (
            Some(StatusCode::CONFLICT),
            Some(&commit_group_change::Error::EpochMismatch)
        ),
        "{what}: {error}"
    );
}

/// The epoch in an MLS message's clear header.
fn clear_epoch(payload: &[u8]) -> u64 {
    MlsMessageIn::tls_deserialize_exact(payload)
        .unwrap()
        .try_into_protocol_message()
        .unwrap()
        .epoch()
        .as_u64()
}

fn texts(received: Vec<Received>) -> Vec<String> {
    received.into_iter().map(|message| message.text).collect()
}

async fn get_epoch_of(app: &TestApp, user: &LocalIdentity, convo: &str) -> i64 {
    app.client(user)
        .get_epoch(&get_epoch::Params {
            convo_id: convo.to_owned(),
        })
        .await
        .unwrap()
        .epoch
}
