//! Where the load goes: a cluster given with `--brokers`, or nodes this tool starts itself in
//! temporary directories (`--spawn 1`) and stops when done.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;

#[derive(Debug, Args, Clone)]
pub(crate) struct Target {
    /// Brokers of a running cluster, HOST:PORT[,…].
    #[arg(long, conflicts_with = "spawn")]
    pub brokers: Option<String>,
    /// Start this many nodes in temporary directories: 1, or a cluster of 3 (topics are
    /// replicated to every node).
    #[arg(long)]
    pub spawn: Option<u32>,
    /// The `strata` binary for --spawn [default: next to this tool, or on PATH].
    #[arg(long, env = "STRATA_BIN")]
    pub strata_bin: Option<PathBuf>,
    /// `strata server --fsync` for spawned nodes: every, never, interval:DURATION.
    #[arg(long, default_value = "every")]
    pub fsync: String,
    /// `strata server --worker-threads` for spawned nodes [default: the server's, one per
    /// core]. `split` gives each of N nodes its share of this machine's cores.
    #[arg(long, conflicts_with = "brokers")]
    pub node_threads: Option<String>,
}

/// Spawned nodes, stopped (SIGKILL, by PID) on drop.
#[derive(Debug)]
pub(crate) struct Cluster {
    pub brokers: String,
    children: Vec<Child>,
    _dir: Option<tempfile::TempDir>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn strata_bin(given: &Option<PathBuf>) -> PathBuf {
    if let Some(path) = given {
        return path.clone();
    }
    let sibling = std::env::current_exe().ok().and_then(|e| e.parent().map(|d| d.join("strata")));
    match sibling {
        Some(path) if path.exists() => path,
        _ => PathBuf::from("strata"),
    }
}

impl Target {
    pub(crate) fn start(&self) -> anyhow::Result<Cluster> {
        match (&self.brokers, self.spawn) {
            (Some(brokers), _) => {
                Ok(Cluster { brokers: brokers.clone(), children: Vec::new(), _dir: None })
            }
            (None, None) => self.spawn_nodes(1),
            (None, Some(n)) if (1..=7).contains(&n) => self.spawn_nodes(n),
            (None, Some(n)) => bail!("--spawn {n}: give 1 to 7 nodes"),
        }
    }

    /// Starts `n` nodes on loopback; more than one form a cluster (every node in `--peers`).
    fn spawn_nodes(&self, n: u32) -> anyhow::Result<Cluster> {
        let dir = tempfile::Builder::new().prefix("strata-bench-node-").tempdir_in(".")?;
        let mut addrs = Vec::new();
        for _ in 0..n {
            let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            addrs.push(format!("127.0.0.1:{port}").parse::<SocketAddr>()?);
        }
        let peers: Vec<String> =
            addrs.iter().enumerate().map(|(i, a)| format!("{}={a}", i + 1)).collect();
        let bin = strata_bin(&self.strata_bin);
        let threads = match self.node_threads.as_deref() {
            None => None,
            Some("split") => Some(threads_per_node(n)),
            Some(text) => {
                Some(text.parse::<usize>().ok().filter(|&t| t > 0).with_context(|| {
                    format!("--node-threads takes `split` or a number of threads, not {text:?}")
                })?)
            }
        };
        let mut cluster = Cluster {
            brokers: addrs.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
            children: Vec::new(),
            _dir: None,
        };
        for (i, addr) in addrs.iter().enumerate() {
            let node_dir = dir.path().join(format!("node-{}", i + 1));
            std::fs::create_dir_all(&node_dir)?;
            let log = std::fs::File::create(node_dir.join("server.log"))?;
            let mut command = Command::new(&bin);
            command
                .args(["server", "--listen", &addr.to_string(), "--fsync", &self.fsync])
                .arg("--data-dir")
                .arg(node_dir.join("data"));
            if n > 1 {
                command.args(["--node-id", &(i + 1).to_string(), "--peers", &peers.join(",")]);
            }
            if let Some(threads) = threads {
                command.args(["--worker-threads", &threads.to_string()]);
            }
            let child = command
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .with_context(|| format!("starting {}", bin.display()))?;
            cluster.children.push(child);
        }
        cluster._dir = Some(dir);
        let deadline = Instant::now() + Duration::from_secs(20);
        for addr in &addrs {
            while TcpStream::connect_timeout(addr, Duration::from_millis(200)).is_err() {
                if Instant::now() > deadline {
                    bail!("spawned server did not listen on {addr} within 20 s");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(cluster)
    }
}

/// Runtime threads for each of `n` nodes on this machine: its cores split between them.
fn threads_per_node(n: u32) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    (cores / n as usize).max(1)
}
