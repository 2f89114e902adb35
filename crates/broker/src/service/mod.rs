//! The gRPC services: thin adapters from the generated API onto topics, partitions and groups.

mod admin;
mod batch_frames;
mod broker;

pub use admin::AdminService;
pub(crate) use batch_frames::BatchFrames;
pub use broker::BrokerService;

use std::future::Future;
use std::time::Instant;

use crate::error::{BrokerError, Result};
use crate::metrics::Metrics;

/// Runs blocking work (fsyncs, directory changes) off the async runtime, tracked so that
/// shutdown waits for it even if the client gave up on the request.
pub(crate) async fn blocking<T: Send + 'static>(
    tasks: &tokio_util::task::TaskTracker,
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tasks.spawn_blocking(work).await.map_err(|_| BrokerError::ShuttingDown)?
}

/// Awaits `work`, turns its error into a gRPC status, and records the request's latency and
/// outcome in the metrics.
pub(crate) async fn respond<T>(
    metrics: &Metrics,
    rpc: &'static str,
    work: impl Future<Output = Result<T>>,
) -> std::result::Result<tonic::Response<T>, tonic::Status> {
    let started = Instant::now();
    let outcome = work.await;
    let code = outcome.as_ref().err().map(BrokerError::code);
    metrics.request(rpc, started.elapsed(), code);
    match outcome {
        Ok(reply) => Ok(tonic::Response::new(reply)),
        Err(err) => {
            tracing::debug!(rpc, error = %err, "request rejected");
            Err(err.into())
        }
    }
}

/// Records in a run of batches, from their headers.
pub(crate) fn record_count(batches: &[bytes::Bytes]) -> u64 {
    batches
        .iter()
        .filter_map(|b| strata_record::BatchHeader::parse(b).ok())
        .map(|h| h.record_count.max(0) as u64)
        .sum()
}
