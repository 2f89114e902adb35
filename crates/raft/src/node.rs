//! One node's replication runtime: the controller group, the partition groups it hosts, the
//! shared peer channels and the router that serves them.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use openraft::error::{ClientWriteError, InitializeError, RaftError};
use openraft::{BasicNode, Config, Raft, ServerState, SnapshotPolicy};
use strata_storage::{Durability, Log, LogConfig};
use tokio::sync::watch;

use crate::controller::{
    ControllerSm, MetaCommand, MetaError, MetaResult, Metadata, PartitionAssignment,
};
use crate::membership::{NodeChange, change_voters, voters};
use crate::network::{GroupHandle, GroupNetwork, Peers, Router};
use crate::partition_sm::{PartitionSm, SequenceCheck};
use crate::store::SegmentStore;
use crate::types::{Appended, Batch, CONTROLLER_GROUP, ControllerTc, GroupId, NodeId, PartitionTc};
use crate::{ReplicaError, Result};

/// Raft timing of the controller: heartbeats every 150 ms, a leader silent for 1–2 s is
/// replaced (one group: its heartbeats cost nothing).
fn controller_config(snapshot_every: u64) -> Result<Arc<Config>> {
    let config = Config {
        cluster_name: "strata-controller".to_owned(),
        heartbeat_interval: 150,
        election_timeout_min: 1000,
        election_timeout_max: 2000,
        // Offset commits are controller writes: compact the log every few thousand, keeping
        // a tail for followers that lag a little (further behind, they get the snapshot).
        snapshot_policy: SnapshotPolicy::LogsSinceLast(snapshot_every.max(1)),
        max_in_snapshot_log_to_keep: (snapshot_every / 5).min(1000),
        ..common_config()
    };
    Ok(Arc::new(config.validate().map_err(|e| ReplicaError::Invalid(e.to_string()))?))
}

/// Raft timing of a partition group: no heartbeats and no elections on the group's own
/// timers (1,000 idle groups would cost a core). The node's failure detector
/// (`liveness.rs`) starts elections when a leader's node stops answering, and sends one round
/// of heartbeats when a peer answers again, so a stale leader steps down. Followers learn the
/// commit point from the leader's replication stream, and refuse votes for 2 s after hearing
/// from a leader (the lease). Nor do they tick: with heartbeats and elections off, openraft's
/// tick (every 1.5 s per group: 667 messages a second to handle on a node with 1,000 replicas) would
/// only check whether a leader that removed itself may step down, and `change_voters` turns
/// it on for the one group where that happens.
fn partition_config(group: GroupId) -> Result<Arc<Config>> {
    let config = Config {
        // Only retention purges a partition's log, explicitly, up to its own snapshot: a
        // snapshot built for any other reason must not delete data.
        max_in_snapshot_log_to_keep: u64::MAX,
        cluster_name: format!("strata-partition-{group}"),
        heartbeat_interval: 1000,
        election_timeout_min: 1500,
        election_timeout_max: 2000,
        enable_heartbeat: false,
        enable_elect: false,
        enable_tick: false,
        ..common_config()
    };
    Ok(Arc::new(config.validate().map_err(|e| ReplicaError::Invalid(e.to_string()))?))
}

fn common_config() -> Config {
    Config {
        install_snapshot_timeout: 2000,
        max_payload_entries: 256,
        // Snapshots are built only when retention purges the log, never by count.
        snapshot_policy: SnapshotPolicy::Never,
        max_in_snapshot_log_to_keep: 0,
        ..Config::default()
    }
}

/// Log settings of a replicated log: the store fsyncs once per append call (group commit), so
/// the log itself never does.
pub fn replicated_log_config(mut config: LogConfig) -> LogConfig {
    config.durability = Durability::Never;
    config
}

/// The replication side of a node.
#[derive(Clone)]
pub struct RaftNode {
    id: NodeId,
    peers: Arc<Peers>,
    router: Arc<Router>,
    controller: Raft<ControllerTc>,
    controller_sm: ControllerSm,
    /// Stops the failure detector.
    stop: tokio_util::sync::CancellationToken,
}

impl std::fmt::Debug for RaftNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftNode").field("id", &self.id).finish()
    }
}

impl RaftNode {
    /// Opens (or creates) the controller group under `<data>/controller` and, on the node with
    /// the lowest id of a new cluster, initializes it with every node of `members` as a voter.
    /// The controller snapshots its state (and purges its log) every `snapshot_every` entries.
    pub async fn start(
        id: NodeId,
        data_dir: &Path,
        members: &BTreeMap<NodeId, String>,
        snapshot_every: u64,
    ) -> Result<RaftNode> {
        let peers = Peers::new();
        let router = Router::new();
        let dir = data_dir.join("controller");
        let log = Arc::new(
            Log::open(dir.join("log"), replicated_log_config(LogConfig::default()))
                .map_err(|e| ReplicaError::Storage(e.to_string()))?,
        );
        let store = SegmentStore::<ControllerTc>::open(&dir.join("raft"), log)
            .map_err(|e| ReplicaError::Storage(e.to_string()))?;
        let controller_sm = ControllerSm::open(store.clone())
            .map_err(|e| ReplicaError::Storage(format!("reading the controller snapshot: {e}")))?;
        let controller = Raft::new(
            id,
            controller_config(snapshot_every)?,
            GroupNetwork::new(peers.clone(), CONTROLLER_GROUP),
            store,
            controller_sm.clone(),
        )
        .await
        .map_err(|e| ReplicaError::Storage(e.to_string()))?;
        router.register(CONTROLLER_GROUP, GroupHandle::Controller(controller.clone()));
        if members.keys().next() == Some(&id) {
            let nodes: BTreeMap<NodeId, BasicNode> =
                members.iter().map(|(id, addr)| (*id, BasicNode::new(addr))).collect();
            initialize(&controller, nodes).await?;
        }
        let stop = tokio_util::sync::CancellationToken::new();
        tokio::spawn(crate::liveness::run(
            id,
            // A connection of its own per peer: a ping queued behind replication traffic on
            // the shared one could miss its deadline and make a busy peer look dead.
            Peers::new(),
            router.clone(),
            controller_sm.clone(),
            stop.clone(),
        ));
        Ok(RaftNode { id, peers, router, controller, controller_sm, stop })
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    pub fn router(&self) -> &Arc<Router> {
        &self.router
    }

    /// Cluster metadata as this node last applied it, and its changes.
    pub fn metadata(&self) -> watch::Receiver<Arc<Metadata>> {
        self.controller_sm.subscribe()
    }

    /// Cluster metadata as this node last applied it.
    pub fn current_metadata(&self) -> Arc<Metadata> {
        self.controller_sm.metadata()
    }

    pub fn controller_leader(&self) -> Option<NodeId> {
        self.controller.metrics().borrow().current_leader
    }

    pub fn controller_metrics(&self) -> openraft::RaftMetrics<NodeId, BasicNode> {
        self.controller.metrics().borrow().clone()
    }

    /// Proposes a metadata command through the controller leader (forwarded there if this node
    /// is not it), retrying for up to `timeout` while there is no leader.
    pub async fn propose(&self, command: MetaCommand, timeout: Duration) -> Result<MetaResult> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut last_error = String::from("no controller leader");
        loop {
            match self.controller.client_write(command.clone()).await {
                Ok(response) => return Ok(response.data),
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
                    if let Some(node) = forward.leader_node {
                        match self.forward(&node.addr, &command).await {
                            Ok(result) => return Ok(result),
                            Err(e) => last_error = e,
                        }
                    }
                }
                Err(e) => last_error = e.to_string(),
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ReplicaError::Unavailable(format!(
                    "the controller did not accept the change within {timeout:?}: {last_error}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Adds or removes a cluster node (a controller voter), through the controller leader
    /// (forwarded there if this node is not it). Every partition's replicas follow the
    /// change: see `Metadata::set_nodes` and [`PartitionReplica::change_replicas`].
    pub async fn change_nodes(&self, change: NodeChange, timeout: Duration) -> Result<MetaResult> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match self.change_nodes_once(change.clone()).await {
                // No leader, or it just died: wait for the next one.
                Err(e @ (ReplicaError::Unavailable(_) | ReplicaError::NotLeader { .. }))
                    if tokio::time::Instant::now() < deadline =>
                {
                    tracing::debug!(error = %e, "changing nodes: retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                other => return other,
            }
        }
    }

    async fn change_nodes_once(&self, change: NodeChange) -> Result<MetaResult> {
        let (leader, addr) = {
            let metrics = self.controller.metrics();
            let metrics = metrics.borrow();
            let leader = metrics.current_leader;
            let addr = leader.and_then(|l| {
                metrics.membership_config.membership().get_node(&l).map(|n| n.addr.clone())
            });
            (leader, addr)
        };
        if leader == Some(self.id) {
            return change_nodes_here(&self.controller, change).await;
        }
        let addr = addr.ok_or_else(|| ReplicaError::Unavailable("no controller leader".into()))?;
        self.to_controller_leader(&addr, LeaderCall::ChangeNodes, &change)
            .await
            .map_err(ReplicaError::Unavailable)
    }

    async fn forward(
        &self,
        addr: &str,
        command: &MetaCommand,
    ) -> std::result::Result<MetaResult, String> {
        self.to_controller_leader(addr, LeaderCall::Propose, command).await
    }

    /// Sends `message` to the controller leader at `addr` and decodes what it answered.
    async fn to_controller_leader<T: serde::Serialize>(
        &self,
        addr: &str,
        call: LeaderCall,
        message: &T,
    ) -> std::result::Result<MetaResult, String> {
        let mut client = self.peers.client(addr).map_err(|e| e.to_string())?;
        let payload = postcard::to_stdvec(message).map_err(|e| e.to_string())?;
        let request = strata_proto::internal::RaftRequest {
            group_id: CONTROLLER_GROUP,
            payload: payload.into(),
        };
        let reply = match call {
            LeaderCall::Propose => client.forward_meta(request).await,
            LeaderCall::ChangeNodes => client.change_nodes(request).await,
        }
        .map_err(|s| s.message().to_owned())?;
        postcard::from_bytes(&reply.into_inner().payload).map_err(|e| e.to_string())
    }

    /// Opens the Raft group of one partition replica over `log` (whose Raft files go in
    /// `raft_dir`) and registers it with the router. The group's founder initializes it with
    /// the assignment's replicas; any other replica waits for the leader to add it.
    pub async fn open_partition(
        &self,
        group: GroupId,
        log: Arc<Log>,
        raft_dir: &Path,
        assignment: &PartitionAssignment,
        high_watermark: Arc<watch::Sender<u64>>,
    ) -> Result<PartitionReplica> {
        let store = SegmentStore::<PartitionTc>::open(raft_dir, log)
            .map_err(|e| ReplicaError::Storage(e.to_string()))?;
        let sm = PartitionSm::new(store.clone(), high_watermark)
            .map_err(|e| ReplicaError::Storage(format!("reading the group's snapshot: {e}")))?;
        let raft = Raft::new(
            self.id,
            partition_config(group)?,
            GroupNetwork::new(self.peers.clone(), group),
            store,
            sm.clone(),
        )
        .await
        .map_err(|e| ReplicaError::Storage(e.to_string()))?;
        self.router.register(group, GroupHandle::Partition(raft.clone()));
        // Only at creation: once a leader was ever recorded the group exists, and a founder
        // whose replica was moved away and back (or wiped) must join it, not start another.
        let metadata = self.controller_sm.metadata();
        if assignment.founder == self.id && !metadata.leaders.contains_key(&group) {
            let nodes: BTreeMap<NodeId, BasicNode> = assignment
                .replicas
                .iter()
                .map(|id| {
                    let addr = metadata.nodes.get(id).cloned().unwrap_or_default();
                    (*id, BasicNode::new(addr))
                })
                .collect();
            if let Err(err) = initialize(&raft, nodes).await {
                self.router.unregister(group);
                let _ = raft.shutdown().await;
                return Err(err);
            }
        }
        Ok(PartitionReplica { group, raft, sm, router: self.router.clone() })
    }

    /// Stops the controller group.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        self.router.unregister(CONTROLLER_GROUP);
        let _ = self.controller.shutdown().await;
    }
}

/// What a node asks of the controller leader on another node.
enum LeaderCall {
    /// Propose a metadata command (`ForwardMeta`).
    Propose,
    /// Change the cluster's nodes (`ChangeNodes`).
    ChangeNodes,
}

/// How long a joining node has to catch up with a group's log before it becomes a voter.
const CATCH_UP: Duration = Duration::from_secs(60);

/// [`RaftNode::change_nodes`] on the controller leader.
pub(crate) async fn change_nodes_here(
    controller: &Raft<ControllerTc>,
    change: NodeChange,
) -> Result<MetaResult> {
    let mut target = voters(controller);
    let invalid = |reason: String| Ok(Err(MetaError::Invalid(reason)));
    match change {
        NodeChange::Add { id, addr } => {
            if let Some(node) = target.get(&id) {
                return if node.addr == addr {
                    Ok(Ok(()))
                } else {
                    invalid(format!("node {id} is already a member, at {}", node.addr))
                };
            }
            if let Some((other, _)) = target.iter().find(|(_, n)| n.addr == addr) {
                return invalid(format!("{addr} is node {other}'s address"));
            }
            // The lowest id in `--peers` initializes a new cluster: a newcomer with a lower
            // id than every member would start a cluster of its own at its next start.
            if target.keys().next().is_some_and(|&lowest| id < lowest) {
                return invalid(format!(
                    "node ids must not be below the lowest member's ({}); pick an id above it",
                    target.keys().next().copied().unwrap_or_default()
                ));
            }
            target.insert(id, BasicNode::new(addr));
        }
        NodeChange::Remove { id } => {
            if target.remove(&id).is_none() {
                return invalid(format!("node {id} is not a member of the cluster"));
            }
            if target.is_empty() {
                return invalid(format!("node {id} is the last node of the cluster"));
            }
        }
    }
    change_voters(controller, &target, CATCH_UP).await?;
    Ok(Ok(()))
}

async fn initialize<C>(raft: &Raft<C>, nodes: BTreeMap<NodeId, BasicNode>) -> Result<()>
where
    C: openraft::RaftTypeConfig<NodeId = NodeId, Node = BasicNode>,
{
    match raft.initialize(nodes).await {
        Ok(()) => Ok(()),
        // Already initialized: a restart, or another node got there first.
        Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
        Err(e) => Err(ReplicaError::Unavailable(format!("initializing a raft group: {e}"))),
    }
}

/// One replica of a partition: its Raft group and the state machine that holds the high
/// watermark.
#[derive(Clone)]
pub struct PartitionReplica {
    group: GroupId,
    raft: Raft<PartitionTc>,
    sm: PartitionSm,
    router: Arc<Router>,
}

impl std::fmt::Debug for PartitionReplica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionReplica").field("group", &self.group).finish()
    }
}

impl PartitionReplica {
    pub fn group(&self) -> GroupId {
        self.group
    }

    /// Offset after the last committed record.
    pub fn high_watermark(&self) -> u64 {
        self.sm.high_watermark()
    }

    pub fn leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }

    /// The group's current Raft term on this replica.
    pub fn term(&self) -> u64 {
        self.raft.metrics().borrow().current_term
    }

    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().state == ServerState::Leader
    }

    /// Whether another replica leads the group as far as this one knows (not this one, and
    /// not none): one look at the metrics, for checks on the read path.
    pub fn led_elsewhere(&self) -> bool {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        metrics.state != ServerState::Leader && metrics.current_leader.is_some()
    }

    /// A leader that has applied an entry of its own term, so every entry of earlier terms
    /// is applied too: only then is its producer state complete enough to spot a retry.
    pub fn is_ready_leader(&self) -> bool {
        let metrics = self.raft.metrics().borrow().clone();
        metrics.state == ServerState::Leader
            && metrics.last_applied.is_some_and(|l| l.leader_id.term == metrics.current_term)
    }

    /// Whether an idempotent producer's batch was already applied.
    pub fn check_sequence(&self, producer_id: i64, first_sequence: i32) -> SequenceCheck {
        self.sm.check_sequence(producer_id, first_sequence)
    }

    pub fn metrics(&self) -> openraft::RaftMetrics<NodeId, BasicNode> {
        self.raft.metrics().borrow().clone()
    }

    /// Replicates one batch and answers once a majority holds it and it is applied: where it
    /// landed. Not the leader: [`ReplicaError::NotLeader`] naming the leader if known.
    pub async fn propose(&self, batch: Bytes) -> Result<Appended> {
        self.submit(batch).await?.await
    }

    /// Starts replicating one batch: when this returns the entry is queued behind every batch
    /// submitted before it, and the future it gives answers as [`PartitionReplica::propose`]
    /// does. A caller that orders submissions under its own lock can thus wait for commits
    /// outside it, keeping several batches of one partition in flight.
    pub async fn submit(
        &self,
        batch: Bytes,
    ) -> Result<impl std::future::Future<Output = Result<Appended>> + Send + use<>> {
        let answer = self
            .raft
            .client_write_ff(Batch(batch))
            .await
            .map_err(|e| ReplicaError::Unavailable(e.to_string()))?;
        Ok(async move {
            match answer.await {
                Ok(Ok(response)) => Ok(response.data),
                Ok(Err(ClientWriteError::ForwardToLeader(forward))) => {
                    Err(ReplicaError::NotLeader {
                        leader: forward.leader_id.map(|id| {
                            (id, forward.leader_node.map(|n| n.addr).unwrap_or_default())
                        }),
                    })
                }
                Ok(Err(e)) => Err(ReplicaError::Unavailable(e.to_string())),
                Err(_) => Err(ReplicaError::Unavailable("the partition group stopped".into())),
            }
        })
    }

    /// Deletes this replica's log up to log offset `point` (a segment boundary retention chose,
    /// below the high watermark) the Raft way: a snapshot at the last entry ending there, then
    /// a purge of the entries up to it. Returns whether anything was purged. Each replica
    /// applies retention on its own, as Kafka's do; a follower that needs purged entries gets
    /// the snapshot and continues from it.
    pub async fn apply_retention(&self, point: u64) -> Result<bool> {
        let Some(upto) = self.sm.prepare_retention(point) else { return Ok(false) };
        let unavailable =
            |e: openraft::error::Fatal<NodeId>| ReplicaError::Unavailable(e.to_string());
        self.raft.trigger().snapshot().await.map_err(unavailable)?;
        let built = self
            .raft
            .wait(Some(Duration::from_secs(10)))
            .metrics(|m| m.snapshot >= Some(upto), "retention snapshot")
            .await;
        if built.is_err() {
            return Err(ReplicaError::Unavailable(format!(
                "the snapshot at {upto} for retention was not built within 10 s"
            )));
        }
        self.raft.trigger().purge_log(upto.index).await.map_err(unavailable)?;
        Ok(true)
    }

    /// On the leader: its term and the voters of the group's membership if that membership
    /// is applied (committed), sorted; `None` elsewhere or while a change is in flight.
    pub fn leadership(&self) -> Option<(u64, Vec<NodeId>)> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        if metrics.state != ServerState::Leader {
            return None;
        }
        let change = metrics.membership_config.log_id().map(|l| l.index);
        if metrics.last_applied.map(|l| l.index) < change {
            return None;
        }
        let mut voters: Vec<NodeId> = metrics.membership_config.membership().voter_ids().collect();
        voters.sort_unstable();
        Some((metrics.current_term, voters))
    }

    /// Node ids of the group's voters, as this replica knows them.
    pub fn voter_ids(&self) -> Vec<NodeId> {
        self.raft.metrics().borrow().membership_config.membership().voter_ids().collect()
    }

    /// On the leader: makes `replicas` (with addresses from `nodes`) the group's voters,
    /// newcomers first catching up as learners. Returns whether anything changed;
    /// [`ReplicaError::NotLeader`] elsewhere.
    pub async fn change_replicas(
        &self,
        replicas: &[NodeId],
        nodes: &BTreeMap<NodeId, String>,
    ) -> Result<bool> {
        let mut target = BTreeMap::new();
        for id in replicas {
            let addr = nodes.get(id).ok_or_else(|| {
                ReplicaError::Invalid(format!("replica {id} is not a node of the cluster"))
            })?;
            target.insert(*id, BasicNode::new(addr));
        }
        change_voters(&self.raft, &target, CATCH_UP).await
    }

    /// Asks this replica to stand for election (leadership transfer to it).
    pub async fn elect(&self) -> Result<()> {
        self.raft.trigger().elect().await.map_err(|e| ReplicaError::Unavailable(e.to_string()))
    }

    pub async fn shutdown(&self) {
        self.router.unregister(self.group);
        let _ = self.raft.shutdown().await;
    }
}
