//! `codegen`: regenerate `generated/` from `lexicon/`, or check that it is
//! current. See the crate docs for the pipeline.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

// The emitter allocates many small token trees; mimalloc makes a full
// corpus run about 15% faster than the system allocator (docs/BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Generate typed Rust from AT Protocol lexicons.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Directory of lexicon JSON files (searched recursively).
    #[arg(long, default_value = "lexicon")]
    lexicons: PathBuf,
    /// Output crate directory; the generator owns its `src/lexicons/`.
    #[arg(long, default_value = "generated")]
    out: PathBuf,
    /// Do not write: exit 1 and list the files that are stale.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let generated = match codegen::generate(&args.lexicons) {
        Ok(g) => {
            for note in &g.notes {
                eprintln!("note: {note}");
            }
            g
        }
        Err(diagnostics) => {
            eprintln!("{diagnostics}");
            return ExitCode::from(2);
        }
    };
    if args.check {
        match codegen::write::compare(&args.out, &generated.files) {
            Ok(drift) if drift.is_empty() => ExitCode::SUCCESS,
            Ok(drift) => {
                eprintln!(
                    "{} is stale; run `cargo run --bin codegen`:",
                    args.out.display()
                );
                for (label, paths) in [
                    ("changed", &drift.changed),
                    ("missing", &drift.missing),
                    ("extra", &drift.extra),
                ] {
                    for path in paths {
                        eprintln!("  {label}: {}", args.out.join(path).display());
                    }
                }
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("error: cannot read {}: {e}", args.out.display());
                ExitCode::from(2)
            }
        }
    } else {
        match codegen::write::write(&args.out, &generated.files) {
            Ok(drift) => {
                let written = drift.changed.len() + drift.missing.len();
                eprintln!(
                    "codegen: {} files under {}, {written} written, {} removed",
                    generated.files.len(),
                    args.out.join(codegen::write::OWNED_DIR).display(),
                    drift.extra.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: cannot write {}: {e}", args.out.display());
                ExitCode::from(2)
            }
        }
    }
}
