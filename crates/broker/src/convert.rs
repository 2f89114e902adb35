//! Small conversions between the generated API types and the broker's own.

use std::collections::{BTreeMap, BTreeSet};

use strata_proto::TopicPartitions;

use crate::groups::TopicPartition;

/// Groups partitions by topic, sorted, as the API lists them.
pub fn to_topic_partitions<'a>(
    partitions: impl IntoIterator<Item = &'a TopicPartition>,
) -> Vec<TopicPartitions> {
    let mut by_topic: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for (topic, partition) in partitions {
        by_topic.entry(topic).or_default().push(*partition);
    }
    by_topic
        .into_iter()
        .map(|(topic, mut partitions)| {
            partitions.sort_unstable();
            TopicPartitions { topic: topic.to_owned(), partitions }
        })
        .collect()
}

pub fn from_topic_partitions(list: &[TopicPartitions]) -> BTreeSet<TopicPartition> {
    list.iter().flat_map(|tp| tp.partitions.iter().map(move |p| (tp.topic.clone(), *p))).collect()
}
