//! `Fetch` answers decoded straight from the response's HTTP/2 frames.
//!
//! tonic's generated client copies every DATA frame of an answer into a buffer of its own,
//! which it grows as the message comes in: for a consumer, a copy of every byte it reads (a
//! fifth of a consuming process's samples at 1 GB/s, `perf`, session 15). The broker sends
//! each record batch of at least 4 KiB in frames of its own, and the client takes frames of up
//! to `CLIENT_MAX_FRAME_BYTES`, so such a batch arrives in one frame, and
//! [`strata_proto::frames::read_unary`] and prost decode it as a slice of that frame, as h2
//! read it from the socket.
//!
//! The call is otherwise what tonic makes of it: the same path, headers and message, and the
//! same statuses from the answer's headers or trailers, so a refusal's code and message (a
//! not-leader answer naming the leader) reach the consumer unchanged.

use prost::Message;
use strata_proto::frames::{Unary, read_unary, unary_body};
use strata_proto::{FetchRequest, FetchResponse};
use tonic::codegen::{Service, http};
use tonic::transport::Channel;
use tonic::{Code, Status};

const FETCH_PATH: &str = "/strata.v1.Broker/Fetch";

/// Sends `request` over `channel` and decodes its answer, of at most `max_answer` bytes.
pub(crate) async fn fetch(
    mut channel: Channel,
    request: &FetchRequest,
    max_answer: usize,
) -> Result<FetchResponse, Status> {
    let mut call = http::Request::new(unary_body(request)?);
    *call.method_mut() = http::Method::POST;
    *call.uri_mut() = http::Uri::from_static(FETCH_PATH);
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
    let Unary { message, trailers } = read_unary(answer, max_answer).await?;
    match trailers.as_ref().and_then(Status::from_header_map) {
        Some(status) if status.code() == Code::Ok => {}
        Some(status) => return Err(status),
        None if parts.status != http::StatusCode::OK => {
            return Err(Status::unknown(format!(
                "HTTP status {} without a gRPC status",
                parts.status
            )));
        }
        None => return Err(Status::unknown("the answer ended without a grpc-status trailer")),
    }
    let message = message.ok_or_else(|| Status::internal("Missing response message."))?;
    FetchResponse::decode(message).map_err(|e| Status::internal(e.to_string()))
}
