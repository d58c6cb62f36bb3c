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

mod common;

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use catbird_generated::lexicons::blue::catbird::mls::defs::{
    CipherSuite, ConvoMetadata, MessageKind, MessageView,
};
use catbird_generated::lexicons::blue::catbird::mls::{
    Client, add_members, commit_group_change, confirm_welcome, create_convo, get_epoch,
    get_key_packages, get_messages, get_welcome, publish_key_packages, send_message,
};
use catbird_generated::runtime::xrpc::ClientError;
use catbird_generated::runtime::xrpc::http::StatusCode;
use catbird_generated::runtime::{Bytes, Did};
use catbird_mls::auth::LocalIdentity;
use catbird_mls::demo::{Device, DeviceError, Received};
use catbird_mls::mls_crypto::{from_hex, to_hex};
use common::TestApp;
use common::mls::{self, SUITE, SUITE_NAME};
use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _};
use openmls::prelude::{
    GroupId, KeyPackage, MlsGroup, MlsGroupCreateConfig, MlsGroupJoinConfig, MlsMessageBodyIn,
    MlsMessageIn, MlsMessageOut, PURE_PLAINTEXT_WIRE_FORMAT_POLICY, ProcessedMessageContent,
    ProtocolVersion, StagedWelcome,
};
use openmls_traits::OpenMlsProvider as _;
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
                member.mls.id
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

/// The whole log as the client's user sees it, 100 entries per page.
async fn read_log(client: &Client, convo: &str) -> Vec<MessageView> {
    let mut entries = Vec::new();
    let mut since = 0;
    loop {
        let page = client
            .get_messages(&get_messages::Params {
                convo_id: convo.to_owned(),
                since_seq: since,
                limit: 100,
            })
            .await
            .unwrap();
        assert!(!page.gap_info.has_gaps, "{:?}", page.gap_info);
        entries.extend(page.messages);
        if page.last_seq == since {
            return entries;
        }
        since = page.last_seq;
    }
}

// ---- a member driven with OpenMLS directly ------------------------------------------

/// A member device: a test device (own signature key and OpenMLS storage)
/// and the generated client acting as its user. Like the demo's `Device`,
/// it merges a commit only after the service accepted it; unlike it, it can
/// prepare a commit and leave the submission to the test.
struct Member {
    mls: mls::Device,
    client: Client,
    /// Per conversation: how far this member has read the log.
    logs: HashMap<String, Log>,
    messages_sent: Cell<u64>,
}

#[derive(Default)]
struct Log {
    last_seq: i64,
    /// Entries this member submitted itself, already applied locally.
    own: HashSet<i64>,
}

/// A staged commit, held by the group as its pending commit until it is
/// merged ([`Member::merge`]) or discarded ([`Member::discard`]).
struct Prepared {
    commit: Bytes,
    /// For the epoch the commit creates, signed by the committer.
    group_info: Bytes,
}

impl Member {
    fn new(app: &TestApp, user: &LocalIdentity, name: &str) -> Self {
        Self {
            mls: mls::Device::new(&user.did, name),
            client: app.client(user),
            logs: HashMap::new(),
            messages_sent: Cell::new(0),
        }
    }

    async fn publish_key_package(&self) {
        let input = publish_key_packages::Input {
            key_packages: vec![self.mls.key_package()],
        };
        self.client.publish_key_packages(&input).await.unwrap();
    }

    /// Creates a group with this member alone and registers it.
    async fn create_convo(&mut self) -> String {
        let group = MlsGroup::new(
            &self.mls.provider,
            &self.mls.signer,
            &create_config(),
            self.mls.credential.clone(),
        )
        .unwrap();
        let convo = to_hex(group.group_id().as_slice());
        let input = create_convo::Input {
            group_id: convo.clone(),
            cipher_suite: CipherSuite::Mls128Dhkemx25519Aes128gcmSha256Ed25519,
            group_info: self.exported_group_info(&group),
            metadata: Some(ConvoMetadata {
                name: Some("concurrency".to_owned()),
                description: None,
            }),
            idempotency_key: None,
        };
        self.client.create_convo(&input).await.unwrap();
        self.logs.insert(convo.clone(), Log::default());
        convo
    }

    /// Adds `did`'s device that has a KeyPackage, with addMembers.
    async fn add(&mut self, convo: &str, did: &Did) {
        let offered = self
            .client
            .get_key_packages(&get_key_packages::Params {
                dids: vec![did.clone()],
                cipher_suite: SUITE_NAME.to_owned(),
                convo_id: Some(convo.to_owned()),
            })
            .await
            .unwrap();
        let key_packages: Vec<KeyPackage> = offered
            .key_packages
            .iter()
            .map(|offer| {
                let MlsMessageBodyIn::KeyPackage(key_package) = read_body(&offer.key_package.0)
                else {
                    panic!("getKeyPackages returned something else than a KeyPackage");
                };
                key_package
                    .validate(self.mls.provider.crypto(), ProtocolVersion::Mls10)
                    .unwrap()
            })
            .collect();
        assert!(!key_packages.is_empty(), "{did:?} has a KeyPackage");

        let mut group = self.group(convo);
        let bundle = group
            .commit_builder()
            .propose_adds(key_packages)
            .load_psks(self.mls.provider.storage())
            .unwrap()
            .build(
                self.mls.provider.rand(),
                self.mls.provider.crypto(),
                &self.mls.signer,
                |_| true,
            )
            .unwrap()
            .stage_commit(&self.mls.provider)
            .unwrap();
        let (commit, welcome, group_info) = bundle.into_messages();
        let input = add_members::Input {
            convo_id: convo.to_owned(),
            commit: to_bytes(&commit),
            welcome: to_bytes(&welcome.expect("a Welcome for the added device")),
            group_info: to_bytes(&group_info.expect("a GroupInfo for the new epoch")),
            idempotency_key: None,
        };
        let added = self.client.add_members(&input).await.unwrap();
        self.merge(convo, added.seq);
    }

    /// Joins from this device's Welcome and confirms it.
    async fn join(&mut self, convo: &str) {
        let device_id = self.mls.id.clone();
        let fetched = self
            .client
            .get_welcome(&get_welcome::Params {
                convo_id: convo.to_owned(),
                device_id: device_id.clone(),
            })
            .await
            .unwrap();
        let MlsMessageBodyIn::Welcome(welcome) = read_body(&fetched.welcome.0) else {
            panic!("getWelcome returned something else than a Welcome");
        };
        StagedWelcome::build_from_welcome(&self.mls.provider, &join_config(), welcome)
            .unwrap()
            .skip_lifetime_validation()
            .build()
            .unwrap()
            .into_group(&self.mls.provider)
            .unwrap();
        let confirmation = confirm_welcome::Input {
            convo_id: convo.to_owned(),
            device_id,
            success: true,
            error_details: None,
        };
        self.client.confirm_welcome(&confirmation).await.unwrap();
        self.logs.insert(
            convo.to_owned(),
            Log {
                last_seq: fetched.commit_seq,
                own: HashSet::new(),
            },
        );
    }

    fn group(&self, convo: &str) -> MlsGroup {
        let group_id = GroupId::from_slice(&from_hex(convo).unwrap());
        MlsGroup::load(self.mls.provider.storage(), &group_id)
            .unwrap()
            .unwrap_or_else(|| panic!("{} is not in {convo}", self.mls.id))
    }

    fn epoch(&self, convo: &str) -> u64 {
        self.group(convo).epoch().as_u64()
    }

    fn exported_group_info(&self, group: &MlsGroup) -> Bytes {
        let group_info = group
            .export_group_info(self.mls.provider.crypto(), &self.mls.signer, true)
            .unwrap();
        to_bytes(&group_info)
    }

    /// Stages a self-update (with any pending proposals), not submitted.
    fn prepare_self_update(&self, convo: &str) -> Prepared {
        let mut group = self.group(convo);
        let bundle = group
            .commit_builder()
            .force_self_update(true)
            .load_psks(self.mls.provider.storage())
            .unwrap()
            .build(
                self.mls.provider.rand(),
                self.mls.provider.crypto(),
                &self.mls.signer,
                |_| true,
            )
            .unwrap()
            .stage_commit(&self.mls.provider)
            .unwrap();
        prepared(bundle.into_messages())
    }

    /// Submits a prepared commit with commitGroupChange.
    async fn submit(
        &self,
        convo: &str,
        prepared: &Prepared,
    ) -> Result<commit_group_change::Output, ClientError<commit_group_change::Error>> {
        let input = commit_group_change::Input {
            convo_id: convo.to_owned(),
            commit: prepared.commit.clone(),
            group_info: prepared.group_info.clone(),
            idempotency_key: None,
        };
        self.client.commit_group_change(&input).await
    }

    /// Applies the pending commit, which the service accepted at `seq`.
    fn merge(&mut self, convo: &str, seq: i64) {
        self.group(convo)
            .merge_pending_commit(&self.mls.provider)
            .unwrap();
        self.logs
            .entry(convo.to_owned())
            .or_default()
            .own
            .insert(seq);
    }

    /// Drops the pending commit, which the service rejected.
    fn discard(&self, convo: &str) {
        self.group(convo)
            .clear_pending_commit(self.mls.provider.storage())
            .unwrap();
    }

    /// sendMessage's input for `text`, encrypted in the current epoch.
    fn encrypt(&self, convo: &str, text: &str) -> send_message::Input {
        let mut group = self.group(convo);
        let ciphertext = group
            .create_message(&self.mls.provider, &self.mls.signer, text.as_bytes())
            .unwrap();
        let sent = self.messages_sent.get() + 1;
        self.messages_sent.set(sent);
        send_message::Input {
            convo_id: convo.to_owned(),
            msg_id: format!("{}-{sent}", self.mls.id),
            ciphertext: to_bytes(&ciphertext),
            epoch: group.epoch().as_u64() as i64,
            padded_size: None,
            idempotency_key: None,
        }
    }

    async fn send(&mut self, convo: &str, text: &str) -> i64 {
        let input = self.encrypt(convo, text);
        let seq = self.client.send_message(&input).await.unwrap().seq;
        self.logs
            .entry(convo.to_owned())
            .or_default()
            .own
            .insert(seq);
        seq
    }

    /// Reads the log from where this member stopped and applies it.
    /// Returns the plaintexts of the other members' messages, in order.
    async fn sync(&mut self, convo: &str) -> Vec<String> {
        let mut group = self.group(convo);
        let mut texts = Vec::new();
        let log = self.logs.entry(convo.to_owned()).or_default();
        loop {
            let since = log.last_seq;
            let page = self
                .client
                .get_messages(&get_messages::Params {
                    convo_id: convo.to_owned(),
                    since_seq: since,
                    limit: 100,
                })
                .await
                .unwrap();
            for entry in page.messages {
                log.last_seq = entry.seq;
                if log.own.remove(&entry.seq) {
                    continue;
                }
                let message = MlsMessageIn::tls_deserialize_exact(&entry.payload.0)
                    .unwrap()
                    .try_into_protocol_message()
                    .unwrap();
                let processed = group
                    .process_message(&self.mls.provider, message)
                    .unwrap_or_else(|e| {
                        panic!("{} processing seq {}: {e}", self.mls.id, entry.seq)
                    });
                match processed.into_content() {
                    ProcessedMessageContent::ApplicationMessage(message) => {
                        texts.push(String::from_utf8(message.into_bytes()).unwrap());
                    }
                    ProcessedMessageContent::StagedCommitMessage(commit) => group
                        .merge_staged_commit(&self.mls.provider, *commit)
                        .unwrap(),
                    ProcessedMessageContent::ProposalMessage(proposal) => group
                        .store_pending_proposal(self.mls.provider.storage(), *proposal)
                        .unwrap(),
                    _ => panic!("{}: unexpected log entry {}", self.mls.id, entry.seq),
                }
            }
            if page.last_seq == since {
                return texts;
            }
            log.last_seq = page.last_seq;
        }
    }
}

/// A staged commit's messages; a member commit always comes with a
/// GroupInfo, as the groups use the ratchet tree extension.
fn prepared(
    (commit, _, group_info): (MlsMessageOut, Option<MlsMessageOut>, Option<MlsMessageOut>),
) -> Prepared {
    Prepared {
        commit: to_bytes(&commit),
        group_info: to_bytes(&group_info.expect("a GroupInfo for the new epoch")),
    }
}

/// The demo's group settings: plaintext handshakes (the service validates
/// them), the ratchet tree in GroupInfo and Welcome.
fn create_config() -> MlsGroupCreateConfig {
    MlsGroupCreateConfig::builder()
        .ciphersuite(SUITE)
        .capabilities(mls::capabilities())
        .use_ratchet_tree_extension(true)
        .wire_format_policy(PURE_PLAINTEXT_WIRE_FORMAT_POLICY)
        .build()
}

fn join_config() -> MlsGroupJoinConfig {
    MlsGroupJoinConfig::builder()
        .use_ratchet_tree_extension(true)
        .wire_format_policy(PURE_PLAINTEXT_WIRE_FORMAT_POLICY)
        .build()
}

fn to_bytes(message: &MlsMessageOut) -> Bytes {
    Bytes(message.tls_serialize_detached().unwrap())
}

fn read_body(bytes: &[u8]) -> MlsMessageBodyIn {
    MlsMessageIn::tls_deserialize_exact(bytes)
        .unwrap()
        .extract()
}
