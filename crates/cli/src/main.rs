//! `strata`: the server and the command-line tools of Strata.
//!
//! Every command takes `--brokers` (env `STRATA_BROKERS`) and `--format human|json`, prints to
//! stdout, and on error exits non-zero with a one-line reason on stderr.

mod cluster;
mod consume;
mod group;
mod output;
mod parse;
mod produce;
mod server;
mod topic;

use clap::{Parser, Subcommand};
use output::Format;
use strata_client::Client;

/// mimalloc keeps freed memory for reuse. With glibc's malloc every large request buffer (a
/// 1 MiB produce request, a fetch answer) was fresh `mmap`ed memory, faulted in, zeroed and
/// unmapped again: about a fifth of the broker's CPU when producing 1 MiB batches. `main` turns
/// transparent huge pages off (see there).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Default broker address of the tools: a local single node on the default port.
const DEFAULT_BROKERS: &str = "localhost:10092";

#[derive(Debug, Parser)]
#[command(name = "strata", version, about = "Strata: a distributed log-based streaming platform")]
struct Cli {
    /// Brokers to bootstrap from, HOST:PORT[,HOST:PORT…].
    #[arg(long, global = true, env = "STRATA_BROKERS", default_value = DEFAULT_BROKERS)]
    brokers: String,
    /// `human` tables, or one JSON object per line.
    #[arg(long, global = true, value_enum, default_value_t = Format::Human)]
    format: Format,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a Strata server (with no arguments: a single node storing data in ./strata-data).
    Server(server::ServerArgs),
    /// Create, list, describe, alter and delete topics.
    #[command(subcommand)]
    Topic(topic::TopicCommand),
    /// Send one record per line of standard input.
    Produce(produce::ProduceArgs),
    /// Print records from a topic.
    Consume(consume::ConsumeArgs),
    /// Inspect consumer groups, their lag, and reset their offsets.
    #[command(subcommand)]
    Group(group::GroupCommand),
    /// Cluster state.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
}

impl Cli {
    async fn client(&self) -> anyhow::Result<Client> {
        let brokers: Vec<&str> =
            self.brokers.split(',').map(str::trim).filter(|b| !b.is_empty()).collect();
        Ok(Client::connect(&brokers).await?)
    }
}

fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .init();
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Server(args) => server::run(args).await,
        Command::Topic(command) => topic::run(command, &cli.client().await?, cli.format).await,
        Command::Produce(args) => produce::run(args, cli.client().await?, cli.format).await,
        Command::Consume(args) => consume::run(args, cli.client().await?, cli.format).await,
        Command::Group(command) => group::run(command, &cli.client().await?, cli.format).await,
        Command::Cluster(command) => cluster::run(command, &cli.client().await?, cli.format).await,
    }
}

fn main() {
    let cli = Cli::parse();
    // mimalloc asks for transparent huge pages for its arenas. The first touch of one zeroes
    // 2 MiB (and may compact memory first): 3-node end-to-end p99 went from 9 to 20-80 ms.
    // Small pages keep the tail flat; losing the flag only costs that tail.
    let _ = rustix::thread::disable_transparent_huge_pages(true);
    // openraft reports every failed heartbeat to a down peer at WARN/ERROR, several times a
    // second per group: keep its replication chatter out of the default server log.
    let server_default = "info,openraft=warn,openraft::replication=off,openraft::engine::handler::replication_handler=off";
    init_tracing(if matches!(cli.command, Command::Server(_)) { server_default } else { "warn" });
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Command::Server(args) = &cli.command {
        match server::worker_threads(args) {
            Ok(threads) => {
                if let Some(threads) = threads {
                    builder.worker_threads(threads);
                }
            }
            Err(err) => exit_with(&err),
        }
    }
    let runtime = builder.enable_all().build().expect("tokio runtime");
    let result = runtime.block_on(run(cli));
    // Do not wait for idle blocking-pool threads (the runtime keeps them a while by default).
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    if let Err(err) = result {
        exit_with(&err);
    }
}

/// Reports `err` on one line of stderr and exits 1.
fn exit_with(err: &anyhow::Error) -> ! {
    output::note(&format!("error: {}", one_line(err)));
    std::process::exit(1);
}

/// The error and its causes on one line.
fn one_line(err: &anyhow::Error) -> String {
    let mut text = err.to_string();
    for cause in err.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text.replace('\n', " ")
}
