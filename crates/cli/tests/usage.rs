//! The binary's usage surface. (Being an integration test of this package, it also makes
//! `cargo test --workspace` build `target/<profile>/strata`, which the end-to-end tests in
//! `tests/` run.)

use std::process::Command;

fn strata(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_strata")).args(args).output().expect("run strata")
}

#[test]
fn every_documented_command_has_help() {
    for command in [
        vec!["server"],
        vec!["topic", "create"],
        vec!["topic", "list"],
        vec!["topic", "describe"],
        vec!["topic", "alter"],
        vec!["topic", "delete"],
        vec!["produce"],
        vec!["consume"],
        vec!["group", "list"],
        vec!["group", "describe"],
        vec!["group", "delete"],
        vec!["group", "reset-offsets"],
        vec!["cluster", "status"],
    ] {
        let mut args = command.clone();
        args.push("--help");
        let out = strata(&args);
        assert!(out.status.success(), "strata {} --help", command.join(" "));
    }
}

#[test]
fn errors_are_one_line_on_stderr_with_a_nonzero_exit() {
    // Nothing listens on port 1.
    let out = strata(&["--brokers", "127.0.0.1:1", "topic", "list"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: cannot connect to 127.0.0.1:1"), "{stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn reset_offsets_needs_a_scope_and_a_target() {
    let out = strata(&["group", "reset-offsets", "g", "--to-earliest"]);
    assert!(!out.status.success());
    let out = strata(&["group", "reset-offsets", "g", "--all-topics"]);
    assert!(!out.status.success());
}

#[test]
fn a_server_needs_at_least_one_worker_thread() {
    let out = strata(&["server", "--worker-threads", "0"]);
    assert!(!out.status.success());
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("strata.toml");
    std::fs::write(&config, "worker_threads = 0\n").unwrap();
    // Were the file's value taken, the server would start: its port is taken, so it stops.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = taken.local_addr().unwrap().to_string();
    let data = dir.path().join("data");
    let out = strata(&[
        "server",
        "--config",
        config.to_str().unwrap(),
        "--listen",
        &listen,
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("worker_threads must be at least 1"), "{stderr}");
}
