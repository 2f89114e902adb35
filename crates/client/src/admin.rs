//! The admin client behind `strata topic …` and `strata group …`.

use std::collections::HashMap;
use std::time::Duration;

use strata_proto::reset_offsets_request::Strategy;
use strata_proto::{
    AddNodeRequest, AlterTopicRequest, ClusterDescription, CreateTopicRequest, DeleteGroupRequest,
    DeleteTopicRequest, DescribeClusterRequest, DescribeGroupRequest, DescribeTopicRequest,
    ElectLeaderRequest, ElectLeaderResponse, GroupDescription, GroupSummary, ListGroupsRequest,
    ListTopicsRequest, MoveReplicasRequest, OffsetList, PartitionOffset, RemoveNodeRequest,
    ResetOffsetsRequest, ResetOffsetsResponse, TopicDescription, TopicPartitions, TopicSummary,
};
use strata_record::Timestamp;

use crate::{Client, Result};

/// A topic to create.
#[derive(Debug, Clone)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: u32,
    pub replication_factor: u32,
    /// Kafka-named settings: retention.ms, retention.bytes, max.message.bytes, segment.bytes,
    /// segment.ms.
    pub configs: HashMap<String, String>,
}

/// Where `reset_offsets` moves a group's offsets.
#[derive(Debug, Clone)]
pub enum ResetTarget {
    Earliest,
    Latest,
    Current,
    ToOffset(u64),
    ShiftBy(i64),
    ToDatetime(Timestamp),
    ByDuration(Duration),
    /// Explicit (topic, partition, offset) triples.
    FromList(Vec<(String, u32, u64)>),
}

/// An offset reset, as `kafka-consumer-groups.sh --reset-offsets` takes it.
#[derive(Debug, Clone)]
pub struct ResetSpec {
    pub group: String,
    /// Topics with partitions to reset (empty list: all partitions of the topic).
    pub topics: Vec<(String, Vec<u32>)>,
    pub all_topics: bool,
    pub target: ResetTarget,
    /// False: dry run, only compute.
    pub execute: bool,
}

#[derive(Debug, Clone)]
pub struct Admin {
    client: Client,
}

impl Admin {
    pub fn new(client: Client) -> Admin {
        Admin { client }
    }

    pub async fn create_topic(&self, spec: TopicSpec) -> Result<TopicDescription> {
        let request = CreateTopicRequest {
            name: spec.name,
            partitions: spec.partitions,
            replication_factor: spec.replication_factor,
            configs: spec.configs,
        };
        Ok(self.client.admin().create_topic(request).await?.into_inner())
    }

    pub async fn list_topics(&self) -> Result<Vec<TopicSummary>> {
        Ok(self.client.admin().list_topics(ListTopicsRequest {}).await?.into_inner().topics)
    }

    pub async fn describe_topic(&self, name: &str) -> Result<TopicDescription> {
        let request = DescribeTopicRequest { name: name.to_owned() };
        Ok(self.client.admin().describe_topic(request).await?.into_inner())
    }

    pub async fn alter_topic(
        &self,
        name: &str,
        configs: HashMap<String, String>,
    ) -> Result<TopicDescription> {
        let request = AlterTopicRequest { name: name.to_owned(), configs };
        Ok(self.client.admin().alter_topic(request).await?.into_inner())
    }

    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        self.client.admin().delete_topic(DeleteTopicRequest { name: name.to_owned() }).await?;
        Ok(())
    }

    pub async fn list_groups(&self) -> Result<Vec<GroupSummary>> {
        let reply = self
            .client
            .with_coordinator(|c| async move { c.admin().list_groups(ListGroupsRequest {}).await })
            .await?;
        Ok(reply.groups)
    }

    pub async fn describe_group(&self, group: &str) -> Result<GroupDescription> {
        let request = DescribeGroupRequest { group_id: group.to_owned() };
        self.client
            .with_coordinator(|c| {
                let request = request.clone();
                async move { c.admin().describe_group(request).await }
            })
            .await
    }

    pub async fn delete_group(&self, group: &str) -> Result<()> {
        let request = DeleteGroupRequest { group_id: group.to_owned() };
        self.client
            .with_coordinator(|c| {
                let request = request.clone();
                async move { c.admin().delete_group(request).await }
            })
            .await?;
        Ok(())
    }

    /// Nodes, the controller and each node's throughput over the last minute.
    pub async fn describe_cluster(&self) -> Result<ClusterDescription> {
        Ok(self.client.admin().describe_cluster(DescribeClusterRequest {}).await?.into_inner())
    }

    /// Asks the broker this client talks to to become the leader of `topic`/`partition`
    /// (connect the client to the node that should lead).
    pub async fn elect_leader(&self, topic: &str, partition: u32) -> Result<ElectLeaderResponse> {
        let request = ElectLeaderRequest { topic: topic.to_owned(), partition };
        Ok(self.client.admin().elect_leader(request).await?.into_inner())
    }

    /// Adds node `node_id`, already running and listening at `address`, to the cluster; every
    /// partition then gains a replica on it. Returns the cluster's node ids.
    pub async fn add_node(&self, node_id: u64, address: &str) -> Result<Vec<u64>> {
        let request = AddNodeRequest { node_id, address: address.to_owned() };
        Ok(self.client.admin().add_node(request).await?.into_inner().node_ids)
    }

    /// Removes node `node_id` (up or down) from the cluster and from every partition's group.
    /// Returns the cluster's node ids.
    pub async fn remove_node(&self, node_id: u64) -> Result<Vec<u64>> {
        let request = RemoveNodeRequest { node_id };
        Ok(self.client.admin().remove_node(request).await?.into_inner().node_ids)
    }

    /// Moves `topic`/`partition` to the nodes `replicas` (the first is the preferred leader).
    /// Answers once the move is recorded; the data follows in the background.
    pub async fn move_replicas(&self, topic: &str, partition: u32, replicas: &[u64]) -> Result<()> {
        let request =
            MoveReplicasRequest { topic: topic.to_owned(), partition, replicas: replicas.to_vec() };
        self.client.admin().move_replicas(request).await?;
        Ok(())
    }

    pub async fn reset_offsets(&self, spec: ResetSpec) -> Result<ResetOffsetsResponse> {
        let strategy = match spec.target {
            ResetTarget::Earliest => Strategy::ToEarliest(true),
            ResetTarget::Latest => Strategy::ToLatest(true),
            ResetTarget::Current => Strategy::ToCurrent(true),
            ResetTarget::ToOffset(o) => Strategy::ToOffset(o),
            ResetTarget::ShiftBy(n) => Strategy::ShiftBy(n),
            ResetTarget::ToDatetime(ts) => Strategy::ToDatetimeMs(ts.0),
            ResetTarget::ByDuration(d) => Strategy::ByDurationMs(d.as_millis() as i64),
            ResetTarget::FromList(list) => Strategy::FromList(OffsetList {
                offsets: list
                    .into_iter()
                    .map(|(topic, partition, offset)| PartitionOffset {
                        topic,
                        partition,
                        offset,
                        metadata: String::new(),
                    })
                    .collect(),
            }),
        };
        let request = ResetOffsetsRequest {
            group_id: spec.group,
            topics: spec
                .topics
                .into_iter()
                .map(|(topic, partitions)| TopicPartitions { topic, partitions })
                .collect(),
            all_topics: spec.all_topics,
            strategy: Some(strategy),
            execute: spec.execute,
        };
        self.client
            .with_coordinator(|c| {
                let request = request.clone();
                async move { c.admin().reset_offsets(request).await }
            })
            .await
    }
}
