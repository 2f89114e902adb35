//! A unary gRPC call's one message, read straight from its HTTP/2 frames, and written as
//! frames that carry record batches as they are.
//!
//! tonic copies every DATA frame of a message into a buffer of its own before decoding it, and
//! then reserves the message's length on top of what that buffer holds, which copies what came
//! in the first frame a second time; it encodes an answer into one buffer, a copy of every
//! batch it carries. h2 hands over each frame as `Bytes` cut from its read buffer and sends
//! each `Bytes` it is given without copying it, and prost decodes `bytes::Bytes` fields (record
//! batches) with `copy_to_bytes`, which [`Chunks`] answers with a slice when the bytes lie in
//! one frame. So a batch that travels in frames of its own is neither copied by the sender nor
//! by the receiver: only the sockets copy it.
//!
//! Both ends use it where record batches travel: the broker for `ProduceMany` requests and
//! `Fetch` answers (`strata-broker`, `service/batch_frames.rs`), the client for `Fetch`
//! answers and `ProduceMany` requests (`strata-client`, `unary_frames.rs`), and nodes for
//! Raft's `AppendBatches` (`strata-raft`, `network.rs`), through [`crate::calls`]. Errors
//! carry tonic's codes and messages, except that a second message in a unary body (tonic reads
//! and ignores it) is refused with `INTERNAL`.

use std::collections::VecDeque;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http_body_util::BodyExt;
use prost::Message;
use tonic::Status;
use tonic::body::Body;
use tonic::codegen::http;

/// A gRPC message's prefix: a compression flag and the message's length.
pub const PREFIX_BYTES: usize = 5;

/// DATA frames at least this large are kept as they came; smaller ones are copied together
/// (so a peer sending tiny frames costs no more memory than the message).
pub const OWN_FRAME_BYTES: usize = 4096;

/// Record batches at least this large go in frames of their own when an answer is written;
/// smaller ones are copied into the frames around them. Each frame of its own costs a
/// `writev` and a frame's handling at both ends, more than copying a small batch: fetch
/// answers of 64 KiB batches each in its own frames took more CPU on both sides than copied
/// ones (node 0.82-1.02 s against 0.75-0.90 s, consumer 1.15-1.25 s against 0.93-1.0 s per
/// 2 GB), while 1 MiB batches in their own frames took 25 % less node CPU (session 15).
pub const OWN_FRAME_BATCH_BYTES: usize = 256 * 1024;

/// What a unary call's body held: its message (without the prefix), if any, and its trailers.
#[derive(Debug)]
pub struct Unary {
    pub message: Option<Chunks>,
    pub trailers: Option<http::HeaderMap>,
}

/// Reads the one message of a unary call's body and its trailers. The message's length is
/// checked against `max_message` from its prefix, before the rest of the body is read. Frames
/// of at least [`OWN_FRAME_BYTES`] are kept as they came, smaller runs copied together; empty
/// DATA frames are skipped (tonic's client ends every request body with one).
pub async fn read_unary(mut body: Body, max_message: usize) -> Result<Unary, Status> {
    let mut prefix = [0u8; PREFIX_BYTES];
    let mut prefix_read = 0;
    let mut length = 0;
    let mut message = Chunks::default();
    let mut small = BytesMut::new();
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        let mut data = match frame?.into_data() {
            Ok(data) => data,
            Err(frame) => {
                if let Ok(more) = frame.into_trailers() {
                    trailers.get_or_insert_with(http::HeaderMap::new).extend(more);
                }
                continue;
            }
        };
        if prefix_read < PREFIX_BYTES {
            let take = (PREFIX_BYTES - prefix_read).min(data.len());
            prefix[prefix_read..prefix_read + take].copy_from_slice(&data[..take]);
            data.advance(take);
            prefix_read += take;
            if prefix_read == PREFIX_BYTES {
                length = message_length(&prefix)?;
                if length > max_message {
                    return Err(Status::out_of_range(format!(
                        "Error, decoded message length too large: found {length} bytes, the limit is: {max_message} bytes"
                    )));
                }
            }
        }
        if data.is_empty() {
            continue;
        }
        if message.remaining() + small.len() + data.len() > length {
            return Err(Status::internal("a unary call carries exactly one message"));
        }
        if data.len() >= OWN_FRAME_BYTES {
            message.push(small.split().freeze());
            message.push(data);
        } else {
            small.extend_from_slice(&data);
        }
    }
    message.push(small.freeze());
    match prefix_read {
        0 => Ok(Unary { message: None, trailers }),
        PREFIX_BYTES if message.remaining() == length => {
            Ok(Unary { message: Some(message), trailers })
        }
        // A message cut short by a sender that gave up says why in its trailers, if it says.
        // (Not OUT_OF_RANGE: `calls::unary_call` reads that code as this reader's own size
        // limit.)
        _ => Err(trailers
            .as_ref()
            .and_then(Status::from_header_map)
            .filter(|status| !matches!(status.code(), tonic::Code::Ok | tonic::Code::OutOfRange))
            .unwrap_or_else(|| Status::internal("Unexpected EOF decoding stream."))),
    }
}

/// A message's bytes in the pieces they arrived in, read as one [`Buf`]. Taking bytes that lie
/// within one piece (`copy_to_bytes`, which prost uses for `bytes::Bytes` fields) slices it
/// instead of copying: a record batch that came in a frame of its own is decoded in place.
#[derive(Debug, Clone, Default)]
pub struct Chunks {
    /// Never an empty one.
    chunks: VecDeque<Bytes>,
    remaining: usize,
}

impl Chunks {
    fn push(&mut self, chunk: Bytes) {
        if !chunk.is_empty() {
            self.remaining += chunk.len();
            self.chunks.push_back(chunk);
        }
    }
}

impl From<Bytes> for Chunks {
    fn from(bytes: Bytes) -> Chunks {
        let mut chunks = Chunks::default();
        chunks.push(bytes);
        chunks
    }
}

impl Buf for Chunks {
    fn remaining(&self) -> usize {
        self.remaining
    }

    fn chunk(&self) -> &[u8] {
        self.chunks.front().map_or(&[], |c| &c[..])
    }

    fn advance(&mut self, mut count: usize) {
        assert!(count <= self.remaining, "advance past the end of the message");
        self.remaining -= count;
        while count > 0 {
            let front = self.chunks.front_mut().expect("bytes remain");
            if count < front.len() {
                front.advance(count);
                return;
            }
            count -= front.len();
            self.chunks.pop_front();
        }
    }

    fn copy_to_bytes(&mut self, len: usize) -> Bytes {
        let Some(front) = self.chunks.front_mut().filter(|front| front.len() >= len) else {
            assert!(len <= self.remaining, "copy_to_bytes past the end of the message");
            let mut gathered = BytesMut::with_capacity(len);
            gathered.put((&mut *self).take(len));
            return gathered.freeze();
        };
        let taken = front.split_to(len);
        if front.is_empty() {
            self.chunks.pop_front();
        }
        self.remaining -= len;
        taken
    }
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
    Body::new(Frames(frames.into()))
}

/// A body whose frames are all at hand. It says it has ended as soon as its last frame is
/// taken, so hyper sends the last DATA frame with END_STREAM; a stream's body says so only
/// when polled once more, and hyper then ends the stream with an empty DATA frame of its own:
/// one more `writev` and TCP segment per call, and a wake-up of the peer (`strace`, session
/// 17: a produce request went out in three writes, headers, data and the empty frame).
struct Frames(VecDeque<http_body::Frame<Bytes>>);

impl http_body::Body for Frames {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Status>>> {
        std::task::Poll::Ready(self.get_mut().0.pop_front().map(Ok))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }
}

/// A unary call's body: `message`, prefixed, in one frame that also ends the stream.
pub fn unary_body(message: &impl Message) -> Result<Body, Status> {
    Ok(Body::new(http_body_util::Full::new(prefixed(message)?)))
}

/// A unary call's successful answer: the prefixed message, then `grpc-status: 0`.
pub fn ok_response(message: &impl Message) -> http::Response<Body> {
    match prefixed(message) {
        Ok(message) => answer(vec![http_body::Frame::data(message)]),
        Err(status) => status.into_http(),
    }
}

/// A unary call's successful answer: `head`'s fields with `batches` as its repeated `bytes`
/// field `tag` (which `head` leaves empty), written where prost writes that field among the
/// others (`order`). Batches of at least [`OWN_FRAME_BATCH_BYTES`] are sent as they are, each
/// in frames of its own (a fetch answer's batches and runs are slices of the log's mapped
/// segments: the socket's copy is their only one); the rest is encoded around them.
pub fn ok_response_with_batches(
    head: &impl Message,
    tag: u32,
    batches: &[Bytes],
    order: BatchesGo,
) -> http::Response<Body> {
    match with_batches(head, tag, batches, order) {
        Ok(frames) => answer(frames),
        Err(status) => status.into_http(),
    }
}

/// A `ProduceMany` request's body, byte for byte what prost encodes, but with each batch of
/// at least [`OWN_FRAME_BATCH_BYTES`] in frames of its own, as the producer built it (tonic
/// would copy it into one buffer with the rest of the request).
pub fn produce_many_body(request: &crate::ProduceManyRequest) -> Result<Body, Status> {
    use prost::encoding::{WireType, encode_key, encode_varint, int32, string, uint32};
    let batches = request.partitions.iter().flat_map(|p| &p.batches);
    let mut writer = BatchWriter::new(request.encoded_len(), batches)?;
    // Fields in tag order, defaults left out, as prost's generated code writes them.
    if request.acks != 0 {
        int32::encode(1, &request.acks, &mut writer.inline);
    }
    for entry in &request.partitions {
        encode_key(2, WireType::LengthDelimited, &mut writer.inline);
        encode_varint(entry.encoded_len() as u64, &mut writer.inline);
        if !entry.topic.is_empty() {
            string::encode(1, &entry.topic, &mut writer.inline);
        }
        if entry.partition != 0 {
            uint32::encode(2, &entry.partition, &mut writer.inline);
        }
        for batch in &entry.batches {
            writer.put_batch(3, batch);
        }
    }
    Ok(body(writer.finish()))
}

/// A request's body: `head`'s fields, then `batches` as its repeated `bytes` field `tag`, the
/// field after every other (which `head` leaves empty): prost's encoding, but with each batch
/// of at least [`OWN_FRAME_BATCH_BYTES`] in frames of its own, as it is.
pub fn body_with_batches_last(
    head: &impl Message,
    tag: u32,
    batches: &[Bytes],
) -> Result<Body, Status> {
    with_batches(head, tag, batches, BatchesGo::Last).map(body)
}

/// Where a message's batches field stands among its fields: prost writes fields in tag order.
#[derive(Debug, Clone, Copy)]
pub enum BatchesGo {
    First,
    Last,
}

/// The frames of `head` with `batches` as its `bytes` field `tag` (see [`BatchWriter`]).
fn with_batches(
    head: &impl Message,
    tag: u32,
    batches: &[Bytes],
    order: BatchesGo,
) -> Result<Vec<http_body::Frame<Bytes>>, Status> {
    use prost::encoding::{encoded_len_varint, key_len};
    let framing: usize =
        batches.iter().map(|b| key_len(tag) + encoded_len_varint(b.len() as u64) + b.len()).sum();
    let mut writer = BatchWriter::new(head.encoded_len() + framing, batches.iter())?;
    if let BatchesGo::Last = order {
        head.encode_raw(&mut writer.inline);
    }
    for batch in batches {
        writer.put_batch(tag, batch);
    }
    if let BatchesGo::First = order {
        head.encode_raw(&mut writer.inline);
    }
    Ok(writer.finish())
}

/// Writes a message of known length as DATA frames: its large batches as they are, in frames
/// of their own, everything else into one buffer that each of those splits.
struct BatchWriter {
    inline: BytesMut,
    frames: Vec<http_body::Frame<Bytes>>,
}

impl BatchWriter {
    /// A message of `length` bytes, with `batches` among them; its prefix written.
    fn new<'a>(length: usize, batches: impl Iterator<Item = &'a Bytes>) -> Result<Self, Status> {
        let Ok(prefix_length) = u32::try_from(length) else {
            return Err(Status::resource_exhausted("a message exceeds 4 GiB"));
        };
        let own_frames: usize =
            batches.filter(|b| b.len() >= OWN_FRAME_BATCH_BYTES).map(|b| b.len()).sum();
        let mut inline = BytesMut::with_capacity(PREFIX_BYTES + length - own_frames);
        inline.put_u8(0);
        inline.put_u32(prefix_length);
        Ok(BatchWriter { inline, frames: Vec::new() })
    }

    /// A `bytes` field `tag` holding `batch`.
    fn put_batch(&mut self, tag: u32, batch: &Bytes) {
        use prost::encoding::{WireType, encode_key, encode_varint};
        encode_key(tag, WireType::LengthDelimited, &mut self.inline);
        encode_varint(batch.len() as u64, &mut self.inline);
        if batch.len() >= OWN_FRAME_BATCH_BYTES {
            self.frames.push(http_body::Frame::data(self.inline.split().freeze()));
            self.frames.push(http_body::Frame::data(batch.clone()));
        } else {
            self.inline.extend_from_slice(batch);
        }
    }

    fn finish(mut self) -> Vec<http_body::Frame<Bytes>> {
        if !self.inline.is_empty() {
            self.frames.push(http_body::Frame::data(self.inline.freeze()));
        }
        self.frames
    }
}

/// `frames`, then `grpc-status: 0`, as an answer.
fn answer(mut frames: Vec<http_body::Frame<Bytes>>) -> http::Response<Body> {
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    frames.push(http_body::Frame::trailers(trailers));
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

    fn contents(mut chunks: Chunks) -> Vec<u8> {
        chunks.copy_to_bytes(chunks.remaining()).to_vec()
    }

    #[tokio::test]
    async fn a_body_of_frames_ends_with_its_last_frame_not_a_poll_later() {
        use http_body::Body as _;
        let mut frames = body(vec![data(b"one"), data(b"two")]);
        assert!(!frames.is_end_stream());
        assert_eq!(frames.frame().await.unwrap().unwrap().into_data().unwrap(), &b"one"[..]);
        assert!(!frames.is_end_stream(), "a frame is left");
        assert_eq!(frames.frame().await.unwrap().unwrap().into_data().unwrap(), &b"two"[..]);
        assert!(frames.is_end_stream(), "hyper sends the last frame with END_STREAM");
        assert!(frames.frame().await.is_none());
    }

    #[tokio::test]
    async fn a_message_in_one_frame_is_not_copied() {
        let frame = Bytes::from(with_prefix(&[7; OWN_FRAME_BYTES]));
        let end = http_body::Frame::data(Bytes::new()); // tonic's client ends with one
        let read =
            read_unary(body(vec![http_body::Frame::data(frame.clone()), end]), 2 * OWN_FRAME_BYTES);
        let message = read.await.unwrap().message.unwrap();
        assert_eq!(message.chunk().as_ptr(), frame[PREFIX_BYTES..].as_ptr(), "a slice of it");
        assert_eq!(contents(message), [7; OWN_FRAME_BYTES]);
    }

    #[tokio::test]
    async fn a_message_in_tiny_frames_is_gathered_and_trailers_kept() {
        let bytes = with_prefix(b"split everywhere");
        let mut frames: Vec<_> = bytes.chunks(1).map(data).collect();
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        frames.push(http_body::Frame::trailers(trailers.clone()));
        let read = read(frames).await.unwrap();
        let message = read.message.unwrap();
        assert_eq!(message.chunks.len(), 1, "copied together");
        assert_eq!(contents(message), b"split everywhere");
        assert_eq!(read.trailers, Some(trailers));
    }

    #[test]
    fn bytes_within_one_chunk_are_sliced_and_across_chunks_gathered() {
        let (first, second) = (Bytes::from_static(b"abcdef"), Bytes::from_static(b"ghij"));
        let mut chunks = Chunks::from(first.clone());
        chunks.push(Bytes::new());
        chunks.push(second);
        assert_eq!(chunks.remaining(), 10);
        let head = chunks.copy_to_bytes(4);
        assert_eq!((&head[..], head.as_ptr()), (&b"abcd"[..], first.as_ptr()), "sliced");
        let across = chunks.copy_to_bytes(4);
        assert_eq!(&across[..], b"efgh", "gathered");
        chunks.advance(1);
        assert_eq!((chunks.chunk(), chunks.remaining()), (&b"j"[..], 1));
    }

    #[tokio::test]
    async fn an_answer_with_batches_decodes_with_its_large_batches_in_place() {
        let large = Bytes::from(vec![1; OWN_FRAME_BATCH_BYTES]);
        let copied = Bytes::from(vec![2; OWN_FRAME_BATCH_BYTES - 1]);
        let batches = vec![Bytes::from_static(b"small"), large.clone(), copied.clone()];
        let head = crate::FetchResponse {
            batches: vec![],
            high_watermark: 9,
            log_start_offset: 2,
            runs: vec![],
        };
        let answer = ok_response_with_batches(&head, 1, &batches, BatchesGo::First);
        let read = read_unary(answer.into_body(), 4 * OWN_FRAME_BATCH_BYTES).await.unwrap();
        assert!(read.trailers.is_some_and(|t| t["grpc-status"] == "0"));
        let decoded = crate::FetchResponse::decode(read.message.unwrap()).unwrap();
        assert_eq!(decoded, crate::FetchResponse { batches: batches.clone(), ..head });
        assert_eq!(decoded.batches[1].as_ptr(), large.as_ptr(), "the large batch, not a copy");
        assert_ne!(decoded.batches[2].as_ptr(), copied.as_ptr(), "a smaller one copied");
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
    async fn a_message_cut_short_reports_the_status_its_trailers_give() {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("14"));
        trailers.insert("grpc-message", http::HeaderValue::from_static("node%20stopping"));
        let cut = data(&with_prefix(b"abc")[..6]);
        let status = read(vec![cut, http_body::Frame::trailers(trailers)]).await.unwrap_err();
        assert_eq!((status.code(), status.message()), (Code::Unavailable, "node stopping"));
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

    /// Every DATA frame's bytes, in order, and the frames' count.
    async fn frames_of(mut body: Body) -> (Vec<u8>, usize) {
        let (mut bytes, mut count) = (Vec::new(), 0);
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.unwrap().into_data() {
                bytes.extend_from_slice(&data);
                count += 1;
            }
        }
        (bytes, count)
    }

    #[tokio::test]
    async fn written_messages_are_byte_for_byte_what_prost_encodes() {
        let large = Bytes::from(vec![3; OWN_FRAME_BATCH_BYTES]);
        let entry = |topic: &str, partition, batches: Vec<Bytes>| crate::PartitionBatches {
            topic: topic.into(),
            partition,
            batches,
        };
        let request = crate::ProduceManyRequest {
            acks: -1,
            partitions: vec![
                entry("t", 0, vec![Bytes::from_static(b"small"), large.clone()]),
                entry("", 7, vec![large.clone(), large.clone()]),
                entry("u", 1, vec![]),
            ],
        };
        let (bytes, frames) = frames_of(produce_many_body(&request).unwrap()).await;
        assert_eq!(bytes, prefixed(&request).unwrap(), "a produce request");
        assert_eq!(frames, 7, "each large batch in a frame of its own");
        let defaults =
            crate::ProduceManyRequest { acks: 0, partitions: vec![entry("", 0, vec![])] };
        let (bytes, _) = frames_of(produce_many_body(&defaults).unwrap()).await;
        assert_eq!(bytes, prefixed(&defaults).unwrap(), "defaults left out");

        let raft = crate::internal::RaftBatchesRequest {
            group_id: 9,
            payload: Bytes::from_static(b"entries"),
            batches: vec![large.clone(), Bytes::from_static(b"b"), large.clone()],
        };
        let head = crate::internal::RaftBatchesRequest { batches: vec![], ..raft.clone() };
        let (bytes, frames) =
            frames_of(body_with_batches_last(&head, 3, &raft.batches).unwrap()).await;
        assert_eq!(bytes, prefixed(&raft).unwrap(), "a raft batches request");
        assert_eq!(frames, 4, "the large batches in frames of their own");

        let batches = vec![large.clone(), Bytes::from_static(b"b")];
        let full =
            crate::FetchResponse { batches, high_watermark: 5, log_start_offset: 0, runs: vec![] };
        let head = crate::FetchResponse { batches: vec![], ..full.clone() };
        let answer =
            ok_response_with_batches(&head, 1, &full.batches, BatchesGo::First).into_body();
        assert_eq!(frames_of(answer).await.0, prefixed(&full).unwrap(), "a fetch answer");

        let runs = vec![large.clone(), Bytes::from_static(b"r")];
        let full = crate::FetchResponse { runs, high_watermark: 5, ..Default::default() };
        let head = crate::FetchResponse { runs: vec![], ..full.clone() };
        let answer = ok_response_with_batches(&head, 4, &full.runs, BatchesGo::Last).into_body();
        assert_eq!(frames_of(answer).await.0, prefixed(&full).unwrap(), "a fetch answer in runs");
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
