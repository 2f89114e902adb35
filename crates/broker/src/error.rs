//! The broker's errors and their one mapping to gRPC status codes.

use strata_record::RecordError;
use strata_storage::StorageError;
use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("unknown topic {0:?}")]
    UnknownTopic(String),
    #[error("topic {topic:?} has no partition {partition}")]
    UnknownPartition { topic: String, partition: u32 },
    #[error("topic {0:?} already exists")]
    TopicExists(String),
    #[error("unknown consumer group {0:?}")]
    UnknownGroup(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    TooLarge(String),
    /// A group member that is unknown, expired or behind the current epoch.
    #[error("{0}")]
    Fenced(String),
    #[error("{0}")]
    GroupNotEmpty(String),
    /// A member committed without having seen the latest offset reset of its group.
    #[error("{0}")]
    OffsetsReset(String),
    #[error(
        "offset {offset} is out of range for {topic}/{partition}: valid offsets are [{start}, {end}]"
    )]
    OffsetOutOfRange { topic: String, partition: u32, offset: u64, start: u64, end: u64 },
    #[error("invalid record batch: {0}")]
    InvalidBatch(#[from] RecordError),
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the server is shutting down")]
    ShuttingDown,
    /// This node does not lead the partition; the leader, if known: `(node id, address)`.
    #[error("not the leader for {topic}/{partition}{}", .leader.as_ref().map(|(id, addr)| format!("; leader is node {id} at {addr}")).unwrap_or_else(|| "; no leader is known yet".into()))]
    NotLeader { topic: String, partition: u32, leader: Option<(u64, String)> },
    /// This node holds no replica of the partition (a cluster with fewer replicas than nodes).
    #[error("this node holds no replica of {topic}/{partition}")]
    NotHosted { topic: String, partition: u32 },
    /// Consumer groups are coordinated by the controller's leader, which this node is not.
    #[error("this node is not the group coordinator{}", .leader.as_ref().map(|(id, addr)| format!("; leader is node {id} at {addr}")).unwrap_or_else(|| "; no coordinator is known yet".into()))]
    NotCoordinator { leader: Option<(u64, String)> },
    /// No quorum, no controller leader, or a replication failure: retriable.
    #[error("{0}")]
    Replication(String),
    /// An idempotent producer's batch came ahead of earlier ones that did not arrive in time
    /// (they may still be retried, after a failover): retriable.
    #[error("{0}")]
    OutOfSequence(String),
}

pub type Result<T, E = BrokerError> = std::result::Result<T, E>;

impl BrokerError {
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> BrokerError {
        let context = context.into();
        move |source| BrokerError::Io { context, source }
    }

    pub fn code(&self) -> Code {
        match self {
            BrokerError::UnknownTopic(_)
            | BrokerError::UnknownPartition { .. }
            | BrokerError::UnknownGroup(_) => Code::NotFound,
            BrokerError::TopicExists(_) => Code::AlreadyExists,
            BrokerError::InvalidArgument(_) | BrokerError::InvalidBatch(_) => Code::InvalidArgument,
            BrokerError::TooLarge(_) => Code::ResourceExhausted,
            BrokerError::Fenced(_) | BrokerError::GroupNotEmpty(_) => Code::FailedPrecondition,
            BrokerError::OffsetsReset(_) | BrokerError::OutOfSequence(_) => Code::Aborted,
            BrokerError::OffsetOutOfRange { .. } => Code::OutOfRange,
            BrokerError::ShuttingDown
            | BrokerError::NotLeader { .. }
            | BrokerError::NotHosted { .. }
            | BrokerError::NotCoordinator { .. }
            | BrokerError::Replication(_) => Code::Unavailable,
            BrokerError::Io { .. } => Code::Internal,
            BrokerError::Storage(err) => match err {
                StorageError::InvalidBatch(_) | StorageError::NonSequentialOffset { .. } => {
                    Code::InvalidArgument
                }
                StorageError::BatchTooLarge { .. } => Code::ResourceExhausted,
                StorageError::OffsetOutOfRange { .. } => Code::OutOfRange,
                StorageError::Corrupt { .. } => Code::DataLoss,
                StorageError::Failed { .. } => Code::Unavailable,
                // Its topic was deleted while the request was in flight.
                StorageError::Retired { .. } => Code::NotFound,
                _ => Code::Internal,
            },
        }
    }
}

impl From<BrokerError> for Status {
    fn from(err: BrokerError) -> Status {
        let code = err.code();
        if matches!(code, Code::Internal | Code::DataLoss | Code::Unavailable) {
            tracing::error!(error = %err, "request failed");
        }
        Status::new(code, err.to_string())
    }
}
