//! The PostgreSQL baseline: pgbench running the minimal sendMessage
//! transaction (`bench/pgbench/send_message.sql`) with 8 clients on the
//! run's database, so that sendMessage can be compared with what the
//! cluster itself does in the same run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use sqlx::Executor as _;

use crate::env::Database;
use crate::error::BenchError;
use crate::measure::{CpuMeter, CpuSplit, Row, Sample};

/// pgbench clients: as many as sendMessage senders.
pub const CLIENTS: usize = 8;

/// The entry appended per transaction: 512 bytes.
const PAYLOAD_BYTES: usize = 512;

/// Runs the baseline: `transactions` per client. The row's latencies come
/// from pgbench's per-transaction log.
pub async fn run(
    database: &Database,
    script: &Path,
    transactions: usize,
    services: Vec<u32>,
) -> Result<Row, BenchError> {
    let pgbench = find_pgbench(database)?;
    for statement in [
        "DROP TABLE IF EXISTS bench_log, bench_convos",
        "CREATE TABLE bench_convos (id int PRIMARY KEY, last_seq bigint NOT NULL)",
        "INSERT INTO bench_convos VALUES (1, 0)",
        "CREATE TABLE bench_log (convo_id int NOT NULL, seq bigint NOT NULL, \
         payload bytea NOT NULL, created_at timestamptz NOT NULL DEFAULT now(), \
         UNIQUE (convo_id, seq))",
    ] {
        database
            .pool
            .execute(statement)
            .await
            .map_err(BenchError::database)?;
    }
    let logs = tempfile::tempdir()
        .map_err(|source| BenchError::io("a directory for pgbench logs".to_owned(), source))?;
    let payload = format!("\\x{}", "ab".repeat(PAYLOAD_BYTES));

    let meter = CpuMeter { services, database };
    let before = meter.snapshot();
    let output = Command::new(&pgbench)
        .current_dir(logs.path())
        .args(["--no-vacuum", "--protocol=prepared", "--log"])
        .args(["--client", &CLIENTS.to_string(), "--jobs", "2"])
        .args(["--transactions", &transactions.to_string()])
        .arg("--file")
        .arg(script)
        .arg("--define")
        .arg(format!("payload={payload}"))
        .arg(&database.url)
        .output()
        .map_err(|source| BenchError::io(format!("running {}", pgbench.display()), source))?;
    // pgbench's backends count once they have exited and the postmaster
    // has reaped them (its children's CPU): wait for them to be gone.
    for _ in 0..100 {
        let left: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgbench'",
        )
        .fetch_one(&database.pool)
        .await
        .map_err(BenchError::database)?;
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let after = meter.snapshot();
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(BenchError::Pgbench(format!(
            "{} ({}): {}{}",
            pgbench.display(),
            output.status,
            stdout,
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    let tps = stdout
        .lines()
        .find_map(|line| {
            line.strip_prefix("tps = ")
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|tps| tps.parse::<f64>().ok())
        })
        .ok_or_else(|| BenchError::Pgbench(format!("no tps in its output:\n{stdout}")))?;

    let samples = transaction_log(logs.path())?;
    let wall = Duration::from_secs_f64(samples.len() as f64 / tps);
    let cpu = CpuSplit::between(before, after, samples.len());

    let (rows, distinct, last): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT seq), coalesce(max(seq), 0) FROM bench_log",
    )
    .fetch_one(&database.pool)
    .await
    .map_err(BenchError::database)?;
    let check = format!(
        "{} dup, {} missing (read back {rows} rows)",
        rows - distinct,
        last - distinct
    );
    Ok(Row::from_samples(
        format!("pgbench minimal sendMessage tx {CLIENTS}x{transactions}"),
        CLIENTS,
        &samples,
        wall,
        cpu,
    )
    .with_check(check)
    .with_note(format!("pgbench tps {tps:.0}")))
}

/// pgbench next to the cluster's own binaries, else on the PATH.
fn find_pgbench(database: &Database) -> Result<PathBuf, BenchError> {
    if let Some(bindir) = &database.bindir {
        let candidate = bindir.join("pgbench");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join("pgbench"))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            BenchError::Pgbench("no pgbench binary (PostgreSQL's bindir or PATH)".into())
        })
}

/// Latencies from pgbench's per-transaction logs (`pgbench_log.*`, the
/// third field in microseconds).
fn transaction_log(directory: &Path) -> Result<Vec<Sample>, BenchError> {
    let mut samples = Vec::new();
    let entries = std::fs::read_dir(directory)
        .map_err(|source| BenchError::io("reading pgbench logs".to_owned(), source))?;
    for entry in entries.flatten() {
        let text = std::fs::read_to_string(entry.path()).map_err(|source| {
            BenchError::io(format!("reading {}", entry.path().display()), source)
        })?;
        for line in text.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if let Some(micros) = fields.get(2).and_then(|f| f.parse::<u64>().ok()) {
                samples.push(Sample {
                    latency: Duration::from_micros(micros),
                    status: "commit".to_owned(),
                });
            }
        }
    }
    Ok(samples)
}
