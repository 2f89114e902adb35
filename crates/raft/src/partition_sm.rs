//! A partition group's state machine: small state only. The data is already in the segment
//! log when an entry is applied; applying it moves the high watermark (the offset after the
//! last committed record) that consumers read up to.
//!
//! Snapshots follow retention: a retention pass names an entry at a segment boundary
//! ([`PartitionSm::prepare_retention`]), the snapshot is taken there (not at the apply point,
//! so a lagging follower skips only data retention deleted), and openraft then purges the log
//! up to it. The last snapshot is kept in the group's directory, so a replica whose log was
//! purged restarts from it.

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Cursor};
use std::sync::{Arc, Mutex};

use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{
    Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, StorageError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use strata_record::BatchHeader;
use tokio::sync::watch;

use crate::store::SegmentStore;
use crate::types::{
    Appended, HeldSnapshot, Node, NodeId, PartitionTc, read_kept_snapshot, sm_err, snapshot_bytes,
};

/// Batches an idempotent producer's retries are compared with (Kafka keeps five too).
const PRODUCER_BATCHES_KEPT: usize = 5;

/// One applied batch of an idempotent producer.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct ProducedBatch {
    first_sequence: i32,
    last_sequence: i32,
    appended: Appended,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct State {
    applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, Node>,
    /// Offset after the last applied record: the high watermark.
    next_offset: u64,
    /// The last batches of each idempotent producer (`producerId` ≥ 0), by producer id: part
    /// of the replicated state, so a retry reaching a new leader is still recognised.
    producers: BTreeMap<i64, VecDeque<ProducedBatch>>,
}

/// What the state machine says about an idempotent producer's batch before it is proposed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// No batch of this producer is remembered: a new producer, or one whose state was lost.
    Unknown,
    /// The producer's next batch: propose it.
    New,
    /// Already applied, here: answer with these offsets, store nothing.
    Duplicate(Appended),
    /// Older than the batches remembered, or not following the last one.
    OutOfOrder { expected: i32 },
}

#[derive(Debug)]
struct Inner {
    state: State,
    snapshot: HeldSnapshot,
    /// The membership of the last snapshot and every one applied since, oldest first: a
    /// snapshot taken behind `applied` records the membership in force at its own index.
    memberships: VecDeque<StoredMembership<NodeId, Node>>,
    /// Where retention wants the next snapshot: an applied entry and the offset after it.
    target: Option<(LogId<NodeId>, u64)>,
}

impl Inner {
    /// The snapshot of the state as of `target` (an applied entry, the offset after it): the
    /// producer batches appended after it are left out (replaying the log from there brings
    /// them back).
    fn state_at(&self, target: LogId<NodeId>, next_offset: u64) -> Option<State> {
        let membership = self
            .memberships
            .iter()
            .rev()
            .find(|m| m.log_id().is_none_or(|l| l.index <= target.index))?
            .clone();
        let producers = self
            .state
            .producers
            .iter()
            .filter_map(|(id, batches)| {
                let kept: VecDeque<ProducedBatch> = batches
                    .iter()
                    .filter(|b| b.appended.last_offset < next_offset)
                    .copied()
                    .collect();
                (!kept.is_empty()).then_some((*id, kept))
            })
            .collect();
        Some(State { applied: Some(target), membership, next_offset, producers })
    }

    /// Keeps `meta`/`data` as the current snapshot, in memory and (fsynced) on disk, and
    /// forgets the memberships it supersedes. Refused once the store's log is retired (see
    /// [`SegmentStore::write_beside`]).
    fn keep_snapshot(
        &mut self,
        store: &SegmentStore<PartitionTc>,
        meta: SnapshotMeta<NodeId, Node>,
        data: Vec<u8>,
    ) -> io::Result<Snapshot<PartitionTc>> {
        let snapshot_membership = meta.last_membership.log_id().map(|l| l.index);
        while self.memberships.len() > 1
            && self.memberships[1].log_id().map(|l| l.index) <= snapshot_membership
        {
            self.memberships.pop_front();
        }
        store.write_beside(|| self.snapshot.keep_on_disk(store.dir(), meta, data))
    }
}

/// The state machine; clones share it.
#[derive(Debug, Clone)]
pub struct PartitionSm {
    inner: Arc<Mutex<Inner>>,
    high_watermark: Arc<watch::Sender<u64>>,
    store: SegmentStore<PartitionTc>,
}

impl PartitionSm {
    /// A state machine that starts from the group's last snapshot, or from the log start
    /// without one (openraft re-applies the committed entries after it at start), and
    /// publishes the high watermark on `high_watermark`.
    pub fn new(
        store: SegmentStore<PartitionTc>,
        high_watermark: Arc<watch::Sender<u64>>,
    ) -> io::Result<Self> {
        let mut state = State { next_offset: store.log().start_offset().0, ..State::default() };
        let mut snapshot = HeldSnapshot::default();
        if let Some((meta, data)) = read_kept_snapshot(store.dir())? {
            state = postcard::from_bytes(&data).map_err(io::Error::other)?;
            state.applied = meta.last_log_id;
            state.membership = meta.last_membership.clone();
            if let Some(log_id) = meta.last_log_id {
                store.catch_up_to_snapshot(log_id, state.next_offset)?;
            }
            snapshot.keep::<PartitionTc>(meta, data);
        }
        high_watermark.send_replace(state.next_offset);
        let memberships = VecDeque::from([state.membership.clone()]);
        let inner = Inner { state, snapshot, memberships, target: None };
        Ok(PartitionSm { inner: Arc::new(Mutex::new(inner)), high_watermark, store })
    }

    /// Makes the entry that ends at or before log offset `point` (a segment boundary that
    /// retention may delete up to) the next snapshot's, if it is applied and past the current
    /// snapshot. Returns it: the caller then triggers the snapshot and the purge.
    pub fn prepare_retention(&self, point: u64) -> Option<LogId<NodeId>> {
        let (log_id, next_offset) = self.store.last_entry_ending_by(point)?;
        let mut inner = self.lock();
        let snapshot = inner.snapshot.last_log_id();
        if Some(log_id) > inner.state.applied || Some(log_id) <= snapshot {
            return None;
        }
        inner.target = Some((log_id, next_offset));
        Some(log_id)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The offset after the last committed record.
    pub fn high_watermark(&self) -> u64 {
        self.lock().state.next_offset
    }

    /// Whether an idempotent producer's batch (`producer_id` ≥ 0) was already applied.
    pub fn check_sequence(&self, producer_id: i64, first_sequence: i32) -> SequenceCheck {
        let inner = self.lock();
        let Some(batches) = inner.state.producers.get(&producer_id) else {
            return SequenceCheck::Unknown;
        };
        if let Some(b) = batches.iter().find(|b| b.first_sequence == first_sequence) {
            return SequenceCheck::Duplicate(b.appended);
        }
        let expected = batches.back().map_or(0, |b| b.last_sequence.wrapping_add(1));
        if first_sequence == expected {
            SequenceCheck::New
        } else {
            SequenceCheck::OutOfOrder { expected }
        }
    }

    fn publish(&self, hw: u64) {
        self.high_watermark.send_if_modified(|current| {
            let moved = *current != hw;
            *current = hw;
            moved
        });
    }
}

impl RaftSnapshotBuilder<PartitionTc> for PartitionSm {
    /// At the retention target if one is set, otherwise at the apply point.
    async fn build_snapshot(&mut self) -> Result<Snapshot<PartitionTc>, StorageError<NodeId>> {
        let mut inner = self.lock();
        let at_target = inner.target.take().and_then(|(id, offset)| inner.state_at(id, offset));
        let state = at_target.as_ref().unwrap_or(&inner.state);
        let data = postcard::to_stdvec(state).map_err(sm_err)?;
        let meta = SnapshotMeta {
            last_log_id: state.applied,
            last_membership: state.membership.clone(),
            snapshot_id: format!("{}-{}", state.applied.map_or(0, |l| l.index), state.next_offset),
        };
        inner.keep_snapshot(&self.store, meta, data).map_err(sm_err)
    }
}

impl RaftStateMachine<PartitionTc> for PartitionSm {
    type SnapshotBuilder = PartitionSm;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, Node>), StorageError<NodeId>> {
        let inner = self.lock();
        Ok((inner.state.applied, inner.state.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Appended>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<PartitionTc>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut replies = Vec::new();
        let mut memberships = Vec::new();
        let hw = {
            let mut inner = self.lock();
            let state = &mut inner.state;
            for entry in entries {
                state.applied = Some(entry.log_id);
                let reply = match entry.payload {
                    EntryPayload::Normal(batch) => {
                        // The store checked the batch's CRC when it appended it: the header
                        // is all apply needs.
                        let header = BatchHeader::parse(&batch.0).map_err(sm_err)?;
                        let count = header.offset_count();
                        let base = state.next_offset;
                        state.next_offset += count;
                        let appended =
                            Appended { base_offset: base, last_offset: base + count - 1 };
                        if header.producer_id >= 0 {
                            let batches = state.producers.entry(header.producer_id).or_default();
                            batches.push_back(ProducedBatch {
                                first_sequence: header.base_sequence,
                                last_sequence: header
                                    .base_sequence
                                    .wrapping_add(header.last_offset_delta),
                                appended,
                            });
                            if batches.len() > PRODUCER_BATCHES_KEPT {
                                batches.pop_front();
                            }
                        }
                        appended
                    }
                    EntryPayload::Membership(m) => {
                        state.membership = StoredMembership::new(Some(entry.log_id), m);
                        memberships.push(state.membership.clone());
                        Appended::default()
                    }
                    EntryPayload::Blank => Appended::default(),
                };
                replies.push(reply);
            }
            let hw = state.next_offset;
            inner.memberships.extend(memberships);
            hw
        };
        self.publish(hw);
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
        let mut state: State = postcard::from_bytes(&bytes).map_err(sm_err)?;
        state.applied = meta.last_log_id;
        state.membership = meta.last_membership.clone();
        let hw = state.next_offset;
        {
            let mut inner = self.lock();
            inner.memberships = VecDeque::from([state.membership.clone()]);
            inner.state = state;
            inner.target = None;
            inner.keep_snapshot(&self.store, meta.clone(), bytes).map_err(sm_err)?;
        }
        // The purge that goes with it restarts the log here (the data before it is gone on
        // every replica that could have sent it), once the snapshot is on disk.
        if let Some(log_id) = meta.last_log_id {
            self.store.snapshot_installed(log_id, hw).map_err(sm_err)?;
        }
        self.publish(hw);
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<PartitionTc>>, StorageError<NodeId>> {
        let inner = self.lock();
        Ok(inner.snapshot.current())
    }
}
