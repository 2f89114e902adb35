//! Per-topic settings, by their Kafka names, and how they map onto a partition log.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use strata_storage::{Durability, LogConfig, MAX_BATCH_BYTES, MAX_SEGMENT_BYTES};

use crate::error::{BrokerError, Result};

pub const RETENTION_MS: &str = "retention.ms";
pub const RETENTION_BYTES: &str = "retention.bytes";
pub const MAX_MESSAGE_BYTES: &str = "max.message.bytes";
pub const SEGMENT_BYTES: &str = "segment.bytes";
pub const SEGMENT_MS: &str = "segment.ms";
const KEYS: [&str; 5] =
    [RETENTION_MS, RETENTION_BYTES, MAX_MESSAGE_BYTES, SEGMENT_BYTES, SEGMENT_MS];

/// A topic's settings. `-1` means "no limit" for the retention settings, as in Kafka.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicConfig {
    pub retention_ms: i64,
    pub retention_bytes: i64,
    /// Largest batch a producer may send to the topic.
    pub max_message_bytes: u32,
    pub segment_bytes: u64,
    pub segment_ms: i64,
}

impl Default for TopicConfig {
    fn default() -> Self {
        TopicConfig {
            retention_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: -1,
            max_message_bytes: 1024 * 1024,
            segment_bytes: 128 * 1024 * 1024,
            segment_ms: 7 * 24 * 3600 * 1000,
        }
    }
}

fn parse<T: std::str::FromStr>(key: &str, value: &str) -> Result<T> {
    value.trim().parse().map_err(|_| {
        BrokerError::InvalidArgument(format!("config {key}: {value:?} is not a valid number"))
    })
}

impl TopicConfig {
    /// Applies `changes` (key → value) on top of this configuration, rejecting unknown keys and
    /// out-of-range values without changing anything.
    pub fn with_changes(&self, changes: &HashMap<String, String>) -> Result<TopicConfig> {
        let mut next = self.clone();
        for (key, value) in changes {
            match key.as_str() {
                RETENTION_MS => next.retention_ms = parse(key, value)?,
                RETENTION_BYTES => next.retention_bytes = parse(key, value)?,
                MAX_MESSAGE_BYTES => next.max_message_bytes = parse(key, value)?,
                SEGMENT_BYTES => next.segment_bytes = parse(key, value)?,
                SEGMENT_MS => next.segment_ms = parse(key, value)?,
                other => {
                    return Err(BrokerError::InvalidArgument(format!(
                        "unknown config key {other:?}; known keys: {}",
                        KEYS.join(", ")
                    )));
                }
            }
        }
        next.validate()?;
        Ok(next)
    }

    fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(BrokerError::InvalidArgument(msg));
        if self.retention_ms < -1 || self.retention_ms == 0 {
            return bad(format!("{RETENTION_MS} must be positive or -1"));
        }
        if self.retention_bytes < -1 || self.retention_bytes == 0 {
            return bad(format!("{RETENTION_BYTES} must be positive or -1"));
        }
        if !(64..=MAX_BATCH_BYTES as u64).contains(&u64::from(self.max_message_bytes)) {
            return bad(format!("{MAX_MESSAGE_BYTES} must be in [64, {MAX_BATCH_BYTES}]"));
        }
        if !(16 * 1024..=MAX_SEGMENT_BYTES).contains(&self.segment_bytes) {
            return bad(format!("{SEGMENT_BYTES} must be in [16384, {MAX_SEGMENT_BYTES}]"));
        }
        if self.segment_ms <= 0 {
            return bad(format!("{SEGMENT_MS} must be positive"));
        }
        Ok(())
    }

    /// Every key with its value, for describe output.
    pub fn to_map(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (RETENTION_MS.to_owned(), self.retention_ms.to_string()),
            (RETENTION_BYTES.to_owned(), self.retention_bytes.to_string()),
            (MAX_MESSAGE_BYTES.to_owned(), self.max_message_bytes.to_string()),
            (SEGMENT_BYTES.to_owned(), self.segment_bytes.to_string()),
            (SEGMENT_MS.to_owned(), self.segment_ms.to_string()),
        ])
    }

    pub fn log_config(&self, durability: Durability) -> LogConfig {
        let millis = |ms: i64| u64::try_from(ms).ok().map(Duration::from_millis);
        LogConfig {
            segment_bytes: self.segment_bytes,
            segment_age: millis(self.segment_ms),
            index_interval_bytes: 4096,
            max_batch_bytes: self.max_message_bytes as usize,
            durability,
            retention_age: millis(self.retention_ms),
            retention_bytes: u64::try_from(self.retention_bytes).ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_validated_as_a_whole() {
        let base = TopicConfig::default();
        let changes = HashMap::from([(RETENTION_MS.to_owned(), "60000".to_owned())]);
        assert_eq!(base.with_changes(&changes).unwrap().retention_ms, 60_000);
        for (k, v) in [
            ("retention.ms", "0"),
            ("nope", "1"),
            ("segment.bytes", "x"),
            ("max.message.bytes", "1"),
        ] {
            let changes = HashMap::from([(k.to_owned(), v.to_owned())]);
            assert!(base.with_changes(&changes).is_err(), "{k}={v}");
        }
    }
}
