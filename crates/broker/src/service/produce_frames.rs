//! `ProduceMany` decoded straight from the request's HTTP/2 frames.
//!
//! tonic copies every DATA frame of a request into a buffer of its own before decoding it.
//! For a produce request that is a copy of every byte produced: all of the `memmove` left in a
//! node producing 1 MiB batches, 14 % of its samples (`perf`, session 14). h2 hands over each
//! frame as `Bytes` cut from its read buffer, and prost decodes the batches (`bytes::Bytes`
//! fields) as slices of what it decodes from, so here a request that arrived in one frame, the
//! usual case (a server takes frames of up to `SERVER_MAX_FRAME_BYTES`), is never copied
//! between the socket and the log; one in several frames is joined once.
//!
//! Everything else, and a `ProduceMany` whose message is compressed (`grpc-encoding`), goes
//! to tonic as before. The errors are tonic's: the same codes for the same faults.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http_body_util::BodyExt;
use prost::Message;
use strata_proto::ProduceManyRequest;
use strata_proto::broker_server::{Broker, BrokerServer};
use tonic::Status;
use tonic::body::Body;
use tonic::codegen::{BoxFuture, Service, http};

use super::BrokerService;

const PRODUCE_MANY_PATH: &str = "/strata.v1.Broker/ProduceMany";
/// A gRPC message's prefix: a compression flag and the message's length.
const PREFIX_BYTES: usize = 5;

/// The broker's gRPC service, with `ProduceMany` taken before tonic decodes it.
#[derive(Debug, Clone)]
pub(crate) struct ProduceFrames {
    tonic: BrokerServer<BrokerService>,
    service: Arc<BrokerService>,
    max_request: usize,
}

impl ProduceFrames {
    /// `tonic` serves every other call; `max_request` bounds a request's message, as tonic's
    /// `max_decoding_message_size` does for them.
    pub(crate) fn new(service: BrokerService, max_request: usize) -> ProduceFrames {
        let service = Arc::new(service);
        let tonic = BrokerServer::from_arc(service.clone())
            .max_decoding_message_size(max_request)
            .max_encoding_message_size(usize::MAX);
        ProduceFrames { tonic, service, max_request }
    }
}

impl tonic::server::NamedService for ProduceFrames {
    const NAME: &'static str = strata_proto::broker_server::SERVICE_NAME;
}

impl Service<http::Request<Body>> for ProduceFrames {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<http::Response<Body>, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let compressed = request
            .headers()
            .get("grpc-encoding")
            .is_some_and(|encoding| encoding.as_bytes() != b"identity");
        if request.uri().path() != PRODUCE_MANY_PATH || compressed {
            return self.tonic.call(request);
        }
        let service = self.service.clone();
        let max_request = self.max_request;
        Box::pin(async move { Ok(produce_many(&service, request, max_request).await) })
    }
}

async fn produce_many(
    service: &BrokerService,
    request: http::Request<Body>,
    max_request: usize,
) -> http::Response<Body> {
    let (parts, body) = request.into_parts();
    let message = match read_message(body, max_request).await {
        Ok(message) => message,
        Err(status) => return status.into_http(),
    };
    let decoded = match ProduceManyRequest::decode(message) {
        Ok(decoded) => decoded,
        // tonic's answer to a message that does not decode.
        Err(err) => return Status::internal(err.to_string()).into_http(),
    };
    let request = tonic::Request::from_http(http::Request::from_parts(parts, decoded));
    match service.produce_many(request).await {
        Ok(response) => grpc_response(&response.into_inner()),
        Err(status) => status.into_http(),
    }
}

/// The one message of a unary request's body, without its prefix. Its length is checked
/// against `max_request` from the prefix, before the rest of the body is read.
async fn read_message(mut body: Body, max_request: usize) -> Result<Bytes, Status> {
    let mut frames: Vec<Bytes> = Vec::new();
    let mut received = 0usize;
    let mut expected = None;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else { continue }; // a client's trailers say nothing
        received += data.len();
        frames.push(data);
        if expected.is_none() && received >= PREFIX_BYTES {
            let length = message_length(&prefix(&frames))?;
            if length > max_request {
                return Err(Status::out_of_range(format!(
                    "Error, decoded message length too large: found {length} bytes, the limit is: {max_request} bytes"
                )));
            }
            expected = Some(PREFIX_BYTES + length);
        }
        if expected.is_some_and(|expected| received > expected) {
            return Err(Status::internal("a unary request carries exactly one message"));
        }
    }
    match expected {
        None if received == 0 => Err(Status::internal("Missing request message.")),
        Some(expected) if received == expected => {
            let mut body = match frames.len() {
                1 => frames.pop().expect("one frame"),
                _ => {
                    let mut joined = BytesMut::with_capacity(received);
                    for frame in frames {
                        joined.put(frame);
                    }
                    joined.freeze()
                }
            };
            body.advance(PREFIX_BYTES);
            Ok(body)
        }
        _ => Err(Status::internal("Unexpected EOF decoding stream.")),
    }
}

/// The first [`PREFIX_BYTES`] of the body, which may span frames.
fn prefix(frames: &[Bytes]) -> [u8; PREFIX_BYTES] {
    let mut prefix = [0u8; PREFIX_BYTES];
    let mut filled = 0;
    for frame in frames {
        let take = (PREFIX_BYTES - filled).min(frame.len());
        prefix[filled..filled + take].copy_from_slice(&frame[..take]);
        filled += take;
        if filled == PREFIX_BYTES {
            break;
        }
    }
    prefix
}

/// The message length a prefix gives, if its message is not compressed (the compressed ones
/// go to tonic by their `grpc-encoding`).
fn message_length(prefix: &[u8; PREFIX_BYTES]) -> Result<usize, Status> {
    match prefix[0] {
        0 => Ok(u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize),
        1 => Err(Status::internal(
            "protocol error: received message with compressed-flag but no grpc-encoding was specified",
        )),
        flag => Err(Status::internal(format!(
            "protocol error: received message with invalid compression flag: {flag} (valid flags are 0 and 1), while sending request"
        ))),
    }
}

/// A unary call's successful answer: the prefixed message, then `grpc-status: 0`.
fn grpc_response(message: &impl Message) -> http::Response<Body> {
    let length = message.encoded_len();
    let mut buf = BytesMut::with_capacity(PREFIX_BYTES + length);
    buf.put_u8(0);
    buf.put_u32(u32::try_from(length).expect("an answer under 4 GiB"));
    message.encode(&mut buf).expect("the buffer holds the message");
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    let frames = futures::stream::iter([
        Ok::<_, Status>(http_body::Frame::data(buf.freeze())),
        Ok(http_body::Frame::trailers(trailers)),
    ]);
    let mut response = http::Response::new(Body::new(http_body_util::StreamBody::new(frames)));
    response
        .headers_mut()
        .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/grpc"));
    response
}
