//! `strata-bench`: Strata's load generator and benchmarks.
//!
//! Every mode prints a human summary and, with `--format json`, one JSON object as the last
//! line so scripts (and `docs/benchmarks.md`) can pick the figures up.

mod cluster;
mod load;
mod report;
mod storage;

use clap::{Parser, Subcommand, ValueEnum};

/// The same allocator, without transparent huge pages, as `strata` (see `crates/cli/src/main.rs`):
/// the client side of a benchmark pays what the broker's side pays.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Producer throughput and send-to-acknowledgement latency.
    Produce(load::ProduceArgs),
    /// Consumer throughput.
    Consume(load::ConsumeArgs),
    /// Latency from a producer's send to a consumer's receipt, at a fixed rate.
    E2e(load::EndToEndArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _ = rustix::thread::disable_transparent_huge_pages(true);
    match cli.mode {
        Mode::Storage(args) => storage::run(&args),
        Mode::Produce(args) => runtime()?.block_on(load::produce(&args)),
        Mode::Consume(args) => runtime()?.block_on(load::consume(&args)),
        Mode::E2e(args) => runtime()?.block_on(load::end_to_end(&args)),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}
