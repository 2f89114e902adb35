//! The codec every generated client and server uses: prost's, with buffers sized so that
//! record batches are not copied more than tonic must.
//!
//! - **Encoding.** tonic starts each message's buffer at 8 KiB and prost writes into it field
//!   by field, so a produce request of many batches or a fetch answer grew by doubling, each
//!   reallocation copying what was encoded so far into freshly faulted memory. The encoder
//!   reserves the message's encoded length first.
//! - **Decoding requests that carry batches to a broker.** tonic appends each HTTP/2 DATA
//!   frame to its buffer, then, having read the message's length, reserves that length *more*
//!   than the buffer holds. A whole 1 MiB produce request in one frame (a server takes frames
//!   of up to 4 MiB) was then copied a second time by the reallocation: `memmove` was 17.8 %
//!   of a node's samples producing 1 MiB batches, 10.0 % without that copy (`perf`, session
//!   14). Those requests get a buffer of [`BATCH_REQUEST_BUFFER_BYTES`] from the start, which
//!   holds a request of up to half of it and that reservation. Everything else keeps tonic's
//!   8 KiB: with every message decoded into 2 MiB buffers, a consumer read 1,034–1,185 MB/s
//!   against 1,295–1,587.

use std::any::TypeId;
use std::marker::PhantomData;

use prost::Message;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, EncodeBuf, Encoder};
use tonic_prost::ProstDecoder;

/// The decoding buffer of requests that carry record batches to a broker: a request of up to
/// 1 MiB + 32 KiB (the producer's default `max_request_bytes` is 1 MiB), and tonic's
/// reservation of its length again, fit without growing. Allocated per request; only what is
/// written into it is touched.
pub const BATCH_REQUEST_BUFFER_BYTES: usize = 2 * 1024 * 1024 + 64 * 1024;

/// tonic's own defaults, for every other message.
const DEFAULT_BUFFER_BYTES: usize = 8 * 1024;
const YIELD_THRESHOLD: usize = 32 * 1024;

/// Whether messages of type `U` carry record batches to a broker: produce requests and the
/// Raft requests that replicate them.
fn carries_batches<U: 'static>() -> bool {
    [
        TypeId::of::<crate::ProduceManyRequest>(),
        TypeId::of::<crate::ProduceRequest>(),
        TypeId::of::<crate::internal::RaftBatchesRequest>(),
    ]
    .contains(&TypeId::of::<U>())
}

/// [`tonic_prost::ProstCodec`] with [`PresizedEncoder`], and a decoding buffer of
/// [`BATCH_REQUEST_BUFFER_BYTES`] for requests that carry record batches.
#[derive(Debug, Clone, Copy)]
pub struct PresizedCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for PresizedCodec<T, U> {
    fn default() -> Self {
        PresizedCodec(PhantomData)
    }
}

impl<T, U> Codec for PresizedCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = PresizedEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        PresizedEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        let buffer =
            if carries_batches::<U>() { BATCH_REQUEST_BUFFER_BYTES } else { DEFAULT_BUFFER_BYTES };
        ProstDecoder::new(BufferSettings::new(buffer, YIELD_THRESHOLD))
    }
}

/// Reserves the message's encoded length, then encodes it.
#[derive(Debug, Clone, Copy)]
pub struct PresizedEncoder<T>(PhantomData<T>);

impl<T: Message> Encoder for PresizedEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.reserve(item.encoded_len());
        item.encode(buf).map_err(|err| Status::internal(format!("encoding: {err}")))
    }
}
