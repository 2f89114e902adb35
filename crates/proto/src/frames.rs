//! A unary gRPC call's one message, read straight from its HTTP/2 frames, and written as one.
//!
//! tonic copies every DATA frame of a message into a buffer of its own before decoding it, and
//! then reserves the message's length on top of what that buffer holds, which copies what came
//! in the first frame a second time. h2 hands over each frame as `Bytes` cut from its read
//! buffer, and prost decodes `bytes::Bytes` fields (record batches) as slices of what it
//! decodes from: a message read here from one DATA frame, the usual case when the peer takes
//! frames as large as the message, is decoded without a copy after the socket's. A message in
//! several frames is gathered once, into a buffer of its declared length.
//!
//! Both ends use it where record batches travel: the broker for `ProduceMany` requests
//! (`strata-broker`, `service/produce_frames.rs`), the client for `Fetch` answers
//! (`strata-client`, `fetch_frames.rs`). Errors carry tonic's codes and messages, except that a
//! second message in a unary body (tonic reads and ignores it) is refused with `INTERNAL`.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http_body_util::BodyExt;
use prost::Message;
use tonic::Status;
use tonic::body::Body;
use tonic::codegen::http;

/// A gRPC message's prefix: a compression flag and the message's length.
pub const PREFIX_BYTES: usize = 5;

/// What a unary call's body held: its message (without the prefix), if any, and its trailers.
#[derive(Debug)]
pub struct Unary {
    pub message: Option<Bytes>,
    pub trailers: Option<http::HeaderMap>,
}

/// Reads the one message of a unary call's body and its trailers. The message's length is
/// checked against `max_message` from its prefix, before the rest of the body is read. A
/// message that arrived in one DATA frame is returned as that frame's bytes; one in several is
/// gathered into a buffer of its declared length (so a peer sending tiny frames costs no more
/// memory than the message). Empty DATA frames are skipped: tonic's client ends every request
/// body with one.
pub async fn read_unary(mut body: Body, max_message: usize) -> Result<Unary, Status> {
    // The frames until the prefix is complete (at most five); then the message, once its
    // length is known (`expected`, prefix included).
    let mut head: Vec<Bytes> = Vec::new();
    let mut message = None;
    let mut expected = usize::MAX;
    let mut received = 0usize;
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        let data = match frame?.into_data() {
            Ok(data) => data,
            Err(frame) => {
                if let Ok(more) = frame.into_trailers() {
                    trailers.get_or_insert_with(http::HeaderMap::new).extend(more);
                }
                continue;
            }
        };
        if data.is_empty() {
            continue;
        }
        received += data.len();
        if received > expected {
            return Err(Status::internal("a unary call carries exactly one message"));
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
                if length > max_message {
                    return Err(Status::out_of_range(format!(
                        "Error, decoded message length too large: found {length} bytes, the limit is: {max_message} bytes"
                    )));
                }
                expected = PREFIX_BYTES + length;
                if received > expected {
                    return Err(Status::internal("a unary call carries exactly one message"));
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
    let mut whole = match message {
        None if received == 0 => return Ok(Unary { message: None, trailers }),
        Some(Received::Whole(frame)) => frame,
        Some(Received::Gathering(gathered)) if gathered.len() == expected => gathered.freeze(),
        _ => return Err(Status::internal("Unexpected EOF decoding stream.")),
    };
    whole.advance(PREFIX_BYTES);
    Ok(Unary { message: Some(whole), trailers })
}

/// A message, once its prefix was read.
enum Received {
    /// All of it, in one frame.
    Whole(Bytes),
    /// Copied into a buffer of its declared length, as its frames arrive.
    Gathering(BytesMut),
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

/// The message length a prefix gives, if its message is not compressed (Strata's server
/// enables no compression, and a compressed request goes to tonic by its `grpc-encoding`).
fn message_length(prefix: &[u8; PREFIX_BYTES]) -> Result<usize, Status> {
    match prefix[0] {
        0 => Ok(u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize),
        1 => Err(Status::internal(
            "protocol error: received message with compressed-flag but no grpc-encoding was specified",
        )),
        flag => Err(Status::internal(format!(
            "protocol error: received message with invalid compression flag: {flag} (valid flags are 0 and 1)"
        ))),
    }
}

/// `message` with its prefix, in one buffer sized to it.
pub fn prefixed(message: &impl Message) -> Result<Bytes, Status> {
    let length = message.encoded_len();
    let Ok(prefix_length) = u32::try_from(length) else {
        return Err(Status::resource_exhausted("a message exceeds 4 GiB"));
    };
    let mut buf = BytesMut::with_capacity(PREFIX_BYTES + length);
    buf.put_u8(0);
    buf.put_u32(prefix_length);
    message.encode_raw(&mut buf);
    Ok(buf.freeze())
}

/// A body of `frames`.
pub fn body(frames: Vec<http_body::Frame<Bytes>>) -> Body {
    let frames = futures::stream::iter(frames.into_iter().map(Ok::<_, Status>));
    Body::new(http_body_util::StreamBody::new(frames))
}

/// A unary call's body: `message`, prefixed, in one frame.
pub fn unary_body(message: &impl Message) -> Result<Body, Status> {
    Ok(body(vec![http_body::Frame::data(prefixed(message)?)]))
}

/// A unary call's successful answer: the prefixed message, then `grpc-status: 0`.
pub fn ok_response(message: &impl Message) -> http::Response<Body> {
    let message = match prefixed(message) {
        Ok(message) => message,
        Err(status) => return status.into_http(),
    };
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    let frames = vec![http_body::Frame::data(message), http_body::Frame::trailers(trailers)];
    let mut response = http::Response::new(body(frames));
    response
        .headers_mut()
        .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/grpc"));
    response
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    const MAX: usize = 1024;

    fn data(bytes: &[u8]) -> http_body::Frame<Bytes> {
        http_body::Frame::data(Bytes::copy_from_slice(bytes))
    }

    fn with_prefix(message: &[u8]) -> Vec<u8> {
        let mut bytes = vec![0];
        bytes.extend_from_slice(&(message.len() as u32).to_be_bytes());
        bytes.extend_from_slice(message);
        bytes
    }

    async fn read(frames: Vec<http_body::Frame<Bytes>>) -> Result<Unary, Status> {
        read_unary(body(frames), MAX).await
    }

    #[tokio::test]
    async fn a_message_in_one_frame_is_not_copied() {
        let frame = Bytes::from(with_prefix(b"batches"));
        let end = http_body::Frame::data(Bytes::new()); // tonic's client ends with one
        let read = read(vec![http_body::Frame::data(frame.clone()), end]).await.unwrap();
        let message = read.message.unwrap();
        assert_eq!(&message[..], b"batches");
        assert_eq!(message.as_ptr(), frame[PREFIX_BYTES..].as_ptr(), "a slice of the frame");
    }

    #[tokio::test]
    async fn a_message_in_tiny_frames_is_gathered_and_trailers_kept() {
        let bytes = with_prefix(b"split everywhere");
        let mut frames: Vec<_> = bytes.chunks(1).map(data).collect();
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        frames.push(http_body::Frame::trailers(trailers.clone()));
        let read = read(frames).await.unwrap();
        assert_eq!(&read.message.unwrap()[..], b"split everywhere");
        assert_eq!(read.trailers, Some(trailers));
    }

    #[tokio::test]
    async fn a_body_without_a_message_reads_as_none() {
        let read = read(vec![http_body::Frame::data(Bytes::new())]).await.unwrap();
        assert!(read.message.is_none() && read.trailers.is_none());
    }

    #[tokio::test]
    async fn faults_get_tonic_codes() {
        let code = |frames| async move { read(frames).await.unwrap_err().code() };
        assert_eq!(code(vec![data(&[0, 0, 0])]).await, Code::Internal, "a cut prefix");
        assert_eq!(code(vec![data(&with_prefix(b"abc")[..6])]).await, Code::Internal, "cut short");
        let mut two = with_prefix(b"one");
        two.extend(with_prefix(b"two"));
        assert_eq!(code(vec![data(&two)]).await, Code::Internal, "a second message");
        assert_eq!(code(vec![data(&[1, 0, 0, 0, 1, 7])]).await, Code::Internal, "compressed");
        assert_eq!(code(vec![data(&[2, 0, 0, 0, 1, 7])]).await, Code::Internal, "bad flag");
    }

    #[tokio::test]
    async fn an_oversized_message_is_refused_from_its_prefix_before_the_body_ends() {
        use futures::StreamExt;
        let prefix = [0, 0, 0, 0x10, 0]; // 4 KiB, above MAX
        let frames = futures::stream::iter([Ok::<_, Status>(data(&prefix))])
            .chain(futures::stream::pending()); // a body that never ends
        let body = Body::new(http_body_util::StreamBody::new(frames));
        let refused =
            tokio::time::timeout(std::time::Duration::from_secs(10), read_unary(body, MAX))
                .await
                .expect("answered without waiting for the body")
                .unwrap_err();
        assert_eq!(refused.code(), Code::OutOfRange);
    }

    #[test]
    fn prefixed_carries_the_length_then_the_message() {
        let message = crate::FetchRequest { topic: "t".into(), ..Default::default() };
        let bytes = prefixed(&message).unwrap();
        assert_eq!(bytes[0], 0);
        assert_eq!(bytes[1..5], (message.encoded_len() as u32).to_be_bytes());
        assert_eq!(crate::FetchRequest::decode(&bytes[5..]).unwrap(), message);
    }
}
