//! The controller group's state machine: cluster metadata (topics, their partitions' Raft
//! groups and replica sets, configs). Every node applies the same commands in the same order,
//! so assignments computed at apply are identical everywhere.

use std::collections::BTreeMap;
use std::io::{self, Cursor};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{
    Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, StorageError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use strata_record::{BatchBuilder, Offset, RecordBatch, Timestamp};
use tokio::sync::watch;

use crate::store::SegmentStore;
use crate::types::{
    ControllerTc, GroupId, HeldSnapshot, LogPayload, Node, NodeId, read_kept_snapshot, sm_err,
    snapshot_bytes,
};

/// A change to cluster metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaCommand {
    CreateTopic {
        name: String,
        partitions: u32,
        /// 0: every node.
        replication_factor: u32,
        config: BTreeMap<String, String>,
        created_ms: i64,
    },
    DeleteTopic {
        name: String,
    },
    /// Replaces the topic's config overrides.
    AlterTopic {
        name: String,
        config: BTreeMap<String, String>,
    },
    /// Stores a consumer group's committed offsets (the coordinator checked the committer).
    CommitOffsets {
        group: String,
        offsets: Vec<CommittedOffset>,
    },
    /// Forgets every committed offset of a group.
    DeleteGroup {
        group: String,
    },
    /// Makes `replicas` the replicas of one partition (the first is the preferred leader);
    /// the partition's leader then moves its group there.
    MoveReplicas {
        topic: String,
        partition: u32,
        replicas: Vec<NodeId>,
    },
    /// Partition leaders as their leaders report them, for nodes without a replica of the
    /// partition: `(group, leader, term)`; an older term than the recorded one is ignored.
    SetLeaders {
        leaders: Vec<(GroupId, GroupLeader)>,
    },
}

/// One committed offset of a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedOffset {
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
    pub metadata: String,
}

/// A group's committed offsets: (topic, partition) → (offset, metadata).
pub type GroupOffsets = BTreeMap<(String, u32), (u64, String)>;

/// Why a command changed nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum MetaError {
    #[error("topic {0} already exists")]
    TopicExists(String),
    #[error("unknown topic {0}")]
    UnknownTopic(String),
    #[error("unknown consumer group {0}")]
    UnknownGroup(String),
    #[error("{0}")]
    Invalid(String),
}

/// What applying a command answered.
pub type MetaResult = Result<(), MetaError>;

/// A partition group's leader as it reported itself: node, term, and the voters of the
/// group's last applied membership (a replica moved away closes once they leave it out).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupLeader {
    pub node: NodeId,
    pub term: u64,
    pub voters: Vec<NodeId>,
}

/// One partition: its Raft group and replicas (`replicas[0]` is the preferred leader).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionAssignment {
    pub group_id: GroupId,
    pub replicas: Vec<NodeId>,
    /// The replica that initialized the group when the topic was created (the first of its
    /// first replicas). Only it ever initializes the group: a replica added later joins
    /// through the leader.
    pub founder: NodeId,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicAssignment {
    pub partitions: Vec<PartitionAssignment>,
    pub replication_factor: u32,
    pub config: BTreeMap<String, String>,
    pub created_ms: i64,
}

/// The cluster metadata every node holds a copy of.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    pub topics: BTreeMap<String, TopicAssignment>,
    /// Partition group ids are never reused, so a recreated topic never meets an old group.
    pub next_group_id: GroupId,
    /// Nodes by id, with their advertised addresses: the controller's voters. A node being
    /// added is not one until it has caught up with the controller log.
    pub nodes: BTreeMap<NodeId, String>,
    /// Committed offsets of consumer groups, by group.
    pub offsets: BTreeMap<String, GroupOffsets>,
    /// Each partition group's leader and its term, as last reported (see
    /// [`MetaCommand::SetLeaders`]).
    pub leaders: BTreeMap<GroupId, GroupLeader>,
}

impl Metadata {
    /// A change of the cluster's nodes. A partition with a replica on a node that left gets
    /// one on the node holding the fewest replicas instead (if there is a node it is not on
    /// yet); partitions do not move to a node that joined (`MoveReplicas` does that).
    fn set_nodes(&mut self, nodes: BTreeMap<NodeId, String>) {
        let mut load: BTreeMap<NodeId, usize> = nodes.keys().map(|id| (*id, 0)).collect();
        for topic in self.topics.values() {
            for partition in &topic.partitions {
                for id in &partition.replicas {
                    if let Some(count) = load.get_mut(id) {
                        *count += 1;
                    }
                }
            }
        }
        for topic in self.topics.values_mut() {
            for partition in &mut topic.partitions {
                let before = partition.replicas.len();
                partition.replicas.retain(|id| nodes.contains_key(id));
                for _ in partition.replicas.len()..before {
                    let spare = load
                        .iter()
                        .filter(|(id, _)| !partition.replicas.contains(id))
                        .min_by_key(|(id, count)| (**count, **id))
                        .map(|(id, _)| *id);
                    let Some(spare) = spare else { break };
                    partition.replicas.push(spare);
                    *load.entry(spare).or_default() += 1;
                }
            }
        }
        self.nodes = nodes;
    }

    fn apply(&mut self, command: MetaCommand) -> MetaResult {
        match command {
            MetaCommand::CreateTopic {
                name,
                partitions,
                replication_factor,
                config,
                created_ms,
            } => {
                if self.topics.contains_key(&name) {
                    return Err(MetaError::TopicExists(name));
                }
                let nodes: Vec<NodeId> = self.nodes.keys().copied().collect();
                let rf =
                    if replication_factor == 0 { nodes.len() } else { replication_factor as usize };
                if nodes.is_empty() || rf > nodes.len() {
                    return Err(MetaError::Invalid(format!(
                        "replication factor {rf} is more than the {} nodes of the cluster",
                        nodes.len()
                    )));
                }
                self.next_group_id = self.next_group_id.max(1);
                // Replica lists rotate so that preferred leaders spread over the nodes.
                let first = self.next_group_id as usize;
                let partitions = (0..partitions as usize)
                    .map(|p| {
                        let group_id = self.next_group_id + p as u64;
                        let replicas: Vec<NodeId> =
                            (0..rf).map(|r| nodes[(first + p + r) % nodes.len()]).collect();
                        PartitionAssignment { group_id, founder: replicas[0], replicas }
                    })
                    .collect::<Vec<_>>();
                self.next_group_id += partitions.len() as u64;
                self.topics.insert(
                    name,
                    TopicAssignment {
                        partitions,
                        replication_factor: rf as u32,
                        config,
                        created_ms,
                    },
                );
                Ok(())
            }
            MetaCommand::DeleteTopic { name } => {
                let removed = self
                    .topics
                    .remove(&name)
                    .ok_or_else(|| MetaError::UnknownTopic(name.clone()))?;
                for partition in &removed.partitions {
                    self.leaders.remove(&partition.group_id);
                }
                for offsets in self.offsets.values_mut() {
                    offsets.retain(|(topic, _), _| *topic != name);
                }
                self.offsets.retain(|_, offsets| !offsets.is_empty());
                Ok(())
            }
            MetaCommand::CommitOffsets { group, offsets } => {
                let stored = self.offsets.entry(group).or_default();
                for o in offsets {
                    stored.insert((o.topic, o.partition), (o.offset, o.metadata));
                }
                Ok(())
            }
            MetaCommand::DeleteGroup { group } => {
                self.offsets.remove(&group).map(|_| ()).ok_or(MetaError::UnknownGroup(group))
            }
            MetaCommand::AlterTopic { name, config } => {
                let topic = self.topics.get_mut(&name).ok_or(MetaError::UnknownTopic(name))?;
                topic.config = config;
                Ok(())
            }
            MetaCommand::MoveReplicas { topic, partition, replicas } => {
                let mut unique = replicas.clone();
                unique.sort_unstable();
                unique.dedup();
                if replicas.is_empty() || unique.len() != replicas.len() {
                    return Err(MetaError::Invalid(format!(
                        "replicas must be distinct node ids, at least one: {replicas:?}"
                    )));
                }
                if let Some(unknown) = replicas.iter().find(|id| !self.nodes.contains_key(id)) {
                    return Err(MetaError::Invalid(format!(
                        "node {unknown} is not in the cluster"
                    )));
                }
                let assignment =
                    self.topics.get_mut(&topic).ok_or(MetaError::UnknownTopic(topic.clone()))?;
                let count = assignment.partitions.len();
                let target =
                    assignment.partitions.get_mut(partition as usize).ok_or_else(|| {
                        MetaError::Invalid(format!(
                            "topic {topic} has {count} partitions, not {partition}"
                        ))
                    })?;
                target.replicas = replicas;
                assignment.replication_factor = assignment
                    .partitions
                    .iter()
                    .map(|p| p.replicas.len() as u32)
                    .max()
                    .unwrap_or(0);
                Ok(())
            }
            MetaCommand::SetLeaders { leaders } => {
                // Reports of groups deleted meanwhile are dropped.
                let known: std::collections::HashSet<GroupId> = self
                    .topics
                    .values()
                    .flat_map(|t| t.partitions.iter().map(|p| p.group_id))
                    .collect();
                for (group, leader) in leaders {
                    if !known.contains(&group) {
                        continue;
                    }
                    let recorded = self.leaders.entry(group).or_insert_with(|| leader.clone());
                    if leader.term >= recorded.term {
                        *recorded = leader;
                    }
                }
                Ok(())
            }
        }
    }
}

impl LogPayload for MetaCommand {
    fn to_batch(&self) -> Bytes {
        let value = postcard::to_stdvec(self).expect("metadata commands always serialize");
        let mut builder = BatchBuilder::new();
        builder.push(Timestamp::now(), None, Some(&value), &[]);
        builder.build(Offset(0))
    }

    fn from_batch(batch: Bytes) -> Result<Self, String> {
        let batch = RecordBatch::new(&batch).map_err(|e| e.to_string())?;
        let record = batch
            .records()
            .map_err(|e| e.to_string())?
            .next()
            .ok_or("empty controller batch")?
            .map_err(|e| e.to_string())?;
        postcard::from_bytes(record.value().unwrap_or_default()).map_err(|e| e.to_string())
    }
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct State {
    applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, Node>,
    metadata: Metadata,
}

#[derive(Debug)]
struct Inner {
    state: State,
    snapshot: HeldSnapshot,
}

/// The controller's state machine; clones share it. Every applied change is published on a
/// watch channel that the node's reconciler follows.
#[derive(Debug, Clone)]
pub struct ControllerSm {
    inner: Arc<Mutex<Inner>>,
    published: Arc<watch::Sender<Arc<Metadata>>>,
    /// Where the last snapshot is kept.
    dir: PathBuf,
    store: SegmentStore<ControllerTc>,
}

impl ControllerSm {
    /// The state machine over the controller's `store`, starting from the snapshot kept in
    /// its directory if there is one (openraft replays the log after it).
    pub fn open(store: SegmentStore<ControllerTc>) -> io::Result<ControllerSm> {
        let dir = store.dir().to_owned();
        let mut state = State::default();
        let mut snapshot = HeldSnapshot::default();
        if let Some((meta, data)) = read_kept_snapshot(&dir)? {
            state = postcard::from_bytes(&data).map_err(io::Error::other)?;
            if let Some(log_id) = meta.last_log_id {
                // A crash between an install and its purge: purge now. Controller entries
                // need no particular log offset, so the log goes on at its end.
                store.catch_up_to_snapshot(log_id, store.log().end_offset().0)?;
            }
            snapshot.keep::<ControllerTc>(meta, data);
        }
        let (published, _) = watch::channel(Arc::new(state.metadata.clone()));
        Ok(ControllerSm {
            inner: Arc::new(Mutex::new(Inner { state, snapshot })),
            published: Arc::new(published),
            dir,
            store,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current metadata, and every later change.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Metadata>> {
        self.published.subscribe()
    }

    pub fn metadata(&self) -> Arc<Metadata> {
        self.published.borrow().clone()
    }

    fn publish(&self, metadata: Metadata) {
        self.published.send_replace(Arc::new(metadata));
    }
}

/// The voters of the controller's membership, with their addresses.
fn nodes_of(membership: &StoredMembership<NodeId, Node>) -> BTreeMap<NodeId, String> {
    let membership = membership.membership();
    membership
        .voter_ids()
        .map(|id| (id, membership.get_node(&id).map(|n| n.addr.clone()).unwrap_or_default()))
        .collect()
}

impl RaftSnapshotBuilder<ControllerTc> for ControllerSm {
    async fn build_snapshot(&mut self) -> Result<Snapshot<ControllerTc>, StorageError<NodeId>> {
        let mut inner = self.lock();
        let data = postcard::to_stdvec(&inner.state).map_err(sm_err)?;
        let meta = SnapshotMeta {
            last_log_id: inner.state.applied,
            last_membership: inner.state.membership.clone(),
            snapshot_id: format!("meta-{}", inner.state.applied.map_or(0, |l| l.index)),
        };
        inner.snapshot.keep_on_disk(&self.dir, meta, data).map_err(sm_err)
    }
}

impl RaftStateMachine<ControllerTc> for ControllerSm {
    type SnapshotBuilder = ControllerSm;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, Node>), StorageError<NodeId>> {
        let inner = self.lock();
        Ok((inner.state.applied, inner.state.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<MetaResult>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<ControllerTc>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut replies = Vec::new();
        let metadata = {
            let mut inner = self.lock();
            let state = &mut inner.state;
            for entry in entries {
                state.applied = Some(entry.log_id);
                replies.push(match entry.payload {
                    EntryPayload::Normal(command) => state.metadata.apply(command),
                    EntryPayload::Membership(m) => {
                        state.membership = StoredMembership::new(Some(entry.log_id), m);
                        state.metadata.set_nodes(nodes_of(&state.membership));
                        Ok(())
                    }
                    EntryPayload::Blank => Ok(()),
                });
            }
            state.metadata.clone()
        };
        self.publish(metadata);
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, Node>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let bytes = snapshot_bytes(&snapshot).to_vec();
        let state: State = postcard::from_bytes(&bytes).map_err(sm_err)?;
        let metadata = state.metadata.clone();
        {
            let mut inner = self.lock();
            inner.state = state;
            inner
                .snapshot
                .keep_on_disk::<ControllerTc>(&self.dir, meta.clone(), bytes)
                .map_err(sm_err)?;
        }
        // The purge that goes with the install, durable once the snapshot is on disk.
        if let Some(log_id) = meta.last_log_id {
            let end = self.store.log().end_offset().0;
            self.store.snapshot_installed(log_id, end).map_err(sm_err)?;
        }
        self.publish(metadata);
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<ControllerTc>>, StorageError<NodeId>> {
        let inner = self.lock();
        Ok(inner.snapshot.current())
    }
}
