//! The event stream across real replicas: two `catbird-mls serve`
//! processes on one database, subscribers on both, eight concurrent
//! senders into two conversations. Every subscriber ends with every entry
//! of its conversation exactly once, in seq order, by following the resume
//! procedure of the client SDK: also when subscribers reconnect at random,
//! when the replicas' listening connections are terminated, and when a
//! replica is killed with SIGKILL and its subscribers move to the other.

use std::sync::atomic::{AtomicUsize, Ordering};

use catbird_generated::lexicons::blue::catbird::mls::{Client, send_message};
use catbird_generated::runtime::Did;
use catbird_generated::runtime::xrpc::futures_util::StreamExt as _;
use catbird_generated::runtime::xrpc::futures_util::future::join_all;
use catbird_generated::runtime::xrpc::reqwest;
use catbird_mls_client::{Device, Event, LocalIdentity, create_identity, service_client};
use catbird_mls_core::auth::Algorithm;
use sqlx::PgPool;

use crate::common::SERVICE_DID;
use crate::common::metrics::Metrics;
use crate::common::process::{PATIENCE, ServerProcess, database_url};

const SENDERS_PER_CONVO: usize = 4;
const MESSAGES_PER_SENDER: usize = 100;
const TOTAL_PER_CONVO: usize = SENDERS_PER_CONVO * MESSAGES_PER_SENDER;

/// The whole run's bound (a hang, never a measurement): generous for a
/// debug build of four processes on a busy 2-core CI machine.
const RUN_BOUND: std::time::Duration = std::time::Duration::from_secs(300);

/// Two replicas on one database, and the users' identities.
struct Cluster {
    replicas: Vec<ServerProcess>,
    urls: Vec<String>,
    dids: tempfile::TempDir,
    pool: PgPool,
}

impl Cluster {
    async fn start(pool: PgPool) -> Self {
        let dids = tempfile::tempdir().unwrap();
        let url = database_url(&pool);
        let mut replicas = Vec::new();
        for _ in 0..2 {
            replicas.push(ServerProcess::start(&url, dids.path(), &[]).await);
        }
        let urls = replicas.iter().map(ServerProcess::url).collect();
        Self {
            replicas,
            urls,
            dids,
            pool,
        }
    }

    fn user(&self, name: &str) -> LocalIdentity {
        create_identity(self.dids.path(), name, Algorithm::Es256k).unwrap()
    }

    fn client(&self, replica: usize, user: &LocalIdentity) -> Client {
        service_client(&self.urls[replica], user, &Did::new(SERVICE_DID).unwrap())
    }

    async fn metrics(&self, replica: usize) -> Metrics {
        let text = reqwest::get(format!("{}/metrics", self.urls[replica]))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        Metrics::parse(&text)
    }
}

/// One conversation: four senders and two readers (one per replica).
struct Convo {
    id: String,
    senders: Vec<(LocalIdentity, Device)>,
    readers: Vec<(LocalIdentity, Device)>,
}

async fn convo(cluster: &Cluster, name: &str) -> Convo {
    let mut members = Vec::new();
    for i in 0..SENDERS_PER_CONVO + 2 {
        let user = cluster.user(&format!("{name}{i}"));
        let mut device = Device::new(&user.did, "phone", cluster.client(i % 2, &user)).unwrap();
        device.publish_key_packages(1).await.unwrap();
        members.push((user, device));
    }
    let id = members[0].1.create_convo(name).await.unwrap();
    let others: Vec<Did> = members[1..].iter().map(|(u, _)| u.did.clone()).collect();
    members[0].1.add(&id, &others).await.unwrap();
    for (_, device) in &mut members[1..] {
        device.join_from_welcome(&id).await.unwrap();
    }
    let readers = members.split_off(SENDERS_PER_CONVO);
    Convo {
        id,
        senders: members,
        readers,
    }
}

/// Chaos settings of a reader.
#[derive(Clone, Copy)]
struct Chaos<'a> {
    /// Reconnects so far, over all readers.
    reconnects: &'a AtomicUsize,
    seed: u64,
}

/// Follows `reader`'s stream, starting on `replica`, until it has received
/// `want` messages of `convo`; reconnects (to the other replica when one
/// fails) whenever its stream ends, and at random under chaos. Returns the
/// seqs received, in the order the device received them.
async fn read_all(
    cluster: &Cluster,
    user: &LocalIdentity,
    reader: &mut Device,
    mut replica: usize,
    convo: &str,
    chaos: Option<Chaos<'_>>,
) -> Vec<i64> {
    let mut seqs = Vec::new();
    let mut random = chaos.map_or(0, |c| c.seed);
    // Under chaos every reader reconnects at least this often (after it has
    // everything, each reconnect is one more catch-up with nothing new).
    let quota = if chaos.is_some() { 5 } else { 0 };
    let mut mine = 0;
    let started = std::time::Instant::now();
    while seqs.len() < TOTAL_PER_CONVO || mine < quota {
        assert!(
            started.elapsed() < RUN_BOUND,
            "{user:?} stalled at {} messages",
            seqs.len()
        );
        reader.set_client(cluster.client(replica, user));
        let Ok(mut stream) = reader.subscribe().await else {
            replica = 1 - replica;
            continue;
        };
        // Under chaos, leave after 3 to 10 frames (a catch-up frame may
        // bring hundreds of entries, so frames are fewer than messages).
        let mut budget = chaos.map(|_| {
            random = random
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            3 + (random >> 33) % 8
        });
        loop {
            let frame = match tokio::time::timeout(PATIENCE, stream.next()).await {
                Ok(Some(Ok(frame))) => frame,
                Ok(Some(Err(_)) | None) => break,
                Err(_) => panic!("no frame within {PATIENCE:?}"),
            };
            let Ok(events) = reader.follow(frame).await else {
                // The replica went away while reading the log: reconnect.
                break;
            };
            for event in events {
                if let Event::Received { convo: c, messages } = event {
                    assert_eq!(c, convo);
                    seqs.extend(messages.iter().map(|m| m.seq));
                }
            }
            let complete = seqs.len() >= TOTAL_PER_CONVO;
            if complete && mine >= quota {
                return seqs;
            }
            if let (Some(chaos), Some(left)) = (chaos, budget.as_mut()) {
                *left -= 1;
                if *left == 0 || complete {
                    chaos.reconnects.fetch_add(1, Ordering::Relaxed);
                    mine += 1;
                    replica = 1 - replica;
                    break;
                }
            }
        }
    }
    seqs
}

/// Sends MESSAGES_PER_SENDER messages, each retried on the other replica
/// (same msgId and ciphertext, so a message that was stored before the
/// failure is not stored twice) until acknowledged. Calls `progress` after
/// each acknowledged message.
async fn send_all(
    cluster: &Cluster,
    user: &LocalIdentity,
    sender: &mut Device,
    first_replica: usize,
    convo: &str,
    progress: &AtomicUsize,
) {
    let mut replica = first_replica;
    for i in 0..MESSAGES_PER_SENDER {
        let mut group = sender.group(convo).unwrap();
        let ciphertext = sender
            .installation()
            .encrypt(&mut group, format!("{} {i}", user.did).as_bytes())
            .unwrap();
        let input = send_message::Input {
            extra: Default::default(),
            convo_id: convo.to_owned(),
            msg_id: format!("{}-{i}", user.did),
            ciphertext,
            epoch: group.epoch().as_u64() as i64,
            padded_size: None,
            idempotency_key: None,
        };
        let started = std::time::Instant::now();
        while cluster
            .client(replica, user)
            .send_message(&input)
            .await
            .is_err()
        {
            assert!(started.elapsed() < RUN_BOUND, "never acknowledged");
            replica = 1 - replica;
        }
        progress.fetch_add(1, Ordering::Relaxed);
    }
}

/// The seqs of the application messages in `convo`'s log.
async fn logged(pool: &PgPool, convo: &str) -> Vec<i64> {
    let group_id = catbird_mls_core::mls_crypto::from_hex(convo).unwrap();
    sqlx::query_scalar(
        "SELECT seq FROM convo_messages WHERE convo_id = $1 AND kind = 'application' ORDER BY seq",
    )
    .bind(group_id)
    .fetch_all(pool)
    .await
    .unwrap()
}

fn assert_exactly_once_in_order(received: &[i64], logged: &[i64], who: &str) {
    assert_eq!(received, logged, "{who}: every entry once, in seq order");
}

#[sqlx::test(migrations = "./migrations")]
async fn every_subscriber_gets_every_entry_once_in_order_through_reconnects_a_lost_listener_and_a_killed_replica(
    pool: PgPool,
) {
    let cluster = Cluster::start(pool).await;
    let mut convos = vec![convo(&cluster, "a").await, convo(&cluster, "b").await];
    let progress = AtomicUsize::new(0);
    let reconnects = AtomicUsize::new(0);
    let total = 2 * TOTAL_PER_CONVO;

    // The faults, as the senders progress.
    let faults = async {
        wait_for(&progress, total / 4).await;
        let terminated: Vec<i32> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid)::int FROM pg_stat_activity \
             WHERE query ILIKE 'LISTEN%' AND datname = current_database()",
        )
        .fetch_all(&cluster.pool)
        .await
        .unwrap();
        assert_eq!(terminated.len(), 2, "one listening connection per replica");
        wait_for(&progress, total / 2).await;
        cluster.replicas[1].kill();
    };

    let mut work = Vec::new();
    let mut reads = Vec::new();
    for convo in &mut convos {
        let id = convo.id.clone();
        for (i, (user, device)) in convo.senders.iter_mut().enumerate() {
            let (cluster, progress, id) = (&cluster, &progress, id.clone());
            work.push(Box::pin(async move {
                send_all(cluster, user, device, i % 2, &id, progress).await;
            })
                as std::pin::Pin<Box<dyn Future<Output = ()>>>);
        }
        for (i, (user, device)) in convo.readers.iter_mut().enumerate() {
            let (cluster, id) = (&cluster, id.clone());
            let chaos = Chaos {
                reconnects: &reconnects,
                seed: 7 + i as u64 + id.len() as u64,
            };
            reads.push(async move {
                (
                    id.clone(),
                    read_all(cluster, user, device, i, &id, Some(chaos)).await,
                )
            });
        }
    }
    let ((), _, received) = tokio::join!(faults, join_all(work), join_all(reads));

    let reconnects = reconnects.load(Ordering::Relaxed);
    assert!(reconnects >= 20, "{reconnects} random reconnects");
    println!(
        "replicas: {} messages acknowledged, {reconnects} random reconnects, 2 listeners terminated, 1 replica killed; every subscriber: 0 lost, 0 duplicated, 0 out of order",
        progress.load(Ordering::Relaxed)
    );
    for (convo, seqs) in received {
        let logged = logged(&cluster.pool, &convo).await;
        assert_eq!(
            logged.len(),
            TOTAL_PER_CONVO,
            "every acknowledged message is logged once"
        );
        assert_exactly_once_in_order(&seqs, &logged, &convo);
    }
    // The surviving replica noticed its lost listener and made its streams
    // resync.
    let metrics = cluster.metrics(0).await;
    assert!(metrics.count("realtime_listener_reconnects_total", &[]) >= 1.0);
    assert!(metrics.count("realtime_resyncs_total", &[]) >= 1.0);
}

async fn wait_for(progress: &AtomicUsize, count: usize) {
    let started = std::time::Instant::now();
    while progress.load(Ordering::Relaxed) < count {
        assert!(started.elapsed() < RUN_BOUND, "senders stalled");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
