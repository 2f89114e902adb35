//! A property test of the write-ahead file across repeated power cuts: random appends to a few
//! logs (alone or in rounds together, across segment rolls and write-ahead file rotations),
//! clean restarts, and power cuts that drop any part of each active segment that was only made
//! durable through the write-ahead file. After each restart every log must hold exactly the
//! batches it acknowledged, in order.
//!
//! The cuts are valid because every round goes through the write-ahead file (`min_logs` 1)
//! and nothing runs a checkpoint: the only in-place fsyncs after a log opens are segment rolls,
//! and sealed segments are never cut.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use common::{active_segment, at_offset, batch, copy_dir, read_all};
use proptest::prelude::*;
use proptest::sample::Index;
use strata_record::{BatchHeader, Offset, RecordBatch};
use strata_storage::{Durability, Log, LogConfig, SyncGroup, WriteAheadConfig, WriteAheadReplay};

const LOGS: usize = 3;

#[derive(Debug, Clone)]
enum Op {
    /// One batch to one log, waited for alone.
    Append { log: usize, records: usize, value_len: usize },
    /// A batch to every log, then all the waits: rounds that carry several logs.
    AppendAll { records: usize, value_len: usize },
    /// A clean stop and start.
    Restart,
    /// A power cut: each active segment keeps a share (`Index`) of what it got since it was
    /// last known fsynced in place.
    PowerCut([Index; LOGS]),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..LOGS, 1usize..4, 0usize..900)
            .prop_map(|(log, records, value_len)| Op::Append { log, records, value_len }),
        4 => (1usize..4, 0usize..900)
            .prop_map(|(records, value_len)| Op::AppendAll { records, value_len }),
        1 => Just(Op::Restart),
        2 => any::<[Index; LOGS]>().prop_map(Op::PowerCut),
    ]
}

fn log_config() -> LogConfig {
    LogConfig { segment_bytes: 4096, durability: Durability::EveryAppend, ..LogConfig::default() }
}

struct Node {
    root: PathBuf,
    logs: Vec<Arc<Log>>,
    /// Per log: the active segment's base and size when the node opened (fsynced then).
    synced: Vec<(PathBuf, u64)>,
    _group: Arc<SyncGroup>,
}

/// `None` where no sync group can be made (tmpfs, overlayfs, Linux before 5.8).
fn open_node(root: &Path, file_bytes: u64) -> Option<Node> {
    let logs_dir = root.join("logs");
    fs::create_dir_all(&logs_dir).unwrap();
    let wal = WriteAheadConfig {
        min_logs: 1,
        max_bytes_per_log: u64::MAX,
        file_bytes,
        // No checkpoint: a power cut may then drop anything the write-ahead file holds.
        files_per_checkpoint: usize::MAX / 4,
        ..WriteAheadConfig::new(root.join("wal"))
    };
    let mut replay = WriteAheadReplay::open(&wal.dir).unwrap();
    let group = Arc::new(SyncGroup::open(&logs_dir, Some(wal)).unwrap()?);
    let mut logs = Vec::new();
    let mut synced = Vec::new();
    for i in 0..LOGS {
        let log = Log::open(logs_dir.join(i.to_string()), log_config()).unwrap();
        if let Some(replay) = replay.as_mut() {
            replay.replay_into(&log).unwrap();
        }
        assert!(log.join_sync_group(group.clone()));
        let active = active_segment(&logs_dir.join(i.to_string()));
        synced.push((active.clone(), fs::metadata(&active).unwrap().len()));
        logs.push(Arc::new(log));
    }
    if let Some(replay) = replay {
        replay.finish().unwrap();
    }
    Some(Node { root: root.to_path_buf(), logs, synced, _group: group })
}

/// Writes one batch to each of `logs` and waits for all of them; returns the stored bytes.
fn append(node: &Node, logs: &[usize], records: usize, value_len: usize) -> Vec<Vec<u8>> {
    let (answers, answered) = mpsc::channel();
    let mut stored = Vec::new();
    for &i in logs {
        let data = batch(records, value_len, 0);
        let header = *RecordBatch::new(&data).unwrap().header();
        let info = node.logs[i].write_validated(&data, header).unwrap();
        stored.push(at_offset(&data, info.base_offset));
        let answers = answers.clone();
        node.logs[i].when_durable(&info, move |outcome| answers.send(outcome).unwrap());
    }
    for _ in logs {
        answered.recv_timeout(Duration::from_secs(30)).unwrap().unwrap();
    }
    stored
}

fn check(node: &Node, model: &[Vec<Vec<u8>>]) {
    for (i, log) in node.logs.iter().enumerate() {
        let expected_end: u64 =
            model[i].iter().map(|b| BatchHeader::parse(b).unwrap().offset_count()).sum();
        assert_eq!(log.end_offset(), Offset(expected_end), "log {i}");
        assert_eq!(read_all(log), model[i], "log {i} holds what it acknowledged");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn acknowledged_batches_survive_power_cuts(
        ops in prop::collection::vec(op(), 1..40),
        file_bytes in prop_oneof![Just(1u64), Just(6000), Just(1 << 30)],
    ) {
        let mut dirs = vec![tempfile::tempdir().unwrap()];
        let Some(mut node) = open_node(dirs[0].path(), file_bytes) else {
            return Ok(()); // no sync group on this filesystem: nothing to test
        };
        let mut model: Vec<Vec<Vec<u8>>> = vec![Vec::new(); LOGS];
        for op in ops {
            match op {
                Op::Append { log, records, value_len } => {
                    let stored = append(&node, &[log], records, value_len);
                    model[log].extend(stored);
                }
                Op::AppendAll { records, value_len } => {
                    let all: Vec<usize> = (0..LOGS).collect();
                    for (i, stored) in append(&node, &all, records, value_len).into_iter().enumerate() {
                        model[i].push(stored);
                    }
                }
                Op::Restart => {
                    let root = node.root.clone();
                    drop(node);
                    node = open_node(&root, file_bytes).expect("opened before");
                }
                Op::PowerCut(shares) => {
                    let copy = tempfile::tempdir().unwrap();
                    copy_dir(&node.root, copy.path());
                    for (i, share) in shares.iter().enumerate() {
                        let dir = copy.path().join("logs").join(i.to_string());
                        let active = active_segment(&dir);
                        let (synced_path, synced_len) = &node.synced[i];
                        let same_segment = synced_path.file_name() == active.file_name();
                        let floor = if same_segment { *synced_len } else { 0 };
                        let len = fs::metadata(&active).unwrap().len();
                        let keep = floor + share.index((len - floor + 1) as usize) as u64;
                        fs::OpenOptions::new().write(true).open(&active).unwrap().set_len(keep).unwrap();
                    }
                    drop(node);
                    node = open_node(copy.path(), file_bytes).expect("opened before");
                    dirs.push(copy);
                }
            }
            check(&node, &model);
        }
    }
}
