//! `strata-bench`: Strata's load generator and benchmarks.
//!
//! Every mode prints a human summary and, with `--format json`, one JSON object as the last
//! line so scripts (and `docs/benchmarks.md`) can pick the figures up.

mod report;
mod storage;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "strata-bench", version, about = "Benchmarks for Strata")]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// The partition log against the raw limits of this disk and this CPU, in one run.
    Storage(storage::StorageArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.mode {
        Mode::Storage(args) => storage::run(&args),
    }
}
