//! `reset-offsets`: every mode of `kafka-consumer-groups.sh --reset-offsets`, allowed on a
//! live group (its members learn of it through the offsets epoch in their heartbeats).

use std::collections::BTreeMap;
use std::sync::Arc;

use strata_record::Timestamp;

use super::{Committed, Groups, TopicPartition};
use crate::error::{BrokerError, Result};
use crate::offsets::OffsetSource;
use crate::topics::Topics;

#[derive(Debug, Clone)]
pub enum ResetStrategy {
    Earliest,
    Latest,
    /// The committed offset (latest where there is none).
    Current,
    ToOffset(u64),
    /// Relative to the committed offset (latest where there is none).
    ShiftBy(i64),
    /// First record at or after this time (ms since the epoch).
    ToDatetime(i64),
    /// First record at or after now minus this many ms.
    ByDuration(i64),
    /// Explicit offsets; the partitions listed are the scope.
    FromList(Vec<(TopicPartition, u64)>),
}

#[derive(Debug, Clone)]
pub enum ResetScope {
    /// Every topic the group subscribes to or has offsets for.
    AllTopics,
    /// Topics with the partitions to reset (empty: all of the topic's partitions).
    Topics(Vec<(String, Vec<u32>)>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetChange {
    pub partition: TopicPartition,
    pub previous: Option<u64>,
    pub new: u64,
}

fn expand(
    scope: &ResetScope,
    strategy: &ResetStrategy,
    groups: &Groups,
    group_id: &str,
    topics: &Topics,
) -> Result<Vec<TopicPartition>> {
    if let ResetStrategy::FromList(list) = strategy {
        return Ok(list.iter().map(|(tp, _)| tp.clone()).collect());
    }
    let requested: Vec<(String, Vec<u32>)> = match scope {
        ResetScope::AllTopics => {
            groups.topics_of(group_id).into_iter().map(|t| (t, Vec::new())).collect()
        }
        ResetScope::Topics(list) => list.clone(),
    };
    let mut out = Vec::new();
    for (topic_name, partitions) in requested {
        let topic = match topics.get(&topic_name) {
            Ok(topic) => topic,
            // A deleted topic the group still has offsets for is skipped with --all-topics.
            Err(_) if matches!(scope, ResetScope::AllTopics) => continue,
            Err(err) => return Err(err),
        };
        if partitions.is_empty() {
            out.extend((0..topic.partition_count()).map(|p| (topic_name.clone(), p)));
        } else {
            for p in partitions {
                if p >= topic.partition_count() {
                    return Err(BrokerError::UnknownPartition { topic: topic_name, partition: p });
                }
                out.push((topic_name.clone(), p));
            }
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Computes the new offset of every partition in scope and, if `execute`, stores them all in
/// one durable commit and bumps the group's offsets epoch.
pub async fn reset_offsets(
    groups: &Arc<Groups>,
    topics: &Arc<Topics>,
    offsets_of: impl Fn(&str, u32) -> Result<OffsetSource>,
    group_id: &str,
    scope: ResetScope,
    strategy: ResetStrategy,
    execute: bool,
) -> Result<Vec<OffsetChange>> {
    super::validate_group_id(group_id)?;
    let partitions = expand(&scope, &strategy, groups, group_id, topics)?;
    if partitions.is_empty() {
        if matches!(scope, ResetScope::AllTopics) && groups.describe(group_id).is_err() {
            return Err(BrokerError::UnknownGroup(group_id.to_owned()));
        }
        return Err(BrokerError::InvalidArgument(format!(
            "nothing to reset: group {group_id} has no topics in scope"
        )));
    }
    let committed: BTreeMap<TopicPartition, Committed> = groups.offsets().get(group_id);
    let explicit: BTreeMap<TopicPartition, u64> = match &strategy {
        ResetStrategy::FromList(list) => list.iter().cloned().collect(),
        _ => BTreeMap::new(),
    };
    let now = Timestamp::now().0;
    let mut changes = Vec::with_capacity(partitions.len());
    for tp in partitions {
        let partition = offsets_of(&tp.0, tp.1)?;
        let start = partition.earliest().await?;
        let end = partition.latest().await?;
        let previous = committed.get(&tp).map(|c| c.offset);
        let current = previous.unwrap_or(end);
        let wanted: u64 = match &strategy {
            ResetStrategy::Earliest => start,
            ResetStrategy::Latest => end,
            ResetStrategy::Current => current,
            ResetStrategy::ToOffset(offset) => *offset,
            ResetStrategy::ShiftBy(delta) => current.saturating_add_signed(*delta),
            ResetStrategy::ToDatetime(ms) => partition.for_time(Timestamp(*ms)).await?,
            ResetStrategy::ByDuration(ms) => {
                partition.for_time(Timestamp(now.saturating_sub(*ms))).await?
            }
            ResetStrategy::FromList(_) => explicit[&tp],
        };
        let new = wanted.clamp(start, end);
        changes.push(OffsetChange { partition: tp, previous, new });
    }
    if execute {
        let commits: Vec<(TopicPartition, Committed)> = changes
            .iter()
            .map(|c| {
                (c.partition.clone(), Committed { offset: c.new, metadata: "reset-offsets".into() })
            })
            .collect();
        let (owner, group) = (groups.clone(), group_id.to_owned());
        let epoch = tokio::task::spawn_blocking(move || owner.commit_reset(&group, &commits))
            .await
            .map_err(|_| BrokerError::ShuttingDown)??;
        tracing::info!(
            group = group_id,
            partitions = changes.len(),
            offsets_epoch = epoch,
            "offsets reset"
        );
    }
    Ok(changes)
}
