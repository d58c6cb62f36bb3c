//! The load of the crash and outage tests: one conversation, several
//! sending devices and a committing one, against a service that may fail
//! under them; a ledger of what was acknowledged; and the check that every
//! acknowledged message is in the log with its bytes.

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use catbird_generated::lexicons::blue::catbird::mls::{
    Client, commit_group_change, get_epoch, send_message,
};
use catbird_generated::runtime::Did;
use catbird_generated::runtime::xrpc::futures_util::future::join_all;
use catbird_generated::runtime::xrpc::http::StatusCode;
use catbird_mls_client::{Change, Device, LocalIdentity, create_identity, service_client};
use catbird_mls_core::auth::Algorithm;
use sqlx::PgPool;

use crate::common::SERVICE_DID;

/// The bound on the whole load (a hang, never a measurement).
pub const RUN_BOUND: Duration = Duration::from_secs(120);

/// Flags of a service under this load: no rate limits (the devices retry
/// at once while the service or its database is away).
pub const UNLIMITED: [&str; 6] = [
    "--rate-limit-read=0",
    "--rate-limit-write=0",
    "--rate-limit-key-package-fetch=0",
    "--rate-limit-ip-read=0",
    "--rate-limit-ip-write=0",
    "--rate-limit-ip-key-package-fetch=0",
];

/// A member: its identity, its device, and a client of the service.
pub struct Member {
    pub user: LocalIdentity,
    pub device: Device,
}

impl Member {
    fn client(&self, url: &str) -> Client {
        service_client(url, &self.user, &Did::new(SERVICE_DID).unwrap())
    }
}

/// One conversation: the committer (its creator) and the senders.
pub struct Group {
    pub convo: String,
    pub committer: Member,
    pub senders: Vec<Member>,
}

impl Group {
    /// Creates the conversation on `url` with `senders` members besides
    /// its creator, every one joined.
    pub async fn create(url: &str, dids: &Path, name: &str, senders: usize) -> Self {
        let mut members = Vec::new();
        for i in 0..=senders {
            let user = create_identity(dids, &format!("{name}{i}"), Algorithm::Es256k).unwrap();
            let client = service_client(url, &user, &Did::new(SERVICE_DID).unwrap());
            let mut device = Device::new(&user.did, "phone", client).unwrap();
            device.publish_key_packages(1).await.unwrap();
            members.push(Member { user, device });
        }
        let convo = members[0].device.create_convo(name).await.unwrap();
        let others: Vec<Did> = members[1..].iter().map(|m| m.user.did.clone()).collect();
        members[0].device.add(&convo, &others).await.unwrap();
        for member in &mut members[1..] {
            member.device.join_from_welcome(&convo).await.unwrap();
        }
        let committer = members.remove(0);
        Self {
            convo,
            committer,
            senders: members,
        }
    }

    /// Every member's epoch, after reading the log to its end.
    pub async fn epochs(&mut self, url: &str) -> Vec<u64> {
        let mut epochs = Vec::new();
        for member in std::iter::once(&mut self.committer).chain(&mut self.senders) {
            member.device.set_client(member.client(url));
            sync(&mut member.device, &self.convo).await;
            epochs.push(member.device.epoch(&self.convo).unwrap());
        }
        epochs
    }

    /// The service's epoch of the conversation.
    pub async fn service_epoch(&self, url: &str) -> u64 {
        let params = get_epoch::Params {
            convo_id: self.convo.clone(),
        };
        let epoch = self.committer.client(url).get_epoch(&params).await.unwrap();
        u64::try_from(epoch.epoch).unwrap()
    }
}

/// What the service acknowledged, and how it refused meanwhile.
#[derive(Default)]
pub struct Ledger {
    /// (seq, ciphertext) of every acknowledged message.
    pub acknowledged: Mutex<Vec<(i64, Vec<u8>)>>,
    /// Acknowledged messages so far.
    pub progress: AtomicUsize,
    /// Commits accepted.
    pub commits: AtomicUsize,
    /// Failed attempts: the status (none: no answer) and how long the
    /// answer took.
    pub failures: Mutex<Vec<(Option<StatusCode>, Duration)>>,
}

impl Ledger {
    fn failed(&self, status: Option<StatusCode>, took: Duration) {
        self.failures.lock().unwrap().push((status, took));
    }

    /// Waits until `count` messages were acknowledged.
    pub async fn wait_for(&self, count: usize) {
        let started = Instant::now();
        while self.progress.load(Ordering::Relaxed) < count {
            assert!(started.elapsed() < RUN_BOUND, "the senders stalled");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Reads the log to its end, retrying while the service is away.
async fn sync(device: &mut Device, convo: &str) {
    let started = Instant::now();
    while let Err(error) = device.sync(convo).await {
        assert!(
            started.elapsed() < RUN_BOUND,
            "{} never synced: {error}",
            device.id()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The whole load: every sender sends `messages` messages while the
/// committer commits a self-update per `every` acknowledged ones.
pub async fn run(url: &str, group: &mut Group, messages: usize, every: usize, ledger: &Ledger) {
    let done = AtomicBool::new(false);
    let convo = group.convo.clone();
    let sending = async {
        join_all(
            group
                .senders
                .iter_mut()
                .map(|sender| send_all(url, sender, &convo, messages, ledger)),
        )
        .await;
        done.store(true, Ordering::Relaxed);
    };
    let committing = commit_while(url, &mut group.committer, &convo, every, ledger, &done);
    tokio::join!(sending, committing);
}

/// Sends `count` messages as `member`, each retried with the same msgId
/// and ciphertext until acknowledged (so one stored before a failure is
/// not stored twice); after `409 EpochMismatch` (a commit came first) it
/// reads the log and encrypts the message anew under a new msgId.
async fn send_all(url: &str, member: &mut Member, convo: &str, count: usize, ledger: &Ledger) {
    let client = member.client(url);
    member.device.set_client(member.client(url));
    let started = Instant::now();
    for i in 0..count {
        let mut attempt = 0;
        'message: loop {
            attempt += 1;
            let mut group = member.device.group(convo).unwrap();
            let text = format!("{} {i}", member.user.did);
            let ciphertext = member
                .device
                .installation()
                .encrypt(&mut group, text.as_bytes())
                .unwrap();
            let input = send_message::Input {
                extra: Default::default(),
                convo_id: convo.to_owned(),
                msg_id: format!("{}-{i}-{attempt}", member.user.did),
                ciphertext,
                epoch: i64::try_from(group.epoch().as_u64()).unwrap(),
                padded_size: None,
                idempotency_key: None,
            };
            loop {
                assert!(
                    started.elapsed() < RUN_BOUND,
                    "message {i} never acknowledged"
                );
                let sent = Instant::now();
                match client.send_message(&input).await {
                    Ok(output) => {
                        // Its own message cannot be decrypted when read back.
                        member.device.skip(convo, output.seq);
                        let bytes = input.ciphertext.0.clone();
                        ledger
                            .acknowledged
                            .lock()
                            .unwrap()
                            .push((output.seq, bytes));
                        ledger.progress.fetch_add(1, Ordering::Relaxed);
                        break 'message;
                    }
                    Err(error) => {
                        ledger.failed(error.status(), sent.elapsed());
                        match error.status() {
                            Some(StatusCode::CONFLICT) => {
                                sync(&mut member.device, convo).await;
                                continue 'message;
                            }
                            None => {}
                            Some(status) if status.is_server_error() => {}
                            Some(_) => panic!("message {i} refused: {error}"),
                        }
                    }
                }
            }
        }
    }
}

/// Commits self-updates as the committer, one per `every` acknowledged
/// messages, until `done`; each commit is retried as sent until the
/// service answers (resubmitting an accepted commit returns its result).
async fn commit_while(
    url: &str,
    committer: &mut Member,
    convo: &str,
    every: usize,
    ledger: &Ledger,
    done: &AtomicBool,
) {
    let client = committer.client(url);
    committer.device.set_client(committer.client(url));
    let mut next = every;
    while !done.load(Ordering::Relaxed) {
        if ledger.progress.load(Ordering::Relaxed) < next {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        next += every;
        sync(&mut committer.device, convo).await;
        let staged = committer.device.prepare(convo, Change::SelfUpdate).unwrap();
        let input = commit_group_change::Input {
            extra: Default::default(),
            convo_id: convo.to_owned(),
            commit: staged.commit,
            group_info: staged.group_info,
            idempotency_key: None,
        };
        let started = Instant::now();
        let accepted = loop {
            assert!(started.elapsed() < RUN_BOUND, "a commit never answered");
            let sent = Instant::now();
            match client.commit_group_change(&input).await {
                Ok(output) => break Some(output.seq),
                Err(error) => {
                    ledger.failed(error.status(), sent.elapsed());
                    match error.status() {
                        None => {}
                        Some(status) if status.is_server_error() => {}
                        Some(_) => break None,
                    }
                }
            }
        };
        committer.device.conclude(convo, accepted).unwrap();
        if let Some(seq) = accepted {
            // Messages logged between its last read and its commit are of
            // the epoch it just left: the committer reads on after it.
            committer.device.restore_position(convo, seq);
            ledger.commits.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// What the log holds against what was acknowledged.
#[derive(Debug)]
pub struct Audit {
    pub acknowledged: usize,
    pub present: usize,
    pub lost: usize,
    pub entries: usize,
}

/// Checks the log of `convo`: seqs gapless from 1, and every acknowledged
/// message at its seq with its bytes.
pub async fn audit(pool: &PgPool, convo: &str, ledger: &Ledger) -> Audit {
    let group_id = catbird_mls_core::mls_crypto::from_hex(convo).unwrap();
    let rows: Vec<(i64, Vec<u8>)> =
        sqlx::query_as("SELECT seq, payload FROM convo_messages WHERE convo_id = $1 ORDER BY seq")
            .bind(group_id)
            .fetch_all(pool)
            .await
            .unwrap();
    let seqs: Vec<i64> = rows.iter().map(|(seq, _)| *seq).collect();
    let expected: Vec<i64> = (1..=i64::try_from(rows.len()).unwrap()).collect();
    assert_eq!(seqs, expected, "the log's seqs are gapless");
    let acknowledged = ledger.acknowledged.lock().unwrap();
    let present = acknowledged
        .iter()
        .filter(|(seq, bytes)| {
            usize::try_from(*seq - 1)
                .ok()
                .and_then(|index| rows.get(index))
                .is_some_and(|(_, payload)| payload == bytes)
        })
        .count();
    Audit {
        acknowledged: acknowledged.len(),
        present,
        lost: acknowledged.len() - present,
        entries: rows.len(),
    }
}
