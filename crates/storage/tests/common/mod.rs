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
