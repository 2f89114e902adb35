//! A partition group's state machine: small state only. The data is already in the segment
//! log when an entry is applied; applying it moves the high watermark (the offset after the
//! last committed record) that consumers read up to.

use std::collections::{BTreeMap, VecDeque};
use std::io::Cursor;
use std::sync::{Arc, Mutex};

use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{
    Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, StorageError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use strata_record::BatchHeader;
use tokio::sync::watch;

use crate::store::SegmentStore;
use crate::types::{Appended, HeldSnapshot, Node, NodeId, PartitionTc, sm_err, snapshot_bytes};

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
    /// Not seen: propose it.
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
}

/// The state machine; clones share it.
#[derive(Debug, Clone)]
pub struct PartitionSm {
    inner: Arc<Mutex<Inner>>,
    high_watermark: Arc<watch::Sender<u64>>,
    store: SegmentStore<PartitionTc>,
}

impl PartitionSm {
    /// A state machine that starts from the log start (openraft re-applies committed entries
    /// at start) and publishes the high watermark on `high_watermark`.
    pub fn new(store: SegmentStore<PartitionTc>, high_watermark: Arc<watch::Sender<u64>>) -> Self {
        let start = store.log().start_offset().0;
        let state = State { next_offset: start, ..State::default() };
        high_watermark.send_replace(start);
        PartitionSm {
            inner: Arc::new(Mutex::new(Inner { state, snapshot: HeldSnapshot::default() })),
            high_watermark,
            store,
        }
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
            return SequenceCheck::New;
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
    async fn build_snapshot(&mut self) -> Result<Snapshot<PartitionTc>, StorageError<NodeId>> {
        let mut inner = self.lock();
        let state = &inner.state;
        let data = postcard::to_stdvec(state).map_err(sm_err)?;
        let meta = SnapshotMeta {
            last_log_id: state.applied,
            last_membership: state.membership.clone(),
            snapshot_id: format!("{}-{}", state.applied.map_or(0, |l| l.index), state.next_offset),
        };
        Ok(inner.snapshot.keep(meta, data))
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
                        Appended::default()
                    }
                    EntryPayload::Blank => Appended::default(),
                };
                replies.push(reply);
            }
            state.next_offset
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
        // The purge that follows restarts the log here: the data before it is gone on every
        // replica that could have sent it.
        self.store.set_snapshot_offset(state.next_offset);
        let hw = state.next_offset;
        {
            let mut inner = self.lock();
            inner.state = state;
            inner.snapshot.keep::<PartitionTc>(meta.clone(), bytes);
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
