//! A node of a cluster: the controller's metadata drives which topics and partition replicas
//! this node opens (the reconciler), and topic changes go through the controller.
//!
//! Every node hosts a replica of every partition (replication factor = cluster size; see
//! docs/decisions.md), so each node's `Topics` lists every partition, leader or follower.

use std::collections::HashMap;
use std::fs;
use std::sync::Arc;
use std::time::Duration;

use strata_raft::{MetaCommand, MetaError, Metadata, NodeChange, RaftNode, TopicAssignment};
use strata_record::{Timestamp, TopicName};
use tokio_util::sync::CancellationToken;

use crate::error::{BrokerError, Result};
use crate::partition::Partition;
use crate::topic_config::TopicConfig;
use crate::topics::{MAX_PARTITIONS, Topic, TopicMeta, Topics};

/// How long an admin change waits for the controller and for this node to apply it.
pub(crate) const ADMIN_TIMEOUT: Duration = Duration::from_secs(15);

/// How long a node change waits for a controller leader: removing the leader's node itself
/// needs an election among the rest, which in a 4-node cluster with one node down must be
/// unanimous.
const NODE_CHANGE_TIMEOUT: Duration = Duration::from_secs(30);

/// How often partition leaders compare their group's voters with the metadata's replicas.
const REPLICA_SET_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct Cluster {
    node: RaftNode,
    topics: Arc<Topics>,
}

pub(crate) fn meta_error(err: MetaError) -> BrokerError {
    match err {
        MetaError::TopicExists(name) => BrokerError::TopicExists(name),
        MetaError::UnknownTopic(name) => BrokerError::UnknownTopic(name),
        MetaError::UnknownGroup(name) => BrokerError::UnknownGroup(name),
        MetaError::Invalid(reason) => BrokerError::InvalidArgument(reason),
    }
}

pub(crate) fn replication(err: strata_raft::ReplicaError) -> BrokerError {
    BrokerError::Replication(err.to_string())
}

/// Directory names of a partition replica: the group id keeps a recreated topic's replicas
/// apart from an old one's.
fn replica_dir_name(partition: usize, group: u64) -> String {
    format!("{partition}.g{group}")
}

impl Cluster {
    /// Starts the controller group and the reconciler.
    pub async fn start(
        config: &crate::BrokerConfig,
        topics: Arc<Topics>,
        shutdown: CancellationToken,
        tasks: &tokio_util::task::TaskTracker,
    ) -> Result<Arc<Cluster>> {
        let node = RaftNode::start(
            config.node_id,
            &config.data_dir,
            &config.peers,
            config.controller_snapshot_every,
        )
        .await
        .map_err(replication)?;
        let cluster = Arc::new(Cluster { node, topics });
        tasks.spawn(cluster.clone().reconcile_loop(shutdown.clone()));
        tasks.spawn(cluster.clone().replica_set_loop(shutdown));
        Ok(cluster)
    }

    pub fn node(&self) -> &RaftNode {
        &self.node
    }

    pub fn metadata(&self) -> Arc<Metadata> {
        self.node.current_metadata()
    }

    async fn reconcile_loop(self: Arc<Self>, shutdown: CancellationToken) {
        let mut changes = self.node.metadata();
        loop {
            let metadata = changes.borrow_and_update().clone();
            self.reconcile(&metadata).await;
            tokio::select! {
                _ = shutdown.cancelled() => return,
                changed = changes.changed() => if changed.is_err() { return },
            }
        }
    }

    /// Every second, in each partition this node leads: makes the group's voters the
    /// metadata's replicas (they change when a node is added or removed). Groups needing a
    /// change are changed concurrently; a newcomer's catch-up can take a while.
    async fn replica_set_loop(self: Arc<Self>, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(REPLICA_SET_EVERY);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let metadata = self.metadata();
            let mut changes = Vec::new();
            for topic in self.topics.all() {
                let Some(assignment) = metadata.topics.get(topic.name.as_str()) else { continue };
                for (partition, wanted) in topic.partitions.iter().zip(&assignment.partitions) {
                    let Some(replica) = partition.replica().cloned() else { continue };
                    let mut voters = replica.voter_ids();
                    voters.sort_unstable();
                    let mut target = wanted.replicas.clone();
                    target.sort_unstable();
                    if !replica.is_leader() || voters == target {
                        continue;
                    }
                    let (topic, id, nodes) = (topic.name.clone(), partition.id(), &metadata.nodes);
                    changes.push(async move {
                        match replica.change_replicas(&wanted.replicas, nodes).await {
                            Ok(_) => tracing::info!(
                                topic = %topic, partition = id, from = ?voters, to = ?target,
                                "partition replicas changed"
                            ),
                            Err(err) => tracing::warn!(
                                topic = %topic, partition = id, error = %err,
                                "changing partition replicas; will retry"
                            ),
                        }
                    });
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = futures::future::join_all(changes) => {}
            }
        }
    }

    /// Adds or removes a node through the controller, then waits until this node's metadata
    /// shows it. Returns the cluster's node ids.
    pub async fn change_nodes(&self, change: NodeChange) -> Result<Vec<u64>> {
        self.node
            .change_nodes(change.clone(), NODE_CHANGE_TIMEOUT)
            .await
            .map_err(replication)?
            .map_err(meta_error)?;
        let mut applied = self.node.metadata();
        let shown = tokio::time::timeout(ADMIN_TIMEOUT, async {
            applied
                .wait_for(|metadata| match &change {
                    NodeChange::Add { id, .. } => metadata.nodes.contains_key(id),
                    NodeChange::Remove { id } => !metadata.nodes.contains_key(id),
                })
                .await
                .map(|m| m.nodes.keys().copied().collect::<Vec<_>>())
        })
        .await;
        match shown {
            Ok(Ok(nodes)) => Ok(nodes),
            _ => Err(BrokerError::Replication(format!(
                "the change was made but this node did not see it within {ADMIN_TIMEOUT:?}"
            ))),
        }
    }

    /// Brings the local topics in line with the metadata: opens new ones, applies config
    /// changes, stops and discards deleted ones.
    async fn reconcile(&self, metadata: &Metadata) {
        for topic in self.topics.all() {
            let wanted = metadata.topics.get(topic.name.as_str());
            let same = wanted.is_some_and(|w| {
                w.partitions
                    .iter()
                    .zip(&topic.partitions)
                    .all(|(a, p)| p.replica().is_some_and(|r| r.group() == a.group_id))
            });
            if !same {
                self.remove(topic.name.as_str()).await;
            }
        }
        for (name, assignment) in &metadata.topics {
            match self.topics.get(name) {
                Ok(topic) => {
                    let meta = topic_meta(name, assignment);
                    if topic.meta().config != meta.config
                        && let Err(err) = self.topics.set_meta(&topic, meta)
                    {
                        tracing::error!(topic = %name, error = %err, "applying topic config");
                    }
                }
                Err(_) => {
                    if let Err(err) = self.open_topic(name, assignment).await {
                        tracing::error!(topic = %name, error = %err, "opening topic replicas");
                    }
                }
            }
        }
        // Directories of topics the metadata no longer has (deleted while this node was down).
        if let Ok(entries) = fs::read_dir(self.topics.root()) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if !metadata.topics.contains_key(&name) {
                    tracing::info!(topic = %name, "discarding replicas of a deleted topic");
                    self.topics.discard(&entry.path());
                }
            }
        }
    }

    async fn open_topic(&self, name: &str, assignment: &TopicAssignment) -> Result<()> {
        let topic_name = TopicName::new(name)?;
        let meta = topic_meta(name, assignment);
        let dir = self.topics.root().join(name);
        fs::create_dir_all(&dir).map_err(BrokerError::io(format!("creating {}", dir.display())))?;
        // Replica dirs of an older topic of the same name (deleted while this node was down).
        let wanted: Vec<String> = assignment
            .partitions
            .iter()
            .enumerate()
            .flat_map(|(p, a)| {
                let base = replica_dir_name(p, a.group_id);
                [format!("{base}.raft"), base]
            })
            .collect();
        if let Ok(entries) = fs::read_dir(&dir) {
            for entry in entries.flatten() {
                if !wanted.contains(&entry.file_name().to_string_lossy().into_owned()) {
                    let _ = fs::remove_dir_all(entry.path());
                }
            }
        }
        let mut partitions = Vec::with_capacity(assignment.partitions.len());
        for (p, a) in assignment.partitions.iter().enumerate() {
            let base = replica_dir_name(p, a.group_id);
            let config = meta.config.log_config(self.topics.durability());
            let partition = Partition::open_replicated(
                topic_name.clone(),
                p as u32,
                &dir.join(&base),
                &dir.join(format!("{base}.raft")),
                config,
                &self.node,
                a,
            )
            .await?;
            partitions.push(Arc::new(partition));
        }
        self.topics.install(meta, partitions)?;
        tracing::info!(
            topic = name,
            partitions = assignment.partitions.len(),
            "topic replicas open"
        );
        Ok(())
    }

    async fn remove(&self, name: &str) {
        let Some(topic) = self.topics.uninstall(name) else { return };
        for partition in &topic.partitions {
            if let Some(replica) = partition.replica() {
                replica.shutdown().await;
            }
        }
        tracing::info!(topic = name, "topic replicas stopped");
        drop(topic);
        self.topics.discard(&self.topics.root().join(name));
    }

    /// Stops every Raft group on this node (at shutdown, before the logs are closed).
    pub async fn shutdown(&self) {
        for topic in self.topics.all() {
            for partition in &topic.partitions {
                if let Some(replica) = partition.replica() {
                    replica.shutdown().await;
                }
            }
        }
        self.node.shutdown().await;
    }

    async fn propose(&self, command: MetaCommand) -> Result<()> {
        self.node.propose(command, ADMIN_TIMEOUT).await.map_err(replication)?.map_err(meta_error)
    }

    /// Waits, bounded, until `done` holds for this node's topics.
    async fn wait_for(&self, what: &str, done: impl Fn(&Topics) -> bool) -> Result<()> {
        let deadline = tokio::time::Instant::now() + ADMIN_TIMEOUT;
        while !done(&self.topics) {
            if tokio::time::Instant::now() >= deadline {
                return Err(BrokerError::Replication(format!(
                    "the change was accepted but {what} did not happen within {ADMIN_TIMEOUT:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Creates a topic through the controller and waits until this node has opened it and
    /// every partition has a leader.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        replication_factor: u32,
        changes: &HashMap<String, String>,
    ) -> Result<Arc<Topic>> {
        TopicName::new(name).map_err(|e| BrokerError::InvalidArgument(e.to_string()))?;
        let partitions = partitions.max(1);
        if partitions > MAX_PARTITIONS {
            return Err(BrokerError::InvalidArgument(format!(
                "partitions must be in [1, {MAX_PARTITIONS}], not {partitions}"
            )));
        }
        // Right after start the controller may not have told this node who the members are.
        let mut applied = self.node.metadata();
        let known = tokio::time::timeout(ADMIN_TIMEOUT, async {
            applied.wait_for(|metadata| !metadata.nodes.is_empty()).await.is_ok()
        })
        .await;
        if known != Ok(true) {
            return Err(BrokerError::Replication(
                "the cluster is still forming (no controller membership applied yet); retry".into(),
            ));
        }
        let nodes = self.metadata().nodes.len() as u32;
        let replication_factor = if replication_factor == 0 { nodes } else { replication_factor };
        if replication_factor != nodes {
            return Err(BrokerError::InvalidArgument(format!(
                "replication factor must equal the number of nodes ({nodes}): every node holds every partition in this version"
            )));
        }
        let config = TopicConfig::default().with_changes(changes)?;
        self.propose(MetaCommand::CreateTopic {
            name: name.to_owned(),
            partitions,
            replication_factor,
            config: config.to_map().into_iter().collect(),
            created_ms: Timestamp::now().0,
        })
        .await?;
        self.wait_for("opening its partitions", |t| {
            t.get(name).is_ok_and(|topic| {
                topic.partitions.iter().all(|p| p.replica().is_some_and(|r| r.leader().is_some()))
            })
        })
        .await?;
        self.topics.get(name)
    }

    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        self.propose(MetaCommand::DeleteTopic { name: name.to_owned() }).await?;
        self.wait_for("removing it", |t| t.get(name).is_err()).await
    }

    pub async fn alter_topic(
        &self,
        name: &str,
        changes: &HashMap<String, String>,
    ) -> Result<Arc<Topic>> {
        let topic = self.topics.get(name)?;
        let config = topic.meta().config.with_changes(changes)?;
        let wanted = config.clone();
        self.propose(MetaCommand::AlterTopic {
            name: name.to_owned(),
            config: config.to_map().into_iter().collect(),
        })
        .await?;
        self.wait_for("applying it", |t| {
            t.get(name).is_ok_and(|topic| topic.meta().config == wanted)
        })
        .await?;
        self.topics.get(name)
    }

    /// Replica node ids of a partition, from the metadata.
    pub fn replicas(&self, topic: &str, partition: u32) -> Vec<u64> {
        self.metadata()
            .topics
            .get(topic)
            .and_then(|t| t.partitions.get(partition as usize))
            .map(|a| a.replicas.clone())
            .unwrap_or_default()
    }
}

fn topic_meta(name: &str, assignment: &TopicAssignment) -> TopicMeta {
    let changes: HashMap<String, String> =
        assignment.config.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let config = TopicConfig::default().with_changes(&changes).unwrap_or_default();
    TopicMeta {
        name: name.to_owned(),
        partitions: assignment.partitions.len() as u32,
        replication_factor: assignment.replication_factor,
        config,
        created_ms: assignment.created_ms,
    }
}

/// Whether the node at `address` answers a metadata request within half a second.
pub async fn probe(address: &str) -> bool {
    use strata_proto::broker_client::BrokerClient;
    let check = async {
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{address}")).ok()?;
        let channel = endpoint.connect().await.ok()?;
        let request = strata_proto::MetadataRequest { topics: vec!["__probe__".into()] };
        // An unknown-topic answer is an answer: the node is up.
        let _ = BrokerClient::new(channel).metadata(request).await;
        Some(())
    };
    matches!(tokio::time::timeout(Duration::from_millis(500), check).await, Ok(Some(())))
}
