//! `ProduceMany` decoded straight from the request's HTTP/2 frames.
//!
//! tonic copies every DATA frame of a request into a buffer of its own before decoding it:
//! for a produce request, a copy of every byte produced. h2 hands over each frame as `Bytes`
//! cut from its read buffer, and prost decodes the batches (`bytes::Bytes` fields) as slices
//! of what it decodes from, so here a request whose message arrived in one DATA frame, the
//! usual case (a server takes frames of up to `SERVER_MAX_FRAME_BYTES`; tonic's client sends
//! the message, then an empty frame that ends the stream), reaches the log without a copy
//! after the socket's. A message in several frames is gathered once.
//!
//! Every other call goes to tonic as before, and so does a `ProduceMany` whose message is
//! compressed (`grpc-encoding`), which tonic refuses: the server enables no compression.
//! Errors carry tonic's codes and messages, except that a second message in the body (tonic
//! reads and ignores it) is refused with `INTERNAL`.

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
/// Partition entries a request may carry: every partition of the largest topic ten times
/// over. Counted in the encoded message before it is decoded, because each entry decodes into
/// a `PartitionBatches` with a `String` of its own: a 64 MiB request of 2-byte entries would
/// otherwise become ~32 M of them, gigabytes.
pub(crate) const MAX_REQUEST_PARTITIONS: usize = 10 * crate::topics::MAX_PARTITIONS as usize;
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
    match partition_entries(&message) {
        Ok(entries) if entries > MAX_REQUEST_PARTITIONS => {
            return Status::invalid_argument(format!(
                "a produce request carries at most {MAX_REQUEST_PARTITIONS} partition entries, not {entries}"
            ))
            .into_http();
        }
        Ok(_) => {}
        Err(err) => return Status::internal(err.to_string()).into_http(),
    }
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
/// against `max_request` from the prefix, before the rest of the body is read. A message that
/// arrived in one DATA frame is returned as that frame's bytes; one in several is gathered
/// into a buffer of its declared length (so a client sending tiny frames costs no more memory
/// than the message).
async fn read_message(mut body: Body, max_request: usize) -> Result<Bytes, Status> {
    // The frames until the prefix is complete (at most five); then the message, once its
    // length is known (`expected`, prefix included).
    let mut head: Vec<Bytes> = Vec::new();
    let mut message = None;
    let mut expected = usize::MAX;
    let mut received = 0usize;
    while let Some(frame) = body.frame().await {
        // A client's trailers say nothing; tonic's client ends every body with an empty
        // frame.
        let Ok(data) = frame?.into_data() else { continue };
        if data.is_empty() {
            continue;
        }
        received += data.len();
        if received > expected {
            return Err(Status::internal("a unary request carries exactly one message"));
        }
        match &mut message {
            Some(Received::Gathering(gathered)) => gathered.put(data),
            Some(Received::Whole(_)) => unreachable!("a whole message is all the body holds"),
            None => {
                head.push(data);
                if received < PREFIX_BYTES {
                    continue;
                }
                let length = message_length(&prefix(&head))?;
                if length > max_request {
                    return Err(Status::out_of_range(format!(
                        "Error, decoded message length too large: found {length} bytes, the limit is: {max_request} bytes"
                    )));
                }
                expected = PREFIX_BYTES + length;
                if received > expected {
                    return Err(Status::internal("a unary request carries exactly one message"));
                }
                message = Some(if head.len() == 1 && received == expected {
                    Received::Whole(head.pop().expect("one frame"))
                } else {
                    let mut gathered = BytesMut::with_capacity(expected);
                    head.drain(..).for_each(|frame| gathered.put(frame));
                    Received::Gathering(gathered)
                });
            }
        }
    }
    let mut body = match message {
        None if received == 0 => return Err(Status::internal("Missing request message.")),
        Some(Received::Whole(frame)) => frame,
        Some(Received::Gathering(gathered)) if gathered.len() == expected => gathered.freeze(),
        _ => return Err(Status::internal("Unexpected EOF decoding stream.")),
    };
    body.advance(PREFIX_BYTES);
    Ok(body)
}

/// A request's message, once its prefix was read.
enum Received {
    /// All of it, in one frame.
    Whole(Bytes),
    /// Copied into a buffer of its declared length, as its frames arrive.
    Gathering(BytesMut),
}

/// How many `partitions` entries (field 2) an encoded `ProduceManyRequest` holds, from its
/// field keys and lengths alone.
fn partition_entries(mut message: &[u8]) -> Result<usize, prost::DecodeError> {
    use prost::encoding::{DecodeContext, decode_key, skip_field};
    let mut entries = 0;
    while !message.is_empty() {
        let (tag, wire_type) = decode_key(&mut message)?;
        if tag == 2 {
            entries += 1;
        }
        skip_field(wire_type, tag, &mut message, DecodeContext::default())?;
    }
    Ok(entries)
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
    let Ok(prefix_length) = u32::try_from(length) else {
        return Status::resource_exhausted("the answer exceeds 4 GiB").into_http();
    };
    let mut buf = BytesMut::with_capacity(PREFIX_BYTES + length);
    buf.put_u8(0);
    buf.put_u32(prefix_length);
    message.encode_raw(&mut buf);
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

#[cfg(test)]
mod tests {
    use futures::StreamExt;
    use tonic::Code;

    use super::*;

    const MAX: usize = 1024;

    fn body(frames: Vec<http_body::Frame<Bytes>>) -> Body {
        Body::new(http_body_util::StreamBody::new(futures::stream::iter(
            frames.into_iter().map(Ok::<_, Status>),
        )))
    }

    fn data(bytes: &[u8]) -> http_body::Frame<Bytes> {
        http_body::Frame::data(Bytes::copy_from_slice(bytes))
    }

    fn prefixed(message: &[u8]) -> Vec<u8> {
        let mut bytes = vec![0];
        bytes.extend_from_slice(&(message.len() as u32).to_be_bytes());
        bytes.extend_from_slice(message);
        bytes
    }

    #[tokio::test]
    async fn a_message_in_one_frame_is_not_copied() {
        let frame = Bytes::from(prefixed(b"batches"));
        let end = http_body::Frame::data(Bytes::new()); // tonic's client ends with one
        let read = read_message(body(vec![http_body::Frame::data(frame.clone()), end]), MAX);
        let message = read.await.unwrap();
        assert_eq!(&message[..], b"batches");
        assert_eq!(message.as_ptr(), frame[PREFIX_BYTES..].as_ptr(), "a slice of the frame");
    }

    #[tokio::test]
    async fn a_message_in_tiny_frames_is_gathered_with_trailers_ignored() {
        let bytes = prefixed(b"split everywhere");
        let mut frames: Vec<_> = bytes.chunks(1).map(data).collect();
        frames.push(http_body::Frame::trailers(http::HeaderMap::new()));
        let message = read_message(body(frames), MAX).await.unwrap();
        assert_eq!(&message[..], b"split everywhere");
    }

    #[tokio::test]
    async fn faults_get_tonic_codes() {
        let code =
            |frames| async move { read_message(body(frames), MAX).await.unwrap_err().code() };
        assert_eq!(code(vec![]).await, Code::Internal, "no message");
        assert_eq!(code(vec![data(&[0, 0, 0])]).await, Code::Internal, "a cut prefix");
        assert_eq!(code(vec![data(&prefixed(b"abc")[..6])]).await, Code::Internal, "cut short");
        let mut two = prefixed(b"one");
        two.extend(prefixed(b"two"));
        assert_eq!(code(vec![data(&two)]).await, Code::Internal, "a second message");
        assert_eq!(code(vec![data(&[1, 0, 0, 0, 1, 7])]).await, Code::Internal, "compressed");
        assert_eq!(code(vec![data(&[2, 0, 0, 0, 1, 7])]).await, Code::Internal, "bad flag");
    }

    #[test]
    fn partition_entries_are_counted_without_decoding() {
        let entry = |partition| strata_proto::PartitionBatches {
            topic: "t".into(),
            partition,
            batches: vec![Bytes::from_static(b"batch")],
        };
        let request = ProduceManyRequest { acks: -1, partitions: (0..300).map(entry).collect() };
        assert_eq!(partition_entries(&request.encode_to_vec()).unwrap(), 300);
        assert!(partition_entries(&[0x12, 0x05, 0x00]).is_err(), "a length past the end");
    }

    #[tokio::test]
    async fn an_oversized_message_is_refused_from_its_prefix_before_the_body_ends() {
        let prefix = [0, 0, 0, 0x10, 0]; // 4 KiB, above MAX
        let frames = futures::stream::iter([Ok::<_, Status>(data(&prefix))])
            .chain(futures::stream::pending()); // a body that never ends
        let body = Body::new(http_body_util::StreamBody::new(frames));
        let refused =
            tokio::time::timeout(std::time::Duration::from_secs(10), read_message(body, MAX))
                .await
                .expect("answered without waiting for the body")
                .unwrap_err();
        assert_eq!(refused.code(), Code::OutOfRange);
    }
}
