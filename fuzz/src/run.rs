//! The mutation loop: every seed as it is (each must be accepted, or the
//! target no longer reaches the code behind its parser), then mutants of
//! the seeds and of mutants that were accepted, each under
//! `catch_unwind`. Failing inputs are written to a directory so that
//! `catbird-mls-fuzz --replay FILE` (or a regression test) can run them
//! again.

use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

use crate::mutate::Mutator;
use crate::{Outcome, Target, Violation};

/// How long a run goes on: whichever limit comes first.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub cases: Option<u64>,
    pub time: Option<Duration>,
}

/// What one target's run found.
#[derive(Debug, Default)]
pub struct Report {
    pub cases: u64,
    pub accepted: u64,
    pub refused: u64,
    pub failures: Vec<Failure>,
    pub elapsed: Duration,
}

/// An input that panicked or broke the target's property.
#[derive(Debug)]
pub struct Failure {
    pub what: String,
    /// Where the input was written.
    pub input: PathBuf,
}

/// Accepted mutants kept as starting points (beyond the seeds).
const POOL: usize = 256;

/// Runs `target` within `budget`, mutating with `seed`; failing inputs go
/// to `crash_dir/<target>/`.
pub fn run(target: &dyn Target, budget: Budget, seed: u64, crash_dir: &Path) -> Report {
    let started = Instant::now();
    let mut report = Report::default();
    let mut mutator = Mutator::new(seed, target.dictionary());
    let seeds = target.seeds();
    let mut pool: Vec<Vec<u8>> = Vec::new();
    let mut rng = fastrand::Rng::with_seed(seed ^ 0x5eed);

    for seed_input in seeds {
        match check(target, seed_input) {
            Ok(Outcome::Accepted) => report.accepted += 1,
            Ok(Outcome::Refused) => report.failures.push(record(
                target,
                seed_input,
                "a seed was refused: the target no longer reaches the checks behind its parser"
                    .into(),
                crash_dir,
            )),
            Err(what) => report
                .failures
                .push(record(target, seed_input, what, crash_dir)),
        }
        report.cases += 1;
    }

    let within = |report: &Report| {
        budget.cases.is_none_or(|cases| report.cases < cases)
            && budget.time.is_none_or(|time| started.elapsed() < time)
    };
    while within(&report) && !seeds.is_empty() {
        let base = if !pool.is_empty() && rng.u8(0..4) == 0 {
            &pool[rng.usize(..pool.len())]
        } else {
            &seeds[rng.usize(..seeds.len())]
        };
        let mut input = mutator.mutate(base, target.shape(), seeds);
        // Edits can cancel out; an unchanged input tests nothing new.
        while input == *base {
            input = mutator.mutate(base, target.shape(), seeds);
        }
        report.cases += 1;
        match check(target, &input) {
            Ok(Outcome::Accepted) => {
                report.accepted += 1;
                if pool.len() < POOL && !seeds.contains(&input) {
                    pool.push(input);
                }
            }
            Ok(Outcome::Refused) => report.refused += 1,
            Err(what) => report
                .failures
                .push(record(target, &input, what, crash_dir)),
        }
    }
    report.elapsed = started.elapsed();
    report
}

/// One input under `catch_unwind`: a panic or a violation, described.
pub fn check(target: &dyn Target, input: &[u8]) -> Result<Outcome, String> {
    quiet_panics();
    LAST_PANIC.lock().map(|mut last| last.take()).ok();
    match panic::catch_unwind(AssertUnwindSafe(|| target.check(input))) {
        Ok(Ok(outcome)) => Ok(outcome),
        Ok(Err(Violation(what))) => Err(what),
        Err(_) => {
            let message = LAST_PANIC
                .lock()
                .ok()
                .and_then(|mut last| last.take())
                .unwrap_or_else(|| "panicked".to_owned());
            Err(format!("panic: {message}"))
        }
    }
}

static LAST_PANIC: Mutex<Option<String>> = Mutex::new(None);

/// Replaces the panic hook once: panics are expected here and reported
/// with their input, not printed as they happen.
fn quiet_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        panic::set_hook(Box::new(|info| {
            let location = info
                .location()
                .map(|l| format!(" at {}:{}", l.file(), l.line()))
                .unwrap_or_default();
            let payload = info.payload();
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            if let Ok(mut last) = LAST_PANIC.lock() {
                *last = Some(format!("{message}{location}"));
            }
        }));
    });
}

fn record(target: &dyn Target, input: &[u8], what: String, crash_dir: &Path) -> Failure {
    let digest = Sha256::digest(input);
    let name: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    let dir = crash_dir.join(target.name());
    let path = dir.join(name);
    if let Err(error) = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, input)) {
        eprintln!(
            "fuzz: could not save a failing input to {}: {error}",
            path.display()
        );
    }
    Failure { what, input: path }
}
