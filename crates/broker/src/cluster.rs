//! A node of a cluster: the controller's metadata drives which topics and partition replicas
//! this node opens (the reconciler), and topic changes go through the controller.
//!
//! A node opens the replicas assigned to it; its `Topics` lists every topic, with the
//! partitions it holds. For the others it knows the replicas and, from the controller, the
//! leader its leader last reported (see docs/decisions.md, "Replication").

use std::collections::HashMap;
use std::fs;
use std::sync::Arc;
use std::time::Duration;

use strata_raft::{
    GroupLeader, MetaCommand, MetaError, Metadata, NodeChange, RaftNode, TopicAssignment,
};
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

/// Replicas per partition when a topic is created without a replication factor (Kafka's
/// usual production setting), or every node in a smaller cluster.
const DEFAULT_REPLICATION_FACTOR: u32 = 3;

/// How often partition leaders compare their group's voters with the metadata's replicas.
const REPLICA_SET_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct Cluster {
    node: RaftNode,
    topics: Arc<Topics>,
    /// Held by a reconcile pass (they run on metadata changes and every second).
    reconciling: tokio::sync::Mutex<()>,
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
        let cluster = Arc::new(Cluster { node, topics, reconciling: Default::default() });
        tasks.spawn(cluster.clone().reconcile_loop(shutdown.clone()));
        tasks.spawn(cluster.clone().replica_set_loop(shutdown.clone()));
        tasks.spawn(cluster.clone().upkeep_loop(shutdown));
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
            changes.borrow_and_update();
            self.reconcile().await;
            tokio::select! {
                _ = shutdown.cancelled() => return,
                changed = changes.changed() => if changed.is_err() { return },
            }
        }
    }

    /// Every second: tells the controller of the partitions this node leads whose recorded
    /// leader is not up to date (one command for all of them), so nodes without a replica can
    /// send clients to the leader; and, while the replicas open here differ from the
    /// assigned ones, reconciles again (a replica moved away closes once it may; an open that
    /// failed is retried).
    async fn upkeep_loop(self: Arc<Self>, shutdown: CancellationToken) {
        let mut ticker = every(REPLICA_SET_EVERY);
        while next_tick(&mut ticker, &shutdown).await {
            let metadata = self.metadata();
            let me = self.node.id();
            let mut leaders = Vec::new();
            for topic in self.topics.all() {
                for partition in &topic.partitions {
                    let Some(replica) = partition.replica() else { continue };
                    let Some((term, voters)) = replica.leadership() else { continue };
                    let report = GroupLeader { node: me, term, voters };
                    if metadata.leaders.get(&replica.group()) != Some(&report) {
                        leaders.push((replica.group(), report));
                    }
                }
            }
            if !leaders.is_empty() {
                let report = self.node.propose(MetaCommand::SetLeaders { leaders }, ADMIN_TIMEOUT);
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    result = report => if let Err(err) = result {
                        tracing::debug!(error = %err, "reporting partition leaders; will retry");
                    },
                }
            }
            if self.out_of_line(&metadata) {
                self.reconcile().await;
            }
        }
    }

    /// Whether this node's replicas differ from what `metadata` assigns it: a replica moved
    /// away that is still open (it closes once it may), or an assigned one a failed pass did
    /// not open.
    fn out_of_line(&self, metadata: &Metadata) -> bool {
        metadata.topics.iter().any(|(name, assignment)| {
            let Ok(topic) = self.topics.get(name) else { return true };
            let held: Vec<u32> = topic.partitions.iter().map(|p| p.id()).collect();
            held != self.hosted(assignment)
        })
    }

    /// Every second, in each partition this node leads: makes the group's voters the
    /// metadata's replicas (they change when a node is added or removed). Groups needing a
    /// change are changed concurrently; a newcomer's catch-up can take a while.
    async fn replica_set_loop(self: Arc<Self>, shutdown: CancellationToken) {
        let mut ticker = every(REPLICA_SET_EVERY);
        while next_tick(&mut ticker, &shutdown).await {
            let metadata = self.metadata();
            let mut changes = Vec::new();
            for topic in self.topics.all() {
                let Some(assignment) = metadata.topics.get(topic.name.as_str()) else { continue };
                for partition in &topic.partitions {
                    let Some(wanted) = assignment.partitions.get(partition.id() as usize) else {
                        continue;
                    };
                    let Some(replica) = partition.replica().cloned() else { continue };
                    if !replica.is_leader() {
                        continue;
                    }
                    let mut voters = replica.voter_ids();
                    voters.sort_unstable();
                    let mut target = wanted.replicas.clone();
                    target.sort_unstable();
                    if voters == target {
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

    /// Brings the local topics in line with the metadata: opens new ones and the replicas
    /// newly assigned to this node, applies config changes, stops replicas moved away (see
    /// [`Cluster::may_close`]) and discards deleted topics. One pass at a time.
    async fn reconcile(&self) {
        let _one_at_a_time = self.reconciling.lock().await;
        // Read under the lock: a pass never applies metadata older than the one before it.
        let metadata = &*self.metadata();
        for topic in self.topics.all() {
            let wanted = metadata.topics.get(topic.name.as_str());
            // A recreated topic of the same name has new groups: start over.
            let same = wanted.is_some_and(|w| {
                let meta = topic.meta();
                meta.created_ms == w.created_ms
                    && meta.partitions as usize == w.partitions.len()
                    && topic.partitions.iter().all(|p| {
                        let group = w.partitions.get(p.id() as usize).map(|a| a.group_id);
                        p.replica().is_some_and(|r| Some(r.group()) == group)
                    })
            });
            if !same {
                self.remove(topic.name.as_str()).await;
            }
        }
        for (name, assignment) in &metadata.topics {
            let result = match self.topics.get(name) {
                Ok(topic) => self.update_topic(&topic, assignment).await,
                Err(_) => self.open_topic(name, assignment).await,
            };
            if let Err(err) = result {
                tracing::error!(topic = %name, error = %err, "opening topic replicas");
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

    /// Ids of the partitions of `assignment` this node holds a replica of.
    fn hosted(&self, assignment: &TopicAssignment) -> Vec<u32> {
        let me = self.node.id();
        (0..assignment.partitions.len() as u32)
            .filter(|&p| assignment.partitions[p as usize].replicas.contains(&me))
            .collect()
    }

    async fn open_partition(
        &self,
        topic: &TopicName,
        meta: &TopicMeta,
        id: u32,
        assignment: &TopicAssignment,
    ) -> Result<Arc<Partition>> {
        let a = &assignment.partitions[id as usize];
        let dir = self.topics.root().join(topic.as_str());
        let base = replica_dir_name(id as usize, a.group_id);
        let config = meta.config.log_config(self.topics.durability());
        let partition = Partition::open_replicated(
            topic.clone(),
            id,
            &dir.join(&base),
            &dir.join(format!("{base}.raft")),
            config,
            &self.node,
            a,
        )
        .await?;
        Ok(Arc::new(partition))
    }

    async fn open_topic(&self, name: &str, assignment: &TopicAssignment) -> Result<()> {
        let topic_name = TopicName::new(name)?;
        let meta = topic_meta(name, assignment);
        let dir = self.topics.root().join(name);
        fs::create_dir_all(&dir).map_err(BrokerError::io(format!("creating {}", dir.display())))?;
        let hosted = self.hosted(assignment);
        // Replica dirs of an older topic of the same name (deleted while this node was down),
        // and of replicas moved away while it was down.
        let wanted: Vec<String> = hosted
            .iter()
            .flat_map(|&p| {
                let base = replica_dir_name(p as usize, assignment.partitions[p as usize].group_id);
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
        let mut partitions = Vec::with_capacity(hosted.len());
        for &p in &hosted {
            match self.open_partition(&topic_name, &meta, p, assignment).await {
                Ok(partition) => partitions.push(partition),
                Err(err) => {
                    shut_down(&partitions).await;
                    return Err(err);
                }
            }
        }
        self.topics.install(meta, partitions)?;
        tracing::info!(topic = name, partitions = hosted.len(), "topic replicas open");
        Ok(())
    }

    /// An installed topic: config changes, replicas assigned to or moved away from this node.
    async fn update_topic(&self, topic: &Arc<Topic>, assignment: &TopicAssignment) -> Result<()> {
        let meta = topic_meta(topic.name.as_str(), assignment);
        let current = topic.meta();
        if current.config != meta.config || current.replication_factor != meta.replication_factor {
            self.topics.set_meta(topic, meta.clone())?;
        }
        let hosted = self.hosted(assignment);
        let mut kept = Vec::new();
        let mut closing = Vec::new();
        for p in &topic.partitions {
            if hosted.binary_search(&p.id()).is_ok() || !self.may_close(p) {
                kept.push(p.clone());
            } else {
                closing.push(p.clone());
            }
        }
        let mut opened = Vec::new();
        for &id in &hosted {
            if topic.partition(id).is_err() {
                match self.open_partition(&topic.name, &meta, id, assignment).await {
                    Ok(p) => opened.push(p),
                    Err(err) => {
                        shut_down(&opened).await;
                        return Err(err);
                    }
                }
            }
        }
        if opened.is_empty() && closing.is_empty() {
            return Ok(());
        }
        for p in &opened {
            tracing::info!(topic = %topic.name, partition = p.id(), "replica assigned here: open");
        }
        kept.extend(opened);
        self.topics.install(meta, kept)?;
        for p in closing {
            tracing::info!(topic = %topic.name, partition = p.id(), "replica moved away: closed");
            let group = p.replica().map(|r| r.group());
            if let Some(replica) = p.replica() {
                replica.shutdown().await;
            }
            retire(&p).await;
            let dir = self.topics.root().join(topic.name.as_str());
            let base = replica_dir_name(p.id() as usize, group.unwrap_or_default());
            self.topics.discard(&dir.join(format!("{base}.raft")));
            self.topics.discard(&dir.join(base));
        }
        Ok(())
    }

    /// Whether a replica no longer assigned here can stop and delete its data: never while it
    /// leads (its leader first moves the group away from it, then steps down), and only once
    /// the group no longer needs it: it is not a voter here, or the leader reported an
    /// applied (committed) membership without it.
    fn may_close(&self, partition: &Partition) -> bool {
        let Some(replica) = partition.replica() else { return true };
        let me = self.node.id();
        if replica.is_leader() {
            return false;
        }
        if !replica.voter_ids().contains(&me) {
            return true;
        }
        // Still a voter as far as this replica knows (a removed replica may never hear of the
        // change that removed it): the leader's report of its applied membership decides.
        let metadata = self.metadata();
        metadata.leaders.get(&replica.group()).is_some_and(|l| !l.voters.contains(&me))
    }

    async fn remove(&self, name: &str) {
        let Some(topic) = self.topics.uninstall(name) else { return };
        for partition in &topic.partitions {
            if let Some(replica) = partition.replica() {
                replica.shutdown().await;
            }
            // As in `Topics::delete`: nothing more is written at the path given up.
            retire(partition).await;
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

    /// Waits, at most `limit`, until `done` holds for this node's topics.
    async fn wait_for(
        &self,
        what: &str,
        limit: Duration,
        done: impl Fn(&Topics) -> bool,
    ) -> Result<()> {
        let deadline = tokio::time::Instant::now() + limit;
        while !done(&self.topics) {
            if tokio::time::Instant::now() >= deadline {
                return Err(BrokerError::Replication(format!(
                    "the change was accepted but {what} did not happen within {limit:?}"
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
        let replication_factor = if replication_factor == 0 {
            nodes.min(DEFAULT_REPLICATION_FACTOR)
        } else {
            replication_factor
        };
        if replication_factor > nodes {
            return Err(BrokerError::InvalidArgument(format!(
                "replication factor {replication_factor} is more than the {nodes} nodes of the cluster"
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
        // Every partition has a leader that the cluster knows of, here or on its replicas. Each
        // group holds its own election: 1,000 of them at RF 3 took 4-15 s on 2 cores.
        let limit = ADMIN_TIMEOUT + Duration::from_millis(20) * partitions;
        self.wait_for("its partitions to elect leaders", limit, |t| {
            let metadata = self.metadata();
            t.get(name).is_ok_and(|topic| {
                let Some(assignment) = metadata.topics.get(name) else { return false };
                assignment.partitions.iter().enumerate().all(|(id, a)| {
                    match topic.partition(id as u32) {
                        Ok(p) => p.replica().is_some_and(|r| r.leader().is_some()),
                        Err(_) => metadata.leaders.contains_key(&a.group_id),
                    }
                })
            })
        })
        .await?;
        self.topics.get(name)
    }

    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        self.propose(MetaCommand::DeleteTopic { name: name.to_owned() }).await?;
        self.wait_for("removing it", ADMIN_TIMEOUT, |t| t.get(name).is_err()).await
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
        self.wait_for("applying it", ADMIN_TIMEOUT, |t| {
            t.get(name).is_ok_and(|topic| topic.meta().config == wanted)
        })
        .await?;
        self.topics.get(name)
    }

    /// The leader of a partition as its leader last reported it to the controller, with its
    /// address (for partitions this node holds no replica of).
    pub fn recorded_leader(&self, topic: &str, partition: u32) -> Option<(u64, String)> {
        let metadata = self.metadata();
        let group = metadata.topics.get(topic)?.partitions.get(partition as usize)?.group_id;
        let leader = metadata.leaders.get(&group)?.node;
        Some((leader, metadata.nodes.get(&leader)?.clone()))
    }

    /// Addresses of a partition's replicas, its recorded leader first.
    pub fn replica_addresses(&self, topic: &str, partition: u32) -> Vec<String> {
        let metadata = self.metadata();
        let Some(assignment) =
            metadata.topics.get(topic).and_then(|t| t.partitions.get(partition as usize))
        else {
            return Vec::new();
        };
        let leader = metadata.leaders.get(&assignment.group_id).map(|l| l.node);
        let mut replicas = assignment.replicas.clone();
        replicas.sort_by_key(|id| Some(*id) != leader);
        replicas.iter().filter_map(|id| metadata.nodes.get(id).cloned()).collect()
    }

    /// Moves a partition's replicas to `replicas` (the first is the preferred leader): the
    /// controller records them, the new replicas open and catch up, the leader changes its
    /// group, and the old replicas close. Answers once the move is recorded.
    pub async fn move_replicas(
        &self,
        topic: &str,
        partition: u32,
        replicas: Vec<u64>,
    ) -> Result<()> {
        self.propose(MetaCommand::MoveReplicas { topic: topic.to_owned(), partition, replicas })
            .await
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

/// A ticker that skips the ticks missed while a pass ran late.
fn every(period: Duration) -> tokio::time::Interval {
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker
}

/// Waits for the next tick; false once the node shuts down.
async fn next_tick(ticker: &mut tokio::time::Interval, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => false,
        _ = ticker.tick() => true,
    }
}

/// Stops the Raft groups of replicas opened in a pass that failed, so that they release
/// their logs and the next pass can open them again.
async fn shut_down(partitions: &[Arc<Partition>]) {
    for partition in partitions {
        if let Some(replica) = partition.replica() {
            replica.shutdown().await;
        }
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

/// [`strata_storage::Log::retire`] off the async runtime: it waits for an fsync or a roll in
/// progress (a replica's flush may outlive its shutdown).
async fn retire(partition: &Arc<Partition>) {
    let partition = partition.clone();
    let _ = tokio::task::spawn_blocking(move || partition.log().retire()).await;
}
