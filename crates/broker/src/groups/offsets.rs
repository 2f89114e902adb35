//! Committed consumer-group offsets, durable in a log of their own
//! (`<data>/groups/offsets/`, a regular Strata partition log).
//!
//! Each commit appends one batch with one record per partition: key
//! `group \0 topic \0 partition`, value the JSON `{"offset":N,"metadata":"…"}`, or no value (a
//! tombstone) when a group is deleted. The in-memory map is rebuilt by replaying the log on
//! start. The log is never compacted yet: it grows with every commit (a few dozen bytes per
//! partition), which is noted in docs/decisions.md.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use strata_record::{BatchBuilder, Offset, RecordBatch, Timestamp};
use strata_storage::{Durability, Log, LogConfig};

use crate::error::{BrokerError, Result};
use crate::groups::assignor::TopicPartition;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Committed {
    pub offset: u64,
    #[serde(default)]
    pub metadata: String,
}

type GroupOffsets = BTreeMap<TopicPartition, Committed>;

#[derive(Debug)]
pub struct OffsetStore {
    log: Log,
    offsets: Mutex<HashMap<String, GroupOffsets>>,
}

fn key(group: &str, topic: &str, partition: u32) -> Vec<u8> {
    format!("{group}\0{topic}\0{partition}").into_bytes()
}

fn parse_key(key: &[u8]) -> Option<(String, String, u32)> {
    let text = std::str::from_utf8(key).ok()?;
    let mut parts = text.split('\0');
    let (group, topic, partition) = (parts.next()?, parts.next()?, parts.next()?);
    Some((group.to_owned(), topic.to_owned(), partition.parse().ok()?))
}

impl OffsetStore {
    pub fn open(dir: &Path) -> Result<Arc<OffsetStore>> {
        let config = LogConfig {
            segment_bytes: 64 * 1024 * 1024,
            segment_age: None,
            retention_age: None,
            retention_bytes: None,
            durability: Durability::EveryAppend,
            ..LogConfig::default()
        };
        let log = Log::open(dir, config)?;
        let mut offsets: HashMap<String, GroupOffsets> = HashMap::new();
        let mut from = log.start_offset();
        let end = log.end_offset();
        while from < end {
            let batches = log.read(from, 4 * 1024 * 1024)?;
            for bytes in &batches {
                let batch = RecordBatch::new(bytes)?;
                from = batch.header().last_offset().plus(1);
                for record in batch.records()? {
                    let record = record?;
                    let Some((group, topic, partition)) = record.key().and_then(parse_key) else {
                        continue;
                    };
                    let entry = offsets.entry(group).or_default();
                    match record.value().and_then(|v| serde_json::from_slice::<Committed>(v).ok()) {
                        Some(committed) => {
                            entry.insert((topic, partition), committed);
                        }
                        None => {
                            entry.remove(&(topic, partition));
                        }
                    }
                }
            }
        }
        offsets.retain(|_, o| !o.is_empty());
        tracing::info!(groups = offsets.len(), "committed offsets loaded");
        Ok(Arc::new(OffsetStore { log, offsets: Mutex::new(offsets) }))
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, GroupOffsets>> {
        self.offsets.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Durably stores `offsets` for `group` (blocking: call off the async runtime).
    pub fn commit(&self, group: &str, offsets: &[(TopicPartition, Committed)]) -> Result<()> {
        if offsets.is_empty() {
            return Ok(());
        }
        let mut builder = BatchBuilder::new();
        let now = Timestamp::now();
        for ((topic, partition), committed) in offsets {
            let value = serde_json::to_vec(committed).expect("offset serialises");
            builder.push(now, Some(&key(group, topic, *partition)), Some(&value), &[]);
        }
        self.log.append(&builder.build(Offset(0)))?;
        let mut map = self.map();
        let entry = map.entry(group.to_owned()).or_default();
        for (tp, committed) in offsets {
            entry.insert(tp.clone(), committed.clone());
        }
        Ok(())
    }

    /// Durably forgets every offset of `group`.
    pub fn delete_group(&self, group: &str) -> Result<()> {
        let partitions: Vec<TopicPartition> = self.get(group).into_keys().collect();
        if partitions.is_empty() {
            return Err(BrokerError::UnknownGroup(group.to_owned()));
        }
        let mut builder = BatchBuilder::new();
        let now = Timestamp::now();
        for (topic, partition) in &partitions {
            builder.push(now, Some(&key(group, topic, *partition)), None, &[]);
        }
        self.log.append(&builder.build(Offset(0)))?;
        self.map().remove(group);
        Ok(())
    }

    /// Durably forgets every group's offsets of `topic` (the topic was deleted).
    pub fn delete_topic(&self, topic: &str) -> Result<()> {
        let doomed: Vec<(String, u32)> = {
            let map = self.map();
            let mut doomed = Vec::new();
            for (group, offsets) in map.iter() {
                doomed.extend(
                    offsets.keys().filter(|(t, _)| t == topic).map(|(_, p)| (group.clone(), *p)),
                );
            }
            doomed
        };
        if doomed.is_empty() {
            return Ok(());
        }
        let mut builder = BatchBuilder::new();
        let now = Timestamp::now();
        for (group, partition) in &doomed {
            builder.push(now, Some(&key(group, topic, *partition)), None, &[]);
        }
        self.log.append(&builder.build(Offset(0)))?;
        let mut map = self.map();
        for (group, partition) in doomed {
            if let Some(offsets) = map.get_mut(&group) {
                offsets.remove(&(topic.to_owned(), partition));
            }
        }
        map.retain(|_, offsets| !offsets.is_empty());
        Ok(())
    }

    pub fn get(&self, group: &str) -> GroupOffsets {
        self.map().get(group).cloned().unwrap_or_default()
    }

    pub fn groups(&self) -> Vec<String> {
        self.map().keys().cloned().collect()
    }

    pub fn log(&self) -> &Log {
        &self.log
    }
}

impl OffsetStore {
    pub fn close(self) -> Result<()> {
        Ok(self.log.close()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_and_deletes_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = OffsetStore::open(dir.path()).unwrap();
            let c = |o| Committed { offset: o, metadata: String::new() };
            store.commit("g1", &[(("t".into(), 0), c(5)), (("t".into(), 1), c(7))]).unwrap();
            store.commit("g1", &[(("t".into(), 0), c(9))]).unwrap();
            store.commit("g2", &[(("u".into(), 0), c(1))]).unwrap();
            store.delete_group("g2").unwrap();
        }
        let store = OffsetStore::open(dir.path()).unwrap();
        let g1 = store.get("g1");
        assert_eq!(g1[&("t".to_owned(), 0)].offset, 9);
        assert_eq!(g1[&("t".to_owned(), 1)].offset, 7);
        assert!(store.get("g2").is_empty());
        assert_eq!(store.groups(), vec!["g1".to_owned()]);
    }
}
