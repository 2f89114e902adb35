//! The gRPC services: thin adapters from the generated API onto topics, partitions and groups.

mod admin;
mod broker;

pub use admin::AdminService;
pub use broker::BrokerService;

use std::future::Future;

use crate::error::{BrokerError, Result};

/// Runs blocking work (fsyncs, directory changes) off the async runtime.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work).await.map_err(|_| BrokerError::ShuttingDown)?
}

/// Awaits `work` and turns its error into a gRPC status, logging the outcome at debug level.
pub(crate) async fn respond<T>(
    rpc: &'static str,
    work: impl Future<Output = Result<T>>,
) -> std::result::Result<tonic::Response<T>, tonic::Status> {
    match work.await {
        Ok(reply) => Ok(tonic::Response::new(reply)),
        Err(err) => {
            tracing::debug!(rpc, error = %err, "request rejected");
            Err(err.into())
        }
    }
}
