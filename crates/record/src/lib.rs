//! Strata's record batches and shared newtypes.
//!
//! A record batch is the unit of everything in Strata: CRC, compression, replication, storage
//! and fetch all work on whole batches. The byte layout is Kafka's RecordBatch v2 (magic 2), so
//! the bytes a producer sends are the bytes that sit on disk and the bytes a consumer gets back.
//! See `docs/on-disk-format.md` for the layout.
//!
//! This crate does no I/O. Decoding borrows from the input and never allocates; every length
//! and count read from the bytes is checked against the bytes that are actually there, so no
//! input, however hostile, makes it panic or reserve memory.

mod batch;
mod builder;
mod compression;
mod error;
mod ids;
mod record;
mod varint;

pub use batch::{
    Attributes, BATCH_HEADER_LEN, BatchHeader, Compression, DEFAULT_MAX_DECOMPRESSED, MAGIC_V2,
    NO_PRODUCER_EPOCH, NO_PRODUCER_ID, NO_SEQUENCE, RecordBatch, TimestampType, batch_len_at,
};
pub use builder::BatchBuilder;
pub use compression::decompress;
pub use error::RecordError;
pub use ids::{NodeId, Offset, PartitionId, Timestamp, TopicName};
pub use record::{Header, Headers, Record, Records};

/// Result alias for this crate.
pub type Result<T, E = RecordError> = std::result::Result<T, E>;
