//! `catbird-mls-fuzz`: runs the fuzz targets without libFuzzer, a bounded
//! number of cases (CI) or for a while (`scripts/fuzz` when cargo-fuzz is
//! not there), and replays saved inputs.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use catbird_mls_fuzz::run::{self, Budget};
use catbird_mls_fuzz::{TARGETS, target};
use clap::Parser;

/// Fuzzes catbird-mls's parsers and validators with mutated real inputs.
#[derive(Debug, Parser)]
struct Cli {
    /// Only these targets (comma-separated; default: all).
    #[arg(long, value_delimiter = ',')]
    target: Vec<String>,
    /// Cases per target (seeds included).
    #[arg(long, default_value_t = 1000)]
    cases: u64,
    /// Run each target this long instead of a number of cases.
    #[arg(long)]
    seconds: Option<u64>,
    /// The mutation seed (the same seed gives the same inputs).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Where failing inputs are written.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/fuzz/failures"))]
    failures: PathBuf,
    /// Write each target's seeds as files to DIR/<target>/ (a corpus for
    /// cargo-fuzz) and exit.
    #[arg(long, value_name = "DIR")]
    write_seeds: Option<PathBuf>,
    /// Run these saved inputs through the (one) --target and exit.
    #[arg(long, value_name = "FILE", num_args = 1..)]
    replay: Vec<PathBuf>,
    /// List the targets and exit.
    #[arg(long)]
    list: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.list {
        TARGETS.iter().for_each(|name| println!("{name}"));
        return ExitCode::SUCCESS;
    }
    let names: Vec<String> = if cli.target.is_empty() {
        TARGETS.iter().map(|name| (*name).to_owned()).collect()
    } else {
        cli.target.clone()
    };
    if let Some(unknown) = names.iter().find(|name| !TARGETS.contains(&name.as_str())) {
        eprintln!(
            "fuzz: unknown target {unknown:?}; targets: {}",
            TARGETS.join(", ")
        );
        return ExitCode::from(2);
    }
    if !cli.replay.is_empty() {
        return replay(&cli, &names);
    }
    if let Some(dir) = &cli.write_seeds {
        return write_seeds(dir, &names);
    }

    let budget = match cli.seconds {
        Some(seconds) => Budget {
            cases: None,
            time: Some(Duration::from_secs(seconds)),
        },
        None => Budget {
            cases: Some(cli.cases),
            time: None,
        },
    };
    let mut failed = 0;
    for name in &names {
        let target = target(name).expect("a known target");
        let report = run::run(target.as_ref(), budget, cli.seed, &cli.failures);
        println!(
            "fuzz {name}: {} cases ({} seeds) in {:.1} s: {} accepted, {} refused, {} failures",
            report.cases,
            target.seeds().len(),
            report.elapsed.as_secs_f64(),
            report.accepted,
            report.refused,
            report.failures.len()
        );
        for failure in &report.failures {
            println!("  FAILURE {}: {}", failure.input.display(), failure.what);
        }
        failed += report.failures.len();
    }
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        println!(
            "fuzz: {failed} failing input(s), saved under {}",
            cli.failures.display()
        );
        ExitCode::FAILURE
    }
}

fn replay(cli: &Cli, names: &[String]) -> ExitCode {
    let [name] = names else {
        eprintln!("fuzz: --replay needs exactly one --target");
        return ExitCode::from(2);
    };
    let target = target(name).expect("a known target");
    let mut failed = false;
    for path in &cli.replay {
        let input = match std::fs::read(path) {
            Ok(input) => input,
            Err(error) => {
                eprintln!("fuzz: {}: {error}", path.display());
                return ExitCode::from(2);
            }
        };
        match run::check(target.as_ref(), &input) {
            Ok(outcome) => println!("{}: {outcome:?}", path.display()),
            Err(what) => {
                println!("{}: FAILURE {what}", path.display());
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn write_seeds(dir: &std::path::Path, names: &[String]) -> ExitCode {
    for name in names {
        let target = target(name).expect("a known target");
        let out = dir.join(name);
        for (index, seed) in target.seeds().iter().enumerate() {
            if let Err(error) = std::fs::create_dir_all(&out)
                .and_then(|()| std::fs::write(out.join(format!("seed-{index}")), seed))
            {
                eprintln!("fuzz: writing {}: {error}", out.display());
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
