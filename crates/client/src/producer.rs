//! The producer: per-partition batching with linger and a size limit, partitioning, acks,
//! retries with backoff, a bounded buffer, and a future or a callback per record.
//!
//! `send` adds the record to its batch in the caller's task (see `accumulator.rs`); the
//! producer's own task handles what no caller does: request answers, lingers running out,
//! flush and close.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use strata_record::Compression;
use tokio::runtime::Handle;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::accumulator::{Accumulator, Wakes, buffered_size};
use crate::produce_request::{Done, Requests};
use crate::record::{Delivered, Record};
use crate::{Client, ClientError, Result};

/// How much durability a send waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Acks {
    /// Do not wait: the future resolves when the batch is handed to the network, without an
    /// offset.
    None,
    /// Wait for the leader's durable append.
    Leader,
    /// Wait for a majority of replicas (the default).
    #[default]
    All,
}

impl Acks {
    pub(crate) fn to_proto(self) -> strata_proto::Acks {
        match self {
            Acks::None => strata_proto::Acks::None,
            Acks::Leader => strata_proto::Acks::Leader,
            Acks::All => strata_proto::Acks::All,
        }
    }
}

/// How a record without an explicit partition gets one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Partitioner {
    /// CRC-32C of the key modulo the partition count, so one key always lands in one partition
    /// (and keeps its order). Records without a key stick to one partition until its batch is
    /// full or sent, then move to the next (Kafka's sticky partitioner): whole batches instead
    /// of one record per partition per batch when there are many partitions.
    #[default]
    KeyHash,
    /// Record by record round robin, whatever the key.
    RoundRobin,
}

#[derive(Debug, Clone)]
pub struct ProducerConfig {
    pub acks: Acks,
    /// How long a batch waits for more records before it is sent. With a linger, a batch
    /// that is not full also waits while its partition has batches in flight; with none,
    /// while two are (see `docs/decisions.md`, "A lingering batch waits for its partition's
    /// answers").
    pub linger: Duration,
    /// A batch is sent once it holds this many bytes.
    pub batch_bytes: usize,
    pub partitioner: Partitioner,
    /// Attempts after the first for a retriable failure (server unavailable, connection lost).
    pub retries: u32,
    /// Wait before the first retry; doubles each time, up to a quarter second (a failover is
    /// noticed within that of the new leader's election).
    pub retry_backoff: Duration,
    /// How long one produce request may take before it counts as failed (and is retried): a
    /// stopped or cut-off leader never answers.
    pub request_timeout: Duration,
    /// Codec for each batch's records: `None`, `Lz4` or `Zstd`.
    pub compression: Compression,
    /// Batches per partition in flight at once, each in its own request (Kafka's
    /// `max.in.flight.requests.per.connection`, 5 there too). With `Acks::None` there is no
    /// sequencing answer to wait for, and one batch is in flight. At most 5: the leader
    /// remembers a producer's last five batches for answering retries.
    pub max_in_flight: usize,
    /// Requests in flight at once, over all brokers, their retries included. Each request
    /// carries the batches ready for one broker at the time it was sent, one per partition;
    /// the bound keeps a slow disk's queue at the client, where batches keep filling, instead
    /// of at the server past their timeout.
    pub max_requests_in_flight: usize,
    /// A request takes no more batches once it holds this many bytes, counted before
    /// compression (Kafka's `max.request.size`); a single larger batch still goes, alone.
    pub max_request_bytes: usize,
    /// Bytes of records added (queued or sent) and not yet answered, at most (Kafka's
    /// `buffer.memory`): a `send` that would go over waits until answers free room, first
    /// come first served, so a producer faster than its cluster holds this much, not
    /// everything it was given. A record larger than the whole buffer goes alone.
    pub buffer_bytes: usize,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            acks: Acks::All,
            linger: Duration::from_millis(5),
            batch_bytes: 64 * 1024,
            partitioner: Partitioner::KeyHash,
            // With the backoff cap, about 10 s of retries: longer than a leader election.
            retries: 40,
            retry_backoff: Duration::from_millis(100),
            request_timeout: Duration::from_secs(5),
            compression: Compression::None,
            max_in_flight: 5,
            max_requests_in_flight: 64,
            max_request_bytes: 1024 * 1024,
            buffer_bytes: 32 * 1024 * 1024,
        }
    }
}

/// Who hears where a record landed: the future `send` returned, or the callback given to
/// `send_with_callback`. Answered exactly once: a waiter dropped unanswered (the producer
/// stopped) answers `Closed`, as a dropped future's channel does.
pub(crate) struct Waiter(Option<Answer>);

enum Answer {
    Future(oneshot::Sender<Result<Delivered>>),
    Callback(Box<dyn FnOnce(Result<Delivered>) + Send>),
}

impl Waiter {
    fn future(tx: oneshot::Sender<Result<Delivered>>) -> Waiter {
        Waiter(Some(Answer::Future(tx)))
    }

    pub(crate) fn callback(callback: impl FnOnce(Result<Delivered>) + Send + 'static) -> Waiter {
        Waiter(Some(Answer::Callback(Box::new(callback))))
    }

    /// Tells the sender of the record (a future nobody awaits any more is fine).
    pub(crate) fn answer(mut self, outcome: Result<Delivered>) {
        if let Some(answer) = self.0.take() {
            answer.give(outcome);
        }
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        if let Some(answer) = self.0.take() {
            answer.give(Err(ClientError::Closed));
        }
    }
}

impl Answer {
    fn give(self, outcome: Result<Delivered>) {
        match self {
            Answer::Future(tx) => {
                let _ = tx.send(outcome);
            }
            Answer::Callback(callback) => {
                // A user's callback must not take the producer's task down with it: the rest
                // of its batch would never be answered, nor would flush return.
                let called = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    callback(outcome);
                }));
                if called.is_err() {
                    tracing::error!("a send_with_callback callback panicked");
                }
            }
        }
    }
}

/// Resolves to where one record landed, once its batch was acknowledged.
#[derive(Debug)]
pub struct DeliveryFuture(oneshot::Receiver<Result<Delivered>>);

impl Future for DeliveryFuture {
    type Output = Result<Delivered>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map(|r| r.unwrap_or(Err(ClientError::Closed)))
    }
}

/// What the callers of `send` and the producer's task share.
struct Shared {
    accumulator: Mutex<Accumulator>,
    /// Wakes the producer's task: a linger deadline earlier than the one it sleeps to, or
    /// close.
    task: Notify,
    /// Wakes the callers waiting for buffer room.
    room: Notify,
    /// Starts the requests a turn staged, once it released the lock.
    requests: Requests,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Accumulator> {
        self.accumulator.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ends a turn at the accumulator: its requests go, and whoever it concerns is woken.
    fn end_turn(&self, mut accumulator: MutexGuard<'_, Accumulator>) {
        let Wakes { requests, task, room } = accumulator.end_turn();
        drop(accumulator);
        for (address, staged) in requests {
            self.requests.spawn(address, staged);
        }
        if task {
            self.task.notify_one();
        }
        if room {
            self.room.notify_waiters();
        }
    }
}

/// Sends records to topics. Cheap to share behind an `Arc`; `close` flushes, and so does
/// dropping it (without waiting).
pub struct Producer {
    client: Client,
    shared: Arc<Shared>,
    task: Option<JoinHandle<()>>,
    /// Why `ProducerConfig::compression` cannot be used, if it cannot: every send says so.
    refused_codec: Option<ClientError>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer").finish_non_exhaustive()
    }
}

impl Producer {
    /// A producer whose requests and task run on the current tokio runtime (it must be
    /// called within one); `send` may then be called from any executor.
    pub fn new(client: Client, config: ProducerConfig) -> Producer {
        let refused_codec = match config.compression {
            Compression::None | Compression::Lz4 | Compression::Zstd => None,
            other => Some(ClientError::InvalidArgument(format!(
                "compression {other:?} is not supported; use none, lz4 or zstd"
            ))),
        };
        let (done_tx, done) = mpsc::unbounded_channel();
        let requests = Requests {
            runtime: Handle::current(),
            client: client.clone(),
            config: config.clone(),
            done: done_tx.clone(),
        };
        let accumulator = Accumulator::new(client.clone(), config, done_tx);
        let shared = Arc::new(Shared {
            accumulator: Mutex::new(accumulator),
            task: Notify::new(),
            room: Notify::new(),
            requests,
        });
        let task = tokio::spawn(run(shared.clone(), done));
        Producer { client, shared, task: Some(task), refused_codec }
    }

    /// Queues a record and returns the future of its delivery. Records queued one after the
    /// other share batches, so send many, then await their futures. Waits only to learn a
    /// topic's partitions the first time, or for buffer room (`buffer_bytes`).
    pub async fn send(&self, record: Record) -> Result<DeliveryFuture> {
        let (tx, rx) = oneshot::channel();
        self.append(record, Waiter::future(tx)).await?;
        Ok(DeliveryFuture(rx))
    }

    /// Queues a record and calls `callback` with where it landed once its batch is
    /// acknowledged, or with why it failed (Kafka's `send(record, callback)`). Nothing is
    /// left to await per record, so a sender that only counts acknowledgements (a
    /// benchmark, a pipeline stage) saves a future and a wake-up per record. The callback
    /// runs on the producer's tasks, possibly several at once for different batches: keep it
    /// short, and never block in it. A callback that panics is logged and counts as called.
    /// If the producer is closed, this returns `Closed` and the callback hears it too. Records
    /// land in the order they were sent, and a partition's callbacks run in that order too
    /// (offset order), also with batches pipelined, as Kafka's do; callbacks of different
    /// partitions may run at the same time.
    pub async fn send_with_callback(
        &self,
        record: Record,
        callback: impl FnOnce(Result<Delivered>) + Send + 'static,
    ) -> Result<()> {
        self.append(record, Waiter::callback(callback)).await
    }

    /// Adds `record` to its partition's batch, in this task. Failures that concern the record
    /// (an unknown topic, no such partition) go to its waiter; `Closed` to both.
    async fn append(&self, record: Record, waiter: Waiter) -> Result<()> {
        if let Some(err) = &self.refused_codec {
            waiter.answer(Err(err.clone()));
            return Err(err.clone());
        }
        let bytes = buffered_size(&record);
        let mut entry = Some((record, waiter));
        // A place in the line for buffer room, left if this send is dropped while waiting.
        let mut ticket = Ticket { shared: &self.shared, number: None };
        loop {
            // Made before looking, so that room freed meanwhile still wakes it (cheap: an
            // atomic read, and nothing to undo if it is never awaited).
            let room = self.shared.room.notified();
            match self.try_add(&mut entry, &mut ticket.number, bytes)? {
                Turn::Added => return Ok(()),
                Turn::NoRoom => room.await,
                Turn::UnknownTopic => {
                    let (record, _) = entry.as_ref().expect("not added yet");
                    if let Err(err) = self.partition_count(&record.topic).await {
                        let (_, waiter) = entry.take().expect("not added yet");
                        waiter.answer(Err(err));
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Adds the record in `entry` if its topic's partitions are known, the buffer has room for
    /// its `bytes` and it is this caller's turn; otherwise says what it waits for (in line,
    /// with `ticket`, for room). One lock for all of it: this runs for every record.
    fn try_add(
        &self,
        entry: &mut Option<(Record, Waiter)>,
        ticket: &mut Option<u64>,
        bytes: usize,
    ) -> Result<Turn> {
        let mut accumulator = self.shared.lock();
        if accumulator.closed {
            return Err(ClientError::Closed);
        }
        let (record, _) = entry.as_ref().expect("not added yet");
        let Some(&count) = accumulator.partition_counts.get(&record.topic) else {
            return Ok(Turn::UnknownTopic);
        };
        if !accumulator.room.take(bytes, ticket) {
            return Ok(Turn::NoRoom);
        }
        let (record, waiter) = entry.take().expect("not added yet");
        let refused = accumulator.add(record, waiter, count, bytes);
        self.shared.end_turn(accumulator);
        // Answered outside the lock: a callback never runs under it.
        if let Some((waiter, err)) = refused {
            waiter.answer(Err(err));
        }
        Ok(Turn::Added)
    }

    /// Partitions of `topic`, asked of the cluster (on the producer's runtime, whatever
    /// executor runs `send`) and remembered.
    async fn partition_count(&self, topic: &str) -> Result<u32> {
        let (client, owned) = (self.client.clone(), topic.to_owned());
        let lookup =
            self.shared.requests.runtime.spawn(async move { client.partition_count(&owned).await });
        let count = lookup.await.map_err(|_| ClientError::Closed)??;
        if count == 0 {
            return Err(ClientError::InvalidArgument(format!("topic {topic} has no partitions")));
        }
        self.shared.lock().partition_counts.insert(topic.to_owned(), count);
        Ok(count)
    }

    /// Sends every queued record now and waits until all are acknowledged (or failed).
    pub async fn flush(&self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.start_flush(tx)?;
        rx.await.map_err(|_| ClientError::Closed)
    }

    fn start_flush(&self, done: oneshot::Sender<()>) -> Result<()> {
        let mut accumulator = self.shared.lock();
        if accumulator.closed {
            return Err(ClientError::Closed);
        }
        accumulator.flush(done);
        self.shared.end_turn(accumulator);
        Ok(())
    }

    /// Flushes and stops the producer.
    pub async fn close(mut self) -> Result<()> {
        self.flush().await?;
        self.stop();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        Ok(())
    }

    /// Takes no more records; the producer's task sends what is queued and ends once all is
    /// answered.
    fn stop(&self) {
        let mut accumulator = self.shared.lock();
        accumulator.closed = true;
        accumulator.draining = true;
        drop(accumulator);
        self.shared.task.notify_one();
    }
}

/// What one look at the accumulator did for a record.
enum Turn {
    Added,
    /// The buffer has no room for it yet, or others wait before it.
    NoRoom,
    /// Its topic's partitions are not known yet.
    UnknownTopic,
}

/// A caller's place in the line for buffer room, if it has one.
struct Ticket<'a> {
    shared: &'a Shared,
    number: Option<u64>,
}

impl Drop for Ticket<'_> {
    /// A `send` dropped while waiting for room leaves the line, or those behind it would wait
    /// for its turn forever.
    fn drop(&mut self) {
        if let Some(number) = self.number {
            let mut accumulator = self.shared.lock();
            accumulator.room.leave(number);
            self.shared.end_turn(accumulator);
        }
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The producer's task: request answers, lingers running out, and the sends that flush and
/// close start. Ends once the producer is closed and everything is answered.
async fn run(shared: Arc<Shared>, mut done: mpsc::UnboundedReceiver<Done>) {
    loop {
        let deadline = {
            let mut accumulator = shared.lock();
            if accumulator.is_finished() {
                return;
            }
            accumulator.next_wake()
        };
        tokio::select! {
            Some(first) = done.recv() => {
                let mut accumulator = shared.lock();
                accumulator.on_done(first);
                // Answers that came meanwhile, in the same turn.
                while let Ok(next) = done.try_recv() {
                    accumulator.on_done(next);
                }
                shared.end_turn(accumulator);
            }
            _ = sleep_until_or_forever(deadline) => {
                let mut accumulator = shared.lock();
                accumulator.send_lingered();
                shared.end_turn(accumulator);
            }
            _ = shared.task.notified() => {
                let mut accumulator = shared.lock();
                if accumulator.closed {
                    // Dropped without close: what is queued still goes.
                    accumulator.send_all_ready();
                }
                shared.end_turn(accumulator);
            }
        }
    }
}

async fn sleep_until_or_forever(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
