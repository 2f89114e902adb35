//! Encoding record batches.

use bytes::Bytes;

use crate::batch::{
    ATTRIBUTES_AT, BASE_SEQUENCE_AT, BASE_TIMESTAMP_AT, LAST_OFFSET_DELTA_AT, LEADER_EPOCH_AT,
    LENGTH_AT, LOG_OVERHEAD, MAGIC_AT, MAX_TIMESTAMP_AT, PRODUCER_EPOCH_AT, PRODUCER_ID_AT,
    RECORD_COUNT_AT, seal_crc, set_base_offset,
};
use crate::compression::compress;
use crate::varint::{varlong_len, write_varlong};
use crate::{
    BATCH_HEADER_LEN, Compression, MAGIC_V2, NO_PRODUCER_EPOCH, NO_PRODUCER_ID, NO_SEQUENCE,
    Offset, RecordError, Result, Timestamp,
};

/// Builds one uncompressed RecordBatch v2, record by record.
///
/// Records are encoded straight into the final buffer behind room left for the header, so
/// [`BatchBuilder::build`] only fills in the header and the CRC: no second copy.
#[derive(Debug, Clone)]
pub struct BatchBuilder {
    buf: Vec<u8>,
    count: i32,
    base_timestamp: i64,
    max_timestamp: i64,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    partition_leader_epoch: i32,
    /// The capacity the buffer grows to at most by doubling (see [`Self::grow_up_to`]).
    growth_cap: usize,
}

impl Default for BatchBuilder {
    fn default() -> Self {
        Self::new()
    }
}

fn nullable_len(bytes: Option<&[u8]>) -> usize {
    match bytes {
        None => varlong_len(-1),
        Some(b) => varlong_len(b.len() as i64) + b.len(),
    }
}

fn write_nullable(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => write_varlong(out, -1),
        Some(b) => {
            write_varlong(out, b.len() as i64);
            out.extend_from_slice(b);
        }
    }
}

impl BatchBuilder {
    pub fn new() -> BatchBuilder {
        Self::with_capacity(0)
    }

    /// A builder whose buffer can hold `records_bytes` of encoded records without growing.
    pub fn with_capacity(records_bytes: usize) -> BatchBuilder {
        let mut buf = Vec::with_capacity(BATCH_HEADER_LEN + records_bytes);
        buf.resize(BATCH_HEADER_LEN, 0);
        BatchBuilder {
            buf,
            count: 0,
            base_timestamp: 0,
            max_timestamp: i64::MIN,
            producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_PRODUCER_EPOCH,
            base_sequence: NO_SEQUENCE,
            partition_leader_epoch: -1,
            growth_cap: usize::MAX,
        }
    }

    /// Lets the buffer grow by doubling only up to `bytes` (the whole batch, header included),
    /// for a producer that never lets a batch pass that size: doubling past it would copy every
    /// record so far into a buffer twice the size, and [`Self::build`] would copy them again
    /// to give the unused half back (with 1 MiB batches, two extra copies of every byte: 24 %
    /// of a producing process's instructions, `callgrind`, session 17). A record that needs
    /// more gets exactly what it needs.
    pub fn grow_up_to(&mut self, bytes: usize) -> &mut Self {
        self.growth_cap = bytes;
        self
    }

    /// Marks the batch as coming from an idempotent producer.
    pub fn producer(&mut self, id: i64, epoch: i16, base_sequence: i32) -> &mut Self {
        self.producer_id = id;
        self.producer_epoch = epoch;
        self.base_sequence = base_sequence;
        self
    }

    pub fn partition_leader_epoch(&mut self, epoch: i32) -> &mut Self {
        self.partition_leader_epoch = epoch;
        self
    }

    /// Number of records pushed so far.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Size of the batch [`Self::build`] would return now.
    pub fn size(&self) -> usize {
        self.buf.len()
    }

    /// Bytes that pushing this record would add, so a producer can cut a batch before a limit.
    pub fn record_size(
        &self,
        timestamp: Timestamp,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&str, Option<&[u8]>)],
    ) -> usize {
        let body = self.body_len(timestamp, key, value, headers);
        varlong_len(body as i64) + body
    }

    fn body_len(
        &self,
        timestamp: Timestamp,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&str, Option<&[u8]>)],
    ) -> usize {
        let base = if self.count == 0 { timestamp.0 } else { self.base_timestamp };
        1 + varlong_len(timestamp.0.wrapping_sub(base))
            + varlong_len(i64::from(self.count))
            + nullable_len(key)
            + nullable_len(value)
            + varlong_len(headers.len() as i64)
            + headers
                .iter()
                .map(|(k, v)| nullable_len(Some(k.as_bytes())) + nullable_len(*v))
                .sum::<usize>()
    }

    /// Appends one record. The first record's timestamp becomes the batch's base timestamp.
    pub fn push(
        &mut self,
        timestamp: Timestamp,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&str, Option<&[u8]>)],
    ) -> &mut Self {
        let body = self.body_len(timestamp, key, value, headers);
        self.push_measured(body, timestamp, key, value, headers);
        self
    }

    /// Appends one record if the batch stays within `limit` bytes with it, and returns the
    /// bytes it added; `None`, appending nothing, if it would not. The record is measured once:
    /// [`Self::record_size`] then [`Self::push`] measure it twice, on every record a producer
    /// adds.
    pub fn push_within(
        &mut self,
        limit: usize,
        timestamp: Timestamp,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&str, Option<&[u8]>)],
    ) -> Option<usize> {
        let body = self.body_len(timestamp, key, value, headers);
        let size = varlong_len(body as i64) + body;
        if self.size() + size > limit {
            return None;
        }
        self.push_measured(body, timestamp, key, value, headers);
        Some(size)
    }

    /// Appends one record whose body (`body_len`) is `body` bytes.
    fn push_measured(
        &mut self,
        body: usize,
        timestamp: Timestamp,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&str, Option<&[u8]>)],
    ) {
        if self.count == 0 {
            self.base_timestamp = timestamp.0;
        }
        self.max_timestamp = self.max_timestamp.max(timestamp.0);
        let out = &mut self.buf;
        let needed = varlong_len(body as i64) + body;
        if out.capacity() - out.len() < needed {
            let grown = (2 * out.capacity()).min(self.growth_cap).max(out.len() + needed);
            out.reserve_exact(grown - out.len());
        }
        write_varlong(out, body as i64);
        out.push(0); // record attributes: unused in v2
        write_varlong(out, timestamp.0.wrapping_sub(self.base_timestamp));
        write_varlong(out, i64::from(self.count));
        write_nullable(out, key);
        write_nullable(out, value);
        write_varlong(out, headers.len() as i64);
        for (k, v) in headers {
            write_nullable(out, Some(k.as_bytes()));
            write_nullable(out, *v);
        }
        self.count += 1;
    }

    /// Finishes the batch with `base_offset` in its header and a valid CRC.
    ///
    /// # Panics
    /// If no record was pushed: an empty batch is not a valid RecordBatch.
    pub fn build(self, base_offset: Offset) -> Bytes {
        self.finish(base_offset, Compression::None)
    }

    /// Finishes the batch with its records section compressed by `codec` (lz4 or zstd).
    ///
    /// # Panics
    /// If no record was pushed.
    pub fn build_compressed(mut self, base_offset: Offset, codec: Compression) -> Result<Bytes> {
        self.compress_records(codec)?;
        Ok(self.finish(base_offset, codec))
    }

    /// Finishes the batch compressed by `codec`, or uncompressed if the codec fails, so that
    /// the records go either way (a producer has numbered them already); the codec's error
    /// comes back with it, to be reported.
    pub fn build_compressed_or_plain(
        mut self,
        base_offset: Offset,
        codec: Compression,
    ) -> (Bytes, Option<RecordError>) {
        match self.compress_records(codec) {
            Ok(()) => (self.finish(base_offset, codec), None),
            Err(err) => (self.finish(base_offset, Compression::None), Some(err)),
        }
    }

    /// Replaces the records section with its compression by `codec` (nothing to do for
    /// `None`); on an error the records stay as they were.
    fn compress_records(&mut self, codec: Compression) -> Result<()> {
        if codec != Compression::None {
            let packed = compress(codec, &self.buf[BATCH_HEADER_LEN..])?;
            self.buf.truncate(BATCH_HEADER_LEN);
            self.buf.extend_from_slice(&packed);
        }
        Ok(())
    }

    fn finish(mut self, base_offset: Offset, codec: Compression) -> Bytes {
        assert!(self.count > 0, "a record batch needs at least one record");
        let len = i32::try_from(self.buf.len() - LOG_OVERHEAD).expect("batch under 2 GiB");
        let b = &mut self.buf;
        b[LENGTH_AT..LENGTH_AT + 4].copy_from_slice(&len.to_be_bytes());
        b[LEADER_EPOCH_AT..LEADER_EPOCH_AT + 4]
            .copy_from_slice(&self.partition_leader_epoch.to_be_bytes());
        b[MAGIC_AT] = MAGIC_V2 as u8;
        b[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&codec.attribute_bits().to_be_bytes());
        b[LAST_OFFSET_DELTA_AT..LAST_OFFSET_DELTA_AT + 4]
            .copy_from_slice(&(self.count - 1).to_be_bytes());
        b[BASE_TIMESTAMP_AT..BASE_TIMESTAMP_AT + 8]
            .copy_from_slice(&self.base_timestamp.to_be_bytes());
        b[MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8]
            .copy_from_slice(&self.max_timestamp.to_be_bytes());
        b[PRODUCER_ID_AT..PRODUCER_ID_AT + 8].copy_from_slice(&self.producer_id.to_be_bytes());
        b[PRODUCER_EPOCH_AT..PRODUCER_EPOCH_AT + 2]
            .copy_from_slice(&self.producer_epoch.to_be_bytes());
        b[BASE_SEQUENCE_AT..BASE_SEQUENCE_AT + 4]
            .copy_from_slice(&self.base_sequence.to_be_bytes());
        b[RECORD_COUNT_AT..RECORD_COUNT_AT + 4].copy_from_slice(&self.count.to_be_bytes());
        let base = i64::try_from(base_offset.0).expect("offset fits in i64");
        set_base_offset(b, base);
        seal_crc(b);
        // A builder may have been given room for more than it got, or kept the room of the
        // records it compressed: a batch waiting for its answer should not hold that. (An
        // allocator may keep a block shrunk by less than half as it is; one shrunk by more,
        // as a compressed batch's, moves to a smaller block.)
        if self.buf.capacity() > self.buf.len() + self.buf.len() / 8 {
            self.buf.shrink_to_fit();
        }
        Bytes::from(self.buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RecordBatch;

    #[test]
    fn record_size_predicts_growth() {
        let mut builder = BatchBuilder::new();
        for i in 0..50i64 {
            let value = vec![7u8; (i * 37 % 300) as usize];
            let headers = [("trace", Some(b"abc".as_slice()))];
            let predicted = builder.record_size(Timestamp(i * 1000), None, Some(&value), &headers);
            let before = builder.size();
            builder.push(Timestamp(i * 1000), None, Some(&value), &headers);
            assert_eq!(builder.size() - before, predicted);
        }
        let bytes = builder.build(Offset(0));
        RecordBatch::new(&bytes).unwrap().validate_records().unwrap();
    }

    #[test]
    fn push_within_adds_what_record_size_predicts_or_nothing_past_the_limit() {
        let mut builder = BatchBuilder::new();
        let value = [5u8; 100];
        let predicted = builder.record_size(Timestamp(0), None, Some(&value), &[]);
        let limit = builder.size() + predicted;
        assert_eq!(
            builder.push_within(limit, Timestamp(0), None, Some(&value), &[]),
            Some(predicted)
        );
        let (size, len) = (builder.size(), builder.len());
        assert_eq!(builder.push_within(limit, Timestamp(0), None, Some(&value), &[]), None);
        assert_eq!((builder.size(), builder.len()), (size, len), "nothing appended");
    }

    #[test]
    fn a_buffer_grows_no_further_than_its_cap_unless_one_record_needs_more() {
        let cap = 4096;
        let mut builder = BatchBuilder::new();
        builder.grow_up_to(cap);
        let value = [1u8; 1000];
        while builder.size() + builder.record_size(Timestamp(0), None, Some(&value), &[]) <= cap {
            builder.push(Timestamp(0), None, Some(&value), &[]);
            assert!(builder.buf.capacity() <= cap, "{} > {cap}", builder.buf.capacity());
        }
        assert_eq!(builder.len(), 3);
        // A record that fills the buffer to the byte stays within it.
        let left = cap - builder.size();
        let header_bytes = builder.record_size(Timestamp(0), None, Some(&[]), &[]);
        let mut filler = vec![3u8; left - header_bytes];
        while builder.record_size(Timestamp(0), None, Some(&filler), &[]) > left {
            filler.pop(); // the value's length prefix grew by a byte
        }
        builder.push(Timestamp(0), None, Some(&filler), &[]);
        assert_eq!(builder.buf.capacity(), cap);
        let large = vec![2u8; 2 * cap];
        builder.push(Timestamp(0), None, Some(&large), &[]);
        assert!(builder.buf.capacity() >= builder.size());
        let bytes = builder.build(Offset(0));
        let batch = RecordBatch::new(&bytes).unwrap();
        batch.validate_records().unwrap();
        assert_eq!(batch.records().unwrap().count(), 5);
    }
}
