//! `catbird-mls-bench`: the service benchmark harness. It starts its own
//! PostgreSQL database (this checkout's cluster from `scripts/pg-start`,
//! or the durable one) and `catbird-mls serve` processes, or targets a
//! running service by URL; runs closed-loop scenarios over the Rust client
//! with messages and tokens generated beforehand; and prints a table (or
//! JSON) with req/s, latency percentiles, statuses, read-back checks and
//! the CPU split between the service, PostgreSQL and the harness itself.
//! `scripts/bench-service` is the one command; docs/BENCHMARKS.md has the
//! figures.

mod env;
mod error;
mod fleet;
mod hostile;
mod measure;
mod pgbench;
mod scenarios;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Instant;

use catbird_generated::runtime::Did;
use clap::{Parser, ValueEnum};
use serde::Serialize;

use crate::env::{Database, Durability, Service};
use crate::error::BenchError;
use crate::fleet::Fleet;
use crate::measure::{Row, table};
use crate::scenarios::{Bench, Chat, Sizes};

/// The service DID the harness's own services run as.
const SERVICE_DID: &str = "did:web:bench.catbird.test";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
enum Scenario {
    /// sendMessage by 8 senders, without and with idempotency keys.
    Send,
    /// pgbench running the minimal sendMessage transaction (baseline).
    Pgbench,
    /// getMessages at the start and end of logs of growing length.
    Get,
    /// getGroupInfo + processExternalCommit, one at a time and all at once.
    Rejoin,
    /// getKeyPackages by 16 concurrent fetchers.
    Keypackages,
    /// addMembers (+1) at each group size, with the stored state size.
    Commits,
    /// Event stream fan-out latency over two replicas; memory per stream.
    Fanout,
}

/// Benchmarks the catbird-mls service.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Every scenario with tiny counts (seconds; for scripts/test, not for
    /// figures).
    #[arg(long)]
    tiny: bool,
    /// Print JSON instead of the table.
    #[arg(long)]
    json: bool,
    /// Run on the durable cluster (`scripts/pg-start --durable`: fsync and
    /// synchronous_commit on) instead of the test cluster.
    #[arg(long)]
    durable: bool,
    /// Only these scenarios (comma-separated; default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Scenario>,
    /// The `catbird-mls` binary to start [default: next to this one].
    #[arg(long)]
    service_binary: Option<PathBuf>,
    /// The checkout (for scripts/pg-start and the pgbench script).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/.."))]
    repo: PathBuf,
    /// Instead of the scenarios: send this many hostile requests (half
    /// with valid tokens of real members) and print what came back
    /// (scripts/hostile).
    #[arg(long, value_name = "REQUESTS", conflicts_with = "url")]
    hostile: Option<usize>,
    /// The hostile run's seed (the same seed sends the same requests).
    #[arg(long, default_value_t = 1)]
    hostile_seed: u64,
    /// Keep the run's database instead of dropping it.
    #[arg(long)]
    keep_database: bool,

    /// Target a running service instead (repeat for a second replica on
    /// the same database); needs --database-url, --did-directory and
    /// --service-did.
    #[arg(long, requires_all = ["database_url", "did_directory", "service_did"])]
    url: Vec<String>,
    /// With --url: the service's database (state sizes, CPU, pgbench).
    #[arg(long)]
    database_url: Option<String>,
    /// With --url: the DID directory the service resolves from (the harness
    /// writes its users' DID documents there).
    #[arg(long)]
    did_directory: Option<PathBuf>,
    /// With --url: the service's DID (the tokens' audience).
    #[arg(long)]
    service_did: Option<String>,
    /// With --url: the service processes' pids, for their CPU and memory.
    #[arg(long)]
    service_pid: Vec<u32>,

    /// sendMessage: messages per sender.
    #[arg(long)]
    send_per_sender: Option<usize>,
    /// getMessages: log lengths (comma-separated).
    #[arg(long, value_delimiter = ',')]
    get_levels: Option<Vec<usize>>,
    /// Rejoins per round.
    #[arg(long)]
    rejoins: Option<usize>,
    /// Commit scenario: group sizes (comma-separated).
    #[arg(long, value_delimiter = ',')]
    commit_sizes: Option<Vec<usize>>,
    /// Fan-out: subscribers of the one conversation.
    #[arg(long)]
    fanout_subscribers: Option<usize>,
    /// Fan-out: conversations of 3 subscribers.
    #[arg(long)]
    fanout_convos: Option<usize>,
}

impl Cli {
    fn sizes(&self) -> Sizes {
        let mut sizes = if self.tiny {
            Sizes::tiny()
        } else {
            Sizes::full()
        };
        if let Some(n) = self.send_per_sender {
            sizes.send_per_sender = n;
        }
        if let Some(levels) = &self.get_levels {
            sizes.get_levels.clone_from(levels);
        }
        if let Some(n) = self.rejoins {
            sizes.rejoins = n;
        }
        if let Some(commit_sizes) = &self.commit_sizes {
            sizes.commit_sizes.clone_from(commit_sizes);
        }
        if let Some(n) = self.fanout_subscribers {
            sizes.fanout_subscribers = n;
        }
        if let Some(n) = self.fanout_convos {
            sizes.fanout_convos = n;
        }
        sizes
    }

    fn scenarios(&self) -> BTreeSet<Scenario> {
        if self.only.is_empty() {
            Scenario::value_variants().iter().copied().collect()
        } else {
            self.only.iter().copied().collect()
        }
    }
}

/// Where the figures come from.
#[derive(Debug, Serialize)]
struct Machine {
    cores: usize,
    cpu: String,
    memory_gib: f64,
}

impl Machine {
    fn here() -> Self {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|text| {
                text.lines()
                    .find_map(|line| line.strip_prefix("model name"))
                    .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
            })
            .unwrap_or_else(|| "unknown".to_owned());
        let memory_kib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|text| {
                text.lines()
                    .find_map(|line| line.strip_prefix("MemTotal:"))
                    .and_then(|rest| rest.split_whitespace().next()?.parse::<f64>().ok())
            })
            .unwrap_or(0.0);
        Self {
            cores: std::thread::available_parallelism().map_or(0, usize::from),
            cpu,
            memory_gib: memory_kib / 1024.0 / 1024.0,
        }
    }
}

/// Figures derived from several rows, as issue 13 states its goals.
#[derive(Debug, Default, Serialize)]
struct Ratios {
    send_per_pgbench: Option<f64>,
    idempotency_overhead_p50_ms: Option<f64>,
    get_messages_largest_per_smallest_p50: Option<f64>,
}

impl Ratios {
    fn of(rows: &[Row]) -> Self {
        let find = |prefix: &str, without: &str| {
            rows.iter().find(|row| {
                row.scenario.starts_with(prefix)
                    && (without.is_empty() || !row.scenario.contains(without))
            })
        };
        let send = find("sendMessage", "idempotency");
        let idempotent = rows.iter().find(|row| {
            row.scenario.starts_with("sendMessage") && row.scenario.contains("idempotency")
        });
        let pgbench = find("pgbench", "");
        let ends: Vec<&Row> = rows
            .iter()
            .filter(|row| row.scenario.starts_with("getMessages") && row.scenario.contains("(end"))
            .collect();
        Self {
            send_per_pgbench: send
                .zip(pgbench)
                .map(|(s, p)| s.requests_per_second / p.requests_per_second),
            idempotency_overhead_p50_ms: send.zip(idempotent).map(|(s, i)| i.p50_ms - s.p50_ms),
            get_messages_largest_per_smallest_p50: match (ends.first(), ends.last()) {
                (Some(small), Some(large)) if ends.len() > 1 && small.p50_ms > 0.0 => {
                    Some(large.p50_ms / small.p50_ms)
                }
                _ => None,
            },
        }
    }
}

#[derive(Debug, Serialize)]
struct Report {
    machine: Machine,
    durability: Durability,
    service: String,
    tiny: bool,
    wall_seconds: f64,
    /// Tokens minted during measurements because a pool ran dry (0: no
    /// signing was measured).
    tokens_minted_late: u64,
    rows: Vec<Row>,
    ratios: Ratios,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("catbird-mls-bench: starting the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("catbird-mls-bench: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: &Cli) -> Result<(), BenchError> {
    let started = Instant::now();
    let run_id = format!("b{}", chrono::Utc::now().format("%Y%m%d%H%M%S"));
    let scratch = tempfile::Builder::new()
        .prefix("catbird-bench-")
        .tempdir()
        .map_err(|source| BenchError::io("a scratch directory".to_owned(), source))?;

    let targeted = !cli.url.is_empty();
    let database = match &cli.database_url {
        Some(url) if targeted => Database::connect(url).await?,
        _ => Database::fresh(&cli.repo, cli.durable).await?,
    };
    let durability = database.durability().await?;
    let (did_directory, service_did) = if targeted {
        (
            cli.did_directory.clone().unwrap_or_default(),
            cli.service_did.clone().unwrap_or_default(),
        )
    } else {
        let dids = scratch.path().join("dids");
        std::fs::create_dir_all(&dids)
            .map_err(|source| BenchError::io("creating the DID directory".to_owned(), source))?;
        (dids, SERVICE_DID.to_owned())
    };
    let audience = Did::new(service_did.clone())
        .map_err(|error| BenchError::Setup(format!("service DID {service_did}: {error}")))?;
    let fleet = Fleet::new(did_directory.clone(), audience);

    let binary = match &cli.service_binary {
        Some(binary) => binary.clone(),
        None => std::env::current_exe()
            .map_err(|source| BenchError::io("locating this binary".to_owned(), source))?
            .with_file_name("catbird-mls"),
    };
    let start_service = |index: usize| {
        Service::start(
            &binary,
            &database.url,
            &did_directory,
            &service_did,
            scratch.path(),
            index,
        )
    };
    let mut services: Vec<Service> = Vec::new();
    let (urls, pids) = if targeted {
        (cli.url.clone(), cli.service_pid.clone())
    } else {
        let service = start_service(0).await?;
        let found = (vec![service.url.clone()], vec![service.pid()]);
        services.push(service);
        found
    };
    if let (Some(requests), Some(service)) = (cli.hostile, services.first()) {
        let summary = hostile::run(
            &fleet,
            &database,
            &service.url,
            &service.log,
            requests,
            cli.hostile_seed,
        )
        .await;
        drop(services);
        database.finish(cli.keep_database).await?;
        let summary = summary?;
        println!("{summary}");
        return if summary.passed() {
            Ok(())
        } else {
            Err(BenchError::Hostile("see the summary above".to_owned()))
        };
    }
    let sizes = cli.sizes();
    let scenarios = cli.scenarios();
    eprintln!(
        "catbird-mls-bench: {} ({durability}); service {}; scenarios {:?}",
        if targeted {
            "targeting a running service"
        } else {
            "own database and service"
        },
        if targeted {
            urls.join(", ")
        } else {
            binary.display().to_string()
        },
        scenarios
    );

    let mut bench = Bench {
        fleet: &fleet,
        urls,
        service_pids: pids,
        database: &database,
        sizes: sizes.clone(),
        run_id,
    };
    let mut rows: Vec<Row> = Vec::new();
    let step = |name: &str| {
        eprintln!(
            "catbird-mls-bench: {name} ({:.0} s)",
            started.elapsed().as_secs_f64()
        )
    };

    if scenarios.contains(&Scenario::Send) {
        step("sendMessage");
        let mut chat = Chat::new(&bench).await?;
        rows.extend(scenarios::send(&bench, &mut chat).await?);
    }
    if scenarios.contains(&Scenario::Pgbench) {
        step("pgbench baseline");
        let script = cli.repo.join("bench/pgbench/send_message.sql");
        rows.push(
            pgbench::run(
                &database,
                &script,
                sizes.pgbench_transactions,
                bench.service_pids.clone(),
            )
            .await?,
        );
    }
    if scenarios.contains(&Scenario::Get) {
        step("getMessages");
        // A conversation of its own, so that its log starts empty.
        let mut chat = Chat::new(&bench).await?;
        rows.extend(scenarios::get_messages(&bench, &mut chat).await?);
    }
    if scenarios.contains(&Scenario::Rejoin) {
        step("rejoin");
        rows.extend(scenarios::rejoin(&bench).await?);
    }
    if scenarios.contains(&Scenario::Keypackages) {
        step("getKeyPackages");
        rows.extend(scenarios::key_packages(&bench).await?);
    }
    if scenarios.contains(&Scenario::Commits) {
        step("commits");
        rows.extend(scenarios::commits(&bench).await?);
    }
    if scenarios.contains(&Scenario::Fanout) {
        // A second replica on the same database, only for fan-out (an idle
        // one would still read every NOTIFY of the other scenarios).
        if !targeted {
            let second = start_service(1).await?;
            bench.urls.push(second.url.clone());
            bench.service_pids.push(second.pid());
            services.push(second);
        }
        step("fan-out");
        rows.extend(scenarios::fanout(&bench).await?);
    }

    let report = Report {
        machine: Machine::here(),
        durability,
        service: if targeted {
            bench.urls.join(", ")
        } else {
            binary.display().to_string()
        },
        tiny: cli.tiny,
        wall_seconds: started.elapsed().as_secs_f64(),
        tokens_minted_late: fleet.late_tokens.load(Ordering::Relaxed),
        ratios: Ratios::of(&rows),
        rows,
    };
    drop(services);
    if let Some(kept) = database.finish(cli.keep_database).await? {
        eprintln!("catbird-mls-bench: kept the database {kept}");
    }
    if cli.json {
        let json = serde_json::to_string_pretty(&report)
            .map_err(|error| BenchError::Setup(format!("serialising the report: {error}")))?;
        println!("{json}");
    } else {
        print_report(&report);
    }
    Ok(())
}

fn print_report(report: &Report) {
    let machine = &report.machine;
    println!(
        "catbird-mls-bench{}: {} cores, {}, {:.1} GiB; PostgreSQL {}",
        if report.tiny {
            " --tiny (counts too small for figures)"
        } else {
            ""
        },
        machine.cores,
        machine.cpu,
        machine.memory_gib,
        report.durability
    );
    println!("service: {}", report.service);
    println!(
        "CPU columns: ms of CPU per request (fan-out: per message sent) of the service process(es), of PostgreSQL (postmaster and backends), and of this harness"
    );
    println!();
    print!("{}", table(&report.rows));
    println!();
    let ratios = &report.ratios;
    if let Some(ratio) = ratios.send_per_pgbench {
        println!("sendMessage / pgbench (req/s per tps): {ratio:.2}");
    }
    if let Some(overhead) = ratios.idempotency_overhead_p50_ms {
        println!("idempotency key overhead at p50: {overhead:+.2} ms");
    }
    if let Some(ratio) = ratios.get_messages_largest_per_smallest_p50 {
        println!("getMessages p50, end of the longest log / the shortest: {ratio:.2}");
    }
    println!(
        "tokens minted during measurements: {}; wall time {:.1} s",
        report.tokens_minted_late, report.wall_seconds
    );
}
