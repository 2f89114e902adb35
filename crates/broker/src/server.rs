//! Starting, serving and stopping a broker.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use strata_proto::admin_server::AdminServer;
use strata_proto::{BrokerInfo, MetadataResponse, PartitionMetadata, TopicMetadata};
use strata_record::Timestamp;
use strata_storage::{Durability, FilesystemSync, StorageError};
use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cluster::Cluster;
use crate::error::{BrokerError, Result};
use crate::groups::{Groups, OffsetStore};
use crate::metrics::Metrics;
use crate::offsets::OffsetSource;
use crate::partition::Partition;
use crate::service::{AdminService, BatchFrames, BrokerService};
use crate::topics::{Topic, Topics};

/// How a broker runs. `strata server` fills it from flags, environment and defaults.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub node_id: u64,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// `host:port` clients are told to connect to.
    pub advertise: String,
    /// When partition logs fsync (default: every append).
    pub durability: Durability,
    /// On a single node with fsync on every append: group-commit rounds that carry at least
    /// this many partitions go through the node's write-ahead file (`docs/write-ahead.md`);
    /// 0 turns it off.
    pub write_ahead_min_partitions: usize,
    /// How often retention (and interval fsyncs) run.
    pub maintenance_interval: Duration,
    /// Largest gRPC request accepted; checked from the length prefix before the request is read.
    pub max_request_bytes: usize,
    /// Where to serve `/metrics`, `/health` and `/ready` (none: not served).
    pub metrics_listen: Option<SocketAddr>,
    /// Every node of the cluster, this one included, by id: `host:port` of each. Empty (or
    /// only this node): a single node that writes its logs directly, without Raft.
    pub peers: BTreeMap<u64, String>,
    /// Controller log entries between two snapshots of the cluster metadata (the log before
    /// a snapshot is purged).
    pub controller_snapshot_every: u64,
}

impl BrokerConfig {
    /// Whether this node is part of a multi-node cluster.
    pub fn is_cluster(&self) -> bool {
        self.peers.keys().any(|&id| id != self.node_id)
    }
}

impl BrokerConfig {
    /// A single node with everything at its default.
    pub fn single_node(data_dir: PathBuf, listen: SocketAddr) -> BrokerConfig {
        let advertise = if listen.ip().is_unspecified() {
            format!("localhost:{}", listen.port())
        } else {
            listen.to_string()
        };
        BrokerConfig {
            node_id: 1,
            data_dir,
            listen,
            advertise,
            durability: Durability::EveryAppend,
            write_ahead_min_partitions: 16,
            maintenance_interval: Duration::from_secs(30),
            max_request_bytes: 64 * 1024 * 1024,
            metrics_listen: None,
            peers: BTreeMap::new(),
            controller_snapshot_every: 5000,
        }
    }
}

/// What the services share.
#[derive(Debug)]
pub struct Shared {
    pub config: BrokerConfig,
    pub topics: Arc<Topics>,
    pub groups: Arc<Groups>,
    pub metrics: Arc<Metrics>,
    pub shutdown: CancellationToken,
    pub tasks: TaskTracker,
    /// The node's cluster side, when it is part of one.
    pub cluster: Option<Arc<Cluster>>,
}

impl Shared {
    pub fn metadata(&self, wanted: &[String]) -> Result<MetadataResponse> {
        let topics = if wanted.is_empty() {
            self.topics.all()
        } else {
            wanted.iter().map(|name| self.topics.get(name)).collect::<Result<Vec<_>>>()?
        };
        let node = self.config.node_id;
        let (brokers, controller_id) = match &self.cluster {
            Some(cluster) => (
                cluster
                    .metadata()
                    .nodes
                    .iter()
                    .map(|(id, address)| BrokerInfo { node_id: *id, address: address.clone() })
                    .collect(),
                cluster.node().controller_leader().unwrap_or(0),
            ),
            None => {
                (vec![BrokerInfo { node_id: node, address: self.config.advertise.clone() }], node)
            }
        };
        Ok(MetadataResponse {
            brokers,
            topics: topics
                .iter()
                .map(|t| TopicMetadata {
                    name: t.name.to_string(),
                    partitions: (0..t.partition_count())
                        .map(|p| PartitionMetadata {
                            partition: p,
                            leader: self.leader_of(t, p),
                            replicas: self.replicas(t.name.as_str(), p),
                        })
                        .collect(),
                })
                .collect(),
            controller_id,
        })
    }

    /// In a cluster, consumer groups are coordinated by the controller's leader (whose
    /// state machine holds the committed offsets); other nodes send clients there.
    pub fn check_coordinator(&self) -> Result<()> {
        let Some(cluster) = &self.cluster else { return Ok(()) };
        let leader = cluster.node().controller_leader();
        if leader == Some(self.config.node_id) {
            return Ok(());
        }
        let leader = leader.and_then(|id| Some((id, cluster.metadata().nodes.get(&id)?.clone())));
        Err(BrokerError::NotCoordinator { leader })
    }

    /// A partition this node holds a replica of. One it does not hold is answered with
    /// NotLeader naming the leader the controller knows, so a client goes there.
    pub fn partition(&self, topic: &str, partition: u32) -> Result<Arc<Partition>> {
        match self.topics.partition(topic, partition) {
            Err(BrokerError::NotHosted { topic, partition }) => {
                let leader =
                    self.cluster.as_ref().and_then(|c| c.recorded_leader(&topic, partition));
                Err(BrokerError::NotLeader { topic, partition, leader })
            }
            other => other,
        }
    }

    /// Node id of a partition's leader as this node knows it (0: none known).
    pub fn leader_of(&self, topic: &Topic, partition: u32) -> u64 {
        match topic.partition(partition) {
            Ok(p) => p.leader(self.config.node_id),
            Err(_) => self
                .cluster
                .as_ref()
                .and_then(|c| c.recorded_leader(topic.name.as_str(), partition))
                .map_or(0, |(id, _)| id),
        }
    }

    /// Where a partition's offsets come from: this node's replica, or the nodes holding one.
    pub fn offset_source(&self, topic: &str, partition: u32) -> Result<OffsetSource> {
        match self.topics.partition(topic, partition) {
            Ok(p) => Ok(OffsetSource::Local(p)),
            Err(BrokerError::NotHosted { topic, partition }) => {
                let replicas = self
                    .cluster
                    .as_ref()
                    .map(|c| c.replica_addresses(&topic, partition))
                    .unwrap_or_default();
                Ok(OffsetSource::Remote { topic, partition, replicas })
            }
            Err(err) => Err(err),
        }
    }

    /// Node ids holding a partition.
    pub fn replicas(&self, topic: &str, partition: u32) -> Vec<u64> {
        match &self.cluster {
            Some(cluster) => cluster.replicas(topic, partition),
            None => vec![self.config.node_id],
        }
    }
}

/// How often the logs' tail marks (`strata_storage`'s `tail.mark`) are brought up to date,
/// and by how much a log's active segment must have grown since its last mark to get a new
/// one. Recovery after a crash scans, per partition, what came after its mark: at most this
/// growth, or what one interval brought, whichever is more. A pass costs one `syncfs` and a
/// few small writes per log that grew (docs/on-disk-format.md, "Tail mark").
const TAIL_MARK_INTERVAL: Duration = Duration::from_secs(2);
const TAIL_MARK_MIN_GROWTH: u64 = 1024 * 1024;

/// Saves the tail marks of every log that grew enough: one `syncfs` for all of them where the
/// filesystem allows, so a thousand partitions cost one write-back, not three thousand fsyncs.
fn save_tail_marks(topics: &Topics, marks_sync: &FilesystemSync) {
    let all = topics.all();
    let mut named = Vec::new();
    let mut drafts = Vec::new();
    for topic in &all {
        for partition in &topic.partitions {
            match partition.log().draft_tail_mark(TAIL_MARK_MIN_GROWTH) {
                Ok(Some(draft)) => {
                    named.push((&topic.name, partition.id()));
                    drafts.push(draft);
                }
                Ok(None) | Err(StorageError::Retired { .. }) => {} // its topic was just deleted
                Err(err) => {
                    tracing::warn!(topic = %topic.name, partition = partition.id(), error = %err, "saving the tail mark failed");
                }
            }
        }
    }
    for ((topic, partition), outcome) in named.into_iter().zip(marks_sync.commit_tail_marks(drafts))
    {
        if let Err(err) = outcome {
            tracing::warn!(%topic, partition, error = %err, "saving the tail mark failed");
        }
    }
}

/// Tail marks every [`TAIL_MARK_INTERVAL`], until shutdown.
async fn tail_marks(shared: Arc<Shared>, marks_sync: Arc<FilesystemSync>) {
    let mut ticker = tokio::time::interval(TAIL_MARK_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let (topics, marks_sync) = (shared.topics.clone(), marks_sync.clone());
        let _ = tokio::task::spawn_blocking(move || save_tail_marks(&topics, &marks_sync)).await;
    }
}

/// Retention and interval fsyncs, until shutdown.
async fn maintenance(shared: Arc<Shared>) {
    let mut ticker = tokio::time::interval(shared.config.maintenance_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let topics = shared.topics.clone();
        let pass = tokio::task::spawn_blocking(move || {
            let now = Timestamp::now();
            for topic in topics.all() {
                for partition in &topic.partitions {
                    let log = partition.log();
                    // A pass that began before its topic was deleted finds the log retired.
                    let deleted = |err: &StorageError| matches!(err, StorageError::Retired { .. });
                    if let Err(err) = log.flush_if_due()
                        && !deleted(&err)
                    {
                        tracing::error!(topic = %topic.name, partition = partition.id(), error = %err, "interval fsync failed");
                    }
                    // A replicated log deletes through its Raft group, below.
                    if partition.replica().is_some() {
                        continue;
                    }
                    if let Err(err) = log.apply_retention(now, partition.high_watermark())
                        && !deleted(&err)
                    {
                        tracing::error!(topic = %topic.name, partition = partition.id(), error = %err, "retention failed");
                    }
                }
            }
        });
        let _ = pass.await;
        for topic in shared.topics.all() {
            for partition in &topic.partitions {
                if let Err(err) = partition.apply_replicated_retention(Timestamp::now()).await {
                    tracing::error!(topic = %topic.name, partition = partition.id(), error = %err, "retention failed");
                }
            }
        }
    }
}

/// Runs a broker until `shutdown` is cancelled, then stops accepting, lets in-flight requests
/// finish, and closes every log cleanly. `on_ready` gets the bound address once clients can
/// connect.
pub async fn run(
    config: BrokerConfig,
    shutdown: CancellationToken,
    on_ready: impl FnOnce(SocketAddr),
) -> Result<()> {
    fs::create_dir_all(&config.data_dir)
        .map_err(BrokerError::io(format!("creating {}", config.data_dir.display())))?;
    let lock_path = config.data_dir.join(".lock");
    let lock = File::create(&lock_path)
        .map_err(BrokerError::io(format!("creating {}", lock_path.display())))?;
    if lock.try_lock().is_err() {
        return Err(BrokerError::InvalidArgument(format!(
            "data directory {} is in use by another strata server",
            config.data_dir.display()
        )));
    }
    // Before any log opens: its `syncfs` must hear of every write-back error of theirs.
    let marks_sync = Arc::new(FilesystemSync::open(&config.data_dir)?);
    let topics = Arc::new(if config.is_cluster() {
        Topics::open_replicated(&config.data_dir, config.durability)?
    } else {
        Topics::open(&config.data_dir, config.durability, config.write_ahead_min_partitions)?
    });
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(BrokerError::io(format!("listening on {}", config.listen)))?;
    let local = listener.local_addr().map_err(BrokerError::io("reading the bound address"))?;
    let max_request = config.max_request_bytes;
    let metrics_listener = match config.metrics_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(BrokerError::io(format!("listening for metrics on {addr}")))?,
        ),
        None => None,
    };
    let tasks = TaskTracker::new();
    let cluster = if config.is_cluster() {
        let cluster = Cluster::start(&config, topics.clone(), shutdown.clone(), &tasks).await?;
        Some(cluster)
    } else {
        None
    };
    // Committed offsets: the controller's replicated state in a cluster, a local log otherwise.
    let offsets = match &cluster {
        Some(cluster) => OffsetStore::replicated(cluster.node().clone()),
        None => OffsetStore::open(&config.data_dir.join("groups").join("offsets"))?,
    };
    let groups = Arc::new(Groups::new(offsets));
    let raft_service = cluster.as_ref().map(|c| c.node().router().service());
    let metrics =
        Metrics::new(topics.clone(), groups.clone(), cluster.as_ref().map(|c| c.node().clone()));
    let shared = Arc::new(Shared {
        config,
        topics,
        groups,
        metrics: metrics.clone(),
        shutdown: shutdown.clone(),
        tasks,
        cluster,
    });
    shared.tasks.spawn(maintenance(shared.clone()));
    shared.tasks.spawn(tail_marks(shared.clone(), marks_sync));
    shared.tasks.spawn(sample_throughput(metrics.clone(), shutdown.clone()));
    if let Some(listener) = metrics_listener {
        shared.tasks.spawn(crate::metrics::serve(listener, metrics.clone(), shutdown.clone()));
    }

    let broker = BatchFrames::new(BrokerService::new(shared.clone()), max_request);
    let admin =
        AdminServer::new(AdminService::new(shared.clone())).max_decoding_message_size(1024 * 1024);
    tracing::info!(
        address = %local, node_id = shared.config.node_id, data_dir = %shared.config.data_dir.display(),
        "strata server listening"
    );
    on_ready(local);
    match &shared.cluster {
        // Ready once this node knows the controller's leader (it can serve admin changes and
        // metadata); followed for the node's life.
        Some(cluster) => {
            let node = cluster.node().clone();
            let ready = metrics.clone();
            let stopping = shutdown.clone();
            shared.tasks.spawn(async move {
                let mut ticker = tokio::time::interval(Duration::from_millis(200));
                loop {
                    tokio::select! {
                        _ = stopping.cancelled() => return,
                        _ = ticker.tick() => ready.set_ready(node.controller_leader().is_some()),
                    }
                }
            });
        }
        None => metrics.set_ready(true),
    }
    let not_ready = metrics.clone();
    let stopping = shutdown.clone();
    shared.tasks.spawn(async move {
        stopping.cancelled().await;
        not_ready.set_ready(false);
    });
    drop(metrics);
    // Nagle off on every accepted connection (the builder's `tcp_nodelay` only applies to
    // listeners tonic binds itself): an answer's last frame must not wait ~40 ms for the
    // client's delayed ACK. HTTP/2 windows large enough that a batch never waits for a
    // window update.
    let incoming = TcpListenerStream::new(listener).map(|stream| {
        let stream = stream?;
        stream.set_nodelay(true)?;
        Ok::<_, std::io::Error>(stream)
    });
    // Keepalive pings: a peer that stopped reading is dropped within a minute, and with it the
    // answers it held (a fetch answer's batches are slices of the log's mapped segments, which
    // a deleted segment's disk space waits for).
    let served = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(20)))
        .initial_stream_window_size(8 * 1024 * 1024)
        .initial_connection_window_size(32 * 1024 * 1024)
        .max_frame_size(strata_proto::SERVER_MAX_FRAME_BYTES)
        .add_service(broker)
        .add_service(admin)
        .add_optional_service(raft_service)
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
        .await;
    tracing::info!("stopped accepting requests; closing logs");
    shared.tasks.close();
    shared.tasks.wait().await;
    if let Err(err) = served {
        tracing::error!(error = %err, "gRPC server failed");
    }
    if let Some(cluster) = &shared.cluster {
        cluster.shutdown().await;
    }
    let shared = Arc::try_unwrap(shared).map_err(|_| BrokerError::ShuttingDown)?;
    close_all(shared);
    drop(lock);
    tracing::info!("strata server stopped cleanly");
    Ok(())
}

/// Samples throughput totals once a second for `cluster status`.
async fn sample_throughput(metrics: Arc<Metrics>, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => metrics.sample(),
        }
    }
}

/// Closes every log with a clean-shutdown marker. Anything still shared is left to recovery.
fn close_all(shared: Shared) {
    // The metrics collector and the cluster hold the topics: let go of them first.
    drop(shared.metrics);
    drop(shared.cluster);
    match Arc::try_unwrap(shared.topics) {
        Ok(topics) => topics.close(),
        Err(_) => {
            tracing::warn!("topics still in use at shutdown; their logs will be recovered on start")
        }
    }
    let Shared { groups, .. } = shared;
    if let Ok(groups) = Arc::try_unwrap(groups)
        && let Err(err) = groups.close()
    {
        tracing::warn!(error = %err, "closing the offsets log");
    }
}
