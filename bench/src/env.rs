//! What the benchmark runs against: a PostgreSQL cluster (this checkout's,
//! started with `scripts/pg-start`, and a fresh database in it per run) and
//! `catbird-mls serve` processes, plus what `/proc` says about their CPU
//! time and memory.

use std::fs::{self, File};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use catbird_generated::runtime::xrpc::reqwest;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions as _, Executor as _};

use crate::error::BenchError;

/// The cluster's durability settings, as `SHOW` reports them.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Durability {
    pub fsync: String,
    pub synchronous_commit: String,
    pub full_page_writes: String,
}

impl std::fmt::Display for Durability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "fsync={}, synchronous_commit={}, full_page_writes={}",
            self.fsync, self.synchronous_commit, self.full_page_writes
        )
    }
}

/// The database a run uses.
pub struct Database {
    /// The run's own database (created by this run unless targeted).
    pub url: String,
    pub pool: PgPool,
    /// The cluster's postmaster, when it runs on this machine: its process
    /// and its children are PostgreSQL's CPU time.
    pub postmaster: Option<u32>,
    /// pgbench and friends, when the cluster was started here.
    pub bindir: Option<PathBuf>,
    /// Dropped at the end of the run: (admin URL, database name).
    created: Option<(String, String)>,
}

impl Database {
    /// Starts (or finds) this checkout's cluster with `scripts/pg-start`
    /// (`--durable`: the durable one) and creates a fresh database in it.
    pub async fn fresh(repo: &Path, durable: bool) -> Result<Self, BenchError> {
        let script = repo.join("scripts/pg-start");
        let mut command = Command::new(&script);
        if durable {
            command.arg("--durable");
        }
        let output = command
            .stderr(Stdio::inherit())
            .output()
            .map_err(|source| BenchError::io(format!("running {}", script.display()), source))?;
        if !output.status.success() {
            return Err(BenchError::Setup(format!(
                "{} failed: {}",
                script.display(),
                output.status
            )));
        }
        let admin_url = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        let cluster_dir = repo
            .join("target")
            .join(if durable { "pg-durable" } else { "pg" });
        let bindir = fs::read_to_string(cluster_dir.join("bindir"))
            .ok()
            .map(|text| PathBuf::from(text.trim()));

        let name = format!(
            "bench_{}_{}",
            chrono::Utc::now().format("%Y%m%d_%H%M%S"),
            std::process::id()
        );
        let admin: PgConnectOptions = admin_url.parse().map_err(BenchError::database)?;
        let mut connection = admin.connect().await.map_err(BenchError::database)?;
        connection
            .execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .map_err(BenchError::database)?;
        drop(connection);
        let url = replace_database(&admin_url, &name)?;
        let mut database = Self::connect(&url).await?;
        database.bindir = bindir;
        database.created = Some((admin_url, name));
        Ok(database)
    }

    /// Connects to an existing database (a service started elsewhere).
    pub async fn connect(url: &str) -> Result<Self, BenchError> {
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .connect(url)
            .await
            .map_err(BenchError::database)?;
        let backend: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&pool)
            .await
            .map_err(BenchError::database)?;
        // The backend's parent is the postmaster, if it runs here at all.
        let postmaster = u32::try_from(backend)
            .ok()
            .and_then(|pid| ProcStat::read(pid).ok())
            .map(|stat| stat.ppid);
        Ok(Self {
            url: url.to_owned(),
            pool,
            postmaster,
            bindir: None,
            created: None,
        })
    }

    pub async fn durability(&self) -> Result<Durability, BenchError> {
        let show = |name: &'static str| {
            let pool = self.pool.clone();
            async move {
                sqlx::query_scalar::<_, String>(&format!("SHOW {name}"))
                    .fetch_one(&pool)
                    .await
                    .map_err(BenchError::database)
            }
        };
        Ok(Durability {
            fsync: show("fsync").await?,
            synchronous_commit: show("synchronous_commit").await?,
            full_page_writes: show("full_page_writes").await?,
        })
    }

    /// The stored group state's size of a conversation, in bytes: the head
    /// in `convos.state` and the tree's nodes, a row each, in
    /// `group_state_nodes` (migration 0007; before it the whole state was
    /// in `convos.state`).
    pub async fn state_size(&self, convo: &str) -> Result<i64, BenchError> {
        let group_id = catbird_mls_core::mls_crypto::from_hex(convo)
            .ok_or_else(|| BenchError::Setup(format!("convo id {convo} is not hex")))?;
        sqlx::query_scalar(
            "SELECT octet_length(state)::bigint + (SELECT coalesce(sum(octet_length(node)), 0) \
               FROM group_state_nodes WHERE convo_id = $1)::bigint \
             FROM convos WHERE group_id = $1",
        )
        .bind(group_id)
        .fetch_one(&self.pool)
        .await
        .map_err(BenchError::database)
    }

    /// CPU seconds of the postmaster and all its children so far.
    pub fn cpu_seconds(&self) -> Option<f64> {
        let postmaster = self.postmaster?;
        let mut ticks = ProcStat::read(postmaster).ok()?.cpu_ticks;
        for entry in fs::read_dir("/proc").ok()?.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if let Ok(stat) = ProcStat::read(pid)
                && stat.ppid == postmaster
            {
                ticks += stat.cpu_ticks;
            }
        }
        Some(ticks as f64 / clock_ticks())
    }

    /// Drops the run's database, if this run created it.
    pub async fn finish(self, keep: bool) -> Result<Option<String>, BenchError> {
        self.pool.close().await;
        let Some((admin_url, name)) = self.created else {
            return Ok(None);
        };
        if keep {
            return Ok(Some(self.url));
        }
        let admin: PgConnectOptions = admin_url.parse().map_err(BenchError::database)?;
        let mut connection = admin.connect().await.map_err(BenchError::database)?;
        connection
            .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
            .await
            .map_err(BenchError::database)?;
        Ok(None)
    }
}

fn replace_database(url: &str, name: &str) -> Result<String, BenchError> {
    let mut url = reqwest::Url::parse(url)
        .map_err(|error| BenchError::Setup(format!("pg-start printed {url}: {error}")))?;
    url.set_path(name);
    Ok(url.into())
}

/// What `/proc/<pid>/stat` says about a process.
#[derive(Debug, Clone, Copy)]
pub struct ProcStat {
    pub ppid: u32,
    /// utime + stime + cutime + cstime, in clock ticks: the process and
    /// its children that ended and were waited for (PostgreSQL backends
    /// that exited, for pgbench's short-lived connections; pgbench itself,
    /// for this harness).
    pub cpu_ticks: u64,
}

impl ProcStat {
    pub fn read(pid: u32) -> Result<Self, std::io::Error> {
        let text = fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // The command name (field 2) may hold spaces: fields after its ')'.
        let rest = text.rsplit_once(')').map_or("", |(_, rest)| rest);
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |n: usize| -> u64 {
            // Field n (1-based, as in proc(5)) is fields[n - 3].
            fields
                .get(n - 3)
                .and_then(|value| value.parse().ok())
                .unwrap_or(0)
        };
        Ok(Self {
            ppid: u32::try_from(field(4)).unwrap_or(0),
            cpu_ticks: field(14) + field(15) + field(16) + field(17),
        })
    }
}

/// The resident set of a process, in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// CPU seconds of one process.
pub fn process_cpu_seconds(pid: u32) -> Option<f64> {
    ProcStat::read(pid)
        .ok()
        .map(|stat| stat.cpu_ticks as f64 / clock_ticks())
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux in practice).
fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8_lossy(&out.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// A `catbird-mls serve` child process.
pub struct Service {
    child: Child,
    pub url: String,
    pub log: PathBuf,
}

/// How long a service may take to become healthy.
const STARTUP: Duration = Duration::from_secs(60);

impl Service {
    /// Starts `binary serve` on a free loopback port with the harness's
    /// settings (no rate limits, no stream cap that a scenario reaches).
    pub async fn start(
        binary: &Path,
        database_url: &str,
        did_directory: &Path,
        service_did: &str,
        log_dir: &Path,
        index: usize,
    ) -> Result<Self, BenchError> {
        let address = free_address()?;
        let log = log_dir.join(format!("service-{index}.log"));
        let output = File::create(&log)
            .map_err(|source| BenchError::io(format!("creating {}", log.display()), source))?;
        let errors = output
            .try_clone()
            .map_err(|source| BenchError::io("duplicating the log file".to_owned(), source))?;
        let child = Command::new(binary)
            .arg("serve")
            .args(["--bind", &address.to_string()])
            .args(["--database-url", database_url])
            .arg("--did-directory")
            .arg(did_directory)
            // Documents kept as production's network resolver keeps them:
            // a request there almost never waits for its issuer's document.
            // (An environment variable, so that builds from before the
            // setting existed can be measured by the same harness.)
            .env("CATBIRD_DID_CACHE_SECONDS", "3600")
            .args(["--service-did", service_did])
            .args(["--rate-limit-read", "0"])
            .args(["--rate-limit-write", "0"])
            .args(["--rate-limit-key-package-fetch", "0"])
            .args(["--rate-limit-ephemeral", "0"])
            .args(["--max-streams-per-user", "1000000"])
            // Every simulated client connects from 127.0.0.1, as behind a
            // reverse proxy: no per-address cap (the fan-out scenario holds
            // 3,000 streams).
            .args(["--max-connections-per-address", "0"])
            .args(["--key-package-max-per-device", "1000000"])
            .stdin(Stdio::null())
            .stdout(output)
            .stderr(errors)
            .spawn()
            .map_err(|source| BenchError::io(format!("starting {}", binary.display()), source))?;
        let mut service = Self {
            child,
            url: format!("http://{address}"),
            log,
        };
        service.wait_healthy().await?;
        Ok(service)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    async fn wait_healthy(&mut self) -> Result<(), BenchError> {
        let health = format!("{}/xrpc/_health", self.url);
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(BenchError::Setup(format!(
                    "catbird-mls serve exited at startup ({status}); see {}",
                    self.log.display()
                )));
            }
            if let Ok(response) = reqwest::get(&health).await
                && response.status().is_success()
            {
                return Ok(());
            }
            if started.elapsed() > STARTUP {
                return Err(BenchError::Setup(format!(
                    "catbird-mls serve not healthy within {STARTUP:?}; see {}",
                    self.log.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn free_address() -> Result<SocketAddr, BenchError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map_err(|source| BenchError::io("finding a free port".to_owned(), source))
}
