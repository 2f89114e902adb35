//! Replication for Strata (openraft 0.9): partition groups whose Raft log is the partition's
//! segment log ([`store`]), small state machines ([`partition_sm`], [`controller`]), and one
//! gRPC connection per peer shared by every group ([`network`]). [`node`] assembles them.

pub mod controller;
mod liveness;
pub mod membership;
pub mod network;
pub mod node;
pub mod partition_sm;
pub mod store;
pub mod table;
pub mod types;

pub use controller::{
    CommittedOffset, GroupLeader, GroupOffsets, MetaCommand, MetaError, MetaResult, Metadata,
    PartitionAssignment, TopicAssignment,
};
pub use membership::NodeChange;
pub use node::{PartitionReplica, RaftNode, replicated_log_config};
pub use partition_sm::SequenceCheck;
pub use types::{Appended, GroupId, NodeId};

/// Why a replicated operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    /// This node does not lead the group; the leader, if known: `(node id, address)`.
    #[error("not the leader{}", .leader.as_ref().map(|(id, addr)| format!("; leader is node {id} at {addr}")).unwrap_or_default())]
    NotLeader { leader: Option<(NodeId, String)> },
    /// No leader, no quorum, or shutting down: retriable.
    #[error("replication unavailable: {0}")]
    Unavailable(String),
    #[error("replication storage failed: {0}")]
    Storage(String),
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = ReplicaError> = std::result::Result<T, E>;
