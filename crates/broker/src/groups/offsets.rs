//! Committed consumer-group offsets, durable in a log of their own
//! (`<data>/groups/offsets/`, a regular Strata partition log).
//!
//! Each commit appends one batch with one record per partition: key
//! `group \0 topic \0 partition`, value the JSON `{"offset":N,"metadata":"…"}`, or no value (a
//! tombstone) when a group is deleted. The in-memory map is rebuilt by replaying the log on
//! start, and compacted on start once it has grown well past what the live offsets need.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
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

/// Committed offsets. On a single node: a compacted log of its own, replayed into a map at
/// start. In a cluster: the controller's replicated state, read from its last applied
/// metadata and changed by proposing commands (so they survive the loss of any one node).
#[derive(Debug)]
pub struct OffsetStore {
    log: Option<Log>,
    offsets: Mutex<HashMap<String, GroupOffsets>>,
    raft: Option<strata_raft::RaftNode>,
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

fn log_config() -> LogConfig {
    LogConfig {
        segment_bytes: 64 * 1024 * 1024,
        segment_age: None,
        retention_age: None,
        retention_bytes: None,
        durability: Durability::EveryAppend,
        ..LogConfig::default()
    }
}

/// The log is rewritten with only the live offsets when it is larger than this and more than
/// four times what the live offsets need (about 128 bytes each).
const COMPACT_MIN_BYTES: u64 = 8 * 1024 * 1024;

fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_owned();
    name.push(suffix);
    dir.with_file_name(name)
}

/// Replays every commit and tombstone into the live map.
fn replay(log: &Log) -> Result<HashMap<String, GroupOffsets>> {
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
    Ok(offsets)
}

/// Rewrites the log with one record per live offset: written in full to `<dir>.compacting`,
/// then swapped in by two renames. A crash at any step is finished or undone by
/// [`finish_interrupted_compaction`] on the next open.
fn compact(dir: &Path, old: Log, offsets: &HashMap<String, GroupOffsets>) -> Result<Log> {
    let before = old.size_bytes();
    let staging = sibling(dir, ".compacting");
    let retired = sibling(dir, ".old");
    let io = |what: &str| BrokerError::io(format!("compacting the offsets log: {what}"));
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(io("clearing the staging directory"))?;
    }
    let fresh = Log::open(&staging, log_config())?;
    let now = Timestamp::now();
    for (group, partitions) in offsets {
        for chunk in partitions.iter().collect::<Vec<_>>().chunks(1000) {
            let mut builder = BatchBuilder::new();
            for ((topic, partition), committed) in chunk {
                let value = serde_json::to_vec(committed).expect("offset serialises");
                builder.push(now, Some(&key(group, topic, *partition)), Some(&value), &[]);
            }
            fresh.append(&builder.build(Offset(0)))?;
        }
    }
    fresh.close()?;
    old.close()?;
    std::fs::rename(dir, &retired).map_err(io("retiring the old log"))?;
    std::fs::rename(&staging, dir).map_err(io("installing the compacted log"))?;
    if let Some(parent) = dir.parent() {
        std::fs::File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(io("syncing the directory"))?;
    }
    std::fs::remove_dir_all(&retired).map_err(io("removing the old log"))?;
    let log = Log::open(dir, log_config())?;
    tracing::info!(
        before_bytes = before,
        after_bytes = log.size_bytes(),
        "compacted the offsets log"
    );
    Ok(log)
}

/// Finishes or undoes a compaction a crash interrupted: a complete new log is in place once
/// `<dir>` exists again; if only the retired one is left, it goes back.
fn finish_interrupted_compaction(dir: &Path) -> Result<()> {
    let staging = sibling(dir, ".compacting");
    let retired = sibling(dir, ".old");
    let io = |what: &str| BrokerError::io(format!("recovering an offsets compaction: {what}"));
    if retired.exists() {
        if !dir.exists() {
            std::fs::rename(&retired, dir).map_err(io("restoring the old log"))?;
        } else {
            std::fs::remove_dir_all(&retired).map_err(io("removing the old log"))?;
        }
    }
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(io("removing a partial compaction"))?;
    }
    Ok(())
}

impl OffsetStore {
    pub fn open(dir: &Path) -> Result<Arc<OffsetStore>> {
        Self::open_compacting_above(dir, COMPACT_MIN_BYTES)
    }

    fn open_compacting_above(dir: &Path, min_bytes: u64) -> Result<Arc<OffsetStore>> {
        finish_interrupted_compaction(dir)?;
        let log = Log::open(dir, log_config())?;
        let offsets = replay(&log)?;
        let live = offsets.values().map(BTreeMap::len).sum::<usize>() as u64;
        let log = if log.size_bytes() > min_bytes && log.size_bytes() > live * 128 * 4 {
            compact(dir, log, &offsets)?
        } else {
            log
        };
        tracing::info!(groups = offsets.len(), "committed offsets loaded");
        Ok(Arc::new(OffsetStore { log: Some(log), offsets: Mutex::new(offsets), raft: None }))
    }

    /// Offsets kept by the cluster's controller.
    pub fn replicated(node: strata_raft::RaftNode) -> Arc<OffsetStore> {
        Arc::new(OffsetStore { log: None, offsets: Mutex::default(), raft: Some(node) })
    }

    /// Proposes a command to the controller from a blocking thread and waits until it is
    /// applied.
    fn propose(node: &strata_raft::RaftNode, command: strata_raft::MetaCommand) -> Result<()> {
        let handle = tokio::runtime::Handle::current();
        handle
            .block_on(node.propose(command, crate::cluster::ADMIN_TIMEOUT))
            .map_err(crate::cluster::replication)?
            .map_err(crate::cluster::meta_error)
    }

    fn local_log(&self) -> &Log {
        self.log.as_ref().expect("a node-local offset store has its log")
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, GroupOffsets>> {
        self.offsets.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Durably stores `offsets` for `group` (blocking: call off the async runtime).
    pub fn commit(&self, group: &str, offsets: &[(TopicPartition, Committed)]) -> Result<()> {
        if offsets.is_empty() {
            return Ok(());
        }
        if let Some(node) = &self.raft {
            let offsets = offsets
                .iter()
                .map(|((topic, partition), c)| strata_raft::CommittedOffset {
                    topic: topic.clone(),
                    partition: *partition,
                    offset: c.offset,
                    metadata: c.metadata.clone(),
                })
                .collect();
            let command =
                strata_raft::MetaCommand::CommitOffsets { group: group.to_owned(), offsets };
            return Self::propose(node, command);
        }
        let mut builder = BatchBuilder::new();
        let now = Timestamp::now();
        for ((topic, partition), committed) in offsets {
            let value = serde_json::to_vec(committed).expect("offset serialises");
            builder.push(now, Some(&key(group, topic, *partition)), Some(&value), &[]);
        }
        self.local_log().append(&builder.build(Offset(0)))?;
        let mut map = self.map();
        let entry = map.entry(group.to_owned()).or_default();
        for (tp, committed) in offsets {
            entry.insert(tp.clone(), committed.clone());
        }
        Ok(())
    }

    /// Durably forgets every offset of `group`.
    pub fn delete_group(&self, group: &str) -> Result<()> {
        if let Some(node) = &self.raft {
            let command = strata_raft::MetaCommand::DeleteGroup { group: group.to_owned() };
            return Self::propose(node, command);
        }
        let partitions: Vec<TopicPartition> = self.get(group).into_keys().collect();
        if partitions.is_empty() {
            return Err(BrokerError::UnknownGroup(group.to_owned()));
        }
        let mut builder = BatchBuilder::new();
        let now = Timestamp::now();
        for (topic, partition) in &partitions {
            builder.push(now, Some(&key(group, topic, *partition)), None, &[]);
        }
        self.local_log().append(&builder.build(Offset(0)))?;
        self.map().remove(group);
        Ok(())
    }

    /// Durably forgets every group's offsets of `topic` (the topic was deleted).
    pub fn delete_topic(&self, topic: &str) -> Result<()> {
        if self.raft.is_some() {
            // The controller dropped them when it applied the topic's deletion.
            return Ok(());
        }
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
        self.local_log().append(&builder.build(Offset(0)))?;
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
        if let Some(node) = &self.raft {
            let metadata = node.current_metadata();
            return metadata
                .offsets
                .get(group)
                .map(|offsets| {
                    offsets
                        .iter()
                        .map(|(tp, (offset, metadata))| {
                            (tp.clone(), Committed { offset: *offset, metadata: metadata.clone() })
                        })
                        .collect()
                })
                .unwrap_or_default();
        }
        self.map().get(group).cloned().unwrap_or_default()
    }

    pub fn groups(&self) -> Vec<String> {
        if let Some(node) = &self.raft {
            return node.current_metadata().offsets.keys().cloned().collect();
        }
        self.map().keys().cloned().collect()
    }

    /// The node-local log (none in a cluster).
    pub fn log(&self) -> Option<&Log> {
        self.log.as_ref()
    }
}

impl OffsetStore {
    pub fn close(self) -> Result<()> {
        match self.log {
            Some(log) => Ok(log.close()?),
            None => Ok(()),
        }
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

#[cfg(test)]
mod compaction_tests {
    use super::*;

    fn c(offset: u64) -> Committed {
        Committed { offset, metadata: String::new() }
    }

    #[test]
    fn a_grown_log_is_compacted_on_open_and_keeps_every_live_offset() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("offsets");
        {
            let store = OffsetStore::open(&dir).unwrap();
            for i in 0..300 {
                store.commit("g", &[(("t".into(), 0), c(i)), (("t".into(), 1), c(i * 2))]).unwrap();
            }
            store.commit("gone", &[(("t".into(), 0), c(1))]).unwrap();
            store.delete_group("gone").unwrap();
        }
        let before = Log::open(&dir, log_config()).unwrap().size_bytes();
        let store = OffsetStore::open_compacting_above(&dir, 1024).unwrap();
        assert!(
            store.log().unwrap().size_bytes() < before / 10,
            "{} -> {}",
            before,
            store.log().unwrap().size_bytes()
        );
        let g = store.get("g");
        assert_eq!((g[&("t".to_owned(), 0)].offset, g[&("t".to_owned(), 1)].offset), (299, 598));
        assert!(store.get("gone").is_empty());
        store.commit("g", &[(("t".into(), 0), c(300))]).unwrap();
        drop(store);
        assert_eq!(OffsetStore::open(&dir).unwrap().get("g")[&("t".to_owned(), 0)].offset, 300);
    }

    #[test]
    fn an_interrupted_swap_is_finished_or_undone() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("offsets");
        OffsetStore::open(&dir).unwrap().commit("g", &[(("t".into(), 0), c(7))]).unwrap();
        // Crash after the old log was retired, before the new one was installed.
        std::fs::rename(&dir, sibling(&dir, ".old")).unwrap();
        std::fs::create_dir_all(sibling(&dir, ".compacting")).unwrap();
        assert_eq!(OffsetStore::open(&dir).unwrap().get("g")[&("t".to_owned(), 0)].offset, 7);
        assert!(!sibling(&dir, ".old").exists() && !sibling(&dir, ".compacting").exists());
        // Crash after the new log was installed, before the old one was removed.
        std::fs::create_dir_all(sibling(&dir, ".old")).unwrap();
        assert_eq!(OffsetStore::open(&dir).unwrap().get("g")[&("t".to_owned(), 0)].offset, 7);
        assert!(!sibling(&dir, ".old").exists());
    }
}
