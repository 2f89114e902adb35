//! lz4 (frame format, as Kafka's magic-2 batches use) and zstd for the records section of a
//! batch. Decompression is bounded: it stops and fails as soon as the output would pass the
//! caller's limit, so a small "zip bomb" batch cannot make anyone allocate more than that.

use std::io::{Read, Write};

use crate::batch::Compression;
use crate::{RecordError, Result};

/// zstd level 3: zstd's own default, a good speed/ratio balance for record data.
const ZSTD_LEVEL: i32 = 3;

pub(crate) fn compress(codec: Compression, data: &[u8]) -> Result<Vec<u8>> {
    let failed = |e: std::io::Error| RecordError::Compression(format!("{codec:?}: {e}"));
    match codec {
        Compression::None => Ok(data.to_vec()),
        Compression::Lz4 => {
            let mut encoder =
                lz4_flex::frame::FrameEncoder::new(Vec::with_capacity(data.len() / 2));
            encoder.write_all(data).map_err(failed)?;
            encoder.finish().map_err(|e| RecordError::Compression(format!("lz4: {e}")))
        }
        Compression::Zstd => zstd::stream::encode_all(data, ZSTD_LEVEL).map_err(failed),
        other => Err(RecordError::UnsupportedCompression(other)),
    }
}

/// Decompresses `data`, failing with [`RecordError::DecompressedTooLarge`] past `limit` bytes.
pub fn decompress(codec: Compression, data: &[u8], limit: usize) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let read = match codec {
        Compression::None => return Ok(data.to_vec()),
        Compression::Lz4 => {
            lz4_flex::frame::FrameDecoder::new(data).take(limit as u64 + 1).read_to_end(&mut out)
        }
        Compression::Zstd => {
            let decoder = zstd::stream::read::Decoder::new(data)
                .map_err(|e| RecordError::Compression(format!("zstd: {e}")))?;
            decoder.take(limit as u64 + 1).read_to_end(&mut out)
        }
        other => return Err(RecordError::UnsupportedCompression(other)),
    };
    read.map_err(|e| RecordError::Compression(format!("{codec:?}: {e}")))?;
    if out.len() > limit {
        return Err(RecordError::DecompressedTooLarge { limit });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_bomb_limit() {
        let data: Vec<u8> = (0..100_000).map(|i| (i % 7) as u8).collect();
        for codec in [Compression::Lz4, Compression::Zstd] {
            let packed = compress(codec, &data).unwrap();
            assert!(packed.len() < data.len() / 10, "{codec:?} compresses repetitive data");
            assert_eq!(decompress(codec, &packed, data.len()).unwrap(), data);
            assert_eq!(
                decompress(codec, &packed, data.len() - 1),
                Err(RecordError::DecompressedTooLarge { limit: data.len() - 1 })
            );
            assert!(
                decompress(codec, &packed[..packed.len() / 2], data.len()).is_err(),
                "truncated input"
            );
            assert!(decompress(codec, b"garbage", 1000).is_err());
        }
    }
}
