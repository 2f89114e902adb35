use crate::batch::Compression;

/// Everything that can be wrong with a batch, a record or an identifier.
///
/// Variants carry the numbers that explain the failure so that a log line or a gRPC status built
/// from them tells the user exactly what was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("batch truncated: need {needed} bytes, have {available}")]
    Truncated { needed: usize, available: usize },
    #[error("batch length field says {declared} bytes but {actual} bytes were given")]
    LengthMismatch { declared: u64, actual: usize },
    #[error("unsupported batch magic {0}, only magic 2 (RecordBatch v2) is accepted")]
    BadMagic(i8),
    #[error("batch CRC-32C mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("invalid batch header: {0}")]
    InvalidHeader(&'static str),
    #[error("invalid record #{index} in batch: {reason}")]
    InvalidRecord { index: u32, reason: &'static str },
    #[error("compression codec {0:?} is not supported by this build")]
    UnsupportedCompression(Compression),
    #[error("decompressed records exceed the limit of {limit} bytes")]
    DecompressedTooLarge { limit: usize },
    #[error("cannot decompress records: {0}")]
    Compression(String),
    #[error("batch would exceed {limit} bytes")]
    BatchTooLarge { limit: usize },
    #[error("invalid topic name {name:?}: {reason}")]
    InvalidTopicName { name: String, reason: &'static str },
}
