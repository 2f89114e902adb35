//! The RecordBatch v2 header: layout, parsing and validation.
//!
//! ```text
//! offset  size  field
//!      0     8  baseOffset            (not covered by the CRC: the log assigns it)
//!      8     4  batchLength           (bytes after this field)
//!     12     4  partitionLeaderEpoch  (not covered by the CRC)
//!     16     1  magic = 2
//!     17     4  crc                   (CRC-32C of bytes 21..end)
//!     21     2  attributes
//!     23     4  lastOffsetDelta
//!     27     8  baseTimestamp
//!     35     8  maxTimestamp
//!     43     8  producerId
//!     51     2  producerEpoch
//!     53     4  baseSequence
//!     57     4  recordCount
//!     61     …  records
//! ```
//! All fixed-width integers are big-endian.

use std::borrow::Cow;

use crate::record::Records;
use crate::{Offset, RecordError, Result, Timestamp};

/// Length of the fixed header; records start here.
pub const BATCH_HEADER_LEN: usize = 61;
/// The only batch format Strata reads or writes.
pub const MAGIC_V2: i8 = 2;
/// Largest records section a compressed batch may expand to unless the caller says otherwise.
pub const DEFAULT_MAX_DECOMPRESSED: usize = 64 * 1024 * 1024;
/// `producerId` of a batch from a non-idempotent producer.
pub const NO_PRODUCER_ID: i64 = -1;
/// `producerEpoch` of a batch from a non-idempotent producer.
pub const NO_PRODUCER_EPOCH: i16 = -1;
/// `baseSequence` of a batch from a non-idempotent producer.
pub const NO_SEQUENCE: i32 = -1;

pub(crate) const BASE_OFFSET_AT: usize = 0;
pub(crate) const LENGTH_AT: usize = 8;
pub(crate) const LEADER_EPOCH_AT: usize = 12;
pub(crate) const MAGIC_AT: usize = 16;
pub(crate) const CRC_AT: usize = 17;
pub(crate) const ATTRIBUTES_AT: usize = 21;
pub(crate) const LAST_OFFSET_DELTA_AT: usize = 23;
pub(crate) const BASE_TIMESTAMP_AT: usize = 27;
pub(crate) const MAX_TIMESTAMP_AT: usize = 35;
pub(crate) const PRODUCER_ID_AT: usize = 43;
pub(crate) const PRODUCER_EPOCH_AT: usize = 51;
pub(crate) const BASE_SEQUENCE_AT: usize = 53;
pub(crate) const RECORD_COUNT_AT: usize = 57;
/// Bytes before `batchLength` ends; `batchLength` counts everything after them.
pub(crate) const LOG_OVERHEAD: usize = 12;
/// Smallest possible encoded record: seven one-byte varints/fields.
pub(crate) const MIN_RECORD_LEN: usize = 7;

/// Compression codec, bits 0..3 of the attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    /// The codec's value in bits 0..3 of the attributes.
    pub fn attribute_bits(self) -> i16 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }
}

/// How the batch's timestamps were set, bit 3 of the attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimestampType {
    /// Set by the producer.
    CreateTime,
    /// Set by the broker when the batch was appended.
    LogAppendTime,
}

/// The batch attributes field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Attributes(pub i16);

impl Attributes {
    pub fn compression(self) -> Result<Compression> {
        match self.0 & 0x7 {
            0 => Ok(Compression::None),
            1 => Ok(Compression::Gzip),
            2 => Ok(Compression::Snappy),
            3 => Ok(Compression::Lz4),
            4 => Ok(Compression::Zstd),
            _ => Err(RecordError::InvalidHeader("unknown compression codec")),
        }
    }

    pub fn timestamp_type(self) -> TimestampType {
        if self.0 & 0x8 == 0 { TimestampType::CreateTime } else { TimestampType::LogAppendTime }
    }

    pub fn is_transactional(self) -> bool {
        self.0 & 0x10 != 0
    }

    pub fn is_control(self) -> bool {
        self.0 & 0x20 != 0
    }
}

/// The fixed 61-byte header of a batch, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    /// Bytes after the length field: the whole batch is `batch_length + 12` bytes.
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: Attributes,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

fn be_i64(buf: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(buf[at..at + 8].try_into().expect("8 bytes"))
}
fn be_i32(buf: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(buf[at..at + 4].try_into().expect("4 bytes"))
}
fn be_i16(buf: &[u8], at: usize) -> i16 {
    i16::from_be_bytes(buf[at..at + 2].try_into().expect("2 bytes"))
}

/// Total length of the batch whose header starts `buf`, read from its length field, if at least
/// the first 12 bytes are present. Lets a log scanner step from batch to batch without parsing.
pub fn batch_len_at(buf: &[u8]) -> Option<u64> {
    if buf.len() < LOG_OVERHEAD {
        return None;
    }
    let declared = be_i32(buf, LENGTH_AT);
    u64::try_from(declared).ok().map(|len| len + LOG_OVERHEAD as u64)
}

impl BatchHeader {
    /// Decodes the header at the front of `buf` and checks everything that can be checked
    /// without the rest of the batch: magic, a sane length, non-negative deltas and counts.
    /// The CRC is not checked here (see [`RecordBatch::new`]).
    pub fn parse(buf: &[u8]) -> Result<BatchHeader> {
        if buf.len() < BATCH_HEADER_LEN {
            return Err(RecordError::Truncated { needed: BATCH_HEADER_LEN, available: buf.len() });
        }
        let header = BatchHeader {
            base_offset: be_i64(buf, BASE_OFFSET_AT),
            batch_length: be_i32(buf, LENGTH_AT),
            partition_leader_epoch: be_i32(buf, LEADER_EPOCH_AT),
            magic: buf[MAGIC_AT] as i8,
            crc: u32::from_be_bytes(buf[CRC_AT..CRC_AT + 4].try_into().expect("4 bytes")),
            attributes: Attributes(be_i16(buf, ATTRIBUTES_AT)),
            last_offset_delta: be_i32(buf, LAST_OFFSET_DELTA_AT),
            base_timestamp: be_i64(buf, BASE_TIMESTAMP_AT),
            max_timestamp: be_i64(buf, MAX_TIMESTAMP_AT),
            producer_id: be_i64(buf, PRODUCER_ID_AT),
            producer_epoch: be_i16(buf, PRODUCER_EPOCH_AT),
            base_sequence: be_i32(buf, BASE_SEQUENCE_AT),
            record_count: be_i32(buf, RECORD_COUNT_AT),
        };
        if header.magic != MAGIC_V2 {
            return Err(RecordError::BadMagic(header.magic));
        }
        if (header.batch_length as i64) < (BATCH_HEADER_LEN - LOG_OVERHEAD) as i64 {
            return Err(RecordError::InvalidHeader("batchLength shorter than the header"));
        }
        if header.base_offset < 0 {
            return Err(RecordError::InvalidHeader("negative baseOffset"));
        }
        if header.record_count <= 0 {
            return Err(RecordError::InvalidHeader("a batch must hold at least one record"));
        }
        // Strata never compacts, so offsets inside a batch are dense.
        if i64::from(header.last_offset_delta) != i64::from(header.record_count) - 1 {
            return Err(RecordError::InvalidHeader("lastOffsetDelta must be recordCount - 1"));
        }
        if header.base_offset.checked_add(i64::from(header.last_offset_delta)).is_none() {
            return Err(RecordError::InvalidHeader("last offset overflows"));
        }
        header.attributes.compression()?;
        Ok(header)
    }

    /// Total bytes of the batch including the base offset and length fields.
    pub fn total_len(&self) -> usize {
        self.batch_length as usize + LOG_OVERHEAD
    }

    pub fn base_offset(&self) -> Offset {
        Offset(self.base_offset as u64)
    }

    /// Offset of the batch's last record.
    pub fn last_offset(&self) -> Offset {
        Offset(self.base_offset as u64 + self.last_offset_delta as u64)
    }

    /// Number of offsets the batch takes.
    pub fn offset_count(&self) -> u64 {
        self.last_offset_delta as u64 + 1
    }

    pub fn max_timestamp(&self) -> Timestamp {
        Timestamp(self.max_timestamp)
    }
}

/// CRC-32C of the bytes the batch CRC covers (attributes to the end).
fn crc_of(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[ATTRIBUTES_AT..])
}

/// A whole batch whose header, length and CRC have been checked, borrowed from its bytes.
#[derive(Debug, Clone, Copy)]
pub struct RecordBatch<'a> {
    header: BatchHeader,
    bytes: &'a [u8],
}

impl<'a> RecordBatch<'a> {
    /// Checks that `bytes` is exactly one batch: a valid header, a length field that matches
    /// `bytes.len()`, and a CRC that holds. Records are not walked; see [`Self::validate_records`].
    pub fn new(bytes: &'a [u8]) -> Result<RecordBatch<'a>> {
        let header = BatchHeader::parse(bytes)?;
        if header.total_len() != bytes.len() {
            return Err(RecordError::LengthMismatch {
                declared: header.batch_length as u64,
                actual: bytes.len(),
            });
        }
        let computed = crc_of(bytes);
        if computed != header.crc {
            return Err(RecordError::CrcMismatch { stored: header.crc, computed });
        }
        Ok(RecordBatch { header, bytes })
    }

    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The records of an uncompressed batch, decoded lazily. A compressed batch fails with
    /// `UnsupportedCompression`: decompress it first ([`Self::decompressed_records`]) and
    /// iterate with [`Self::records_in`].
    pub fn records(&self) -> Result<Records<'a>> {
        match self.header.attributes.compression()? {
            Compression::None => self.records_in(&self.bytes[BATCH_HEADER_LEN..]),
            other => Err(RecordError::UnsupportedCompression(other)),
        }
    }

    /// Compression codec of the records section.
    pub fn compression(&self) -> Result<Compression> {
        self.header.attributes.compression()
    }

    /// The records section decompressed, refusing to grow past `limit` bytes; `None` for an
    /// uncompressed batch (use [`Self::records`]).
    pub fn decompressed_records(&self, limit: usize) -> Result<Option<Vec<u8>>> {
        match self.compression()? {
            Compression::None => Ok(None),
            codec => crate::compression::decompress(codec, &self.bytes[BATCH_HEADER_LEN..], limit)
                .map(Some),
        }
    }

    /// The records section ready to iterate with [`Self::records_in`]: borrowed as it is for
    /// an uncompressed batch, decompressed (at most `limit` bytes) for a compressed one.
    pub fn records_section(&self, limit: usize) -> Result<Cow<'a, [u8]>> {
        Ok(match self.decompressed_records(limit)? {
            Some(plain) => Cow::Owned(plain),
            None => Cow::Borrowed(&self.bytes[BATCH_HEADER_LEN..]),
        })
    }

    /// Iterates this batch's records over `section`, its (decompressed) records section.
    pub fn records_in<'b>(&self, section: &'b [u8]) -> Result<Records<'b>> {
        if self.header.record_count as usize * MIN_RECORD_LEN > section.len() {
            return Err(RecordError::InvalidHeader("record count larger than the batch can hold"));
        }
        Ok(Records::new(
            section,
            self.header.record_count as u32,
            self.header.base_offset,
            self.header.base_timestamp,
        ))
    }

    /// Walks every record and checks its framing, its offset delta and the record count, as a
    /// broker must before it stores a producer's batch. Compressed batches are decompressed
    /// (at most [`DEFAULT_MAX_DECOMPRESSED`] bytes) to be checked.
    pub fn validate_records(&self) -> Result<()> {
        self.validate_records_limited(DEFAULT_MAX_DECOMPRESSED)
    }

    /// [`Self::validate_records`] with a limit on the decompressed size.
    pub fn validate_records_limited(&self, max_decompressed: usize) -> Result<()> {
        let section = self.records_section(max_decompressed)?;
        let mut records = self.records_in(&section)?;
        let mut index = 0u32;
        for record in records.by_ref() {
            let record = record?;
            if record.offset_delta() != index as i32 {
                return Err(RecordError::InvalidRecord {
                    index,
                    reason: "offsetDelta out of order",
                });
            }
            for header in record.headers() {
                header?;
            }
            index += 1;
        }
        if !records.remaining_bytes().is_empty() {
            return Err(RecordError::InvalidRecord {
                index,
                reason: "bytes left over after the last record",
            });
        }
        Ok(())
    }
}

/// Overwrites the base offset of the batch at the front of `batch`. The base offset is outside
/// the CRC, so the batch stays valid.
pub(crate) fn set_base_offset(batch: &mut [u8], offset: i64) {
    batch[BASE_OFFSET_AT..BASE_OFFSET_AT + 8].copy_from_slice(&offset.to_be_bytes());
}

/// Recomputes and stores the CRC of a fully written batch.
pub(crate) fn seal_crc(batch: &mut [u8]) {
    let crc = crc_of(batch);
    batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BatchBuilder;

    fn sample() -> Vec<u8> {
        let mut builder = BatchBuilder::new();
        builder.push(Timestamp(1_000), Some(b"k1"), Some(b"v1"), &[("h", Some(b"x".as_slice()))]);
        builder.push(Timestamp(1_005), None, Some(b"v2"), &[]);
        builder.build(Offset(7)).to_vec()
    }

    #[test]
    fn header_fields_roundtrip() {
        let bytes = sample();
        let batch = RecordBatch::new(&bytes).unwrap();
        let h = batch.header();
        assert_eq!(h.base_offset, 7);
        assert_eq!(h.record_count, 2);
        assert_eq!(h.last_offset(), Offset(8));
        assert_eq!(h.base_timestamp, 1_000);
        assert_eq!(h.max_timestamp, 1_005);
        assert_eq!(h.producer_id, NO_PRODUCER_ID);
        assert_eq!(h.total_len(), bytes.len());
        assert_eq!(batch_len_at(&bytes), Some(bytes.len() as u64));
        batch.validate_records().unwrap();
    }

    #[test]
    fn base_offset_is_outside_the_crc() {
        let mut bytes = sample();
        set_base_offset(&mut bytes, 1_000_000);
        let batch = RecordBatch::new(&bytes).unwrap();
        assert_eq!(batch.header().base_offset(), Offset(1_000_000));
    }

    #[test]
    fn every_single_bit_flip_in_the_crc_range_is_caught() {
        let bytes = sample();
        for byte in MAGIC_AT..bytes.len() {
            for bit in 0..8 {
                let mut bad = bytes.clone();
                bad[byte] ^= 1 << bit;
                assert!(RecordBatch::new(&bad).is_err(), "flip at byte {byte} bit {bit}");
            }
        }
    }

    #[test]
    fn length_mismatch_and_truncation() {
        let bytes = sample();
        assert!(matches!(
            RecordBatch::new(&bytes[..bytes.len() - 1]),
            Err(RecordError::LengthMismatch { .. })
        ));
        assert!(matches!(RecordBatch::new(&bytes[..10]), Err(RecordError::Truncated { .. })));
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(RecordBatch::new(&longer), Err(RecordError::LengthMismatch { .. })));
    }

    #[test]
    fn compressed_batches_roundtrip_and_validate() {
        for codec in [Compression::Lz4, Compression::Zstd] {
            let mut builder = BatchBuilder::new();
            for i in 0..50 {
                builder.push(Timestamp(i), Some(b"key"), Some(&[7u8; 300]), &[("h", None)]);
            }
            let bytes = builder.build_compressed(Offset(3), codec).unwrap();
            let batch = RecordBatch::new(&bytes).unwrap();
            assert_eq!(batch.compression().unwrap(), codec);
            assert!(bytes.len() < 2000, "{codec:?}: {} bytes", bytes.len());
            assert_eq!(batch.records().err(), Some(RecordError::UnsupportedCompression(codec)));
            batch.validate_records().unwrap();
            assert_eq!(
                batch.validate_records_limited(1000),
                Err(RecordError::DecompressedTooLarge { limit: 1000 })
            );
            let section = batch.decompressed_records(1 << 20).unwrap().unwrap();
            let offsets: Vec<u64> =
                batch.records_in(&section).unwrap().map(|r| r.unwrap().offset().0).collect();
            assert_eq!(offsets, (3..53).collect::<Vec<_>>());
        }
    }
}
