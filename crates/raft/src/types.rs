//! Type configurations of the two kinds of Raft group, and what their entries carry.

use std::io::{self, Cursor};
use std::path::Path;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::controller::{MetaCommand, MetaResult};
use crate::table::{read_small_file, write_small_file};

/// Node ids are the `--node-id` of each server.
pub type NodeId = u64;
/// A node as Raft knows it: its advertised `host:port`.
pub type Node = openraft::BasicNode;
/// Raft group ids: 0 is the controller, partitions get ids from the controller that are never
/// reused.
pub type GroupId = u64;
/// The controller's group id.
pub const CONTROLLER_GROUP: GroupId = 0;

openraft::declare_raft_types!(
    /// A partition group: each normal entry is one RecordBatch.
    pub PartitionTc:
        D = Batch,
        R = Appended,
        NodeId = NodeId,
        Node = Node,
        Entry = openraft::Entry<PartitionTc>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
        Responder = openraft::impls::OneshotResponder<PartitionTc>,
);

openraft::declare_raft_types!(
    /// The controller group: each normal entry is one metadata command.
    pub ControllerTc:
        D = MetaCommand,
        R = MetaResult,
        NodeId = NodeId,
        Node = Node,
        Entry = openraft::Entry<ControllerTc>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
        Responder = openraft::impls::OneshotResponder<ControllerTc>,
);

/// One whole Kafka RecordBatch v2, as produced (base offset still to be assigned).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch(pub Bytes);

/// How an entry's payload crosses the network. A partition entry's record batch travels
/// beside the postcard-encoded request, as its own protobuf bytes field: postcard would copy
/// it into the request at the leader and out of it at the follower.
pub trait DetachBytes {
    /// Takes the payload's batch out, leaving an empty one; `None` if it carries none.
    fn detach(&mut self) -> Option<Bytes>;
    /// Puts back what `detach` took.
    fn attach(&mut self, bytes: Bytes);
}

impl DetachBytes for Batch {
    fn detach(&mut self) -> Option<Bytes> {
        Some(std::mem::take(&mut self.0))
    }
    fn attach(&mut self, bytes: Bytes) {
        self.0 = bytes;
    }
}

impl DetachBytes for MetaCommand {
    fn detach(&mut self) -> Option<Bytes> {
        None
    }
    fn attach(&mut self, _bytes: Bytes) {}
}

/// Where an applied batch landed: its offsets, dense and gap-free whatever Raft indexes it took.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Appended {
    pub base_offset: u64,
    pub last_offset: u64,
}

/// What a normal entry of a group must be to live in a segment log: one RecordBatch, written
/// once, read back as it was.
pub trait LogPayload: Sized {
    /// The entry as one RecordBatch (its base offset is overwritten by the log).
    fn to_batch(&self) -> Bytes;
    /// The entry from the batch the log holds.
    fn from_batch(batch: Bytes) -> Result<Self, String>;
}

impl LogPayload for Batch {
    fn to_batch(&self) -> Bytes {
        self.0.clone()
    }
    fn from_batch(batch: Bytes) -> Result<Self, String> {
        Ok(Batch(batch))
    }
}

/// Snapshot bytes: `SnapshotData` is a cursor over an in-memory buffer (snapshots are small
/// state, never data).
pub(crate) fn snapshot_bytes(data: &Cursor<Vec<u8>>) -> &[u8] {
    data.get_ref()
}

/// A state machine failure, in openraft's terms.
pub(crate) fn sm_err(e: impl std::fmt::Display) -> openraft::StorageError<NodeId> {
    openraft::StorageIOError::write_state_machine(&std::io::Error::other(e.to_string())).into()
}

/// The file in a group's Raft directory holding its last snapshot: `(SnapshotMeta, state)`.
const SNAPSHOT_FILE: &str = "snapshot";

/// A snapshot's metadata and its state machine's bytes.
type SnapshotParts = (openraft::SnapshotMeta<NodeId, Node>, Vec<u8>);

/// The snapshot kept in `dir` by [`HeldSnapshot::keep_on_disk`], if any.
pub(crate) fn read_kept_snapshot(dir: &Path) -> io::Result<Option<SnapshotParts>> {
    match read_small_file(&dir.join(SNAPSHOT_FILE))? {
        Some(file) => Ok(Some(postcard::from_bytes(&file).map_err(io::Error::other)?)),
        None => Ok(None),
    }
}

/// The last snapshot a state machine built or installed (small state, kept in memory and,
/// with [`HeldSnapshot::keep_on_disk`], in its group's Raft directory).
#[derive(Debug, Default)]
pub(crate) struct HeldSnapshot(Option<SnapshotParts>);

impl HeldSnapshot {
    /// [`HeldSnapshot::keep`], after writing it (fsynced) to `dir`: the log before a snapshot
    /// gets purged, so a restart must find it there.
    pub(crate) fn keep_on_disk<C>(
        &mut self,
        dir: &Path,
        meta: openraft::SnapshotMeta<NodeId, Node>,
        data: Vec<u8>,
    ) -> io::Result<openraft::Snapshot<C>>
    where
        C: openraft::RaftTypeConfig<NodeId = NodeId, Node = Node, SnapshotData = Cursor<Vec<u8>>>,
    {
        let file = postcard::to_stdvec(&(&meta, &data)).map_err(io::Error::other)?;
        write_small_file(&dir.join(SNAPSHOT_FILE), &file)?;
        Ok(self.keep(meta, data))
    }

    /// Keeps `data` as the current snapshot and returns it.
    pub(crate) fn keep<C>(
        &mut self,
        meta: openraft::SnapshotMeta<NodeId, Node>,
        data: Vec<u8>,
    ) -> openraft::Snapshot<C>
    where
        C: openraft::RaftTypeConfig<NodeId = NodeId, Node = Node, SnapshotData = Cursor<Vec<u8>>>,
    {
        self.0 = Some((meta.clone(), data.clone()));
        openraft::Snapshot { meta, snapshot: Box::new(Cursor::new(data)) }
    }

    /// The entry the current snapshot was taken at.
    pub(crate) fn last_log_id(&self) -> Option<openraft::LogId<NodeId>> {
        self.0.as_ref().and_then(|(meta, _)| meta.last_log_id)
    }

    pub(crate) fn current<C>(&self) -> Option<openraft::Snapshot<C>>
    where
        C: openraft::RaftTypeConfig<NodeId = NodeId, Node = Node, SnapshotData = Cursor<Vec<u8>>>,
    {
        self.0.as_ref().map(|(meta, data)| openraft::Snapshot {
            meta: meta.clone(),
            snapshot: Box::new(Cursor::new(data.clone())),
        })
    }
}
