#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use bytes::Bytes;
use strata_record::{BatchBuilder, BatchHeader, Offset, Timestamp};
use strata_storage::{Durability, LogConfig};

/// A batch of `records` records with values of `value_len` bytes, timestamps from `ts`.
pub fn batch(records: usize, value_len: usize, ts: i64) -> Bytes {
    let mut builder = BatchBuilder::new();
    for i in 0..records {
        let value = vec![(i % 251) as u8; value_len];
        let key = format!("key-{i}");
        builder.push(
            Timestamp(ts + i as i64),
            Some(key.as_bytes()),
            Some(&value),
            &[("h", Some(b"v"))],
        );
    }
    builder.build(Offset(0))
}

/// Small segments and a dense index, so a few appends exercise rolling and index lookups.
pub fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        segment_age: None,
        index_interval_bytes: 256,
        max_batch_bytes: 64 * 1024,
        durability: Durability::Never,
        retention_age: None,
        retention_bytes: None,
    }
}

pub fn with_durability(durability: Durability) -> LogConfig {
    LogConfig { durability, ..small_config() }
}

pub fn base_of(batch: &[u8]) -> Offset {
    BatchHeader::parse(batch).unwrap().base_offset()
}

/// `batch` with its base offset field set to `offset`, as the log stores it.
pub fn at_offset(batch: &[u8], offset: Offset) -> Vec<u8> {
    let mut bytes = batch.to_vec();
    bytes[..8].copy_from_slice(&(offset.0 as i64).to_be_bytes());
    bytes
}

pub const SHORT: Duration = Duration::from_millis(10);

/// A recursive copy of a directory tree: a snapshot of a node's files, as a power cut would
/// find them (the copy is then cut where write-back could have been missing).
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// The active (last) segment file of the log in `dir`.
pub fn active_segment(dir: &std::path::Path) -> std::path::PathBuf {
    let mut segments: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    segments.sort();
    segments.pop().unwrap()
}

/// Every batch of `log`, start to end, as stored.
pub fn read_all(log: &strata_storage::Log) -> Vec<Vec<u8>> {
    let mut batches = Vec::new();
    let mut from = log.start_offset();
    while from < log.end_offset() {
        for bytes in log.read(from, 1 << 20).unwrap() {
            from = BatchHeader::parse(&bytes).unwrap().last_offset().plus(1);
            batches.push(bytes.to_vec());
        }
    }
    batches
}
