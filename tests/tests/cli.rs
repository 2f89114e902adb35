//! The `strata` CLI against a real server: topics, produce, consume, group lag and every
//! reset mode, and bad input.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;
use strata_e2e::{Server, eventually};

fn lag_by_partition(server: &Server, group: &str) -> BTreeMap<u64, (Option<u64>, u64, u64)> {
    server
        .cli(&["group", "describe", group, "--format", "json"], "")
        .ok()
        .json_lines()
        .iter()
        .map(|row| {
            (
                row["partition"].as_u64().unwrap(),
                (
                    row["committed_offset"].as_u64(),
                    row["log_end_offset"].as_u64().unwrap(),
                    row["lag"].as_u64().unwrap(),
                ),
            )
        })
        .collect()
}

#[test]
fn topics_produce_consume_and_keyed_order() {
    let server = Server::start();
    let created = server
        .cli(&["topic", "create", "orders", "--partitions", "3", "--format", "json"], "")
        .ok();
    assert_eq!(created.json_lines().len(), 3);
    let listed = server.cli(&["topic", "list", "--format", "json"], "").ok().json_lines();
    assert_eq!(
        listed,
        vec![serde_json::json!({"name": "orders", "partitions": 3, "replication_factor": 1})]
    );
    let described =
        server.cli(&["topic", "describe", "orders", "--format", "json"], "").ok().json_lines();
    for (i, row) in described.iter().enumerate() {
        assert_eq!(row["partition"], i as u64);
        assert_eq!(row["leader"], 1);
        assert_eq!(row["replicas"], serde_json::json!([1]));
    }

    // 60 records over 6 keys, values numbered per key.
    let mut input = String::new();
    for i in 0..60 {
        input.push_str(&format!("key{}:{}\n", i % 6, i / 6));
    }
    server
        .cli(&["produce", "orders", "--key-separator", ":", "--header", "source=test"], &input)
        .ok();

    let out = server
        .cli(
            &["consume", "orders", "--from-beginning", "--max-messages", "60", "--format", "json"],
            "",
        )
        .ok()
        .json_lines();
    assert_eq!(out.len(), 60);
    let mut partition_of_key: BTreeMap<String, u64> = BTreeMap::new();
    let mut values_of_key: BTreeMap<String, Vec<(u64, u64)>> = BTreeMap::new();
    for row in &out {
        let key = row["key"].as_str().unwrap().to_owned();
        let partition = row["partition"].as_u64().unwrap();
        assert_eq!(
            *partition_of_key.entry(key.clone()).or_insert(partition),
            partition,
            "{key} in one partition"
        );
        assert_eq!(row["headers"]["source"], "test");
        assert_eq!(row["topic"], "orders");
        assert!(row["timestamp"].as_i64().unwrap() > 1_600_000_000_000);
        values_of_key.entry(key).or_default().push((
            row["offset"].as_u64().unwrap(),
            row["value"].as_str().unwrap().parse().unwrap(),
        ));
    }
    for (key, mut seen) in values_of_key {
        seen.sort();
        let values: Vec<u64> = seen.iter().map(|(_, v)| *v).collect();
        assert_eq!(values, (0..10).collect::<Vec<_>>(), "per-key order of {key}");
    }
}

#[test]
fn group_lag_follows_consumption_and_every_reset_mode() {
    let server = Server::start();
    server.cli(&["topic", "create", "events", "--partitions", "2"], "").ok();
    let input: String = (0..20).map(|i| format!("v{i}\n")).collect();
    server.cli(&["produce", "events", "--partition", "0"], &input).ok();
    server
        .cli(
            &["produce", "events", "--partition", "1"],
            &(0..10).map(|i| format!("w{i}\n")).collect::<String>(),
        )
        .ok();
    let before = chrono_now_ms();
    std::thread::sleep(Duration::from_millis(50));
    server.cli(&["produce", "events", "--partition", "1"], "late1\nlate2\n").ok();

    // Partial consumption: 15 records as group g.
    server
        .cli(&["consume", "events", "--group", "g", "--from-beginning", "--max-messages", "15"], "")
        .ok();
    let lag = lag_by_partition(&server, "g");
    let total_end: u64 = lag.values().map(|v| v.1).sum();
    let total_lag: u64 = lag.values().map(|v| v.2).sum();
    assert_eq!(total_end, 32);
    assert_eq!(total_lag, 32 - 15, "lag after consuming 15 of 32: {lag:?}");
    for (committed, end, lag) in lag.values() {
        assert_eq!(end - committed.unwrap(), *lag);
    }

    let reset = |args: &[&str]| {
        let mut all = vec!["group", "reset-offsets", "g"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--execute", "--format", "json"]);
        server.cli(&all, "").ok().json_lines()
    };
    // Dry run changes nothing.
    let plan = server
        .cli(
            &["group", "reset-offsets", "g", "--all-topics", "--to-earliest", "--format", "json"],
            "",
        )
        .ok();
    assert!(plan.json_lines().iter().all(|r| r["executed"] == false && r["new_offset"] == 0));
    assert_eq!(lag_by_partition(&server, "g").values().map(|v| v.2).sum::<u64>(), 17);

    reset(&["--all-topics", "--to-earliest"]);
    assert_eq!(lag_by_partition(&server, "g")[&0], (Some(0), 20, 20));
    reset(&["--topic", "events", "--to-latest"]);
    assert!(lag_by_partition(&server, "g").values().all(|v| v.2 == 0));
    reset(&["--topic", "events:0", "--to-offset", "5"]);
    assert_eq!(lag_by_partition(&server, "g")[&0], (Some(5), 20, 15));
    reset(&["--topic", "events:0", "--to-offset", "500"]); // clamped to the log end
    assert_eq!(lag_by_partition(&server, "g")[&0].0, Some(20));
    reset(&["--topic", "events:0", "--shift-by", "-3"]);
    assert_eq!(lag_by_partition(&server, "g")[&0].0, Some(17));
    reset(&["--topic", "events:0", "--shift-by", "-100"]); // clamped to the log start
    assert_eq!(lag_by_partition(&server, "g")[&0].0, Some(0));
    reset(&["--topic", "events:0", "--to-current"]);
    assert_eq!(lag_by_partition(&server, "g")[&0].0, Some(0));
    let changes = reset(&["--topic", "events:1", "--to-datetime", &before.to_string()]);
    assert_eq!(changes[0]["new_offset"], 10, "first record after the pause: {changes:?}");
    reset(&["--topic", "events:1", "--by-duration", "P1D"]);
    assert_eq!(lag_by_partition(&server, "g")[&1].0, Some(0));
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("offsets.csv");
    std::fs::write(&csv, "events,0,7\nevents,1,3\n").unwrap();
    reset(&["--from-file", csv.to_str().unwrap()]);
    let lag = lag_by_partition(&server, "g");
    assert_eq!((lag[&0].0, lag[&1].0), (Some(7), Some(3)));

    // A consumer in the group resumes from the reset offsets.
    let out = server
        .cli(&["consume", "events", "--group", "g", "--max-messages", "1", "--format", "json"], "")
        .ok();
    let first: Vec<Value> = out.json_lines();
    let row = &first[0];
    let expected = if row["partition"] == 0 { 7 } else { 3 };
    assert_eq!(row["offset"], expected);

    let groups = server.cli(&["group", "list", "--format", "json"], "").ok().json_lines();
    assert_eq!(groups[0]["group"], "g");
    eventually(Duration::from_secs(15), "group to be empty after the consumer left", || {
        (server.cli(&["group", "delete", "g"], "").status == 0).then_some(())
    });
    let missing = server.cli(&["group", "describe", "g"], "");
    assert_ne!(missing.status, 0);
    assert!(missing.stderr.contains("unknown consumer group"), "{}", missing.stderr);
}

fn chrono_now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

#[test]
fn replay_from_an_offset_and_from_a_time() {
    let server = Server::start();
    server.cli(&["topic", "create", "replay"], "").ok();
    server.cli(&["produce", "replay"], "a\nb\nc\n").ok();
    std::thread::sleep(Duration::from_millis(30));
    let middle = chrono_now_ms();
    std::thread::sleep(Duration::from_millis(30));
    server.cli(&["produce", "replay"], "d\ne\n").ok();
    let from_offset = server
        .cli(&["consume", "replay", "--partition", "0", "--offset", "1", "--max-messages", "4"], "")
        .ok();
    assert_eq!(from_offset.stdout, "b\nc\nd\ne\n");
    let from_time = server
        .cli(&["consume", "replay", "--from-time", &middle.to_string(), "--max-messages", "2"], "")
        .ok();
    assert_eq!(from_time.stdout, "d\ne\n");
    let idle = server.cli(&["consume", "replay", "--from-beginning", "--timeout", "1s"], "").ok();
    assert_eq!(idle.stdout, "a\nb\nc\nd\ne\n", "--timeout ends an idle consume");
}

#[test]
fn bad_input_gets_a_clear_error_and_the_server_keeps_serving() {
    let server = Server::start();
    let unknown = server.cli(&["produce", "nope"], "x\n");
    assert_ne!(unknown.status, 0);
    assert!(unknown.stderr.contains("unknown topic \"nope\""), "{}", unknown.stderr);
    assert_eq!(unknown.stderr.trim().lines().count(), 1, "one-line reason: {}", unknown.stderr);

    let invalid = server.cli(&["topic", "create", "bad/name"], "");
    assert_ne!(invalid.status, 0);
    assert!(invalid.stderr.contains("invalid topic name"), "{}", invalid.stderr);
    let rf = server.cli(&["topic", "create", "t", "--replication-factor", "3"], "");
    assert!(rf.stderr.contains("replication factor"), "{}", rf.stderr);
    let config = server.cli(&["topic", "create", "t", "--config", "retention.ms=soon"], "");
    assert!(config.stderr.contains("retention.ms"), "{}", config.stderr);

    server.cli(&["topic", "create", "small", "--config", "max.message.bytes=1000"], "").ok();
    let big = "x".repeat(5000) + "\n";
    let oversized = server.cli(&["produce", "small"], &big);
    assert_ne!(oversized.status, 0);
    assert!(oversized.stderr.contains("max.message.bytes"), "{}", oversized.stderr);
    let dup = server.cli(&["topic", "create", "small"], "");
    assert!(dup.stderr.contains("already exists"), "{}", dup.stderr);

    // Still serving, and nothing of the rejected input was stored.
    server.cli(&["produce", "small"], "fine\n").ok();
    let out = server.cli(&["consume", "small", "--from-beginning", "--max-messages", "1"], "").ok();
    assert_eq!(out.stdout, "fine\n");
    let described =
        server.cli(&["topic", "describe", "small", "--format", "json"], "").ok().json_lines();
    assert_eq!(described[0]["high_watermark"], 1);
}

#[test]
fn compressed_batches_roundtrip_through_the_broker() {
    let server = Server::start();
    server.cli(&["topic", "create", "packed"], "").ok();
    let input: String =
        (0..200).map(|i| format!("{{\"n\":{i},\"pad\":\"{}\"}}\n", "x".repeat(100))).collect();
    for codec in ["lz4", "zstd"] {
        server.cli(&["produce", "packed", "--compression", codec], &input).ok();
    }
    let out =
        server.cli(&["consume", "packed", "--from-beginning", "--max-messages", "400"], "").ok();
    let expected: String = input.repeat(2);
    assert_eq!(out.stdout, expected);
    // Compression really happened: 400 records of ~120 bytes in far fewer bytes on disk.
    let described =
        server.cli(&["topic", "describe", "packed", "--format", "json"], "").ok().json_lines();
    let size = described[0]["size_bytes"].as_u64().unwrap();
    assert!(size < 20_000, "stored {size} bytes for ~48 KB of records");
    // Time lookup inside compressed batches finds the exact record.
    let from_time =
        server.cli(&["consume", "packed", "--from-time", "0", "--max-messages", "1"], "").ok();
    assert_eq!(from_time.stdout.lines().next(), input.lines().next());
}

#[test]
fn retention_deletes_old_segments_and_alter_changes_it() {
    let server = Server::start();
    server
        .cli(
            &[
                "topic",
                "create",
                "short",
                "--config",
                "segment.bytes=16384",
                "--config",
                "retention.bytes=40000",
            ],
            "",
        )
        .ok();
    let line = "x".repeat(1000);
    for _ in 0..10 {
        let input: String = (0..20).map(|_| format!("{line}\n")).collect();
        server.cli(&["produce", "short", "--partition", "0"], &input).ok();
    }
    // 200 records of ~1 KB in 16 KB segments: maintenance (every 200 ms here) drops the oldest
    // sealed segments while at least 40,000 bytes remain.
    let start = eventually(Duration::from_secs(15), "retention to move the log start", || {
        let rows =
            server.cli(&["topic", "describe", "short", "--format", "json"], "").ok().json_lines();
        let start = rows[0]["log_start_offset"].as_u64().unwrap();
        let size = rows[0]["size_bytes"].as_u64().unwrap();
        // Done once no more whole segment (one ~20 KB batch each here) can go.
        (start > 0 && size < 40_000 + 21_000).then_some((start, size))
    });
    assert!(start.1 >= 40_000 && start.1 < 200 * 1000, "size after retention: {}", start.1);
    // Consumers from the beginning start at the new log start.
    let first = server
        .cli(
            &["consume", "short", "--from-beginning", "--max-messages", "1", "--format", "json"],
            "",
        )
        .ok();
    assert_eq!(first.json_lines()[0]["offset"].as_u64().unwrap(), start.0);

    // Tighter retention through alter applies to the running log.
    let altered = server
        .cli(
            &["topic", "alter", "short", "--config", "retention.bytes=20000", "--format", "json"],
            "",
        )
        .ok();
    assert!(!altered.json_lines().is_empty());
    eventually(Duration::from_secs(15), "the altered retention to apply", || {
        let rows =
            server.cli(&["topic", "describe", "short", "--format", "json"], "").ok().json_lines();
        (rows[0]["size_bytes"].as_u64().unwrap() < start.1).then_some(())
    });
    let bad = server.cli(&["topic", "alter", "short", "--config", "retention.bytes=0"], "");
    assert_ne!(bad.status, 0);
    assert!(bad.stderr.contains("retention.bytes"), "{}", bad.stderr);
}
