//! `produce`, `consume` and `e2e`: load against a real cluster, reported like Kafka's
//! `kafka-producer-perf-test` / `kafka-consumer-perf-test`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use serde_json::json;
use strata_client::{
    Acks, Admin, Client, Compression, Consumer, ConsumerConfig, OffsetReset, Producer,
    ProducerConfig, Record, TopicSpec,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::Format;
use crate::cluster::Target;
use crate::report::{json, line, mb_per_s};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum AcksArg {
    All,
    Leader,
    None,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum CompressionArg {
    None,
    Lz4,
    Zstd,
}

#[derive(Debug, Args, Clone)]
pub(crate) struct Common {
    #[command(flatten)]
    target: Target,
    #[arg(long, default_value = "strata-bench")]
    topic: String,
    /// Partitions of the topic (created if missing).
    #[arg(long, default_value_t = 1)]
    partitions: u32,
    #[arg(long, default_value_t = 1_000_000)]
    records: u64,
    /// Bytes of each record's value.
    #[arg(long, default_value_t = 1024)]
    record_size: usize,
    #[arg(long, value_enum, default_value_t = Format::Human)]
    format: Format,
}

#[derive(Debug, Args, Clone)]
pub(crate) struct ProduceArgs {
    #[command(flatten)]
    common: Common,
    /// Concurrent producers, each with its own connection.
    #[arg(long, default_value_t = 1)]
    producers: u32,
    #[arg(long, value_enum, default_value = "all")]
    acks: AcksArg,
    #[arg(long, value_enum, default_value = "none")]
    compression: CompressionArg,
    #[arg(long, default_value_t = 64 * 1024)]
    batch_bytes: usize,
    #[arg(long, default_value_t = 5)]
    linger_ms: u64,
    /// Records per second over all producers (0: as fast as possible).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Records unacknowledged per producer at once; the producer waits for any one to be
    /// acknowledged before it sends more. Default: 20,000, or 100 per partition if that is
    /// more (see `default_window`).
    #[arg(long)]
    window: Option<usize>,
    /// Produce requests per partition in flight at once (pipelining; 1: one at a time).
    #[arg(long, default_value_t = 5)]
    max_in_flight: usize,
    /// Give records keys, this many distinct ones in turn, so that they spread over the
    /// partitions by key hash (0: no keys; keyless records fill one partition's batch at a
    /// time, as Kafka's sticky partitioner does).
    #[arg(long, default_value_t = 0)]
    keys: u64,
}

#[derive(Debug, Args, Clone)]
pub(crate) struct ConsumeArgs {
    #[command(flatten)]
    common: Common,
    /// Consume as a member of this group (otherwise: assign every partition).
    #[arg(long)]
    group: Option<String>,
}

#[derive(Debug, Args, Clone)]
pub(crate) struct EndToEndArgs {
    #[command(flatten)]
    common: Common,
    /// Records per second the producer sends.
    #[arg(long, default_value_t = 5000)]
    rate: u64,
    #[arg(long, value_enum, default_value = "all")]
    acks: AcksArg,
    #[arg(long, default_value_t = 0)]
    linger_ms: u64,
    /// Produce requests per partition in flight at once (1: records arriving while one is
    /// answered share the next request).
    #[arg(long, default_value_t = 5)]
    max_in_flight: usize,
}

/// Latency and throughput of a run.
struct Summary {
    records: u64,
    bytes: u64,
    elapsed: Duration,
    latency_us: Option<Histogram<u64>>,
}

impl Summary {
    fn print(&self, mode: &str, format: Format, extra: serde_json::Value) {
        let records_per_s = self.records as f64 / self.elapsed.as_secs_f64().max(1e-9);
        let mb = mb_per_s(self.bytes, self.elapsed);
        let ms = |us: u64| us as f64 / 1000.0;
        let (avg, max, p50, p95, p99, p999) = match &self.latency_us {
            Some(h) if !h.is_empty() => (
                h.mean() / 1000.0,
                ms(h.max()),
                ms(h.value_at_quantile(0.50)),
                ms(h.value_at_quantile(0.95)),
                ms(h.value_at_quantile(0.99)),
                ms(h.value_at_quantile(0.999)),
            ),
            _ => (f64::NAN, f64::NAN, f64::NAN, f64::NAN, f64::NAN, f64::NAN),
        };
        if self.latency_us.is_some() {
            line(format!(
                "{} records {mode}, {records_per_s:.1} records/sec ({mb:.2} MB/sec), {avg:.3} ms avg latency, \
                 {max:.3} ms max latency, {p50:.3} ms 50th, {p95:.3} ms 95th, {p99:.3} ms 99th, {p999:.3} ms 99.9th.",
                self.records
            ));
        } else {
            line(format!(
                "{} records {mode}, {records_per_s:.1} records/sec ({mb:.2} MB/sec)",
                self.records
            ));
        }
        if format == Format::Json {
            let num = |v: f64| if v.is_finite() { json!(v) } else { json!(null) };
            let mut out = json!({
                "mode": mode,
                "records": self.records,
                "bytes": self.bytes,
                "seconds": self.elapsed.as_secs_f64(),
                "records_per_s": records_per_s,
                "mb_per_s": mb,
                "avg_ms": num(avg),
                "max_ms": num(max),
                "p50_ms": num(p50),
                "p95_ms": num(p95),
                "p99_ms": num(p99),
                "p999_ms": num(p999),
            });
            if let (Some(out), Some(extra)) = (out.as_object_mut(), extra.as_object()) {
                out.extend(extra.clone());
            }
            json(&out);
        }
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}

/// Records a producer may have unacknowledged when `--window` is not given: 20,000 (about
/// 20 MB of 1 KiB records, below Kafka's 32 MiB `buffer.memory`), grown to 100 records per
/// partition of `--partitions` (~100 KB each). Kafka's guidance is to give the producer "at
/// least a few tens of KB per partition" and more memory when the partitions grow a lot: what
/// a partition's batches can hold is the window shared among the partitions, and at 1,000
/// partitions 20,000 records made ~5 KiB batches whose per-batch work, in client and node,
/// bounded the run (`docs/benchmarks.md`, session 14).
fn default_window(partitions: u32) -> usize {
    20_000.max(100 * partitions as usize)
}

async fn ensure_topic(client: &Client, topic: &str, partitions: u32) -> anyhow::Result<()> {
    let admin = Admin::new(client.clone());
    match admin.describe_topic(topic).await {
        Ok(d) if d.partitions.len() as u32 == partitions => Ok(()),
        Ok(d) => {
            bail!("topic {topic} exists with {} partitions, not {partitions}", d.partitions.len())
        }
        Err(_) => {
            let spec = TopicSpec {
                name: topic.to_owned(),
                partitions,
                // 0: the server's default (1 on a single node, every node in a cluster).
                replication_factor: 0,
                configs: HashMap::from([(
                    "max.message.bytes".to_owned(),
                    (8 * 1024 * 1024).to_string(),
                )]),
            };
            let created = admin.create_topic(spec).await.map(|_| ());
            // A cluster may take longer than the server's wait to elect leaders for many
            // partitions (1,000 at RF 3): the topic exists, its leaders come a little later.
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                match admin.describe_topic(topic).await {
                    Ok(d)
                        if d.partitions.len() as u32 == partitions
                            && d.partitions.iter().all(|p| p.leader != 0) =>
                    {
                        return Ok(());
                    }
                    // Refused outright (the topic is not there): nothing to wait for.
                    Err(_) if created.is_err() => break,
                    _ => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
            created.context("creating the benchmark topic")?;
            bail!("topic {topic}: not every partition had a leader within 60 s")
        }
    }
}

fn acks(a: AcksArg) -> Acks {
    match a {
        AcksArg::All => Acks::All,
        AcksArg::Leader => Acks::Leader,
        AcksArg::None => Acks::None,
    }
}

fn now_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// What one producer sends.
struct Share {
    topic: String,
    payload: Bytes,
    count: u64,
    /// Records per second (0: unlimited).
    rate: f64,
    /// Records in flight before sending waits.
    window: usize,
    /// Put the send time in a header `t` (for end-to-end latency).
    stamp: bool,
    /// Distinct keys the records take in turn (0: no keys).
    keys: u64,
}

/// What the acknowledgement callbacks of one producer gathered.
struct Acked {
    latency: Histogram<u64>,
    /// The first failure: the run stops sending and reports it.
    error: Option<strata_client::ClientError>,
}

/// Shared by one producer's sender and its callbacks.
struct AckTally {
    gathered: Mutex<Acked>,
    /// Set with the first failure, so the sender checks without taking the lock.
    failed: AtomicBool,
}

impl AckTally {
    fn gathered(&self) -> std::sync::MutexGuard<'_, Acked> {
        self.gathered.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }
}

/// Sends a share of records and returns the latency of each send to its acknowledgement.
async fn produce_share(
    client: Client,
    config: ProducerConfig,
    share: Share,
) -> anyhow::Result<Histogram<u64>> {
    let Share { topic, payload, count, rate, window, stamp, keys } = share;
    let producer = Producer::new(client, config);
    // Each record's latency is taken in its own acknowledgement's callback, whatever order
    // the partitions are answered in, and at most `window` records are unacknowledged at
    // once (like Kafka's `buffer.memory`: a bound on what waits, not on how far ahead of the
    // oldest). Awaited in send order, one slow partition held up every later record's
    // figure and, through the window, the sending.
    let window = Arc::new(Semaphore::new(window.max(1)));
    let acks = Arc::new(AckTally {
        gathered: Mutex::new(Acked { latency: histogram(), error: None }),
        failed: AtomicBool::new(false),
    });
    let for_callbacks = acks.clone();
    let callback = move |sent: Instant, permit: OwnedSemaphorePermit| {
        let acks = for_callbacks.clone();
        move |delivered: strata_client::Result<strata_client::Delivered>| {
            let mut gathered = acks.gathered();
            match delivered {
                Ok(_) => gathered.latency.saturating_record(sent.elapsed().as_micros() as u64),
                Err(err) => {
                    gathered.error.get_or_insert(err);
                    acks.failed.store(true, Ordering::Relaxed);
                }
            }
            drop(permit);
        }
    };
    let record = move |i: u64| {
        let mut record = Record::new(&topic).value(payload.clone());
        if keys > 0 {
            record = record.key(format!("key-{}", i % keys));
        }
        if stamp {
            record = record.header("t", Bytes::copy_from_slice(&now_nanos().to_be_bytes()));
        }
        record
    };
    let producer = if rate > 0.0 {
        // Paced from a thread of its own with nanosleep: tokio's timer ticks in whole
        // milliseconds, so an async pacer at 5,000 records/s sent bursts of 5 records at once
        // every millisecond instead of one every 200 µs.
        let handle = tokio::runtime::Handle::current();
        let acks = acks.clone();
        tokio::task::spawn_blocking(move || {
            let start = Instant::now();
            for i in 0..count {
                let due = start + Duration::from_secs_f64(i as f64 / rate);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let permit = handle.block_on(window.clone().acquire_owned())?;
                if acks.failed() {
                    break; // reported below
                }
                let record = record(i);
                let sent = Instant::now();
                handle.block_on(producer.send_with_callback(record, callback(sent, permit)))?;
            }
            Ok::<_, anyhow::Error>(producer)
        })
        .await??
    } else {
        for i in 0..count {
            let permit = window.clone().acquire_owned().await?;
            if acks.failed() {
                break; // reported below
            }
            let record = record(i);
            let sent = Instant::now();
            producer.send_with_callback(record, callback(sent, permit)).await?;
        }
        producer
    };
    let closed = producer.close().await;
    let mut gathered = acks.gathered();
    // A record's own failure says more than the `Closed` that may follow it.
    if let Some(err) = gathered.error.take() {
        return Err(err.into());
    }
    closed?;
    Ok(std::mem::replace(&mut gathered.latency, histogram()))
}

fn progress(started: Instant, done: u64, total: u64, last: &mut Instant) {
    if last.elapsed() >= Duration::from_secs(5) {
        *last = Instant::now();
        let rate = done as f64 / started.elapsed().as_secs_f64();
        line(format!("  … {done}/{total} records, {rate:.0} records/sec"));
    }
}

pub(crate) async fn produce(args: &ProduceArgs) -> anyhow::Result<()> {
    let common = &args.common;
    let cluster = common.target.start()?;
    let brokers: Vec<&str> = cluster.brokers.split(',').collect();
    let client = Client::connect(&brokers).await?;
    ensure_topic(&client, &common.topic, common.partitions).await?;
    let payload = run_payload((0..common.record_size).map(|i| (i * 7 % 251) as u8).collect());
    let window = args.window.unwrap_or_else(|| default_window(common.partitions));
    let config = ProducerConfig {
        acks: acks(args.acks),
        linger: Duration::from_millis(args.linger_ms),
        batch_bytes: args.batch_bytes,
        compression: match args.compression {
            CompressionArg::None => Compression::None,
            CompressionArg::Lz4 => Compression::Lz4,
            CompressionArg::Zstd => Compression::Zstd,
        },
        max_in_flight: args.max_in_flight,
        // The window bounds what is unanswered, as before the producer had a buffer bound:
        // the buffer holds a whole window (and at least Kafka's 32 MiB).
        buffer_bytes: ProducerConfig::default()
            .buffer_bytes
            .max(window * (common.record_size + 64)),
        ..ProducerConfig::default()
    };
    line(format!(
        "produce: {} records of {} bytes to {} ({} partitions), {} producers, acks={:?}, {} in flight per partition, window={window} per producer, rate={}, keys={}",
        common.records,
        common.record_size,
        common.topic,
        common.partitions,
        args.producers,
        args.acks,
        args.max_in_flight,
        if args.rate == 0 { "unlimited".into() } else { args.rate.to_string() },
        if args.keys == 0 { "none".into() } else { args.keys.to_string() }
    ));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..args.producers.max(1) {
        let share = common.records / u64::from(args.producers.max(1))
            + u64::from(u64::from(p) < common.records % u64::from(args.producers.max(1)));
        let client = Client::connect(&brokers).await?;
        let rate = args.rate as f64 / f64::from(args.producers.max(1));
        tasks.push(tokio::spawn(produce_share(
            client,
            config.clone(),
            Share {
                topic: common.topic.clone(),
                payload: payload.clone(),
                count: share,
                rate,
                window,
                stamp: false,
                keys: args.keys,
            },
        )));
    }
    let mut latency = histogram();
    for task in tasks {
        latency.add(task.await??).expect("same bounds");
    }
    let summary = Summary {
        records: common.records,
        bytes: common.records * common.record_size as u64,
        elapsed: started.elapsed(),
        latency_us: Some(latency),
    };
    summary.print("sent", common.format, json!({"acks": format!("{:?}", args.acks).to_lowercase(), "producers": args.producers, "max_in_flight": args.max_in_flight, "window": window, "partitions": common.partitions, "record_size": common.record_size, "keys": args.keys}));
    drop(cluster);
    Ok(())
}

pub(crate) async fn consume(args: &ConsumeArgs) -> anyhow::Result<()> {
    let common = &args.common;
    let cluster = common.target.start()?;
    let brokers: Vec<&str> = cluster.brokers.split(',').collect();
    let client = Client::connect(&brokers).await?;
    ensure_topic(&client, &common.topic, common.partitions).await?;
    let available = available_records(&client, &common.topic).await?;
    if available < common.records {
        line(format!(
            "consume: filling {} with {} records first",
            common.topic,
            common.records - available
        ));
        let payload = run_payload(vec![0x42u8; common.record_size]);
        let config = ProducerConfig { acks: Acks::Leader, ..ProducerConfig::default() };
        produce_share(
            client.clone(),
            config,
            Share {
                topic: common.topic.clone(),
                payload,
                count: common.records - available,
                rate: 0.0,
                window: 20_000,
                stamp: false,
                keys: 0,
            },
        )
        .await?;
    }
    let config = ConsumerConfig {
        group: args.group.clone(),
        offset_reset: OffsetReset::Earliest,
        auto_commit: args.group.is_some(),
        fetch_max_bytes: 4 * 1024 * 1024,
        max_poll_records: 100_000,
        ..ConsumerConfig::default()
    };
    let mut consumer = Consumer::new(client.clone(), config);
    match &args.group {
        Some(_) => consumer.subscribe(vec![common.topic.clone()]).await?,
        None => {
            let partitions = (0..common.partitions).map(|p| (common.topic.clone(), p)).collect();
            consumer.assign(partitions).await?;
            consumer.seek_to_beginning().await?;
        }
    }
    line(format!(
        "consume: {} records from {} ({} partitions)",
        common.records, common.topic, common.partitions
    ));
    let started = Instant::now();
    let mut last = Instant::now();
    let (mut records, mut bytes) = (0u64, 0u64);
    while records < common.records {
        let batch = consumer.poll(Duration::from_secs(10)).await?;
        if batch.is_empty() {
            bail!("no record for 10 s after {records} of {}", common.records);
        }
        records += batch.len() as u64;
        bytes += batch.iter().map(|r| r.value.as_ref().map_or(0, |v| v.len() as u64)).sum::<u64>();
        progress(started, records, common.records, &mut last);
    }
    let summary = Summary { records, bytes, elapsed: started.elapsed(), latency_us: None };
    summary.print(
        "consumed",
        common.format,
        json!({"partitions": common.partitions, "record_size": common.record_size}),
    );
    consumer.close().await?;
    drop(cluster);
    Ok(())
}

async fn available_records(client: &Client, topic: &str) -> anyhow::Result<u64> {
    let description = Admin::new(client.clone()).describe_topic(topic).await?;
    Ok(description.partitions.iter().map(|p| p.high_watermark - p.log_start_offset).sum())
}

pub(crate) async fn end_to_end(args: &EndToEndArgs) -> anyhow::Result<()> {
    let common = &args.common;
    let cluster = common.target.start()?;
    let brokers: Vec<&str> = cluster.brokers.split(',').collect();
    let client = Client::connect(&brokers).await?;
    ensure_topic(&client, &common.topic, common.partitions).await?;
    let mut consumer = Consumer::new(
        client.clone(),
        ConsumerConfig {
            auto_commit: false,
            max_wait: Duration::from_millis(
                std::env::var("E2E_WAIT").ok().and_then(|v| v.parse().ok()).unwrap_or(500),
            ),
            ..ConsumerConfig::default()
        },
    );
    consumer.assign((0..common.partitions).map(|p| (common.topic.clone(), p)).collect()).await?;
    consumer.seek_to_end().await?;
    line(format!(
        "e2e: {} records of {} bytes at {} records/s, acks={:?}, latency from send to receipt",
        common.records, common.record_size, args.rate, args.acks
    ));
    let payload = run_payload(vec![0x17u8; common.record_size]);
    let config = ProducerConfig {
        acks: acks(args.acks),
        linger: Duration::from_millis(args.linger_ms),
        max_in_flight: args.max_in_flight,
        ..ProducerConfig::default()
    };
    let producer_client = Client::connect(&brokers).await?;
    let (topic, records, rate) = (common.topic.clone(), common.records, args.rate as f64);
    let producer = tokio::spawn(async move {
        produce_share(
            producer_client,
            config,
            Share { topic, payload, count: records, rate, window: 100_000, stamp: true, keys: 0 },
        )
        .await
    });
    let started = Instant::now();
    let mut last = Instant::now();
    let mut latency = histogram();
    let (mut received, mut bytes) = (0u64, 0u64);
    while received < common.records {
        let batch = consumer.poll(Duration::from_secs(10)).await?;
        if batch.is_empty() {
            bail!("no record for 10 s after {received} of {}", common.records);
        }
        let now = now_nanos();
        for record in &batch {
            let sent = record
                .headers
                .iter()
                .find(|(k, _)| k == "t")
                .and_then(|(_, v)| v.as_ref())
                .and_then(|v| <[u8; 8]>::try_from(&v[..]).ok())
                .map(u64::from_be_bytes);
            if let Some(sent) = sent {
                latency.saturating_record(now.saturating_sub(sent) / 1000);
            }
            bytes += record.value.as_ref().map_or(0, |v| v.len() as u64);
        }
        received += batch.len() as u64;
        progress(started, received, common.records, &mut last);
    }
    let send_latency = producer.await??;
    line(format!(
        "  producer: send-to-ack p50 {:.3} ms, p99 {:.3} ms",
        send_latency.value_at_quantile(0.5) as f64 / 1000.0,
        send_latency.value_at_quantile(0.99) as f64 / 1000.0
    ));
    let summary =
        Summary { records: received, bytes, elapsed: started.elapsed(), latency_us: Some(latency) };
    summary.print(
        "end-to-end",
        common.format,
        json!({"rate": args.rate, "acks": format!("{:?}", args.acks).to_lowercase(), "max_in_flight": args.max_in_flight}),
    );
    drop(cluster);
    Ok(())
}

/// The one value every record of a run carries, kept for the whole run (leaked, once per run)
/// so that cloning and dropping it per record costs nothing: a shared `Bytes` has a reference
/// count, whose cache line then travels between the sending task and the producer's batching
/// task on every record (`bytes::shared_drop` was 4 % of this tool's samples at 1,000
/// partitions). Kafka's perf tool likewise reuses one payload array.
fn run_payload(bytes: Vec<u8>) -> Bytes {
    Bytes::from_static(Box::leak(bytes.into_boxed_slice()))
}
