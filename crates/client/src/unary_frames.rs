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

use prost::Message;
use strata_proto::frames::{Unary, produce_many_body, read_unary, unary_body};
use strata_proto::{FetchRequest, FetchResponse, ProduceManyRequest, ProduceManyResponse};
use tonic::body::Body;
use tonic::codegen::{Service, http};
use tonic::transport::Channel;
use tonic::{Code, Status};

const FETCH_PATH: &str = "/strata.v1.Broker/Fetch";
const PRODUCE_MANY_PATH: &str = "/strata.v1.Broker/ProduceMany";

/// Sends `request` over `channel` and decodes its answer, of at most `max_answer` bytes.
pub(crate) async fn fetch(
    channel: Channel,
    request: &FetchRequest,
    max_answer: usize,
) -> Result<FetchResponse, Status> {
    call(channel, FETCH_PATH, unary_body(request)?, max_answer).await
}

/// Sends `request` over `channel`, its large batches as they are, and decodes its answer.
pub(crate) async fn produce_many(
    channel: Channel,
    request: &ProduceManyRequest,
    max_answer: usize,
) -> Result<ProduceManyResponse, Status> {
    call(channel, PRODUCE_MANY_PATH, produce_many_body(request)?, max_answer).await
}

/// A unary call of `path` with `body` (a prefixed message); its answer, decoded from a message
/// of at most `max_answer` bytes, or its status.
async fn call<A: Message + Default>(
    mut channel: Channel,
    path: &'static str,
    body: Body,
    max_answer: usize,
) -> Result<A, Status> {
    let mut call = http::Request::new(body);
    *call.method_mut() = http::Method::POST;
    *call.uri_mut() = http::Uri::from_static(path);
    let headers = call.headers_mut();
    headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/grpc"));
    headers.insert(http::header::TE, http::HeaderValue::from_static("trailers"));
    std::future::poll_fn(|cx| channel.poll_ready(cx))
        .await
        .map_err(|e| Status::from_error(Box::new(e)))?;
    let answer = channel.call(call).await.map_err(|e| Status::from_error(Box::new(e)))?;
    let (parts, answer) = answer.into_parts();
    // A refusal comes as headers alone (trailers-only).
    if let Some(status) = Status::from_header_map(&parts.headers) {
        return Err(if status.code() == Code::Ok {
            Status::internal("Missing response message.")
        } else {
            status
        });
    }
    if parts.status != http::StatusCode::OK {
        return Err(http_refusal(parts.status));
    }
    let Unary { message, trailers } = match read_unary(answer, max_answer).await {
        Ok(read) => read,
        // Our own limit, not the server's word on an offset: never a reason to reset.
        Err(status) if status.code() == Code::OutOfRange => {
            return Err(Status::resource_exhausted(status.message().to_owned()));
        }
        Err(status) => return Err(status),
    };
    match trailers.as_ref().and_then(Status::from_header_map) {
        Some(status) if status.code() == Code::Ok => {}
        Some(status) => return Err(status),
        None => return Err(Status::unknown("the answer ended without a grpc-status trailer")),
    }
    let message = message.ok_or_else(|| Status::internal("Missing response message."))?;
    A::decode(message).map_err(|e| Status::internal(e.to_string()))
}

/// A non-200 answer without a gRPC status (from a proxy, say), coded as gRPC maps HTTP
/// statuses (and tonic with it): a gateway or an overloaded server is UNAVAILABLE, which the
/// consumer retries elsewhere.
fn http_refusal(status: http::StatusCode) -> Status {
    let code = match status {
        http::StatusCode::BAD_REQUEST => Code::Internal,
        http::StatusCode::UNAUTHORIZED => Code::Unauthenticated,
        http::StatusCode::FORBIDDEN => Code::PermissionDenied,
        http::StatusCode::NOT_FOUND => Code::Unimplemented,
        http::StatusCode::TOO_MANY_REQUESTS
        | http::StatusCode::BAD_GATEWAY
        | http::StatusCode::SERVICE_UNAVAILABLE
        | http::StatusCode::GATEWAY_TIMEOUT => Code::Unavailable,
        _ => Code::Unknown,
    };
    Status::new(code, format!("HTTP status {status} without a gRPC status"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_statuses_map_as_grpc_maps_them() {
        let code = |status| http_refusal(status).code();
        assert_eq!(code(http::StatusCode::SERVICE_UNAVAILABLE), Code::Unavailable);
        assert_eq!(code(http::StatusCode::BAD_GATEWAY), Code::Unavailable);
        assert_eq!(code(http::StatusCode::NOT_FOUND), Code::Unimplemented);
        assert_eq!(code(http::StatusCode::IM_A_TEAPOT), Code::Unknown);
    }
}
