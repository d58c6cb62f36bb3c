//! Measurements: latencies and statuses of a closed-loop run, the CPU
//! time the service processes, PostgreSQL and this harness spent in it,
//! and the result table (text and JSON).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::time::{Duration, Instant};

use catbird_generated::runtime::DeclaredError;
use catbird_generated::runtime::xrpc::ClientError;
use serde::Serialize;

use crate::env::{self, Database};

/// One request's outcome: its latency and its status (`200`, `409`, or
/// `transport` / `decode` for failures without one).
#[derive(Debug, Clone)]
pub struct Sample {
    pub latency: Duration,
    pub status: String,
}

/// The status label of a client call's result.
pub fn status_of<T, E: DeclaredError>(result: &Result<T, ClientError<E>>) -> String {
    match result {
        Ok(_) => "200".to_owned(),
        Err(ClientError::Method(error)) => error.status().as_u16().to_string(),
        Err(ClientError::Transport(_)) => "transport".to_owned(),
        Err(ClientError::Encode(_)) => "encode".to_owned(),
        Err(ClientError::Decode(_)) => "decode".to_owned(),
    }
}

/// Times one call.
pub async fn timed<T, E: DeclaredError>(
    call: impl Future<Output = Result<T, ClientError<E>>>,
) -> (Sample, Result<T, ClientError<E>>) {
    let started = Instant::now();
    let result = call.await;
    let sample = Sample {
        latency: started.elapsed(),
        status: status_of(&result),
    };
    (sample, result)
}

/// Runs `workers` closed loops at once (each sends its next request when
/// the previous one answered) and returns every sample and the wall time.
pub async fn closed_loop<W, F>(workers: Vec<W>, run: F) -> (Vec<Sample>, Duration)
where
    W: Send + 'static,
    F: Fn(W) -> tokio::task::JoinHandle<Vec<Sample>>,
{
    let started = Instant::now();
    let handles: Vec<_> = workers.into_iter().map(run).collect();
    let mut samples = Vec::new();
    for handle in handles {
        match handle.await {
            Ok(worker) => samples.extend(worker),
            Err(error) => samples.push(Sample {
                latency: Duration::ZERO,
                status: format!("worker failed: {error}"),
            }),
        }
    }
    (samples, started.elapsed())
}

/// CPU seconds of the service processes, PostgreSQL and this harness at
/// one moment.
#[derive(Debug, Clone, Copy)]
pub struct CpuSnapshot {
    service: Option<f64>,
    postgres: Option<f64>,
    harness: Option<f64>,
}

/// Whose CPU time to count.
pub struct CpuMeter<'a> {
    pub services: Vec<u32>,
    pub database: &'a Database,
}

impl CpuMeter<'_> {
    pub fn snapshot(&self) -> CpuSnapshot {
        let service = if self.services.is_empty() {
            None
        } else {
            self.services
                .iter()
                .map(|pid| env::process_cpu_seconds(*pid))
                .sum::<Option<f64>>()
        };
        CpuSnapshot {
            service,
            postgres: self.database.cpu_seconds(),
            harness: env::process_cpu_seconds(std::process::id()),
        }
    }
}

/// CPU time spent between two snapshots, in milliseconds per request.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct CpuSplit {
    pub service_ms_per_request: Option<f64>,
    pub postgres_ms_per_request: Option<f64>,
    pub harness_ms_per_request: Option<f64>,
}

impl CpuSplit {
    pub fn between(before: CpuSnapshot, after: CpuSnapshot, requests: usize) -> Self {
        let per = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if requests > 0 => Some((b - a) * 1000.0 / requests as f64),
            _ => None,
        };
        Self {
            service_ms_per_request: per(before.service, after.service),
            postgres_ms_per_request: per(before.postgres, after.postgres),
            harness_ms_per_request: per(before.harness, after.harness),
        }
    }

    /// The mean of splits over equal numbers of requests.
    pub fn mean(splits: &[CpuSplit]) -> Self {
        let mean = |part: fn(&CpuSplit) -> Option<f64>| {
            let parts: Option<Vec<f64>> = splits.iter().map(part).collect();
            parts
                .filter(|parts| !parts.is_empty())
                .map(|parts| parts.iter().sum::<f64>() / parts.len() as f64)
        };
        Self {
            service_ms_per_request: mean(|s| s.service_ms_per_request),
            postgres_ms_per_request: mean(|s| s.postgres_ms_per_request),
            harness_ms_per_request: mean(|s| s.harness_ms_per_request),
        }
    }
}

/// One line of the result table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub scenario: String,
    /// Concurrent closed loops (clients, subscribers for fan-out).
    pub concurrency: usize,
    pub requests: usize,
    pub wall_seconds: f64,
    pub requests_per_second: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub statuses: BTreeMap<String, usize>,
    pub cpu: CpuSplit,
    /// The read-back check of a write scenario, e.g. `0 dup, 0 missing`.
    pub check: Option<String>,
    /// Anything else measured: state size, memory per connection.
    pub note: Option<String>,
}

impl Row {
    /// A row from request samples.
    pub fn from_samples(
        scenario: impl Into<String>,
        concurrency: usize,
        samples: &[Sample],
        wall: Duration,
        cpu: CpuSplit,
    ) -> Self {
        let mut latencies: Vec<Duration> = samples.iter().map(|s| s.latency).collect();
        latencies.sort_unstable();
        let mut statuses = BTreeMap::new();
        for sample in samples {
            *statuses.entry(sample.status.clone()).or_insert(0) += 1;
        }
        let wall_seconds = wall.as_secs_f64();
        Self {
            scenario: scenario.into(),
            concurrency,
            requests: samples.len(),
            wall_seconds,
            requests_per_second: if wall_seconds > 0.0 {
                samples.len() as f64 / wall_seconds
            } else {
                0.0
            },
            p50_ms: percentile(&latencies, 50.0),
            p90_ms: percentile(&latencies, 90.0),
            p99_ms: percentile(&latencies, 99.0),
            statuses,
            cpu,
            check: None,
            note: None,
        }
    }

    pub fn with_check(mut self, check: impl Into<String>) -> Self {
        self.check = Some(check.into());
        self
    }

    pub fn with_note(mut self, note: impl Into<String>) -> Self {
        self.note = Some(match self.note.take() {
            Some(before) => format!("{before}; {}", note.into()),
            None => note.into(),
        });
        self
    }
}

/// The nearest-rank percentile of sorted latencies, in milliseconds.
pub fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    let index = rank.clamp(1, sorted.len()) - 1;
    sorted[index].as_secs_f64() * 1000.0
}

/// The table as text.
pub fn table(rows: &[Row]) -> String {
    let headers = [
        "scenario",
        "conc",
        "n",
        "req/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "statuses",
        "svc CPU",
        "pg CPU",
        "bench CPU",
        "check / notes",
    ];
    let ms = |value: Option<f64>| value.map_or("-".to_owned(), |v| format!("{v:.2}"));
    let lines: Vec<[String; 12]> = rows
        .iter()
        .map(|row| {
            let statuses = row
                .statuses
                .iter()
                .map(|(status, count)| format!("{status}:{count}"))
                .collect::<Vec<_>>()
                .join(" ");
            let notes = [row.check.clone(), row.note.clone()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join("; ");
            [
                row.scenario.clone(),
                row.concurrency.to_string(),
                row.requests.to_string(),
                format!("{:.0}", row.requests_per_second),
                format!("{:.2}", row.p50_ms),
                format!("{:.2}", row.p90_ms),
                format!("{:.2}", row.p99_ms),
                statuses,
                ms(row.cpu.service_ms_per_request),
                ms(row.cpu.postgres_ms_per_request),
                ms(row.cpu.harness_ms_per_request),
                notes,
            ]
        })
        .collect();
    let mut widths = headers.map(str::len);
    for line in &lines {
        for (width, cell) in widths.iter_mut().zip(line) {
            *width = (*width).max(cell.len());
        }
    }
    let mut out = String::new();
    let mut push = |cells: &[String]| {
        let mut text = String::from("|");
        for (i, cell) in cells.iter().enumerate() {
            let numeric = (1..=6).contains(&i) || (8..=10).contains(&i);
            if numeric {
                let _ = write!(text, " {cell:>width$} |", width = widths[i]);
            } else {
                let _ = write!(text, " {cell:<width$} |", width = widths[i]);
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    push(&headers.map(str::to_owned));
    push(&widths.map(|w| "-".repeat(w)));
    for line in &lines {
        push(line);
    }
    out
}
