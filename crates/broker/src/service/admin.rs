//! The admin API: topics, groups, offset resets.

use std::collections::HashMap;
use std::sync::Arc;

use strata_proto::TopicPartitions;
use strata_proto::admin_server::Admin;
use strata_proto::reset_offsets_request::Strategy;
use strata_proto::{
    AddNodeRequest, AlterTopicRequest, ClusterDescription, CreateTopicRequest, DeleteGroupRequest,
    DeleteGroupResponse, DeleteTopicRequest, DeleteTopicResponse, DescribeClusterRequest,
    DescribeGroupRequest, DescribeTopicRequest, ElectLeaderRequest, ElectLeaderResponse,
    GroupDescription, GroupMember, GroupSummary, ListGroupsRequest, ListGroupsResponse,
    ListTopicsRequest, ListTopicsResponse, MoveReplicasRequest, MoveReplicasResponse,
    NodeChangeResponse, NodeStatus, OffsetChange, PartitionDescription, PartitionLag,
    PartitionStatus, RemoveNodeRequest, ReplicaLag, ResetOffsetsRequest, ResetOffsetsResponse,
    TopicDescription, TopicSummary,
};
use strata_raft::NodeChange;
use strata_record::Timestamp;
use tonic::{Request, Response, Status};

use super::{blocking, respond};
use crate::error::{BrokerError, Result};
use crate::groups::{ResetScope, ResetStrategy, reset_offsets};
use crate::offsets::OffsetSource;
use crate::server::Shared;
use crate::topics::Topic;

#[derive(Debug, Clone)]
pub struct AdminService {
    shared: Arc<Shared>,
}

impl AdminService {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        AdminService { shared }
    }

    /// Every partition of `topic`: from this node's replica where it holds one, otherwise
    /// from the metadata and the partition's replicas (its size is then not known here: 0).
    async fn describe(&self, topic: &Topic) -> TopicDescription {
        let meta = topic.meta();
        let shared = &self.shared;
        // Partitions held elsewhere are asked concurrently, so replicas that do not answer
        // cost one timeout, not one per partition.
        let partitions = futures::future::join_all((0..meta.partitions).map(|id| async move {
            let mut description = PartitionDescription {
                partition: id,
                leader: shared.leader_of(topic, id),
                replicas: shared.replicas(topic.name.as_str(), id),
                ..PartitionDescription::default()
            };
            match shared.offset_source(topic.name.as_str(), id) {
                Ok(OffsetSource::Local(p)) => {
                    description.log_start_offset = p.log_start().0;
                    description.high_watermark = p.high_watermark().0;
                    description.size_bytes = p.log().size_bytes();
                }
                Ok(remote) => {
                    description.log_start_offset = remote.earliest().await.unwrap_or(0);
                    description.high_watermark = remote.latest().await.unwrap_or(0);
                }
                Err(_) => {}
            }
            description
        }))
        .await;
        TopicDescription {
            name: meta.name.clone(),
            replication_factor: meta.replication_factor,
            partitions,
            configs: meta.config.to_map().into_iter().collect(),
        }
    }
}

impl AdminService {
    fn cluster(&self) -> Result<&Arc<crate::cluster::Cluster>> {
        self.shared.cluster.as_ref().ok_or_else(|| {
            BrokerError::Fenced("a single node has no other nodes; start it with --peers".into())
        })
    }

    fn partition_statuses(&self) -> Vec<PartitionStatus> {
        let node = self.shared.config.node_id;
        let mut out = Vec::new();
        for topic in self.shared.topics.all() {
            for id in 0..topic.partition_count() {
                let Ok(p) = topic.partition(id) else {
                    // Held on other nodes: what the metadata says (no voters, term or lag).
                    out.push(PartitionStatus {
                        topic: topic.name.to_string(),
                        partition: id,
                        leader: self.shared.leader_of(&topic, id),
                        replicas: self.shared.replicas(topic.name.as_str(), id),
                        ..PartitionStatus::default()
                    });
                    continue;
                };
                let mut status = PartitionStatus {
                    topic: topic.name.to_string(),
                    partition: p.id(),
                    leader: p.leader(node),
                    replicas: self.shared.replicas(topic.name.as_str(), p.id()),
                    high_watermark: p.high_watermark().0,
                    term: 0,
                    lag: Vec::new(),
                    voters: vec![node],
                };
                if let Some(replica) = p.replica() {
                    status.voters = replica.voter_ids();
                    let metrics = replica.metrics();
                    status.term = metrics.current_term;
                    let last = metrics.last_log_index.unwrap_or(0);
                    if let Some(replication) = &metrics.replication {
                        status.lag = replication
                            .iter()
                            .filter(|(id, _)| **id != node)
                            .map(|(id, matched)| ReplicaLag {
                                node_id: *id,
                                entries: last.saturating_sub(matched.map_or(0, |m| m.index)),
                            })
                            .collect();
                    }
                }
                out.push(status);
            }
        }
        out
    }
}

fn strategy(request: &ResetOffsetsRequest) -> Result<ResetStrategy> {
    let Some(strategy) = &request.strategy else {
        return Err(BrokerError::InvalidArgument(
            "choose a reset strategy (to-earliest, to-latest, to-current, to-offset, shift-by, to-datetime, by-duration, from-file)".into(),
        ));
    };
    Ok(match strategy {
        Strategy::ToEarliest(_) => ResetStrategy::Earliest,
        Strategy::ToLatest(_) => ResetStrategy::Latest,
        Strategy::ToCurrent(_) => ResetStrategy::Current,
        Strategy::ToOffset(o) => ResetStrategy::ToOffset(*o),
        Strategy::ShiftBy(n) => ResetStrategy::ShiftBy(*n),
        Strategy::ToDatetimeMs(ms) => ResetStrategy::ToDatetime(*ms),
        Strategy::ByDurationMs(ms) if *ms >= 0 => ResetStrategy::ByDuration(*ms),
        Strategy::ByDurationMs(_) => {
            return Err(BrokerError::InvalidArgument("by-duration must not be negative".into()));
        }
        Strategy::FromList(list) => {
            if list.offsets.is_empty() {
                return Err(BrokerError::InvalidArgument("from-file lists no offsets".into()));
            }
            ResetStrategy::FromList(
                list.offsets.iter().map(|o| ((o.topic.clone(), o.partition), o.offset)).collect(),
            )
        }
    })
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn create_topic(
        &self,
        request: Request<CreateTopicRequest>,
    ) -> Result<Response<TopicDescription>, Status> {
        let request = request.into_inner();
        respond(&self.shared.metrics, "create_topic", async {
            if let Some(cluster) = &self.shared.cluster {
                let topic = cluster
                    .create_topic(
                        &request.name,
                        request.partitions,
                        request.replication_factor,
                        &request.configs,
                    )
                    .await?;
                return Ok(self.describe(&topic).await);
            }
            let shared = self.shared.clone();
            let topic = blocking(&self.shared.tasks, move || {
                shared.topics.create(
                    &request.name,
                    request.partitions,
                    request.replication_factor,
                    1,
                    &request.configs,
                )
            })
            .await?;
            Ok(self.describe(&topic).await)
        })
        .await
    }

    async fn list_topics(
        &self,
        _request: Request<ListTopicsRequest>,
    ) -> Result<Response<ListTopicsResponse>, Status> {
        respond(&self.shared.metrics, "list_topics", async {
            let topics = self
                .shared
                .topics
                .all()
                .iter()
                .map(|t| {
                    let meta = t.meta();
                    TopicSummary {
                        name: meta.name,
                        partitions: meta.partitions,
                        replication_factor: meta.replication_factor,
                    }
                })
                .collect();
            Ok(ListTopicsResponse { topics })
        })
        .await
    }

    async fn describe_topic(
        &self,
        request: Request<DescribeTopicRequest>,
    ) -> Result<Response<TopicDescription>, Status> {
        let request = request.into_inner();
        respond(&self.shared.metrics, "describe_topic", async {
            let topic = self.shared.topics.get(&request.name)?;
            Ok(self.describe(&topic).await)
        })
        .await
    }

    async fn alter_topic(
        &self,
        request: Request<AlterTopicRequest>,
    ) -> Result<Response<TopicDescription>, Status> {
        let request = request.into_inner();
        respond(&self.shared.metrics, "alter_topic", async {
            if request.configs.is_empty() {
                return Err(BrokerError::InvalidArgument(
                    "give at least one --config KEY=VALUE".into(),
                ));
            }
            let shared = self.shared.clone();
            let changes: HashMap<String, String> = request.configs;
            if let Some(cluster) = &self.shared.cluster {
                let topic = cluster.alter_topic(&request.name, &changes).await?;
                return Ok(self.describe(&topic).await);
            }
            let topic =
                blocking(&self.shared.tasks, move || shared.topics.alter(&request.name, &changes))
                    .await?;
            Ok(self.describe(&topic).await)
        })
        .await
    }

    async fn delete_topic(
        &self,
        request: Request<DeleteTopicRequest>,
    ) -> Result<Response<DeleteTopicResponse>, Status> {
        let request = request.into_inner();
        respond(&self.shared.metrics, "delete_topic", async {
            if let Some(cluster) = &self.shared.cluster {
                cluster.delete_topic(&request.name).await?;
                let shared = self.shared.clone();
                let name = request.name.clone();
                blocking(&self.shared.tasks, move || shared.groups.forget_topic(&name)).await?;
                return Ok(DeleteTopicResponse {});
            }
            let shared = self.shared.clone();
            blocking(&self.shared.tasks, move || {
                shared.topics.delete(&request.name)?;
                shared.groups.forget_topic(&request.name)
            })
            .await?;
            Ok(DeleteTopicResponse {})
        })
        .await
    }

    async fn list_groups(
        &self,
        _request: Request<ListGroupsRequest>,
    ) -> Result<Response<ListGroupsResponse>, Status> {
        respond(&self.shared.metrics, "list_groups", async {
            self.shared.check_coordinator()?;
            let groups = self
                .shared
                .groups
                .list()
                .into_iter()
                .map(|(group_id, state, members)| GroupSummary {
                    group_id,
                    state: state.into(),
                    members: members as u32,
                })
                .collect();
            Ok(ListGroupsResponse { groups })
        })
        .await
    }

    async fn describe_group(
        &self,
        request: Request<DescribeGroupRequest>,
    ) -> Result<Response<GroupDescription>, Status> {
        let request = request.into_inner();
        respond(&self.shared.metrics, "describe_group", async {
            self.shared.check_coordinator()?;
            let view = self.shared.groups.describe(&request.group_id)?;
            let mut rows: std::collections::BTreeSet<_> = view.committed.keys().cloned().collect();
            rows.extend(view.owners.keys().cloned());
            let shown = &view;
            let partitions = futures::future::join_all(rows.into_iter().map(|tp| async move {
                let view = shown;
                let committed = view.committed.get(&tp).map(|c| c.offset);
                // (0, 0) when the topic was deleted since the commit, or its replicas on
                // other nodes did not answer.
                let source = self.shared.offset_source(&tp.0, tp.1).ok();
                let (start, end) = match &source {
                    Some(s) => match (s.earliest().await, s.latest().await) {
                        (Ok(start), Ok(end)) => (start, end),
                        _ => (0, 0),
                    },
                    None => (0, 0),
                };
                let next = committed.unwrap_or(start);
                // The age needs the record itself: known where this node holds a replica.
                let age_ms = match &source {
                    Some(OffsetSource::Local(p)) => p
                        .first_unconsumed(next)
                        .and_then(|o| p.record_timestamp(o))
                        .map_or(0, |ts| Timestamp::now().0.saturating_sub(ts).max(0) as u64),
                    _ => 0,
                };
                PartitionLag {
                    owner: view.owners.get(&tp).cloned().unwrap_or_default(),
                    topic: tp.0,
                    partition: tp.1,
                    committed_offset: committed,
                    log_end_offset: end,
                    lag: end.saturating_sub(next),
                    oldest_unconsumed_age_ms: age_ms,
                }
            }))
            .await;
            Ok(GroupDescription {
                group_id: view.group_id,
                state: view.state.into(),
                group_epoch: view.epoch,
                assignor: view.assignor.into(),
                members: view
                    .members
                    .into_iter()
                    .map(|m| GroupMember {
                        member_id: m.member_id,
                        client_id: m.client_id,
                        member_epoch: m.epoch,
                        subscribed_topics: m.subscribed,
                        assignment: TopicPartitions::group(
                            m.assignment.iter().map(|(t, p)| (t, *p)),
                        ),
                    })
                    .collect(),
                partitions,
                offsets_epoch: view.offsets_epoch,
            })
        })
        .await
    }

    async fn delete_group(
        &self,
        request: Request<DeleteGroupRequest>,
    ) -> Result<Response<DeleteGroupResponse>, Status> {
        let request = request.into_inner();
        respond(&self.shared.metrics, "delete_group", async {
            self.shared.check_coordinator()?;
            let shared = self.shared.clone();
            blocking(&self.shared.tasks, move || shared.groups.delete(&request.group_id)).await?;
            Ok(DeleteGroupResponse {})
        })
        .await
    }

    async fn describe_cluster(
        &self,
        _request: Request<DescribeClusterRequest>,
    ) -> Result<Response<ClusterDescription>, Status> {
        respond(&self.shared.metrics, "describe_cluster", async {
            let config = &self.shared.config;
            let rate = self.shared.metrics.throughput();
            let local = NodeStatus {
                node_id: config.node_id,
                address: config.advertise.clone(),
                alive: true,
                produce_bytes_per_s: rate.produce_bytes,
                produce_records_per_s: rate.produce_records,
                fetch_bytes_per_s: rate.fetch_bytes,
                fetch_records_per_s: rate.fetch_records,
            };
            let Some(cluster) = &self.shared.cluster else {
                return Ok(ClusterDescription {
                    nodes: vec![local],
                    controller_id: config.node_id,
                    partitions: self.partition_statuses(),
                });
            };
            let mut nodes = Vec::new();
            for (id, address) in &cluster.metadata().nodes {
                if *id == config.node_id {
                    nodes.push(local.clone());
                    continue;
                }
                nodes.push(NodeStatus {
                    node_id: *id,
                    address: address.clone(),
                    alive: crate::cluster::probe(address).await,
                    ..NodeStatus::default()
                });
            }
            Ok(ClusterDescription {
                nodes,
                controller_id: cluster.node().controller_leader().unwrap_or(0),
                partitions: self.partition_statuses(),
            })
        })
        .await
    }

    async fn elect_leader(
        &self,
        request: Request<ElectLeaderRequest>,
    ) -> Result<Response<ElectLeaderResponse>, Status> {
        let request = request.into_inner();
        respond(&self.shared.metrics, "elect_leader", async {
            let partition = self.shared.topics.partition(&request.topic, request.partition)?;
            let Some(replica) = partition.replica() else {
                return Err(BrokerError::Fenced(
                    "a single node leads every partition already".into(),
                ));
            };
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
            while !replica.is_leader() {
                if tokio::time::Instant::now() >= deadline {
                    return Err(BrokerError::Replication(format!(
                        "node {} did not win the election for {}/{} within 5 s (its leader is busy: followers refuse votes for 2 s after its last message); retry",
                        self.shared.config.node_id, request.topic, request.partition
                    )));
                }
                replica.elect().await.map_err(|e| BrokerError::Replication(e.to_string()))?;
                tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            }
            Ok(ElectLeaderResponse {
                leader: self.shared.config.node_id,
                term: replica.metrics().current_term,
            })
        })
        .await
    }

    async fn add_node(
        &self,
        request: Request<AddNodeRequest>,
    ) -> Result<Response<NodeChangeResponse>, Status> {
        let request = request.into_inner();
        respond(&self.shared.metrics, "add_node", async {
            let change = NodeChange::Add { id: request.node_id, addr: request.address };
            if request.node_id == 0 {
                return Err(BrokerError::InvalidArgument("node ids start at 1".into()));
            }
            Ok(NodeChangeResponse { node_ids: self.cluster()?.change_nodes(change).await? })
        })
        .await
    }

    async fn move_replicas(
        &self,
        request: Request<MoveReplicasRequest>,
    ) -> Result<Response<MoveReplicasResponse>, Status> {
        let request = request.into_inner();
        respond(&self.shared.metrics, "move_replicas", async {
            let cluster = self.cluster()?;
            cluster.move_replicas(&request.topic, request.partition, request.replicas).await?;
            Ok(MoveReplicasResponse {})
        })
        .await
    }

    async fn remove_node(
        &self,
        request: Request<RemoveNodeRequest>,
    ) -> Result<Response<NodeChangeResponse>, Status> {
        let request = request.into_inner();
        respond(&self.shared.metrics, "remove_node", async {
            let change = NodeChange::Remove { id: request.node_id };
            Ok(NodeChangeResponse { node_ids: self.cluster()?.change_nodes(change).await? })
        })
        .await
    }

    async fn reset_offsets(
        &self,
        request: Request<ResetOffsetsRequest>,
    ) -> Result<Response<ResetOffsetsResponse>, Status> {
        let request = request.into_inner();
        respond(&self.shared.metrics, "reset_offsets", async {
            self.shared.check_coordinator()?;
            let strategy = strategy(&request)?;
            let scope = if request.all_topics {
                ResetScope::AllTopics
            } else {
                if request.topics.is_empty() && !matches!(strategy, ResetStrategy::FromList(_)) {
                    return Err(BrokerError::InvalidArgument(
                        "give --topic T[:P,P…] or --all-topics".into(),
                    ));
                }
                ResetScope::Topics(
                    request
                        .topics
                        .iter()
                        .map(|t| (t.topic.clone(), t.partitions.clone()))
                        .collect(),
                )
            };
            let changes = reset_offsets(
                &self.shared.groups,
                &self.shared.topics,
                |topic, partition| self.shared.offset_source(topic, partition),
                &request.group_id,
                scope,
                strategy,
                request.execute,
            )
            .await?;
            Ok(ResetOffsetsResponse {
                changes: changes
                    .into_iter()
                    .map(|c| OffsetChange {
                        topic: c.partition.0,
                        partition: c.partition.1,
                        previous_offset: c.previous,
                        new_offset: c.new,
                    })
                    .collect(),
                executed: request.execute,
            })
        })
        .await
    }
}
