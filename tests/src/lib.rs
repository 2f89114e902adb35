//! Test harness: starts real `strata server` processes on loopback ports in temporary
//! directories, runs the real `strata` CLI against them, and stops only what it started.

#![allow(clippy::print_stderr)]

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The `strata` binary cargo built next to this test (or `$STRATA_BIN`).
pub fn strata_bin() -> PathBuf {
    if let Ok(path) = std::env::var("STRATA_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>/strata
    let dir = exe.parent().and_then(Path::parent).expect("target directory");
    let bin = dir.join("strata");
    assert!(
        bin.exists(),
        "{} not built: run the tests with `cargo test --workspace`",
        bin.display()
    );
    bin
}

/// A loopback port no server of this test process was given before. The kernel can hand the
/// same free port to two `bind(0)`s once the first listener is closed, and two tests running
/// at once then started servers on one port: one failed to bind, and its test talked to the
/// other test's server until that one stopped (a reset connection).
fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// A `strata server` child process.
#[derive(Debug)]
pub struct Server {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    log: PathBuf,
    extra_args: Vec<String>,
    _root: Option<tempfile::TempDir>,
}

impl Server {
    /// Starts a server in a fresh temporary data directory.
    pub fn start() -> Server {
        Server::start_with(&[])
    }

    /// Starts a server in a fresh temporary data directory with extra `strata server` flags.
    pub fn start_with(extra_args: &[&str]) -> Server {
        let root = tempfile::tempdir().expect("temp dir");
        let data_dir = root.path().join("data");
        let mut server = Server::new(&data_dir, root.path().join("server.log"), extra_args);
        server._root = Some(root);
        server.spawn();
        server
    }

    fn new(data_dir: &Path, log: PathBuf, extra_args: &[&str]) -> Server {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("address");
        Server {
            child: None,
            addr,
            data_dir: data_dir.to_owned(),
            log,
            extra_args: extra_args.iter().map(|a| a.to_string()).collect(),
            _root: None,
        }
    }

    /// Starts a cluster of `n` nodes on loopback, each in its own temporary data directory,
    /// with ids 1..=n and every node in `--peers`.
    pub fn start_cluster(n: usize) -> Vec<Server> {
        Server::start_cluster_with(n, |_| Vec::new())
    }

    /// [`Server::start_cluster`] with extra `strata server` flags for node `i` (0-based).
    pub fn start_cluster_with(n: usize, extra: impl Fn(usize) -> Vec<String>) -> Vec<Server> {
        let addrs: Vec<String> = (0..n).map(|_| format!("127.0.0.1:{}", free_port())).collect();
        let peers: Vec<String> =
            addrs.iter().enumerate().map(|(i, a)| format!("{}={a}", i + 1)).collect();
        let peers = peers.join(",");
        let mut servers: Vec<Server> = (0..n)
            .map(|i| {
                let root = tempfile::tempdir().expect("temp dir");
                let id = (i + 1).to_string();
                let mut args = vec!["--node-id", id.as_str(), "--peers", peers.as_str()];
                let more = extra(i);
                args.extend(more.iter().map(String::as_str));
                let mut server =
                    Server::new(&root.path().join("data"), root.path().join("server.log"), &args);
                server.addr = addrs[i].parse().expect("address");
                server._root = Some(root);
                server
            })
            .collect();
        for server in &mut servers {
            server.spawn_process();
        }
        for server in &mut servers {
            server.wait_listening();
        }
        servers
    }

    /// Starts node `id` to join `cluster` (nodes 1..=n of [`Server::start_cluster`]): its
    /// `--peers` name them and itself. `strata cluster add-node` then makes it a member.
    pub fn start_joining(id: u64, cluster: &[Server]) -> Server {
        let root = tempfile::tempdir().expect("temp dir");
        let addr = format!("127.0.0.1:{}", free_port());
        let mut peers: Vec<String> =
            cluster.iter().enumerate().map(|(i, s)| format!("{}={}", i + 1, s.addr)).collect();
        peers.push(format!("{id}={addr}"));
        let (id, peers) = (id.to_string(), peers.join(","));
        let args = ["--node-id", id.as_str(), "--peers", peers.as_str()];
        let mut server =
            Server::new(&root.path().join("data"), root.path().join("server.log"), &args);
        server.addr = addr.parse().expect("address");
        server._root = Some(root);
        server.spawn();
        server
    }

    /// SIGSTOP: the process stays, frozen (its connections stay open but never answer).
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after [`Server::pause`].
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// Starts a server on `data_dir` (kept by the caller), logging to `log`.
    pub fn start_in(data_dir: &Path, log: PathBuf) -> Server {
        let mut server = Server::new(data_dir, log, &[]);
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        self.spawn_process();
        self.wait_listening();
    }

    fn spawn_process(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let child = Command::new(strata_bin())
            .args(["server", "--listen", &self.addr.to_string(), "--maintenance-interval", "200ms"])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(&self.extra_args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn strata server");
        self.child = Some(child);
    }

    fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_err() {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("strata server exited with {status} at start:\n{}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "server did not listen within 20 s:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn brokers(&self) -> String {
        self.addr.to_string()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("server running").id()
    }

    fn signal(&self, signal: &str) {
        let status =
            Command::new("kill").args([signal, &self.pid().to_string()]).status().expect("kill");
        assert!(status.success(), "kill {signal} failed");
    }

    /// SIGKILL: no chance to flush or leave a marker.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits (bounded) for a clean exit and returns its status code.
    pub fn terminate(&mut self) -> Option<i32> {
        self.signal("-TERM");
        let mut child = self.child.take().expect("server running");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("server did not exit within 20 s of SIGTERM:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the server again on the same data directory and port, with other extra flags.
    pub fn restart_with(&mut self, extra_args: &[&str]) {
        self.extra_args = extra_args.iter().map(|a| a.to_string()).collect();
        self.restart();
    }

    /// Starts the server again on the same data directory and port.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the server first");
        self.spawn();
    }

    /// Runs `strata --brokers <this server> ARGS`, feeding `stdin`.
    pub fn cli(&self, args: &[&str], stdin: &str) -> CliOutput {
        cli(&self.brokers(), args, stdin)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
        // A failing test shows what each server said (captured with the test's output).
        if std::thread::panicking() {
            let text = self.log_text();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(LOG_LINES_ON_FAILURE)..].join("\n");
            eprintln!("--- last lines of the server at {} ---\n{tail}", self.addr);
        }
    }
}

/// How much of each server's log a failing test prints.
const LOG_LINES_ON_FAILURE: usize = 60;

/// What a CLI run printed and how it exited.
#[derive(Debug)]
pub struct CliOutput {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    /// Panics with everything printed unless the command succeeded.
    pub fn ok(self) -> CliOutput {
        assert_eq!(
            self.status, 0,
            "command failed:\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }

    /// Each stdout line parsed as JSON.
    pub fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }
}

pub fn cli(brokers: &str, args: &[&str], stdin: &str) -> CliOutput {
    let mut child = Command::new(strata_bin())
        .arg("--brokers")
        .arg(brokers)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn strata");
    child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("write stdin");
    let output: Output = child.wait_with_output().expect("strata output");
    CliOutput {
        status: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Polls `check` every 50 ms until it returns `Some`, failing after `limit`.
pub fn eventually<T>(limit: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A free loopback address for a second listener (metrics).
pub fn free_addr() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// `GET path` over plain HTTP/1.1; returns (status code, body).
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::Read;
    let mut stream = TcpStream::connect(addr).expect("connect to the HTTP endpoint");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
        .expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    let status =
        response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("status line");
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}
