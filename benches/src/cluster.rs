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
    /// Start this many nodes in temporary directories (only 1 until replication exists).
    #[arg(long)]
    pub spawn: Option<u32>,
    /// The `strata` binary for --spawn [default: next to this tool, or on PATH].
    #[arg(long, env = "STRATA_BIN")]
    pub strata_bin: Option<PathBuf>,
    /// `strata server --fsync` for spawned nodes: every, never, interval:DURATION.
    #[arg(long, default_value = "every")]
    pub fsync: String,
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
            (None, Some(1)) | (None, None) => self.spawn_one(),
            (None, Some(n)) => {
                bail!("--spawn {n}: only single nodes exist until replication is built")
            }
        }
    }

    fn spawn_one(&self) -> anyhow::Result<Cluster> {
        let dir = tempfile::Builder::new().prefix("strata-bench-node-").tempdir_in(".")?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let log = std::fs::File::create(dir.path().join("server.log"))?;
        let bin = strata_bin(&self.strata_bin);
        let child = Command::new(&bin)
            .args(["server", "--listen", &addr.to_string(), "--fsync", &self.fsync])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let cluster = Cluster { brokers: addr.to_string(), children: vec![child], _dir: Some(dir) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if Instant::now() > deadline {
                bail!("spawned server did not listen on {addr} within 20 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(cluster)
    }
}
