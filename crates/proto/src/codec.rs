//! The codec every generated client and server uses: prost's, except that a message's
//! buffer is sized once, to the message, before it is encoded.
//!
//! tonic starts each message's buffer at 8 KiB and prost writes into it field by field, so a
//! produce request of many batches or a fetch answer grew by doubling, each reallocation
//! copying what was encoded so far into freshly faulted memory (6 % of a producer's samples at
//! 1,000 partitions, `perf`, session 14).
//!
//! Decoding is tonic's. It appends each HTTP/2 DATA frame to its buffer and then reserves the
//! message's length on top of what the buffer holds, which copies a message that arrived in
//! one frame a second time; the broker decodes `ProduceMany`, where that matters, from the
//! frames itself (`strata-broker`, `service/batch_frames.rs`).

use std::marker::PhantomData;

use prost::Message;
use tonic::Status;
use tonic::codec::{Codec, EncodeBuf, Encoder};
use tonic_prost::ProstDecoder;

/// [`tonic_prost::ProstCodec`] with [`PresizedEncoder`].
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
        ProstDecoder::default()
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
        item.encode_raw(buf);
        Ok(())
    }
}
