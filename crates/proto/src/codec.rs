//! The codec every generated client and server uses: prost's, except that a message's
//! buffer is sized once, to the message, before it is encoded.
//!
//! tonic starts each message's buffer at 8 KiB and prost writes into it field by field, so a
//! 1 MiB produce request or fetch answer grew by doubling: seven reallocations, each copying
//! what was encoded so far (about one more copy of every byte) into freshly faulted memory.

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
        item.encode(buf).map_err(|err| Status::internal(format!("encoding: {err}")))
    }
}
