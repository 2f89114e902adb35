//! The write-ahead file: rounds of many logs go to it, and what a crash kept from the segment
//! files comes back from it on the next open.
//!
//! A power cut is simulated on real files: while the logs are open, after their waits were
//! answered, the data directory is copied and each copy's active segment loses bytes that
//! were never fsynced in place (as write-back that had not happened yet would). The copy is
//! then opened as a restarted node opens its logs.

mod common;

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use common::{active_segment, batch, copy_dir, read_all};
use strata_record::{Offset, RecordBatch};
use strata_storage::{
    Durability, Log, LogConfig, StorageError, SyncGroup, WriteAheadConfig, WriteAheadReplay,
};

const LOGS: usize = 20;
const ROUNDS: usize = 12;
const RECORDS_PER_BATCH: u64 = 3;

fn log_config() -> LogConfig {
    // Small segments, so rounds meet rolls (which fsync the old segment).
    LogConfig {
        segment_bytes: 16 * 1024,
        durability: Durability::EveryAppend,
        ..LogConfig::default()
    }
}

/// Every round through the write-ahead file, no checkpoint unless `files_per_checkpoint`
/// says so.
fn wal_config(root: &Path, file_bytes: u64, files_per_checkpoint: usize) -> WriteAheadConfig {
    WriteAheadConfig {
        min_logs: 1,
        max_bytes_per_log: u64::MAX,
        file_bytes,
        files_per_checkpoint,
        ..WriteAheadConfig::new(root.join("wal"))
    }
}

struct Node {
    group: Arc<SyncGroup>,
    logs: Vec<Arc<Log>>,
}

/// Opens the logs as a broker does: each replays what a crash left for it, then joins the
/// group; the crash's files go once every log has replayed.
fn open_node(root: &Path, wal: WriteAheadConfig) -> Result<Node, StorageError> {
    open_node_with(root, wal, log_config())
}

fn open_node_with(
    root: &Path,
    wal: WriteAheadConfig,
    config: LogConfig,
) -> Result<Node, StorageError> {
    fs::create_dir_all(root.join("logs")).unwrap();
    let mut replay = WriteAheadReplay::open(&wal.dir)?;
    let group = Arc::new(SyncGroup::open(root.join("logs"), Some(wal))?.expect("ext4 test dir"));
    let mut logs = Vec::new();
    for i in 0..LOGS {
        let log = Log::open(root.join("logs").join(i.to_string()), config.clone())?;
        if let Some(replay) = replay.as_mut() {
            replay.replay_into(&log)?;
        }
        assert!(log.join_sync_group(group.clone()));
        logs.push(Arc::new(log));
    }
    if let Some(replay) = replay {
        replay.finish()?;
    }
    Ok(Node { group, logs })
}

/// `rounds` rounds: a batch for every log, then the waits, answered before the next round.
/// Returns the batches each log acknowledged, in order.
fn write_rounds(node: &Node, rounds: usize, value_len: usize) -> Vec<Vec<Vec<u8>>> {
    let mut acked = vec![Vec::new(); node.logs.len()];
    for round in 0..rounds {
        let (answers, answered) = mpsc::channel();
        for (i, log) in node.logs.iter().enumerate() {
            let data = batch(RECORDS_PER_BATCH as usize, value_len, (round * 10) as i64);
            let header = *RecordBatch::new(&data).unwrap().header();
            let info = log.write_validated(&data, header).unwrap();
            let answers = answers.clone();
            let stored = common::at_offset(&data, info.base_offset);
            log.when_durable(&info, move |outcome| answers.send((i, outcome, stored)).unwrap());
        }
        for _ in 0..node.logs.len() {
            let (i, outcome, stored) = answered.recv_timeout(Duration::from_secs(30)).unwrap();
            outcome.unwrap();
            acked[i].push(stored);
        }
    }
    acked
}

/// A copy of the node's files as a power cut could leave them: each active segment keeps only
/// part of what was written to it (none, half, or all, by log), as if write-back had not
/// reached the rest. Sealed segments were fsynced when they were sealed, so they are kept.
fn power_cut_copy(root: &Path, copy: &Path) {
    copy_dir(root, copy);
    for i in 0..LOGS {
        let segment = active_segment(&copy.join("logs").join(i.to_string()));
        let len = fs::metadata(&segment).unwrap().len();
        let keep = match i % 3 {
            0 => 0,
            1 => len / 2,
            _ => len,
        };
        fs::OpenOptions::new().write(true).open(&segment).unwrap().set_len(keep).unwrap();
    }
}

#[test]
fn acknowledged_batches_come_back_from_the_write_ahead_file_after_a_power_cut() {
    let root = tempfile::tempdir().unwrap();
    let node = open_node(root.path(), wal_config(root.path(), 1 << 30, 1000)).unwrap();
    let acked = write_rounds(&node, ROUNDS, 900);
    let copy = tempfile::tempdir().unwrap();
    power_cut_copy(root.path(), copy.path());
    // A round that was being written when the power went: a torn frame after the last
    // acknowledged one, which replay must ignore.
    let wal_file = fs::read_dir(copy.path().join("wal")).unwrap().next().unwrap().unwrap().path();
    let mut bytes = fs::read(&wal_file).unwrap();
    bytes.extend_from_slice(b"STWF\0\0\0\0\0\0\0\0 torn");
    fs::write(&wal_file, bytes).unwrap();

    // The topic's batch limit was lowered meanwhile: what was accepted before still replays.
    let lowered = LogConfig { max_batch_bytes: 1024, ..log_config() };
    let restarted =
        open_node_with(copy.path(), wal_config(copy.path(), 1 << 30, 1000), lowered).unwrap();
    assert!(
        fs::read_dir(copy.path().join("wal")).unwrap().count() == 1,
        "the crash's file is gone once every log replayed; the new run's is there"
    );
    for (i, log) in restarted.logs.iter().enumerate() {
        assert_eq!(log.end_offset(), Offset(ROUNDS as u64 * RECORDS_PER_BATCH), "log {i}");
        assert_eq!(read_all(log), acked[i], "log {i} holds what it acknowledged, in order");
    }
    // The replayed node goes on from there.
    let more = write_rounds(&restarted, 2, 100);
    assert_eq!(read_all(&restarted.logs[0]).len(), ROUNDS + 2);
    assert_eq!(read_all(&restarted.logs[0])[ROUNDS..], more[0][..]);
    drop(node);
}

#[test]
fn a_log_created_again_under_the_same_name_gets_none_of_the_old_frames() {
    let root = tempfile::tempdir().unwrap();
    let node = open_node(root.path(), wal_config(root.path(), 1 << 30, 1000)).unwrap();
    write_rounds(&node, 3, 100);
    let copy = tempfile::tempdir().unwrap();
    power_cut_copy(root.path(), copy.path());
    // Log 0's topic was deleted and created again before the restart.
    let recreated = copy.path().join("logs").join("0");
    fs::remove_dir_all(&recreated).unwrap();
    drop(Log::open(&recreated, log_config()).unwrap());

    let restarted = open_node(copy.path(), wal_config(copy.path(), 1 << 30, 1000)).unwrap();
    assert_eq!(restarted.logs[0].end_offset(), Offset::ZERO);
    assert_eq!(restarted.logs[3].end_offset(), Offset(3 * RECORDS_PER_BATCH), "log 3 was replayed");
    drop(node);
}

#[test]
fn a_gap_between_a_log_and_its_frames_is_refused_with_the_log_named() {
    let root = tempfile::tempdir().unwrap();
    // A file per round, no checkpoints: round 1's frames in file 0, round 2's in file 1.
    let node = open_node(root.path(), wal_config(root.path(), 1, 1000)).unwrap();
    write_rounds(&node, 2, 100);
    let copy = tempfile::tempdir().unwrap();
    power_cut_copy(root.path(), copy.path());
    // File 0 is damaged: log 0 lost its first batch in both places.
    let first = copy.path().join("wal").join(format!("{:020}.wal", 0));
    let mut bytes = fs::read(&first).unwrap();
    bytes[..4].copy_from_slice(b"XXXX");
    fs::write(&first, bytes).unwrap();

    let err = open_node(copy.path(), wal_config(copy.path(), 1, 1000)).err().expect("refused");
    let message = err.to_string();
    assert!(message.contains("records in between are lost"), "{message}");
    assert!(
        message.contains(&copy.path().join("logs").join("0").display().to_string()),
        "{message}"
    );
    drop(node);
}

#[test]
fn checkpoints_recycle_the_files_and_a_clean_stop_leaves_none() {
    let root = tempfile::tempdir().unwrap();
    let wal_dir = root.path().join("wal");
    let file_count = || fs::read_dir(&wal_dir).unwrap().count();
    let node = open_node(root.path(), wal_config(root.path(), 8 * 1024, 1)).unwrap();
    let mut most = 0;
    let mut acked = vec![Vec::new(); LOGS];
    for _ in 0..10 {
        for (all, more) in acked.iter_mut().zip(write_rounds(&node, 4, 300)) {
            all.extend(more);
        }
        most = most.max(file_count());
    }
    // Rounds wait for a checkpoint once two full files do: at most those, the file being
    // written and two spares.
    assert!(most <= 5, "{most} write-ahead files at once");
    drop(node);
    assert_eq!(file_count(), 0, "every segment was synced when the last log went");

    let restarted = open_node(root.path(), wal_config(root.path(), 8 * 1024, 1)).unwrap();
    for (i, log) in restarted.logs.iter().enumerate() {
        assert_eq!(read_all(log), acked[i], "log {i}");
    }
    drop(restarted.group);
}
