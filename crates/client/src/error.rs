use tonic::Code;

/// What a client call can fail with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error status.
    #[error("{}", .0.message())]
    Server(tonic::Status),
    #[error("cannot connect to {address}: {reason}")]
    Connect { address: String, reason: String },
    #[error("{0}")]
    InvalidArgument(String),
    #[error("invalid record batch from the server: {0}")]
    Decode(#[from] strata_record::RecordError),
    #[error("the producer is closed")]
    Closed,
}

impl From<tonic::Status> for ClientError {
    fn from(status: tonic::Status) -> Self {
        ClientError::Server(status)
    }
}

impl ClientError {
    /// The gRPC status code, for server errors.
    pub fn code(&self) -> Option<Code> {
        match self {
            ClientError::Server(status) => Some(status.code()),
            _ => None,
        }
    }

    /// Worth retrying: the server may answer differently in a moment.
    pub fn is_retriable(&self) -> bool {
        match self {
            ClientError::Server(s) => {
                matches!(s.code(), Code::Unavailable | Code::DeadlineExceeded | Code::Aborted)
                    // A connection that broke mid-request (the server died).
                    || (s.code() == Code::Unknown && s.message().contains("transport error"))
            }
            ClientError::Connect { .. } => true,
            _ => false,
        }
    }
}
