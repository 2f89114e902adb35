//! The two calls that carry record batches, made over tonic's channel directly: `Fetch`
//! answers decoded straight from the response's HTTP/2 frames, `ProduceMany` requests written
//! with their large batches in frames of their own.
//!
//! tonic's generated client copies every DATA frame of an answer into a buffer of its own,
//! which it grows as the message comes in: for a consumer, a copy of every byte it reads (a
//! fifth of a consuming process's samples at 1 GB/s, `perf`, session 15). The broker sends a
//! large record batch in frames of its own and the rest of an answer in one buffer, and the
//! client takes frames of up to `CLIENT_MAX_FRAME_BYTES`, so each arrives in one frame, and
//! [`strata_proto::frames::read_unary`] and prost decode the batches as slices of those
//! frames, as h2 read them from the socket. The other way, tonic encodes a produce request
//! into one buffer, a copy of every batch; here a large batch goes to h2 as the producer built
//! it.
//!
//! The calls are otherwise what tonic makes of them: the same paths, headers and messages, and
//! the same statuses from the answer's headers or trailers, so a refusal's code and message (a
//! not-leader answer naming the leader) reach the client unchanged.

use strata_proto::calls::unary_call;
use strata_proto::frames::{produce_many_body, unary_body};
use strata_proto::{FetchRequest, FetchResponse, ProduceManyRequest, ProduceManyResponse};
use tonic::Status;
use tonic::transport::Channel;

const FETCH_PATH: &str = "/strata.v1.Broker/Fetch";
const PRODUCE_MANY_PATH: &str = "/strata.v1.Broker/ProduceMany";

/// Sends `request` over `channel` and decodes its answer, of at most `max_answer` bytes.
pub(crate) async fn fetch(
    channel: Channel,
    request: &FetchRequest,
    max_answer: usize,
) -> Result<FetchResponse, Status> {
    unary_call(channel, FETCH_PATH, unary_body(request)?, max_answer).await
}

/// Sends `request` over `channel`, its large batches as they are, and decodes its answer.
pub(crate) async fn produce_many(
    channel: Channel,
    request: &ProduceManyRequest,
    max_answer: usize,
) -> Result<ProduceManyResponse, Status> {
    unary_call(channel, PRODUCE_MANY_PATH, produce_many_body(request)?, max_answer).await
}
