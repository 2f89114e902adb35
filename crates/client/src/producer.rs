//! The producer: per-partition batching with linger and a size limit, partitioning, acks,
//! retries with backoff, and a future or a callback per record.
//!
//! One background task owns the batches. Batches that are ready together go to their leader
//! in one request (one per broker, as in Kafka), so with many partitions the cost of a request
//! is shared. Each partition has up to `max_in_flight` batches in flight (pipelining: the next
//! batch travels and is written while the previous one is being fsynced). Every batch carries
//! the producer id and the sequence of its first record, and the partition's leader writes a
//! producer's batches in sequence order whatever order the requests arrive in, so batches (and
//! their retries) land in the order the records were sent.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use foldhash::{HashMap, HashMapExt};
use strata_record::{BatchBuilder, Compression, Offset, Timestamp};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::answers::Answers;
use crate::produce_request::{Done, Outgoing, PartitionKey, Staged, spawn_request};
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
    /// A request takes no more batches once it holds this many bytes (Kafka's
    /// `max.request.size`); a single larger batch still goes, alone.
    pub max_request_bytes: usize,
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

enum Command {
    Send(Record, Waiter),
    Flush(oneshot::Sender<()>),
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

/// Sends records to topics. Cheap to share behind an `Arc`; `close` flushes.
#[derive(Debug)]
pub struct Producer {
    commands: mpsc::Sender<Command>,
    task: JoinHandle<()>,
}

impl Producer {
    pub fn new(client: Client, config: ProducerConfig) -> Producer {
        let (commands, rx) = mpsc::channel(4096);
        let task = tokio::spawn(Accumulator::new(client, config).run(rx));
        Producer { commands, task }
    }

    /// Queues a record and returns the future of its delivery. Records queued one after the
    /// other share batches, so send many, then await their futures.
    pub async fn send(&self, record: Record) -> Result<DeliveryFuture> {
        let (tx, rx) = oneshot::channel();
        let command = Command::Send(record, Waiter::future(tx));
        self.commands.send(command).await.map_err(|_| ClientError::Closed)?;
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
        let command = Command::Send(record, Waiter::callback(callback));
        self.commands.send(command).await.map_err(|_| ClientError::Closed)
    }

    /// Sends every queued record now and waits until all are acknowledged (or failed).
    pub async fn flush(&self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(Command::Flush(tx)).await.map_err(|_| ClientError::Closed)?;
        rx.await.map_err(|_| ClientError::Closed)
    }

    /// Flushes and stops the producer.
    pub async fn close(self) -> Result<()> {
        self.flush().await?;
        drop(self.commands);
        let _ = self.task.await;
        Ok(())
    }
}

struct Batch {
    builder: BatchBuilder,
    waiters: Vec<Waiter>,
    /// When the batch is ready even if not full (first record + linger).
    deadline: Instant,
}

/// One partition's pending records: sealed batches waiting their turn, then the open one
/// (the last). Batches are sent oldest first, with consecutive sequences, so the leader
/// writes them — and retries of them — in the order their records were sent.
struct PartitionQueue {
    batches: VecDeque<Batch>,
    /// Batches sent and not yet retired, oldest first, with whether each was answered. A
    /// batch retires once it and every batch before it are answered, and only `max_in_flight`
    /// may be unretired: so the leader never has more than that many of this producer's
    /// batches past the oldest unanswered one, and a retry of it is always among the batches
    /// the leader remembers (five, as in Kafka).
    unretired: VecDeque<(u64, bool)>,
    /// Batches sent so far: the next one's number in `unretired`.
    sent: u64,
    /// Listed in `Accumulator::slot_waiters`: ready, but every request slot was taken.
    awaiting_slot: bool,
    /// The deadline of this queue's live entry in `Accumulator::lingering`, if it has one.
    /// Entries that do not match it are stale and skipped.
    scheduled: Option<Instant>,
    /// A batch failed for good: nothing more is sent until every batch in flight is
    /// answered, then the queue starts over with a fresh producer id. Sending under a fresh id
    /// at once could let a new batch land before an older one still being retried.
    restart_pending: bool,
    /// Idempotence: each batch carries this producer id and the sequence of its first record,
    /// and a retry resends the same bytes, so a leader that already stored the batch answers
    /// with its offsets instead of storing it twice. Ids are per partition queue; after a
    /// batch failed for good the queue takes a fresh id, since whether that batch was stored
    /// is unknown (batches already in flight behind it with the old id are then refused as out
    /// of order, and fail too).
    producer_id: i64,
    next_sequence: i32,
    /// Answers the batches sent, in the order they were sent.
    answers: Answers,
    /// Bytes of the last batch sent. The next batch gets room for twice as much at once (up to
    /// `batch_bytes`): a partition streaming full batches then never regrows its buffer (each
    /// doubling copied all the records so far, a second copy of every byte with 1 MiB
    /// batches), nor does one whose batches vary in size, as at 1,000 partitions, where growth
    /// was 7.5 % of the producer's samples (`perf`, session 14). A batch that used much less
    /// (compressed) gives the room back when it is built.
    last_batch_bytes: usize,
}

impl Default for PartitionQueue {
    fn default() -> Self {
        PartitionQueue {
            batches: VecDeque::new(),
            unretired: VecDeque::new(),
            sent: 0,
            awaiting_slot: false,
            scheduled: None,
            restart_pending: false,
            producer_id: fresh_producer_id(),
            next_sequence: 0,
            answers: Answers::default(),
            last_batch_bytes: 0,
        }
    }
}

impl PartitionQueue {
    /// Marks batch `number` answered and retires the answered ones at the front.
    fn answered(&mut self, number: u64) {
        if let Some(entry) = self.unretired.iter_mut().find(|(n, _)| *n == number) {
            entry.1 = true;
        }
        while self.unretired.front().is_some_and(|(_, answered)| *answered) {
            self.unretired.pop_front();
        }
    }
}

/// With no linger, a partition's batches that are not full go at once while fewer than this
/// many of its batches are in flight; then records gather into one batch until an answer
/// comes. Five single-record requests at once (`max_in_flight`) queue behind each other's
/// fsyncs, and in a cluster behind each other's Raft entries; two keep a request travelling
/// while one is written. End to end at 5,000 records/s (`strata-bench e2e`, session 12):
/// 3 nodes p99 2.95–3.86 ms against 3.82–5.40 with five, 1 node p99 1.09–1.80 against
/// 1.11–2.66 (p50 0.54–0.63 against 0.46–0.69).
const PARTIAL_BATCHES_IN_FLIGHT: usize = 2;

/// A random non-negative producer id (63 bits: collisions are not a practical concern).
fn fresh_producer_id() -> i64 {
    (rand::random::<u64>() >> 1) as i64
}

struct Accumulator {
    client: Client,
    config: ProducerConfig,
    queues: HashMap<PartitionKey, PartitionQueue>,
    partition_counts: HashMap<String, u32>,
    round_robin: u32,
    /// Per topic, the partition keyless records go to until its open batch is full or sent
    /// (`Partitioner::KeyHash`); then they move to the next partition. Partitions get batches
    /// in turn; each producer starts at a random partition so that producers do not all fill
    /// the same one.
    sticky: HashMap<String, u32>,
    /// Request tasks report here when a request finished (freeing its slot) and when each of
    /// its batches was answered for good.
    done_tx: mpsc::UnboundedSender<Done>,
    done_rx: mpsc::UnboundedReceiver<Done>,
    /// Batches sent during the current pass, by leader address: each becomes one request at
    /// the end of the pass. A broker's first batch takes a request slot, the others share it.
    staged: HashMap<String, Staged>,
    /// Flushes waiting for every queue to drain.
    flushes: Vec<oneshot::Sender<()>>,
    /// Set by flush and close: every batch is ready now, whatever its linger.
    draining: bool,
    /// Requests sent and not finished, and those staged in this pass, over all brokers.
    requests_in_flight: usize,
    /// Where the next round of sends starts among the ready partitions, so that under the
    /// `max_requests_in_flight` bound every partition gets its turn.
    rotation: usize,
    /// First batches that may go once their linger is over, earliest deadline first. Kept up
    /// to date as batches open and partitions are looked at, so that a record, an answer or a
    /// linger running out costs work for its own partition only, not a scan of every
    /// partition (which made 1,000 partitions client-bound). An entry goes stale when its batch
    /// leaves; `PartitionQueue::scheduled` tells the live ones. A due entry whose partition
    /// cannot send is dropped when popped: an answer or a free slot looks at it again.
    lingering: BinaryHeap<Reverse<(Instant, PartitionKey)>>,
    /// Partitions with a ready batch that found every request slot taken, in the order they
    /// found it: each answer hands its slot to the first of them.
    slot_waiters: VecDeque<PartitionKey>,
}

impl Accumulator {
    fn new(client: Client, config: ProducerConfig) -> Self {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        Accumulator {
            client,
            config,
            queues: HashMap::new(),
            partition_counts: HashMap::new(),
            round_robin: 0,
            sticky: HashMap::new(),
            done_tx,
            done_rx,
            staged: HashMap::new(),
            flushes: Vec::new(),
            draining: false,
            requests_in_flight: 0,
            rotation: 0,
            lingering: BinaryHeap::new(),
            slot_waiters: VecDeque::new(),
        }
    }

    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut open = true;
        loop {
            // Also while every request slot is taken: a batch whose linger ran out then joins
            // `slot_waiters` in its turn (first come, first served), and stale entries keep
            // being dropped.
            let next_deadline = self.next_lingering_deadline();
            tokio::select! {
                command = commands.recv(), if open => match command {
                    Some(Command::Send(record, waiter)) => self.add(record, waiter).await,
                    Some(Command::Flush(done)) => {
                        self.flushes.push(done);
                        self.draining = true;
                        self.send_all_ready();
                    }
                    None => {
                        open = false;
                        self.draining = true;
                        self.send_all_ready();
                    }
                },
                Some(done) = self.done_rx.recv() => match done {
                    Done::RequestFinished => {
                        let slots_were_full = !self.has_request_slot();
                        self.requests_in_flight -= 1;
                        if slots_were_full {
                            self.hand_out_slots();
                        }
                    }
                    Done::Answered { key, number, failed } => {
                        if let Some(queue) = self.queues.get_mut(&key) {
                            queue.answered(number);
                            queue.restart_pending |= failed;
                        }
                        self.send_ready_for(&key);
                    }
                },
                _ = sleep_until_or_forever(next_deadline) => self.send_lingered(),
            }
            self.dispatch();
            // Only flush and close wait for everything to drain: look only then.
            let waiting = !self.flushes.is_empty() || !open;
            if waiting
                && self.requests_in_flight == 0
                && self.queues.values().all(|q| q.batches.is_empty() && q.unretired.is_empty())
            {
                self.draining = false;
                for done in self.flushes.drain(..) {
                    let _ = done.send(());
                }
                if !open {
                    return;
                }
            }
        }
    }

    async fn partition_for(&mut self, record: &Record) -> Result<u32> {
        let count = match self.partition_counts.get(&record.topic) {
            Some(&n) => n,
            None => {
                let n = self.client.partition_count(&record.topic).await?;
                if n == 0 {
                    return Err(ClientError::InvalidArgument(format!(
                        "topic {} has no partitions",
                        record.topic
                    )));
                }
                self.partition_counts.insert(record.topic.clone(), n);
                n
            }
        };
        if let Some(p) = record.partition {
            if p >= count {
                return Err(ClientError::InvalidArgument(format!(
                    "topic {} has {count} partitions; there is no partition {p}",
                    record.topic
                )));
            }
            return Ok(p);
        }
        match (&record.key, self.config.partitioner) {
            (Some(key), Partitioner::KeyHash) => Ok(crc32c::crc32c(key) % count),
            (None, Partitioner::KeyHash) => match self.sticky.get(&record.topic) {
                // The topic may have fewer partitions than when this one was picked.
                Some(&sticky) => Ok(sticky % count),
                None => {
                    let first = rand::random::<u32>() % count;
                    self.sticky.insert(record.topic.clone(), first);
                    Ok(first)
                }
            },
            (_, Partitioner::RoundRobin) => {
                self.round_robin = self.round_robin.wrapping_add(1);
                Ok(self.round_robin % count)
            }
        }
    }

    async fn add(&mut self, record: Record, waiter: Waiter) {
        let partition = match self.partition_for(&record).await {
            Ok(p) => p,
            Err(err) => {
                waiter.answer(Err(err));
                return;
            }
        };
        let sticky = self.is_sticky(&record);
        let Record { topic, key: record_key, value, headers, timestamp, .. } = record;
        let (record_key, value) = (record_key.as_deref(), value.as_deref());
        let key = (topic, partition);
        let now = Instant::now();
        let timestamp = timestamp.unwrap_or_else(Timestamp::now);
        let headers: Vec<(&str, Option<&[u8]>)> =
            headers.iter().map(|(k, v)| (k.as_str(), v.as_deref())).collect();
        let (linger, limit) = (self.config.linger, self.config.batch_bytes);
        if !self.queues.contains_key(&key) {
            self.queues.insert(key.clone(), PartitionQueue::default());
        }
        let queue = self.queues.get_mut(&key).expect("the queue was just made");
        let fits = queue.batches.back().is_some_and(|b| {
            let size = b.builder.record_size(timestamp, record_key, value, &headers);
            b.builder.size() + size <= limit
        });
        if !fits {
            queue.batches.push_back(Batch {
                builder: BatchBuilder::with_capacity((2 * queue.last_batch_bytes).min(limit)),
                waiters: Vec::new(),
                deadline: now + linger,
            });
        }
        let opened_first = !fits && queue.batches.len() == 1;
        let batch = queue.batches.back_mut().expect("a batch is open");
        let before = batch.builder.size();
        batch.builder.push(timestamp, record_key, value, &headers);
        let size = batch.builder.size() - before;
        batch.waiters.push(waiter);
        let (full, deadline) = (batch.builder.size() >= limit, batch.deadline);
        let next_opens_batch = batch.builder.size() + size > limit;
        let sealed = queue.batches.len() > 1;
        // A batch due now (no linger) goes at once if it may: left to the linger timer it would
        // wait for the timer's next millisecond tick. One that may not waits for an answer,
        // which looks at its partition again.
        let sendable_now =
            deadline <= now && self.queues.get(&key).is_some_and(|q| self.can_send(&key, q, now));
        if next_opens_batch && sticky {
            // The next record like this one would open a new batch: the next partition gets it.
            Self::move_sticky_on(&mut self.sticky, &self.partition_counts, &key);
        }
        if full || sealed || sendable_now {
            // Schedules whatever batch is first afterwards.
            self.send_ready_for(&key);
        } else if opened_first {
            self.schedule(&key);
        }
    }

    /// Sends the topic's keyless records on to the next partition, if `key` is the one they go
    /// to now. (Takes the two maps, not `self`, so a caller may hold a queue meanwhile.)
    fn move_sticky_on(
        sticky: &mut HashMap<String, u32>,
        partition_counts: &HashMap<String, u32>,
        key: &PartitionKey,
    ) {
        let count = partition_counts.get(&key.0).copied().unwrap_or(1);
        if let Some(sticky) = sticky.get_mut(&key.0)
            && *sticky % count == key.1
        {
            *sticky = (key.1 + 1) % count;
        }
    }

    /// Whether `record` went to its topic's sticky partition (it has no key or partition).
    fn is_sticky(&self, record: &Record) -> bool {
        record.partition.is_none()
            && record.key.is_none()
            && self.config.partitioner == Partitioner::KeyHash
    }

    /// Whether another request may start (the `max_requests_in_flight` bound).
    fn has_request_slot(&self) -> bool {
        self.requests_in_flight < self.config.max_requests_in_flight.max(1)
    }

    /// Sends `key`'s ready batches while it has room in flight, and notes when its next batch
    /// becomes ready by its linger.
    fn send_ready_for(&mut self, key: &PartitionKey) {
        let now = Instant::now();
        while self.queues.get(key).is_some_and(|q| self.can_send(key, q, now)) {
            self.send_first(key.clone());
        }
        self.schedule(key);
        self.wait_for_slot_if_ready(key, now);
    }

    /// Lists `key`'s first batch in `lingering` if it may go once its linger is over and is
    /// not listed yet. A partition without room in flight is looked at again when an answer
    /// comes.
    fn schedule(&mut self, key: &PartitionKey) {
        let Some(queue) = self.queues.get(key) else { return };
        if !self.has_room(queue) || !self.may_send_partial(queue) {
            return;
        }
        let Some(deadline) = queue.batches.front().map(|b| b.deadline) else { return };
        if queue.scheduled == Some(deadline) {
            return;
        }
        if let Some(queue) = self.queues.get_mut(key) {
            queue.scheduled = Some(deadline);
        }
        self.lingering.push(Reverse((deadline, key.clone())));
    }

    /// Whether a `lingering` entry still stands for its partition's first batch.
    fn is_live(&self, deadline: Instant, key: &PartitionKey) -> bool {
        self.queues.get(key).is_some_and(|q| q.scheduled == Some(deadline))
    }

    /// The earliest deadline in `lingering`, stale entries dropped on the way.
    fn next_lingering_deadline(&mut self) -> Option<Instant> {
        while let Some(Reverse((deadline, key))) = self.lingering.peek() {
            if self.is_live(*deadline, key) {
                return Some(*deadline);
            }
            self.lingering.pop();
        }
        None
    }

    /// Sends the batches whose linger is over, earliest deadline first.
    fn send_lingered(&mut self) {
        self.hand_out_slots();
        let now = Instant::now();
        // `next_lingering_deadline` drops stale entries: the one it finds due is live.
        while self.next_lingering_deadline().is_some_and(|deadline| deadline <= now) {
            let Some(Reverse((_, key))) = self.lingering.pop() else { break };
            let Some(queue) = self.queues.get_mut(&key) else { continue };
            queue.scheduled = None;
            // One waiting for a slot is served, in its turn, by `hand_out_slots`.
            if !queue.awaiting_slot {
                self.send_ready_for(&key);
            }
        }
    }

    /// Lists `key` among the partitions waiting for a request slot if only the lack of one
    /// keeps its first batch back.
    fn wait_for_slot_if_ready(&mut self, key: &PartitionKey, now: Instant) {
        if self.has_request_slot() || self.joins_staged(key) {
            return;
        }
        let ready = self.queues.get(key).is_some_and(|q| !q.awaiting_slot && self.is_ready(q, now));
        if ready && let Some(queue) = self.queues.get_mut(key) {
            queue.awaiting_slot = true;
            self.slot_waiters.push_back(key.clone());
        }
    }

    /// Gives free request slots to the partitions waiting for one, first come first served;
    /// waiting partitions whose leader already has a request staged join it.
    fn hand_out_slots(&mut self) {
        if !self.has_request_slot() {
            return;
        }
        let waiting = std::mem::take(&mut self.slot_waiters);
        for key in waiting {
            if self.has_request_slot() || self.joins_staged(&key) {
                if let Some(queue) = self.queues.get_mut(&key) {
                    queue.awaiting_slot = false;
                }
                self.send_ready_for(&key);
            } else {
                self.slot_waiters.push_back(key);
            }
        }
    }

    /// Whether a batch of `key` may join a request already staged for its leader.
    fn joins_staged(&self, key: &PartitionKey) -> bool {
        !self.staged.is_empty()
            && self
                .staged
                .get(&self.client.leader_address(&key.0, key.1))
                .is_some_and(|s| s.takes(key, self.config.max_request_bytes))
    }

    /// Requests per partition in flight at once.
    fn max_in_flight(&self) -> usize {
        // At most five: the leader remembers a producer's last five batches, and a retry must
        // be among them.
        if self.config.acks == Acks::None { 1 } else { self.config.max_in_flight.clamp(1, 5) }
    }

    /// Sends ready batches while there is room in flight, one per partition per round, the
    /// rounds starting at a rotating partition. A batch is ready when sealed behind another,
    /// full, past its linger, or while flushing. Looks at every partition: for flush and close.
    fn send_all_ready(&mut self) {
        let now = Instant::now();
        self.hand_out_slots();
        let mut ready: Vec<PartitionKey> = self
            .queues
            .iter()
            .filter(|(_, q)| !q.awaiting_slot && self.is_ready(q, now))
            .map(|(k, _)| k.clone())
            .collect();
        if !ready.is_empty() {
            self.rotation = self.rotation.wrapping_add(1);
            let start = self.rotation % ready.len();
            ready.rotate_left(start);
            let mut round = ready.clone();
            while !round.is_empty() {
                round.retain(|key| {
                    let sendable = self.queues.get(key).is_some_and(|q| self.can_send(key, q, now));
                    if sendable {
                        self.send_first(key.clone());
                    }
                    sendable
                });
            }
            for key in &ready {
                self.schedule(key);
                self.wait_for_slot_if_ready(key, now);
            }
        }
    }

    /// Whether `queue`'s first batch is ready and may go now: in a new request, or in one
    /// staged for its leader.
    fn can_send(&self, key: &PartitionKey, queue: &PartitionQueue, now: Instant) -> bool {
        self.is_ready(queue, now) && (self.has_request_slot() || self.joins_staged(key))
    }

    /// Whether `queue`'s first batch is ready and the partition has room in flight (a request
    /// slot aside).
    fn is_ready(&self, queue: &PartitionQueue, now: Instant) -> bool {
        self.has_room(queue)
            && queue.batches.front().is_some_and(|b| {
                self.draining
                    || queue.batches.len() > 1
                    || b.builder.size() >= self.config.batch_bytes
                    || (b.deadline <= now && self.may_send_partial(queue))
            })
    }

    /// Whether a batch that is not full may go once its linger is over. With a linger, not
    /// while the partition has batches in flight: the batch keeps filling until they are
    /// answered, so a partition written slowly (one of many) sends one bigger batch per disk
    /// round instead of a stream of small ones, each an fsync's worth of work at the leader.
    /// With no linger (latency first), while fewer than [`PARTIAL_BATCHES_IN_FLIGHT`] are in
    /// flight. Full batches still pipeline up to `max_in_flight`.
    fn may_send_partial(&self, queue: &PartitionQueue) -> bool {
        let limit = if self.config.linger.is_zero() { PARTIAL_BATCHES_IN_FLIGHT } else { 1 };
        queue.unretired.len() < limit
    }

    /// Whether `queue` may have another request in flight: below the limit, or, after a
    /// failure, once every earlier request is answered.
    fn has_room(&self, queue: &PartitionQueue) -> bool {
        if queue.restart_pending {
            queue.unretired.is_empty()
        } else {
            queue.unretired.len() < self.max_in_flight()
        }
    }

    fn send_first(&mut self, key: PartitionKey) {
        let Some(queue) = self.queues.get_mut(&key) else { return };
        let Some(mut batch) = queue.batches.pop_front() else { return };
        // Its `lingering` entry, if any, is stale now; the next batch gets its own.
        queue.scheduled = None;
        queue.last_batch_bytes = batch.builder.size() - strata_record::BATCH_HEADER_LEN;
        if queue.batches.is_empty() {
            // The open batch left, perhaps before it filled (linger, flush, linger 0): if it
            // was the sticky partition's, keyless records move on, or a slow producer would
            // feed one partition forever.
            Self::move_sticky_on(&mut self.sticky, &self.partition_counts, &key);
        }
        if queue.restart_pending {
            queue.producer_id = fresh_producer_id();
            queue.next_sequence = 0;
            queue.restart_pending = false;
        }
        let records = batch.builder.len() as i32;
        if self.config.acks != Acks::None {
            batch.builder.producer(queue.producer_id, 0, queue.next_sequence);
            queue.next_sequence = queue.next_sequence.wrapping_add(records);
        }
        let bytes = match batch.builder.build_compressed(Offset(0), self.config.compression) {
            Ok(bytes) => bytes,
            Err(err) => {
                // Answered in the partition's turn, after the batches sent before it.
                let number = queue.sent;
                queue.sent += 1;
                queue.answers.settle(number, batch.waiters, key.1, Err(err.into()));
                // Its sequences were never sent: the next batch takes them.
                if self.config.acks != Acks::None {
                    queue.next_sequence = queue.next_sequence.wrapping_sub(records);
                }
                return;
            }
        };
        let number = queue.sent;
        queue.sent += 1;
        queue.unretired.push_back((number, false));
        let address = self.client.leader_address(&key.0, key.1);
        if self.staged.get(&address).is_some_and(|s| !s.takes(&key, self.config.max_request_bytes))
        {
            // Full, or holding a batch of this partition already: it goes now, and this batch
            // starts the broker's next request (`can_send` saw a free slot for it).
            let full = self.staged.remove(&address).expect("just looked up");
            spawn_request(&self.client, &self.config, address.clone(), full, &self.done_tx);
        }
        let staged = self.staged.entry(address).or_insert_with(|| {
            self.requests_in_flight += 1;
            Staged::default()
        });
        let answers = queue.answers.clone();
        let done = self.done_tx.clone();
        staged.push(Outgoing::new(key, number, bytes, batch.waiters, answers, done));
    }

    /// Sends each broker's staged batches as one request.
    fn dispatch(&mut self) {
        for (address, staged) in self.staged.drain() {
            spawn_request(&self.client, &self.config, address, staged, &self.done_tx);
        }
    }
}

async fn sleep_until_or_forever(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
