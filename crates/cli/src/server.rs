//! `strata server`: flags, environment and an optional TOML file, then the broker until
//! SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use serde::Deserialize;
use strata_broker::BrokerConfig;
use strata_storage::Durability;
use tokio_util::sync::CancellationToken;

use crate::parse;

/// Default port: Kafka's 9092 plus one thousand.
const DEFAULT_LISTEN: &str = "0.0.0.0:10092";

#[derive(Debug, Args)]
pub struct ServerArgs {
    /// This node's id.
    #[arg(long, env = "STRATA_NODE_ID")]
    node_id: Option<u64>,
    /// Where topics and offsets are stored [default: ./strata-data].
    #[arg(long, env = "STRATA_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Address to listen on [default: 0.0.0.0:10092].
    #[arg(long, env = "STRATA_LISTEN")]
    listen: Option<SocketAddr>,
    /// HOST:PORT clients are told to use [default: the listen address, or localhost:PORT when
    /// listening on all interfaces].
    #[arg(long, env = "STRATA_ADVERTISE")]
    advertise: Option<String>,
    /// Every node of the cluster, this one included, ID=HOST:PORT[,…] (the same list on every
    /// node). Partitions are then replicated with Raft; without it the node runs alone.
    #[arg(long, env = "STRATA_PEERS")]
    peers: Option<String>,
    /// When partition logs fsync: `every` append (default), `interval:DURATION`, or `never`.
    #[arg(long, env = "STRATA_FSYNC")]
    fsync: Option<String>,
    /// Serve Prometheus metrics at /metrics, and /health and /ready, on HOST:PORT.
    #[arg(long, env = "STRATA_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// How often retention runs [default: 30s].
    #[arg(long, env = "STRATA_MAINTENANCE_INTERVAL")]
    maintenance_interval: Option<String>,
    /// Controller log entries between two snapshots of the cluster metadata; the log before a
    /// snapshot is deleted [default: 5000].
    #[arg(long, env = "STRATA_CONTROLLER_SNAPSHOT_EVERY")]
    controller_snapshot_every: Option<u64>,
    /// Threads of the async runtime [default: one per core]. Nodes sharing a machine split
    /// its cores between them (as Redpanda's `--smp`): more threads than cores only add
    /// wake-ups between them.
    #[arg(long, env = "STRATA_WORKER_THREADS", value_parser = clap::value_parser!(u16).range(1..))]
    worker_threads: Option<u16>,
    /// On a single node with `--fsync every`: group-commit rounds that carry at least this
    /// many partitions (with at most 32 KiB each on average) go through one write-ahead file
    /// in `<data-dir>/wal` instead of a `syncfs` of every partition file; 0 turns it off
    /// [default: 16].
    #[arg(long, env = "STRATA_WRITE_AHEAD_MIN_PARTITIONS")]
    write_ahead_min_partitions: Option<usize>,
    /// A TOML file with the same settings (snake_case keys); flags and environment win.
    #[arg(long, env = "STRATA_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    node_id: Option<u64>,
    data_dir: Option<PathBuf>,
    listen: Option<SocketAddr>,
    advertise: Option<String>,
    peers: Option<String>,
    fsync: Option<String>,
    maintenance_interval: Option<String>,
    metrics_listen: Option<SocketAddr>,
    controller_snapshot_every: Option<u64>,
    worker_threads: Option<u16>,
    write_ahead_min_partitions: Option<usize>,
}

fn durability(text: &str) -> anyhow::Result<Durability> {
    Ok(match text {
        "every" => Durability::EveryAppend,
        "never" => Durability::Never,
        other => match other.strip_prefix("interval:") {
            Some(d) => Durability::Interval(parse::duration(d)?),
            None => bail!("--fsync must be every, never or interval:DURATION, not {other:?}"),
        },
    })
}

fn file_config(args: &ServerArgs) -> anyhow::Result<FileConfig> {
    Ok(match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?
        }
        None => FileConfig::default(),
    })
}

/// Threads for the server's runtime (flag, environment, then file); `None`: one per core.
/// Read before the runtime starts, so apart from the rest of the configuration.
pub fn worker_threads(args: &ServerArgs) -> anyhow::Result<Option<usize>> {
    let threads = match args.worker_threads {
        Some(threads) => Some(threads),
        None => file_config(args)?.worker_threads,
    };
    match threads {
        Some(0) => bail!("worker_threads must be at least 1"),
        other => Ok(other.map(usize::from)),
    }
}

fn config(args: &ServerArgs) -> anyhow::Result<BrokerConfig> {
    let file = file_config(args)?;
    let node_id = args.node_id.or(file.node_id).unwrap_or(1);
    let data_dir =
        args.data_dir.clone().or(file.data_dir).unwrap_or_else(|| PathBuf::from("strata-data"));
    let listen = match args.listen.or(file.listen) {
        Some(addr) => addr,
        None => DEFAULT_LISTEN.parse().expect("valid default"),
    };
    let mut config = BrokerConfig::single_node(data_dir, listen);
    config.node_id = node_id;
    if let Some(advertise) = args.advertise.clone().or(file.advertise) {
        config.advertise = advertise;
    }
    if let Some(peers) = args.peers.clone().or(file.peers) {
        config.peers = parse_peers(&peers)?;
        if !config.peers.is_empty() && !config.peers.contains_key(&node_id) {
            bail!("--peers must list this node too ({node_id}=HOST:PORT)");
        }
        if let Some(own) = config.peers.get(&node_id)
            && args.advertise.is_none()
        {
            // What peers call this node is what clients should call it too.
            config.advertise = own.clone();
        }
    }
    config.metrics_listen = args.metrics_listen.or(file.metrics_listen);
    if let Some(fsync) = args.fsync.clone().or(file.fsync) {
        config.durability = durability(&fsync)?;
    }
    if let Some(min) = args.write_ahead_min_partitions.or(file.write_ahead_min_partitions) {
        config.write_ahead_min_partitions = min;
    }
    if let Some(every) = args.controller_snapshot_every.or(file.controller_snapshot_every) {
        config.controller_snapshot_every = every.max(1);
    }
    if let Some(interval) = args.maintenance_interval.clone().or(file.maintenance_interval) {
        config.maintenance_interval = parse::duration(&interval)?.max(Duration::from_millis(100));
    }
    Ok(config)
}

/// `1=host:port,2=host:port,…` into node id → address.
fn parse_peers(text: &str) -> anyhow::Result<std::collections::BTreeMap<u64, String>> {
    let mut peers = std::collections::BTreeMap::new();
    for item in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((id, addr)) = item.split_once('=') else {
            bail!("--peers: {item:?} is not ID=HOST:PORT");
        };
        let id: u64 =
            id.trim().parse().with_context(|| format!("--peers: bad node id in {item:?}"))?;
        if id == 0 {
            bail!("--peers: node ids start at 1");
        }
        if addr
            .rsplit_once(':')
            .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
        {
            bail!("--peers: {addr:?} is not HOST:PORT");
        }
        if peers.insert(id, addr.trim().to_owned()).is_some() {
            bail!("--peers: node {id} is listed twice");
        }
    }
    Ok(peers)
}

/// Cancels `token` on the first SIGTERM or Ctrl-C.
fn cancel_on_signal(token: CancellationToken) -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => tracing::info!("Ctrl-C: shutting down"),
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        }
        token.cancel();
    });
    Ok(())
}

pub async fn run(args: &ServerArgs) -> anyhow::Result<()> {
    let config = config(args)?;
    let shutdown = CancellationToken::new();
    cancel_on_signal(shutdown.clone())?;
    strata_broker::run(config, shutdown, |_| {}).await?;
    Ok(())
}
