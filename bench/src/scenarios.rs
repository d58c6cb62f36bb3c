//! The scenarios. Each one sets up what it needs through the client crate
//! (not measured), pre-generates every MLS message and token its requests
//! carry, then runs closed loops and returns table rows. Write scenarios
//! read the log back and count duplicate and missing entries.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use catbird_generated::lexicons::blue::catbird::mls::subscribe_convo_events::{self, Message};
use catbird_generated::lexicons::blue::catbird::mls::{
    Client, add_members, get_group_info, get_key_packages, get_messages, process_external_commit,
    send_message,
};
use catbird_generated::runtime::xrpc::futures_util::{StreamExt as _, future};
use catbird_mls_client::mls::lexicon_suite;
use catbird_mls_client::{Device, DeviceError, Installation, SUITE};

use crate::env::{Database, rss_bytes};
use crate::error::BenchError;
use crate::fleet::{self, Fleet, User};
use crate::measure::{CpuMeter, CpuSplit, Row, Sample, closed_loop, timed};

/// How many of everything a run does.
#[derive(Debug, Clone)]
pub struct Sizes {
    /// sendMessage: messages per sender (8 senders).
    pub send_per_sender: usize,
    /// getMessages: log lengths to read at.
    pub get_levels: Vec<usize>,
    /// getMessages: reads per position (start, end) and level.
    pub get_reads: usize,
    /// Rejoins per round (one conversation each).
    pub rejoins: usize,
    /// Rounds of all the rejoins at once.
    pub rejoin_bursts: usize,
    /// getKeyPackages calls per fetcher (16 fetchers).
    pub fetches_per_fetcher: usize,
    /// Group sizes to commit at.
    pub commit_sizes: Vec<usize>,
    /// Commits (each adding one member) per group size.
    pub commits_per_size: usize,
    /// Fan-out, one conversation: subscribers and messages.
    pub fanout_subscribers: usize,
    pub fanout_messages: usize,
    /// Fan-out, many conversations of 3 subscribers, one message each.
    pub fanout_convos: usize,
    /// pgbench: transactions per client (8 clients).
    pub pgbench_transactions: usize,
}

impl Sizes {
    /// The sizes of issues 11 and 13.
    pub fn full() -> Self {
        Self {
            send_per_sender: 500,
            get_levels: vec![1_000, 10_000, 50_000],
            get_reads: 500,
            rejoins: 100,
            rejoin_bursts: 5,
            fetches_per_fetcher: 50,
            commit_sizes: vec![10, 100, 1_000],
            commits_per_size: 10,
            fanout_subscribers: 100,
            fanout_messages: 200,
            fanout_convos: 1_000,
            pgbench_transactions: 1_000,
        }
    }

    /// Every scenario in seconds: for `scripts/test`, never for figures.
    pub fn tiny() -> Self {
        Self {
            send_per_sender: 3,
            get_levels: vec![30, 60],
            get_reads: 3,
            rejoins: 3,
            rejoin_bursts: 2,
            fetches_per_fetcher: 2,
            commit_sizes: vec![3, 6],
            commits_per_size: 2,
            fanout_subscribers: 4,
            fanout_messages: 3,
            fanout_convos: 3,
            pgbench_transactions: 20,
        }
    }
}

/// Senders in the sendMessage scenarios.
pub const SENDERS: usize = 8;
/// Concurrent getKeyPackages callers.
pub const FETCHERS: usize = 16;
/// Users whose KeyPackages the fetchers take.
const FETCH_TARGETS: usize = 8;
/// Plaintext size of a benchmark message: its ciphertext is about 512 bytes.
const PLAINTEXT_BYTES: usize = 400;
/// How long subscribers may take to receive the last frames.
const FANOUT_GRACE: Duration = Duration::from_secs(30);

/// What every scenario works with.
pub struct Bench<'a> {
    pub fleet: &'a Fleet,
    /// Service base URLs: one, or two replicas on one database.
    pub urls: Vec<String>,
    /// The service processes (empty when targeting a service by URL
    /// without its pid): their CPU time and memory.
    pub service_pids: Vec<u32>,
    pub database: &'a Database,
    pub sizes: Sizes,
    /// A prefix that keeps ids unique across runs on one database.
    pub run_id: String,
}

impl Bench<'_> {
    fn url(&self) -> &str {
        &self.urls[0]
    }

    /// The replica for the `i`-th subscriber: alternating.
    fn replica(&self, i: usize) -> &str {
        &self.urls[i % self.urls.len()]
    }

    fn meter(&self) -> CpuMeter<'_> {
        CpuMeter {
            services: self.service_pids.clone(),
            database: self.database,
        }
    }

    /// Runs `measured` between two CPU snapshots; returns its samples and
    /// wall time with the split.
    async fn measured<F>(&self, measured: F) -> (Vec<Sample>, Duration, CpuSplit)
    where
        F: Future<Output = (Vec<Sample>, Duration)>,
    {
        let meter = self.meter();
        self.fleet.measuring.store(true, Ordering::Relaxed);
        let before = meter.snapshot();
        let (samples, wall) = measured.await;
        let after = meter.snapshot();
        self.fleet.measuring.store(false, Ordering::Relaxed);
        let split = CpuSplit::between(before, after, samples.len());
        (samples, wall, split)
    }
}

// ---- the chat: 8 members sending into one conversation --------------------

/// A conversation of [`SENDERS`] member devices that all send.
pub struct Chat {
    pub convo: String,
    senders: Vec<(User, Device)>,
    /// Every msgId sent, to find in the log.
    sent: HashSet<String>,
    batch: usize,
}

impl Chat {
    pub async fn new(bench: &Bench<'_>) -> Result<Self, BenchError> {
        let owner_user = bench.fleet.user()?;
        let mut owner = owner_user.device("phone", bench.url())?;
        let convo = owner.create_convo("bench").await?;
        let mut others = Vec::new();
        for _ in 1..SENDERS {
            let user = bench.fleet.user()?;
            let mut device = user.device("phone", bench.url())?;
            device.publish_key_packages(1).await?;
            others.push((user, device));
        }
        let dids: Vec<_> = others.iter().map(|(user, _)| user.did().clone()).collect();
        owner.add(&convo, &dids).await?;
        for (_, device) in &mut others {
            device.join_from_welcome(&convo).await?;
        }
        let mut senders = vec![(owner_user, owner)];
        senders.extend(others);
        Ok(Self {
            convo,
            senders,
            sent: HashSet::new(),
            batch: 0,
        })
    }

    /// `per_sender` encrypted sendMessage inputs (and tokens) per sender.
    fn inputs(
        &mut self,
        bench: &Bench<'_>,
        per_sender: usize,
        idempotent: bool,
    ) -> Result<Vec<(Client, Vec<send_message::Input>)>, BenchError> {
        self.batch += 1;
        let mut workers = Vec::new();
        for (s, (user, device)) in self.senders.iter().enumerate() {
            let inputs = encrypt_messages(device, &self.convo, per_sender, |i| {
                format!("{}-{}-{s}-{i}", bench.run_id, self.batch)
            })?;
            let inputs: Vec<_> = inputs
                .into_iter()
                .map(|mut input| {
                    if idempotent {
                        input.idempotency_key = Some(format!("k-{}", input.msg_id));
                    }
                    input
                })
                .collect();
            self.sent
                .extend(inputs.iter().map(|input| input.msg_id.clone()));
            user.premint(send_message::NSID, inputs.len());
            workers.push((user.client(bench.url()), inputs));
        }
        Ok(workers)
    }

    /// Sends `per_sender` messages from every sender at once; the samples.
    async fn send(
        &mut self,
        bench: &Bench<'_>,
        per_sender: usize,
        idempotent: bool,
    ) -> Result<(Vec<Sample>, Duration, CpuSplit), BenchError> {
        let workers = self.inputs(bench, per_sender, idempotent)?;
        Ok(bench
            .measured(closed_loop(workers, |(client, inputs)| {
                tokio::spawn(async move {
                    let mut samples = Vec::with_capacity(inputs.len());
                    for input in inputs {
                        samples.push(timed(client.send_message(&input)).await.0);
                    }
                    samples
                })
            }))
            .await)
    }

    /// Reads the whole log back: seqs 1..=last each once, every msgId sent
    /// exactly once.
    async fn check(&self, bench: &Bench<'_>) -> Result<String, BenchError> {
        let reader = &self.senders[0].0;
        let log = read_log(&reader.client(bench.url()), &self.convo).await?;
        let mut check = LogCheck::of(&log);
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for entry in &log {
            if self.sent.contains(&entry.1) {
                *seen.entry(entry.1.as_str()).or_default() += 1;
            }
        }
        check.duplicates += seen.values().filter(|n| **n > 1).count();
        check.missing += self.sent.len() - seen.len();
        Ok(check.to_string())
    }

    fn owner(&self) -> &User {
        &self.senders[0].0
    }
}

/// `count` sendMessage inputs encrypted by `device` in its current epoch.
fn encrypt_messages(
    device: &Device,
    convo: &str,
    count: usize,
    msg_id: impl Fn(usize) -> String,
) -> Result<Vec<send_message::Input>, BenchError> {
    let mut group = device.group(convo)?;
    let epoch = i64::try_from(group.epoch().as_u64()).unwrap_or(i64::MAX);
    let plaintext = vec![b'm'; PLAINTEXT_BYTES];
    (0..count)
        .map(|i| {
            let ciphertext = device
                .installation()
                .encrypt(&mut group, &plaintext)
                .map_err(BenchError::from)?;
            Ok(send_message::Input {
                extra: Default::default(),
                convo_id: convo.to_owned(),
                msg_id: msg_id(i),
                ciphertext,
                epoch,
                padded_size: None,
                idempotency_key: None,
            })
        })
        .collect()
}

/// sendMessage by 8 senders, without and with idempotency keys.
pub async fn send(bench: &Bench<'_>, chat: &mut Chat) -> Result<Vec<Row>, BenchError> {
    let per_sender = bench.sizes.send_per_sender;
    // Not measured: a fifth as many first, so that neither row pays for
    // what the first requests after a start do once (the pool's
    // connections preparing their statements, the caches filling). In
    // whole runs the first row was up to 25% slower than the second
    // without it (docs/BENCHMARKS.md).
    chat.send(bench, per_sender.div_ceil(5), false).await?;
    let mut rows = Vec::new();
    for idempotent in [false, true] {
        let (samples, wall, cpu) = chat.send(bench, per_sender, idempotent).await?;
        let name = if idempotent {
            format!("sendMessage {SENDERS}x{per_sender}, idempotency keys")
        } else {
            format!("sendMessage {SENDERS}x{per_sender}")
        };
        let check = chat.check(bench).await?;
        rows.push(Row::from_samples(name, SENDERS, &samples, wall, cpu).with_check(check));
    }
    Ok(rows)
}

/// getMessages at the start and the end of a log of each length.
pub async fn get_messages(bench: &Bench<'_>, chat: &mut Chat) -> Result<Vec<Row>, BenchError> {
    let reads = bench.sizes.get_reads;
    let owner = chat.owner().clone();
    let client = owner.client(bench.url());
    let mut rows = Vec::new();
    for &level in &bench.sizes.get_levels {
        let length = read_tail(&client, &chat.convo).await?;
        if length < level as i64 {
            let missing = usize::try_from(level as i64 - length).unwrap_or(0);
            // Not measured: the log grows to `level` entries.
            chat.send(bench, missing.div_ceil(SENDERS), false).await?;
        }
        let length = read_tail(&client, &chat.convo).await?;
        for (position, since) in [("start", 0), ("end", (length - 100).max(0))] {
            owner.premint(get_messages::NSID, reads);
            let params = get_messages::Params {
                convo_id: chat.convo.clone(),
                since_seq: since,
                limit: 100,
            };
            let client = client.clone();
            let (samples, wall, cpu) = bench
                .measured(closed_loop(
                    vec![(client, params)],
                    move |(client, params)| {
                        tokio::spawn(async move {
                            let mut samples = Vec::with_capacity(reads);
                            for _ in 0..reads {
                                samples.push(timed(client.get_messages(&params)).await.0);
                            }
                            samples
                        })
                    },
                ))
                .await;
            let name = format!(
                "getMessages at {} ({position}, 100 per page)",
                thousands(length)
            );
            rows.push(Row::from_samples(name, 1, &samples, wall, cpu));
        }
    }
    if let Some(last) = rows.last_mut() {
        let check = chat.check(bench).await?;
        last.note = Some(format!("whole log read back: {check}"));
    }
    Ok(rows)
}

/// The seq of the last entry of a log.
async fn read_tail(client: &Client, convo: &str) -> Result<i64, BenchError> {
    Ok(read_log(client, convo)
        .await?
        .last()
        .map_or(0, |entry| entry.0))
}

/// A log as (seq, id) pairs.
type Log = Vec<(i64, String)>;

async fn read_log(client: &Client, convo: &str) -> Result<Log, BenchError> {
    let mut entries = Vec::new();
    let mut since = 0;
    loop {
        let params = get_messages::Params {
            convo_id: convo.to_owned(),
            since_seq: since,
            limit: 100,
        };
        let page = client
            .get_messages(&params)
            .await
            .map_err(DeviceError::from)?;
        entries.extend(page.messages.into_iter().map(|m| (m.seq, m.id)));
        if page.last_seq <= since {
            return Ok(entries);
        }
        since = page.last_seq;
    }
}

/// Duplicate and missing seqs of a log read back.
#[derive(Debug, Default, Clone, Copy)]
struct LogCheck {
    entries: usize,
    duplicates: usize,
    missing: usize,
}

impl LogCheck {
    fn of(log: &Log) -> Self {
        let mut seqs: BTreeMap<i64, usize> = BTreeMap::new();
        for (seq, _) in log {
            *seqs.entry(*seq).or_default() += 1;
        }
        let last = seqs.keys().next_back().copied().unwrap_or(0);
        Self {
            entries: log.len(),
            duplicates: seqs.values().map(|n| n - 1).sum(),
            missing: usize::try_from(last).unwrap_or(0) - seqs.len(),
        }
    }

    fn add(&mut self, other: Self) {
        self.entries += other.entries;
        self.duplicates += other.duplicates;
        self.missing += other.missing;
    }
}

impl std::fmt::Display for LogCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} dup, {} missing (read back {} entries)",
            self.duplicates, self.missing, self.entries
        )
    }
}

// ---- rejoin -------------------------------------------------------------------

/// getGroupInfo + processExternalCommit by a new device of a member, one
/// conversation each: one at a time, then all at once, in several bursts
/// (one burst of 100 lasts about 0.1 s, so a single one is at the mercy of
/// whatever else the machine does in that moment; the row gives each
/// burst's rate too).
pub async fn rejoin(bench: &Bench<'_>) -> Result<Vec<Row>, BenchError> {
    let count = bench.sizes.rejoins;
    let mut convos = Vec::with_capacity(count);
    for _ in 0..count {
        let user = bench.fleet.user()?;
        let mut device = user.device("phone", bench.url())?;
        let convo = device.create_convo("rejoin").await?;
        convos.push((user, convo));
    }
    let one_at_a_time = rejoin_jobs(bench, &convos, 0).await?;
    let (samples, wall, cpu) = bench
        .measured(closed_loop(vec![one_at_a_time], move |jobs| {
            tokio::spawn(async move {
                let mut samples = Vec::new();
                for job in jobs {
                    samples.push(rejoin_one(job).await);
                }
                samples
            })
        }))
        .await;
    let mut rows = vec![
        rejoin_row(
            bench,
            &convos,
            format!("rejoin x{count}, one at a time"),
            1,
            (&samples, wall, cpu),
            "",
        )
        .await?,
    ];

    let bursts = bench.sizes.rejoin_bursts;
    let (mut samples, mut wall, mut splits, mut rates) =
        (Vec::new(), Duration::ZERO, Vec::new(), Vec::new());
    for burst in 1..=bursts {
        let jobs = rejoin_jobs(bench, &convos, burst).await?;
        let (burst_samples, burst_wall, split) = bench
            .measured(closed_loop(jobs, move |job| {
                tokio::spawn(async move { vec![rejoin_one(job).await] })
            }))
            .await;
        rates.push(format!(
            "{:.0}",
            burst_samples.len() as f64 / burst_wall.as_secs_f64()
        ));
        samples.extend(burst_samples);
        wall += burst_wall;
        splits.push(split);
    }
    rows.push(
        rejoin_row(
            bench,
            &convos,
            format!("rejoin x{count}, all at once, {bursts} bursts"),
            count,
            (&samples, wall, CpuSplit::mean(&splits)),
            &format!("; bursts {}/s", rates.join(", ")),
        )
        .await?,
    );
    Ok(rows)
}

/// One rejoin's requests, made ready outside the measurement: the
/// external commit of a new device (`#r<round>`) against the current
/// GroupInfo, and its tokens minted.
type RejoinJob = (
    Client,
    get_group_info::Params,
    process_external_commit::Input,
);

async fn rejoin_jobs(
    bench: &Bench<'_>,
    convos: &[(User, String)],
    round: usize,
) -> Result<Vec<RejoinJob>, BenchError> {
    let mut jobs = Vec::with_capacity(convos.len());
    for (user, convo) in convos {
        let installation = Installation::new(&format!("{}#r{round}", user.did().as_str()), SUITE)?;
        let (_, input) =
            catbird_mls_client::external_commit(&user.client(bench.url()), &installation, convo)
                .await?;
        let params = get_group_info::Params {
            convo_id: convo.clone(),
        };
        user.premint(get_group_info::NSID, 1);
        user.premint(process_external_commit::NSID, 1);
        jobs.push((user.client(bench.url()), params, input));
    }
    Ok(jobs)
}

async fn rejoin_one((client, params, input): RejoinJob) -> Sample {
    let started = Instant::now();
    let info = client.get_group_info(&params).await;
    let status = match info {
        Ok(_) => crate::measure::status_of(&client.process_external_commit(&input).await),
        Err(error) => format!(
            "getGroupInfo {}",
            crate::measure::status_of::<(), _>(&Err(error))
        ),
    };
    Sample {
        latency: started.elapsed(),
        status,
    }
}

/// A rejoin row, with every conversation's log read back.
async fn rejoin_row(
    bench: &Bench<'_>,
    convos: &[(User, String)],
    name: String,
    concurrency: usize,
    (samples, wall, cpu): (&[Sample], Duration, CpuSplit),
    notes: &str,
) -> Result<Row, BenchError> {
    let accepted = samples.iter().filter(|s| s.status == "200").count();
    let mut check = LogCheck::default();
    for (user, convo) in convos {
        check.add(LogCheck::of(
            &read_log(&user.client(bench.url()), convo).await?,
        ));
    }
    Ok(Row::from_samples(name, concurrency, samples, wall, cpu)
        .with_check(format!("{check}, {accepted} accepted{notes}")))
}

// ---- KeyPackages ------------------------------------------------------------

/// getKeyPackages by 16 concurrent fetchers, one user asked for per call.
pub async fn key_packages(bench: &Bench<'_>) -> Result<Vec<Row>, BenchError> {
    let per_fetcher = bench.sizes.fetches_per_fetcher;
    let total = FETCHERS * per_fetcher;
    let mut targets = Vec::new();
    for _ in 0..FETCH_TARGETS {
        let user = bench.fleet.user()?;
        let mut device = user.device("phone", bench.url())?;
        device
            .publish_key_packages(total.div_ceil(FETCH_TARGETS) + 1)
            .await?;
        targets.push(user.did().clone());
    }
    let mut workers = Vec::new();
    for f in 0..FETCHERS {
        let user = bench.fleet.user()?;
        user.premint(get_key_packages::NSID, per_fetcher);
        let calls: Vec<_> = (0..per_fetcher)
            .map(|i| get_key_packages::Params {
                dids: vec![targets[(f + i) % FETCH_TARGETS].clone()],
                cipher_suite: lexicon_suite().as_str().to_owned(),
                convo_id: None,
            })
            .collect();
        workers.push((user.client(bench.url()), calls));
    }
    let handed_out: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let collected = handed_out.clone();
    let (samples, wall, cpu) = bench
        .measured(closed_loop(workers, move |(client, calls)| {
            let collected = collected.clone();
            tokio::spawn(async move {
                let mut samples = Vec::with_capacity(calls.len());
                for params in calls {
                    let (sample, result) = timed(client.get_key_packages(&params)).await;
                    if let Ok(output) = result
                        && let Ok(mut all) = collected.lock()
                    {
                        all.extend(output.key_packages.into_iter().map(|kp| kp.key_package.0));
                    }
                    samples.push(sample);
                }
                samples
            })
        }))
        .await;
    let handed_out = handed_out.lock().map(|all| all.clone()).unwrap_or_default();
    let distinct: HashSet<&Vec<u8>> = handed_out.iter().collect();
    let check = format!(
        "{} KeyPackages handed out, {} twice",
        handed_out.len(),
        handed_out.len() - distinct.len()
    );
    Ok(vec![
        Row::from_samples(
            format!("getKeyPackages {FETCHERS}x{per_fetcher}"),
            FETCHERS,
            &samples,
            wall,
            cpu,
        )
        .with_check(check),
    ])
}

// ---- commits ------------------------------------------------------------------

/// addMembers (one member per commit) in groups of each size, one commit
/// at a time, with the stored state's size.
pub async fn commits(bench: &Bench<'_>) -> Result<Vec<Row>, BenchError> {
    let count = bench.sizes.commits_per_size;
    let mut rows = Vec::new();
    for &size in &bench.sizes.commit_sizes {
        let user = bench.fleet.user()?;
        let mut owner = user.device("phone", bench.url())?;
        let convo = owner.create_convo("commits").await?;
        let members = fleet::leaves(bench.fleet, bench.url(), size.saturating_sub(1)).await?;
        fleet::add_leaves(&mut owner, &convo, &members).await?;
        let state_before = bench.database.state_size(&convo).await?;

        // Pre-generated: each commit is built on the previous one, merged
        // locally as if accepted.
        let joiners = fleet::leaves(bench.fleet, bench.url(), count).await?;
        let mut inputs = Vec::with_capacity(count);
        for joiner in &joiners {
            inputs.push(fleet::add_input(
                &owner,
                &convo,
                vec![joiner.key_package.clone()],
            )?);
            owner.conclude(&convo, Some(0))?;
        }
        user.premint(add_members::NSID, count);
        let client = user.client(bench.url());
        let (samples, wall, cpu) = bench
            .measured(closed_loop(vec![(client, inputs)], |(client, inputs)| {
                tokio::spawn(async move {
                    let mut samples = Vec::new();
                    for input in inputs {
                        samples.push(timed(client.add_members(&input)).await.0);
                    }
                    samples
                })
            }))
            .await;
        let state_after = bench.database.state_size(&convo).await?;
        let check = LogCheck::of(&read_log(&user.client(bench.url()), &convo).await?);
        rows.push(
            Row::from_samples(
                format!("addMembers +1 at {} members", thousands(size as i64)),
                1,
                &samples,
                wall,
                cpu,
            )
            .with_check(check.to_string())
            .with_note(format!(
                "state {} -> {}",
                bytes(state_before),
                bytes(state_after)
            )),
        );
    }
    Ok(rows)
}

// ---- fan-out ------------------------------------------------------------------

/// An open event stream and what it should see.
struct Subscriber {
    user: User,
    device_id: String,
    convo: String,
    replica: usize,
}

/// A received log entry: (convo, seq) and its latency from acceptance.
type Arrival = ((String, i64), Duration);

/// Fan-out latency, acceptance (the entry's createdAt) to arrival at the
/// subscriber, at 1 conversation x N subscribers and M conversations x 3
/// subscribers, subscribers on every replica; memory per idle stream.
pub async fn fanout(bench: &Bench<'_>) -> Result<Vec<Row>, BenchError> {
    let mut rows = Vec::new();

    // 1 conversation x N subscribers: the owner and N - 1 leaves.
    let subscribers = bench.sizes.fanout_subscribers.max(1);
    let owner_user = bench.fleet.user()?;
    let mut owner = owner_user.device("phone", bench.url())?;
    let convo = owner.create_convo("fanout").await?;
    let members = fleet::leaves(bench.fleet, bench.url(), subscribers - 1).await?;
    fleet::add_leaves(&mut owner, &convo, &members).await?;
    let mut subs = vec![Subscriber {
        user: owner_user.clone(),
        device_id: owner.id().to_string(),
        convo: convo.clone(),
        replica: 0,
    }];
    subs.extend(members.iter().enumerate().map(|(i, leaf)| Subscriber {
        user: leaf.user.clone(),
        device_id: leaf.device_id.clone(),
        convo: convo.clone(),
        replica: (i + 1) % bench.urls.len(),
    }));
    let inputs = encrypt_messages(&owner, &convo, bench.sizes.fanout_messages, |i| {
        format!("{}-fan-{i}", bench.run_id)
    })?;
    owner_user.premint(send_message::NSID, inputs.len());
    let senders = vec![(owner_user.client(bench.url()), inputs)];
    let (row, memory) = fanout_run(
        bench,
        format!("fan-out 1 convo x {subscribers} subscribers"),
        subs,
        senders,
    )
    .await?;
    rows.push(row.with_note(memory));

    // M conversations x 3 subscribers: an owner and two leaves each.
    let count = bench.sizes.fanout_convos;
    let leaves = fleet::leaves(bench.fleet, bench.url(), 2 * count).await?;
    let mut subs = Vec::with_capacity(3 * count);
    // Senders: one closed loop per owner user, sending as that user.
    let mut senders: Vec<(User, Vec<send_message::Input>)> = Vec::new();
    for c in 0..count {
        if c % fleet::DEVICES_PER_USER == 0 {
            senders.push((bench.fleet.user()?, Vec::new()));
        }
        let user = senders[c / fleet::DEVICES_PER_USER].0.clone();
        let mut owner = user.device(&format!("o{c}"), bench.url())?;
        let convo = owner.create_convo("fanout").await?;
        let pair = &leaves[2 * c..2 * c + 2];
        fleet::add_leaves(&mut owner, &convo, pair).await?;
        subs.push(Subscriber {
            user: user.clone(),
            device_id: owner.id().to_string(),
            convo: convo.clone(),
            replica: (3 * c) % bench.urls.len(),
        });
        for (j, leaf) in pair.iter().enumerate() {
            subs.push(Subscriber {
                user: leaf.user.clone(),
                device_id: leaf.device_id.clone(),
                convo: convo.clone(),
                replica: (3 * c + j + 1) % bench.urls.len(),
            });
        }
        let input = encrypt_messages(&owner, &convo, 1, |_| format!("{}-fan-{c}", bench.run_id))?;
        senders[c / fleet::DEVICES_PER_USER].1.extend(input);
    }
    let by_user = senders
        .into_iter()
        .map(|(user, inputs)| {
            user.premint(send_message::NSID, inputs.len());
            (user.client(bench.url()), inputs)
        })
        .collect();
    let (row, memory) = fanout_run(
        bench,
        format!("fan-out {count} convos x 3 subscribers"),
        subs,
        by_user,
    )
    .await?;
    rows.push(row.with_note(memory));
    Ok(rows)
}

/// Opens every subscriber's stream (idle memory measured), sends, and
/// collects every live entry's latency. Returns the row and the memory note.
async fn fanout_run(
    bench: &Bench<'_>,
    name: String,
    subscribers: Vec<Subscriber>,
    senders: Vec<(Client, Vec<send_message::Input>)>,
) -> Result<(Row, String), BenchError> {
    for sub in &subscribers {
        sub.user.premint(subscribe_convo_events::NSID, 1);
    }
    let rss_before: Vec<Option<u64>> = bench.service_pids.iter().map(|p| rss_bytes(*p)).collect();
    let mut per_replica = vec![0usize; bench.urls.len()];
    let mut streams = Vec::with_capacity(subscribers.len());
    // Open in small parallel batches; each waits for its #catchUp, so the
    // stream is registered before anything is sent.
    for batch in subscribers.chunks(32) {
        let opened = future::join_all(batch.iter().map(|sub| {
            let client = sub.user.client(bench.replica(sub.replica));
            let params = subscribe_convo_events::Params {
                device_id: sub.device_id.clone(),
                ticket: None,
            };
            async move {
                let mut stream = client
                    .subscribe_convo_events(&params)
                    .await
                    .map_err(DeviceError::from)?;
                match tokio::time::timeout(FANOUT_GRACE, stream.next()).await {
                    Ok(Some(Ok(Message::CatchUp(_)))) => Ok(stream),
                    other => Err(BenchError::Setup(format!(
                        "subscribeConvoEvents for {}: no #catchUp first ({other:?})",
                        params.device_id
                    ))),
                }
            }
        }))
        .await;
        for (sub, stream) in batch.iter().zip(opened) {
            per_replica[sub.replica] += 1;
            streams.push(stream?);
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_after: Vec<Option<u64>> = bench.service_pids.iter().map(|p| rss_bytes(*p)).collect();
    let memory = idle_memory(&rss_before, &rss_after, &per_replica);

    // Expected: every message sent, at each subscriber of its conversation.
    let arrivals: Arc<Mutex<Vec<(usize, Arrival)>>> = Arc::default();
    let mut readers = Vec::with_capacity(streams.len());
    for (i, mut stream) in streams.into_iter().enumerate() {
        let arrivals = arrivals.clone();
        readers.push(tokio::spawn(async move {
            while let Some(Ok(frame)) = stream.next().await {
                if let Message::LogEntry(entry) = frame {
                    let now = chrono::Utc::now();
                    let accepted = entry.message.created_at.to_chrono();
                    let latency = (now.fixed_offset() - accepted)
                        .to_std()
                        .unwrap_or(Duration::ZERO);
                    let key = (entry.message.convo_id, entry.message.seq);
                    if let Ok(mut all) = arrivals.lock() {
                        all.push((i, (key, latency)));
                    }
                }
            }
        }));
    }

    let sent: Arc<Mutex<Vec<(String, i64)>>> = Arc::default();
    let record = sent.clone();
    let (_, send_wall, cpu) = bench
        .measured(closed_loop(senders, move |(client, inputs)| {
            let record = record.clone();
            tokio::spawn(async move {
                let mut samples = Vec::new();
                for input in inputs {
                    let (sample, result) = timed(client.send_message(&input)).await;
                    if let (Ok(output), Ok(mut sent)) = (result, record.lock()) {
                        sent.push((input.convo_id.clone(), output.seq));
                    }
                    samples.push(sample);
                }
                samples
            })
        }))
        .await;
    let sent = sent.lock().map(|s| s.clone()).unwrap_or_default();

    // Wait until every expected frame arrived, or the grace period ends.
    let expected: usize = subscribers
        .iter()
        .map(|sub| sent.iter().filter(|(c, _)| *c == sub.convo).count())
        .sum();
    let started = Instant::now();
    loop {
        let received = arrivals.lock().map(|a| a.len()).unwrap_or(0);
        if received >= expected || started.elapsed() > FANOUT_GRACE {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for reader in readers {
        reader.abort();
    }
    let arrivals = arrivals.lock().map(|a| a.clone()).unwrap_or_default();

    // Per subscriber: each sent entry of its conversation once, in order.
    let sent_set: HashSet<&(String, i64)> = sent.iter().collect();
    let mut got: HashMap<usize, Vec<i64>> = HashMap::new();
    let mut samples = Vec::new();
    for (i, (key, latency)) in &arrivals {
        if sent_set.contains(key) {
            got.entry(*i).or_default().push(key.1);
            samples.push(Sample {
                latency: *latency,
                status: "frame".to_owned(),
            });
        }
    }
    let (mut duplicates, mut missing, mut out_of_order) = (0, 0, 0);
    for (i, sub) in subscribers.iter().enumerate() {
        let wanted = sent
            .iter()
            .filter(|(c, _)| *c == sub.convo)
            .map(|(_, s)| *s);
        let seqs = got.remove(&i).unwrap_or_default();
        out_of_order += seqs.windows(2).filter(|w| w[1] < w[0]).count();
        let distinct: HashSet<i64> = seqs.iter().copied().collect();
        duplicates += seqs.len() - distinct.len();
        missing += wanted.filter(|s| !distinct.contains(s)).count();
    }
    let row = Row::from_samples(name, subscribers.len(), &samples, send_wall, cpu)
        .with_check(format!(
            "{} frames expected, {duplicates} dup, {missing} missing, {out_of_order} out of order",
            expected
        ))
        .with_note(format!(
            "{} messages sent in {:.2} s",
            sent.len(),
            send_wall.as_secs_f64()
        ));
    Ok((row, memory))
}

fn idle_memory(before: &[Option<u64>], after: &[Option<u64>], streams: &[usize]) -> String {
    let per: Vec<String> = before
        .iter()
        .zip(after)
        .zip(streams)
        .filter_map(|((b, a), n)| match (b, a) {
            (Some(b), Some(a)) if *n > 0 => Some(format!(
                "{:.1} KiB",
                (*a as f64 - *b as f64) / *n as f64 / 1024.0
            )),
            _ => None,
        })
        .collect();
    if per.is_empty() {
        "memory per idle stream: not measured (no service pid)".to_owned()
    } else {
        format!("RSS per idle stream {}", per.join(" / "))
    }
}

fn thousands(n: i64) -> String {
    if n >= 1_000 && n % 1_000 == 0 {
        format!("{}k", n / 1_000)
    } else {
        n.to_string()
    }
}

fn bytes(n: i64) -> String {
    if n >= 1_000_000 {
        format!("{:.2} MB", n as f64 / 1e6)
    } else if n >= 1_000 {
        format!("{:.1} KB", n as f64 / 1e3)
    } else {
        format!("{n} B")
    }
}
