//! Prometheus metrics (prometheus-client, OpenMetrics text) and the `/metrics`, `/health`,
//! `/ready` endpoints.
//!
//! Counters and histograms are updated on the request path. Offsets, lag and message age are
//! not stored as metrics at all: a collector computes them from the broker's own state at
//! scrape time (a few map lookups per partition and group, plus one cached record read per
//! group partition whose committed offset moved), so they are never stale and cost nothing
//! between scrapes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use strata_record::Timestamp;
use strata_storage::WriteAheadEvent;
use tokio_util::sync::CancellationToken;

use crate::groups::Groups;
use crate::topics::Topics;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    pub topic: String,
    pub partition: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    pub rpc: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub rpc: String,
    pub code: String,
}

fn latency_histogram() -> Histogram {
    // 50 µs to ~26 s.
    Histogram::new(exponential_buckets(0.00005, 2.0, 20))
}

/// The storage engine reports fsync times through a plain function pointer, so this
/// histogram lives in a static.
static FSYNC_SECONDS: OnceLock<Histogram> = OnceLock::new();

fn observe_fsync(elapsed: Duration) {
    if let Some(histogram) = FSYNC_SECONDS.get() {
        histogram.observe(elapsed.as_secs_f64());
    }
}

/// The write-ahead file's rounds and checkpoints, reported like fsync times.
#[derive(Debug)]
struct WriteAheadMetrics {
    rounds: Counter,
    bytes: Counter,
    logs_per_round: Histogram,
    checkpoint_seconds: Histogram,
}

static WRITE_AHEAD: OnceLock<WriteAheadMetrics> = OnceLock::new();

fn observe_write_ahead(event: WriteAheadEvent) {
    let Some(metrics) = WRITE_AHEAD.get() else { return };
    match event {
        WriteAheadEvent::Round { logs, bytes } => {
            metrics.rounds.inc();
            metrics.bytes.inc_by(bytes);
            metrics.logs_per_round.observe(logs as f64);
        }
        WriteAheadEvent::Checkpoint { elapsed } => {
            metrics.checkpoint_seconds.observe(elapsed.as_secs_f64());
        }
    }
}

/// Totals sampled once a second, for the throughput `strata cluster status` shows.
#[derive(Debug, Default)]
struct Totals {
    produce_bytes: AtomicU64,
    produce_records: AtomicU64,
    fetch_bytes: AtomicU64,
    fetch_records: AtomicU64,
}

/// Throughput over the last minute, per second.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Throughput {
    pub produce_bytes: f64,
    pub produce_records: f64,
    pub fetch_bytes: f64,
    pub fetch_records: f64,
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    produce_records: Family<PartitionLabels, Counter>,
    produce_bytes: Family<PartitionLabels, Counter>,
    fetch_records: Family<PartitionLabels, Counter>,
    fetch_bytes: Family<PartitionLabels, Counter>,
    request_seconds: Family<RpcLabels, Histogram>,
    request_errors: Family<ErrorLabels, Counter>,
    totals: Totals,
    samples: Mutex<std::collections::VecDeque<(Instant, [u64; 4])>>,
    ready: AtomicBool,
}

impl Metrics {
    pub fn new(
        topics: Arc<Topics>,
        groups: Arc<Groups>,
        raft: Option<strata_raft::RaftNode>,
    ) -> Arc<Metrics> {
        let mut registry = Registry::default();
        let produce_records = Family::<PartitionLabels, Counter>::default();
        let produce_bytes = Family::<PartitionLabels, Counter>::default();
        let fetch_records = Family::<PartitionLabels, Counter>::default();
        let fetch_bytes = Family::<PartitionLabels, Counter>::default();
        let request_seconds = Family::<RpcLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let request_errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "strata_produce_records",
            "Records appended, by partition",
            produce_records.clone(),
        );
        registry.register(
            "strata_produce_bytes",
            "Batch bytes appended, by partition",
            produce_bytes.clone(),
        );
        registry.register(
            "strata_fetch_records",
            "Records sent to consumers, by partition",
            fetch_records.clone(),
        );
        registry.register(
            "strata_fetch_bytes",
            "Batch bytes sent to consumers, by partition",
            fetch_bytes.clone(),
        );
        registry.register(
            "strata_request_duration_seconds",
            "Time to answer a request, by RPC",
            request_seconds.clone(),
        );
        registry.register(
            "strata_request_errors",
            "Requests answered with an error, by RPC and gRPC status code",
            request_errors.clone(),
        );
        let fsync = FSYNC_SECONDS.get_or_init(latency_histogram).clone();
        registry.register(
            "strata_fsync_duration_seconds",
            "Time of one fdatasync of a partition log",
            fsync,
        );
        strata_storage::set_fsync_observer(observe_fsync);
        let write_ahead = WRITE_AHEAD.get_or_init(|| WriteAheadMetrics {
            rounds: Counter::default(),
            bytes: Counter::default(),
            // 1 to 4,096 logs.
            logs_per_round: Histogram::new(exponential_buckets(1.0, 2.0, 13)),
            checkpoint_seconds: latency_histogram(),
        });
        registry.register(
            "strata_write_ahead_rounds",
            "Group-commit rounds written to the node's write-ahead file",
            write_ahead.rounds.clone(),
        );
        registry.register(
            "strata_write_ahead_bytes",
            "Bytes written to the write-ahead file, frame headers included",
            write_ahead.bytes.clone(),
        );
        registry.register(
            "strata_write_ahead_logs_per_round",
            "Partition logs in one write-ahead round",
            write_ahead.logs_per_round.clone(),
        );
        registry.register(
            "strata_write_ahead_checkpoint_duration_seconds",
            "Time of one checkpoint (a syncfs of the segment files) that frees write-ahead files",
            write_ahead.checkpoint_seconds.clone(),
        );
        strata_storage::set_write_ahead_observer(observe_write_ahead);
        registry.register_collector(Box::new(StateCollector {
            topics,
            groups,
            ages: Mutex::new(HashMap::new()),
            raft,
        }));
        Arc::new(Metrics {
            registry,
            produce_records,
            produce_bytes,
            fetch_records,
            fetch_bytes,
            request_seconds,
            request_errors,
            totals: Totals::default(),
            samples: Mutex::new(std::collections::VecDeque::new()),
            ready: AtomicBool::new(false),
        })
    }

    fn labels(topic: &str, partition: u32) -> PartitionLabels {
        PartitionLabels { topic: topic.to_owned(), partition: partition.to_string() }
    }

    pub fn produced(&self, topic: &str, partition: u32, records: u64, bytes: u64) {
        let labels = Self::labels(topic, partition);
        self.produce_records.get_or_create(&labels).inc_by(records);
        self.produce_bytes.get_or_create(&labels).inc_by(bytes);
        self.totals.produce_records.fetch_add(records, Ordering::Relaxed);
        self.totals.produce_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn fetched(&self, topic: &str, partition: u32, records: u64, bytes: u64) {
        if records == 0 {
            return;
        }
        let labels = Self::labels(topic, partition);
        self.fetch_records.get_or_create(&labels).inc_by(records);
        self.fetch_bytes.get_or_create(&labels).inc_by(bytes);
        self.totals.fetch_records.fetch_add(records, Ordering::Relaxed);
        self.totals.fetch_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn request(&self, rpc: &str, elapsed: Duration, error: Option<tonic::Code>) {
        self.request_seconds
            .get_or_create(&RpcLabels { rpc: rpc.to_owned() })
            .observe(elapsed.as_secs_f64());
        if let Some(code) = error {
            let labels = ErrorLabels { rpc: rpc.to_owned(), code: format!("{code:?}") };
            self.request_errors.get_or_create(&labels).inc();
        }
    }

    /// Counts an error of one part of a request (a partition of a ProduceMany) whose request
    /// as a whole succeeded.
    pub fn request_part_failed(&self, rpc: &str, code: tonic::Code) {
        let labels = ErrorLabels { rpc: rpc.to_owned(), code: format!("{code:?}") };
        self.request_errors.get_or_create(&labels).inc();
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    fn snapshot(&self) -> [u64; 4] {
        let t = &self.totals;
        [
            t.produce_bytes.load(Ordering::Relaxed),
            t.produce_records.load(Ordering::Relaxed),
            t.fetch_bytes.load(Ordering::Relaxed),
            t.fetch_records.load(Ordering::Relaxed),
        ]
    }

    /// Records the totals; called once a second. Keeps a minute of samples.
    pub fn sample(&self) {
        let mut samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        samples.push_back((now, self.snapshot()));
        while samples.front().is_some_and(|(t, _)| now.duration_since(*t) > Duration::from_secs(61))
        {
            samples.pop_front();
        }
    }

    /// Per-second rates over the sampled window (up to a minute).
    pub fn throughput(&self) -> Throughput {
        let samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        let Some(&(since, old)) = samples.front() else { return Throughput::default() };
        let elapsed = since.elapsed().as_secs_f64();
        if elapsed < 0.5 {
            return Throughput::default();
        }
        let now = self.snapshot();
        let rate = |i: usize| now[i].saturating_sub(old[i]) as f64 / elapsed;
        Throughput {
            produce_bytes: rate(0),
            produce_records: rate(1),
            fetch_bytes: rate(2),
            fetch_records: rate(3),
        }
    }

    fn render(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// Offsets, sizes, committed offsets, lag and message age, read from the broker's state on
/// each scrape.
#[derive(Debug)]
struct StateCollector {
    topics: Arc<Topics>,
    groups: Arc<Groups>,
    /// (group, topic, partition) → (committed offset, timestamp of the record there).
    ages: Mutex<HashMap<GroupPartition, (u64, i64)>>,
    /// The node's Raft side, in a cluster (for the controller's series).
    raft: Option<strata_raft::RaftNode>,
}

type Rows<T> = Vec<(Vec<(&'static str, String)>, T)>;
/// (group, topic, partition).
type GroupPartition = (String, String, u32);

fn gauge<T: prometheus_client::encoding::EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    rows: &Rows<T>,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in rows {
        metric.encode_family(labels)?.encode_gauge(value)?;
    }
    Ok(())
}

impl Collector for StateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let (mut end, mut start, mut size) = (Rows::new(), Rows::new(), Rows::new());
        for topic in self.topics.all() {
            for p in &topic.partitions {
                let labels =
                    vec![("topic", topic.name.to_string()), ("partition", p.id().to_string())];
                end.push((labels.clone(), p.high_watermark().0));
                start.push((labels.clone(), p.log_start().0));
                size.push((labels, p.log().size_bytes()));
            }
        }
        gauge(
            &mut encoder,
            "strata_partition_log_end_offset",
            "Offset the next committed record gets (high watermark)",
            &end,
        )?;
        gauge(
            &mut encoder,
            "strata_partition_log_start_offset",
            "First offset still retained",
            &start,
        )?;
        gauge(
            &mut encoder,
            "strata_partition_size_bytes",
            "Bytes in the partition's segment files",
            &size,
        )?;

        let (mut committed, mut lag, mut age) = (Rows::new(), Rows::new(), Rows::<f64>::new());
        let now = Timestamp::now().0;
        let mut ages = self.ages.lock().unwrap_or_else(|e| e.into_inner());
        let mut seen = std::collections::HashSet::new();
        for group in self.groups.offsets().groups() {
            for ((topic, partition), c) in self.groups.offsets().get(&group) {
                let Ok(p) = self.topics.partition(&topic, partition) else { continue };
                let labels = vec![
                    ("group", group.clone()),
                    ("topic", topic.clone()),
                    ("partition", partition.to_string()),
                ];
                let high_watermark = p.high_watermark().0;
                committed.push((labels.clone(), c.offset));
                lag.push((labels.clone(), high_watermark.saturating_sub(c.offset)));
                let key = (group.clone(), topic.clone(), partition);
                let timestamp =
                    p.first_unconsumed(c.offset).and_then(|oldest| match ages.get(&key) {
                        Some(&(offset, ts)) if offset == oldest.0 => Some(ts),
                        _ => p.record_timestamp(oldest).inspect(|&ts| {
                            ages.insert(key.clone(), (oldest.0, ts));
                        }),
                    });
                let seconds =
                    timestamp.map_or(0.0, |ts| now.saturating_sub(ts).max(0) as f64 / 1000.0);
                seen.insert(key);
                age.push((labels, seconds));
            }
        }
        ages.retain(|k, _| seen.contains(k));
        drop(ages);
        gauge(
            &mut encoder,
            "strata_consumer_group_committed_offset",
            "Committed offset of a group",
            &committed,
        )?;
        gauge(
            &mut encoder,
            "strata_consumer_group_lag",
            "Log end offset minus committed offset",
            &lag,
        )?;
        gauge(
            &mut encoder,
            "strata_consumer_group_oldest_unconsumed_age_seconds",
            "Age of the first record past the committed offset (0 when caught up)",
            &age,
        )?;
        self.encode_raft(&mut encoder)
    }
}

impl StateCollector {
    /// Per partition Raft group (replicated partitions only): term, leader, apply lag, and on
    /// the leader each follower's replication lag.
    fn encode_raft(&self, encoder: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let (mut term, mut leader, mut apply_lag, mut replica_lag) =
            (Rows::new(), Rows::new(), Rows::new(), Rows::new());
        for topic in self.topics.all() {
            for p in &topic.partitions {
                let Some(replica) = p.replica() else { continue };
                let m = replica.metrics();
                let labels =
                    vec![("topic", topic.name.to_string()), ("partition", p.id().to_string())];
                let last = m.last_log_index.unwrap_or(0);
                term.push((labels.clone(), m.current_term));
                leader.push((labels.clone(), m.current_leader.unwrap_or(0)));
                apply_lag.push((
                    labels.clone(),
                    last.saturating_sub(m.last_applied.map_or(0, |l| l.index)),
                ));
                for (node, matched) in m.replication.iter().flatten() {
                    if *node == m.id {
                        continue;
                    }
                    let mut labels = labels.clone();
                    labels.push(("replica", node.to_string()));
                    replica_lag.push((labels, last.saturating_sub(matched.map_or(0, |l| l.index))));
                }
            }
        }
        if let Some(node) = &self.raft {
            let m = node.controller_metrics();
            let labels = vec![("topic", "__controller".to_owned()), ("partition", "0".to_owned())];
            let last = m.last_log_index.unwrap_or(0);
            term.push((labels.clone(), m.current_term));
            leader.push((labels.clone(), m.current_leader.unwrap_or(0)));
            apply_lag.push((labels, last.saturating_sub(m.last_applied.map_or(0, |l| l.index))));
        }
        if term.is_empty() {
            return Ok(());
        }
        gauge(
            encoder,
            "strata_raft_term",
            "Raft term of the group (each election adds one: increase() counts elections)",
            &term,
        )?;
        gauge(
            encoder,
            "strata_raft_leader",
            "Node id of the group's leader (0: none known)",
            &leader,
        )?;
        gauge(
            encoder,
            "strata_raft_apply_lag_entries",
            "Entries in this replica's log not yet applied (committed-and-applied lag)",
            &apply_lag,
        )?;
        gauge(
            encoder,
            "strata_raft_replica_lag_entries",
            "On the leader: entries each follower has not acknowledged",
            &replica_lag,
        )
    }
}

async fn metrics_page(metrics: Arc<Metrics>) -> impl IntoResponse {
    match metrics.render() {
        Ok(text) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
            text,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Serves `/metrics`, `/health` (the process answers) and `/ready` (it serves requests)
/// until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let for_metrics = metrics.clone();
    let router = axum::Router::new()
        .route("/metrics", get(move || metrics_page(for_metrics.clone())))
        .route("/health", get(|| async { "ok\n" }))
        .route(
            "/ready",
            get(move || {
                let ready = metrics.ready.load(Ordering::Acquire);
                async move {
                    if ready {
                        (StatusCode::OK, "ready\n")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
                    }
                }
            }),
        );
    let local: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(address = ?local, "metrics endpoint listening");
    if let Err(err) =
        axum::serve(listener, router).with_graceful_shutdown(shutdown.cancelled_owned()).await
    {
        tracing::error!(error = %err, "metrics endpoint failed");
    }
}
