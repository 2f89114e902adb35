//! The producer's batches, shared by the callers of `send` and the producer's task.
//!
//! A record is added to its partition's open batch by the caller of `send` itself, under one
//! lock, as Kafka's `RecordAccumulator.append` runs in the caller's thread: no hand-over to
//! another task per record. The producer's task wakes for what no caller does: answers, a
//! linger running out, flush and close. Batches that are ready together go to their leader in
//! one request (one per broker, as in Kafka), so with many partitions the cost of a request is
//! shared. Each partition has up to `max_in_flight` batches in flight (pipelining: the next
//! batch travels and is written while the previous one is being fsynced). Every batch carries
//! the producer id and the sequence of its first record, and the partition's leader writes a
//! producer's batches in sequence order whatever order the requests arrive in, so batches (and
//! their retries) land in the order the records were sent.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use foldhash::{HashMap, HashMapExt};
use strata_record::{BatchBuilder, Timestamp};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::answers::Answers;
use crate::buffer_room::BufferRoom;
use crate::produce_request::{Done, Outgoing, PartitionKey, Staged};
use crate::producer::{Acks, Partitioner, ProducerConfig, Waiter};
use crate::record::Record;
use crate::{Client, ClientError, Result};

struct Batch {
    builder: BatchBuilder,
    waiters: Vec<Waiter>,
    /// When the batch is ready even if not full (first record + linger).
    deadline: Instant,
    /// Its records' bytes taken from `Accumulator::room`, given back when it is answered.
    buffered: usize,
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
    /// Bytes of the recent batches sent: the last one's, or half the figure before it if that
    /// is more. The next batch gets room for twice as much at once (up to `batch_bytes`): a
    /// partition streaming full batches then never regrows its buffer (each doubling copied
    /// all the records so far, a second copy of every byte with 1 MiB batches), nor does one
    /// whose batches vary in size, as at 1,000 partitions, where growth was 7.5 % of the
    /// producer's samples (`perf`, session 14). With no linger a partition's batches alternate
    /// between a few records (sent as soon as there is room in flight) and full ones, so the
    /// last batch alone is a poor guide: by it, a full batch after a small one grew from a
    /// few KiB (session 17). A batch that used much less (compressed) gives the room back when
    /// it is built. The room is allocated, not counted against `buffer_bytes`: after a burst of
    /// full batches a partition's next few open batches hold up to `batch_bytes` each (64 KiB
    /// by default), mostly untouched pages.
    recent_batch_bytes: usize,
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
            recent_batch_bytes: 0,
        }
    }
}

impl PartitionQueue {
    /// Whether another batch may go in flight: below `max_in_flight`, or, after a failure,
    /// once every earlier batch is answered.
    fn has_room(&self, max_in_flight: usize) -> bool {
        if self.restart_pending {
            self.unretired.is_empty()
        } else {
            self.unretired.len() < max_in_flight
        }
    }

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

/// Bytes a record holds in the producer's buffer: its key, value and headers, and a little
/// for its framing.
pub(crate) fn buffered_size(record: &Record) -> usize {
    let len = |b: &Option<bytes::Bytes>| b.as_ref().map_or(0, |b| b.len());
    let headers: usize = record.headers.iter().map(|(k, v)| k.len() + len(v)).sum();
    len(&record.key) + len(&record.value) + headers + 32
}

/// A random non-negative producer id (63 bits: collisions are not a practical concern).
fn fresh_producer_id() -> i64 {
    (rand::random::<u64>() >> 1) as i64
}

pub(crate) struct Accumulator {
    client: Client,
    config: ProducerConfig,
    queues: HashMap<PartitionKey, PartitionQueue>,
    /// Partitions per topic, as first learnt (the caller of `send` looks a topic up once).
    pub(crate) partition_counts: HashMap<String, u32>,
    round_robin: u32,
    /// Per topic, the partition keyless records go to until its open batch is full or sent
    /// (`Partitioner::KeyHash`); then they move to the next partition. Partitions get batches
    /// in turn; each producer starts at a random partition so that producers do not all fill
    /// the same one.
    sticky: HashMap<String, u32>,
    /// Request tasks report here when a request finished (freeing its slot) and when each of
    /// its batches was answered for good; the producer's task reads them.
    done_tx: mpsc::UnboundedSender<Done>,
    /// Batches sent during the current pass, by leader address: each becomes one request at
    /// the end of the pass. A broker's first batch takes a request slot, the others share it.
    staged: HashMap<String, Staged>,
    /// Flushes waiting for every queue to drain.
    flushes: Vec<oneshot::Sender<()>>,
    /// Set by flush and close: every batch is ready now, whatever its linger.
    pub(crate) draining: bool,
    /// Set by close (or the producer dropped): nothing more is added, and the producer's task
    /// ends once everything is answered.
    pub(crate) closed: bool,
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
    /// When the producer's task wakes next by itself (the earliest live linger deadline when it
    /// last looked), `None` if only an event wakes it. A batch due earlier than that needs it
    /// woken: `wake_task` says so.
    task_wakes_at: Option<Instant>,
    wake_task: bool,
    /// Partitions with a ready batch that found every request slot taken, in the order they
    /// found it: each answer hands its slot to the first of them.
    slot_waiters: VecDeque<PartitionKey>,
    /// The bounded buffer: records added and not yet answered, and the callers of `send`
    /// waiting for room.
    pub(crate) room: BufferRoom,
    /// Requests staged during this turn and complete: spawned once the lock is released.
    ready: Vec<(String, Staged)>,
}

/// What one turn at the accumulator asks of the producer: wake its task, or the callers
/// waiting for buffer room.
pub(crate) struct Wakes {
    /// Requests to spawn, each to its broker.
    pub(crate) requests: Vec<(String, Staged)>,
    pub(crate) task: bool,
    pub(crate) room: bool,
}

impl Accumulator {
    pub(crate) fn new(
        client: Client,
        config: ProducerConfig,
        done_tx: mpsc::UnboundedSender<Done>,
    ) -> Self {
        let config_buffer = config.buffer_bytes;
        Accumulator {
            client,
            config,
            queues: HashMap::new(),
            partition_counts: HashMap::new(),
            round_robin: 0,
            sticky: HashMap::new(),
            done_tx,
            staged: HashMap::new(),
            flushes: Vec::new(),
            draining: false,
            closed: false,
            requests_in_flight: 0,
            rotation: 0,
            lingering: BinaryHeap::new(),
            task_wakes_at: None,
            wake_task: false,
            slot_waiters: VecDeque::new(),
            room: BufferRoom::new(config_buffer),
            ready: Vec::new(),
        }
    }

    /// Hands over each broker's staged batches as one request, answers the flushes that are
    /// done, and says whom to wake. Every turn at the accumulator ends with it.
    pub(crate) fn end_turn(&mut self) -> Wakes {
        // Most turns stage nothing; draining an empty map still clears its table.
        if !self.staged.is_empty() {
            self.ready.extend(self.staged.drain());
        }
        self.answer_flushes();
        Wakes {
            requests: std::mem::take(&mut self.ready),
            task: std::mem::take(&mut self.wake_task),
            room: self.room.wake_waiters(),
        }
    }

    /// A request task's report.
    pub(crate) fn on_done(&mut self, done: Done) {
        match done {
            Done::RequestFinished => {
                let slots_were_full = !self.has_request_slot();
                self.requests_in_flight -= 1;
                if slots_were_full {
                    self.hand_out_slots();
                }
            }
            Done::Answered { key, number, failed, buffered } => {
                self.room.give_back(buffered);
                if let Some(queue) = self.queues.get_mut(&key) {
                    queue.answered(number);
                    queue.restart_pending |= failed;
                }
                self.send_ready_for(&key);
            }
        }
    }

    /// The next linger deadline, remembered as the time the producer's task wakes by itself.
    pub(crate) fn next_wake(&mut self) -> Option<Instant> {
        self.task_wakes_at = self.next_lingering_deadline();
        self.task_wakes_at
    }

    /// Starts a flush: every batch goes now; `done` hears when all are answered.
    pub(crate) fn flush(&mut self, done: oneshot::Sender<()>) {
        self.flushes.push(done);
        self.draining = true;
        self.send_all_ready();
    }

    /// Whether nothing is queued or in flight.
    fn is_drained(&self) -> bool {
        self.requests_in_flight == 0
            && self.queues.values().all(|q| q.batches.is_empty() && q.unretired.is_empty())
    }

    /// Answers the flushes once everything they wait for is answered.
    fn answer_flushes(&mut self) {
        // Only flush and close wait for everything to drain: look only then.
        if (!self.flushes.is_empty() || self.closed) && self.is_drained() {
            self.draining = false;
            for done in self.flushes.drain(..) {
                let _ = done.send(());
            }
        }
    }

    /// Whether the producer's task may end: closed, and everything answered.
    pub(crate) fn is_finished(&self) -> bool {
        self.closed && self.is_drained()
    }

    /// The partition `record` goes to, of `count`.
    fn partition_for(&mut self, record: &Record, count: u32) -> Result<u32> {
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

    /// Adds `record` (of a topic with `count` partitions, `bytes` by [`buffered_size`], room
    /// for which was taken) to its partition's open batch, and sends what that made ready. A
    /// record that has no such partition is given back with the error, for the caller to
    /// answer once the lock is released (a callback never runs under it).
    pub(crate) fn add(
        &mut self,
        record: Record,
        waiter: Waiter,
        count: u32,
        bytes: usize,
    ) -> Option<(Waiter, ClientError)> {
        let partition = match self.partition_for(&record, count) {
            Ok(p) => p,
            Err(err) => {
                self.room.give_back(bytes);
                return Some((waiter, err));
            }
        };
        let sticky = self.is_sticky(&record);
        let Record { topic, key: record_key, value, headers, timestamp, .. } = record;
        let (record_key, value) = (record_key.as_deref(), value.as_deref());
        let key = (topic, partition);
        let timestamp = timestamp.unwrap_or_else(Timestamp::now);
        let headers: Vec<(&str, Option<&[u8]>)> =
            headers.iter().map(|(k, v)| (k.as_str(), v.as_deref())).collect();
        let (linger, limit) = (self.config.linger, self.config.batch_bytes);
        let max_in_flight = self.max_in_flight();
        let queue = match self.queues.get_mut(&key) {
            Some(queue) => queue,
            None => self.queues.entry(key.clone()).or_default(),
        };
        // Into the open batch if it stays within the limit with it.
        let added = queue
            .batches
            .back_mut()
            .and_then(|b| b.builder.push_within(limit, timestamp, record_key, value, &headers));
        let fits = added.is_some();
        // The monotonic clock is read only where a deadline is set or due at once (no
        // linger): a batch lingering past its deadline is the task's to send.
        let now = (!fits || linger.is_zero()).then(Instant::now);
        if !fits {
            queue.batches.push_back(Batch {
                builder: {
                    let room = (2 * queue.recent_batch_bytes)
                        .min(limit.saturating_sub(strata_record::BATCH_HEADER_LEN));
                    let mut builder = BatchBuilder::with_capacity(room);
                    builder.grow_up_to(limit);
                    builder
                },
                waiters: Vec::new(),
                deadline: now.expect("read for a new batch") + linger,
                buffered: 0,
            });
        }
        let opened_first = !fits && queue.batches.len() == 1;
        let batch = queue.batches.back_mut().expect("a batch is open");
        let size = added.unwrap_or_else(|| {
            // The first record of a new batch goes in whatever its size.
            let before = batch.builder.size();
            batch.builder.push(timestamp, record_key, value, &headers);
            batch.builder.size() - before
        });
        batch.waiters.push(waiter);
        batch.buffered += bytes;
        let full = batch.builder.size() >= limit;
        let due_now = now.is_some_and(|now| batch.deadline <= now);
        let next_opens_batch = batch.builder.size() + size > limit;
        let sealed = queue.batches.len() > 1;
        // Without room in flight nothing of this partition can go: an answer looks at it again.
        let has_room = queue.has_room(max_in_flight);
        if next_opens_batch && sticky {
            // The next record like this one would open a new batch: the next partition gets it.
            Self::move_sticky_on(&mut self.sticky, &self.partition_counts, &key);
        }
        // A batch due now (no linger) goes at once if it may: left to the linger timer it would
        // wait for the timer's next tick. One that may not waits for an answer, which looks at
        // its partition again.
        if has_room && (full || sealed || due_now) {
            // Schedules whatever batch is first afterwards.
            self.send_ready_for(&key);
        } else if opened_first {
            self.schedule(&key);
        }
        None
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
        if self.task_wakes_at.is_none_or(|wakes| deadline < wakes) {
            // The task sleeps past this deadline: it must look again.
            self.task_wakes_at = Some(deadline);
            self.wake_task = true;
        }
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
    pub(crate) fn send_lingered(&mut self) {
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
    pub(crate) fn send_all_ready(&mut self) {
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
        queue.has_room(self.max_in_flight())
    }

    fn send_first(&mut self, key: PartitionKey) {
        let Some(queue) = self.queues.get_mut(&key) else { return };
        let Some(mut batch) = queue.batches.pop_front() else { return };
        // Its `lingering` entry, if any, is stale now; the next batch gets its own.
        queue.scheduled = None;
        let size = batch.builder.size() - strata_record::BATCH_HEADER_LEN;
        queue.recent_batch_bytes = size.max(queue.recent_batch_bytes / 2);
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
        // Built (CRC, compression) by its request task, outside the lock.
        let number = queue.sent;
        queue.sent += 1;
        queue.unretired.push_back((number, false));
        let address = self.client.leader_address(&key.0, key.1);
        if self.staged.get(&address).is_some_and(|s| !s.takes(&key, self.config.max_request_bytes))
        {
            // Full, or holding a batch of this partition already: it goes now, and this batch
            // starts the broker's next request (`can_send` saw a free slot for it).
            let full = self.staged.remove(&address).expect("just looked up");
            self.ready.push((address.clone(), full));
        }
        let staged = self.staged.entry(address).or_insert_with(|| {
            self.requests_in_flight += 1;
            Staged::default()
        });
        let answers = queue.answers.clone();
        let done = self.done_tx.clone();
        let (builder, waiters, buffered) = (batch.builder, batch.waiters, batch.buffered);
        staged.push(Outgoing::new(key, number, builder, waiters, buffered, answers, done));
    }
}
