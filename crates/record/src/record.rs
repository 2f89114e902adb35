//! Records inside an uncompressed batch, decoded lazily and without allocation.
//!
//! ```text
//! length          varint   bytes after this field
//! attributes      int8     unused, 0
//! timestampDelta  varlong  from the batch's baseTimestamp
//! offsetDelta     varint   from the batch's baseOffset
//! keyLength       varint   -1 for a null key
//! key             bytes
//! valueLength     varint   -1 for a null value
//! value           bytes
//! headerCount     varint
//!   keyLength varint, key (UTF-8), valueLength varint (-1 = null), value
//! ```

use crate::varint::{read_varint, read_varlong};
use crate::{Offset, RecordError, Result, Timestamp};

/// A cursor over one record's bytes that turns every short read into an error for that record.
struct Cursor<'a> {
    buf: &'a [u8],
    index: u32,
}

impl<'a> Cursor<'a> {
    fn fail<T>(&self, reason: &'static str) -> Result<T> {
        Err(RecordError::InvalidRecord { index: self.index, reason })
    }

    fn varint(&mut self, what: &'static str) -> Result<i32> {
        match read_varint(self.buf) {
            Some((value, used)) => {
                self.buf = &self.buf[used..];
                Ok(value)
            }
            None => self.fail(what),
        }
    }

    fn varlong(&mut self, what: &'static str) -> Result<i64> {
        match read_varlong(self.buf) {
            Some((value, used)) => {
                self.buf = &self.buf[used..];
                Ok(value)
            }
            None => self.fail(what),
        }
    }

    fn byte(&mut self, what: &'static str) -> Result<u8> {
        match self.buf.split_first() {
            Some((&b, rest)) => {
                self.buf = rest;
                Ok(b)
            }
            None => self.fail(what),
        }
    }

    /// A length-prefixed byte string where a length of -1 means null.
    fn nullable_bytes(&mut self, what: &'static str) -> Result<Option<&'a [u8]>> {
        let len = self.varint(what)?;
        if len == -1 {
            return Ok(None);
        }
        let Ok(len) = usize::try_from(len) else {
            return self.fail(what);
        };
        if len > self.buf.len() {
            return self.fail(what);
        }
        let (bytes, rest) = self.buf.split_at(len);
        self.buf = rest;
        Ok(Some(bytes))
    }
}

/// One record, borrowed from its batch.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    offset_delta: i32,
    offset: Offset,
    timestamp: Timestamp,
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
    headers: Headers<'a>,
}

impl<'a> Record<'a> {
    pub fn offset(&self) -> Offset {
        self.offset
    }
    pub fn offset_delta(&self) -> i32 {
        self.offset_delta
    }
    pub fn timestamp(&self) -> Timestamp {
        self.timestamp
    }
    pub fn key(&self) -> Option<&'a [u8]> {
        self.key
    }
    pub fn value(&self) -> Option<&'a [u8]> {
        self.value
    }
    /// The headers, in order. Their framing was checked when the record was decoded.
    pub fn headers(&self) -> Headers<'a> {
        self.headers
    }
}

/// One record header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    pub key: &'a str,
    pub value: Option<&'a [u8]>,
}

/// Iterator over a record's headers.
#[derive(Debug, Clone, Copy)]
pub struct Headers<'a> {
    buf: &'a [u8],
    remaining: u32,
    record_index: u32,
}

impl<'a> Headers<'a> {
    pub fn len(&self) -> usize {
        self.remaining as usize
    }
    pub fn is_empty(&self) -> bool {
        self.remaining == 0
    }
}

impl<'a> Iterator for Headers<'a> {
    type Item = Result<Header<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let mut cursor = Cursor { buf: self.buf, index: self.record_index };
        let header = (|| {
            let key = cursor.nullable_bytes("bad header key length")?;
            let Some(key) = key else {
                return cursor.fail("null header key");
            };
            let Ok(key) = std::str::from_utf8(key) else {
                return cursor.fail("header key is not UTF-8");
            };
            let value = cursor.nullable_bytes("bad header value length")?;
            Ok(Header { key, value })
        })();
        match header {
            Ok(header) => {
                self.buf = cursor.buf;
                Some(Ok(header))
            }
            Err(err) => {
                self.remaining = 0;
                Some(Err(err))
            }
        }
    }
}

/// Iterator over the records of an uncompressed batch. Stops after the first error.
#[derive(Debug, Clone)]
pub struct Records<'a> {
    buf: &'a [u8],
    remaining: u32,
    index: u32,
    base_offset: i64,
    base_timestamp: i64,
}

impl<'a> Records<'a> {
    pub(crate) fn new(buf: &'a [u8], count: u32, base_offset: i64, base_timestamp: i64) -> Self {
        Records { buf, remaining: count, index: 0, base_offset, base_timestamp }
    }

    /// Bytes not yet consumed; after the last record of a well-formed batch this is empty.
    pub fn remaining_bytes(&self) -> &'a [u8] {
        self.buf
    }

    fn decode_next(&mut self) -> Result<Record<'a>> {
        let mut outer = Cursor { buf: self.buf, index: self.index };
        let len = outer.varint("bad record length")?;
        let Ok(len) = usize::try_from(len) else {
            return outer.fail("negative record length");
        };
        if len > outer.buf.len() {
            return outer.fail("record length runs past the batch");
        }
        let (body, rest) = outer.buf.split_at(len);
        let mut c = Cursor { buf: body, index: self.index };
        let _attributes = c.byte("missing record attributes")?;
        let timestamp_delta = c.varlong("bad timestamp delta")?;
        let offset_delta = c.varint("bad offset delta")?;
        if offset_delta < 0 {
            return c.fail("negative offset delta");
        }
        let key = c.nullable_bytes("bad key length")?;
        let value = c.nullable_bytes("bad value length")?;
        let header_count = c.varint("bad header count")?;
        let Ok(header_count) = u32::try_from(header_count) else {
            return c.fail("negative header count");
        };
        // Each header takes at least two bytes, so a count the bytes cannot hold is rejected
        // before anything walks it.
        if header_count as usize > c.buf.len() / 2 {
            return c.fail("header count larger than the record");
        }
        let headers = Headers { buf: c.buf, remaining: header_count, record_index: self.index };
        let mut walk = headers;
        for header in walk.by_ref() {
            header?;
        }
        if walk.remaining == 0 && !walk.buf.is_empty() {
            return c.fail("bytes left over after the headers");
        }
        let offset = self
            .base_offset
            .checked_add(i64::from(offset_delta))
            .and_then(|o| u64::try_from(o).ok())
            .map(Offset);
        let Some(offset) = offset else {
            return c.fail("offset overflows");
        };
        let Some(timestamp) = self.base_timestamp.checked_add(timestamp_delta) else {
            return c.fail("timestamp overflows");
        };
        self.buf = rest;
        Ok(Record { offset_delta, offset, timestamp: Timestamp(timestamp), key, value, headers })
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<Record<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        let item = self.decode_next();
        match item {
            Ok(_) => {
                self.remaining -= 1;
                self.index += 1;
            }
            Err(_) => self.remaining = 0,
        }
        Some(item)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.remaining as usize))
    }
}

#[cfg(test)]
mod tests {
    use crate::{BatchBuilder, Offset, RecordBatch, Timestamp};
    use proptest::prelude::*;

    type OwnedRecord = (i64, Option<Vec<u8>>, Option<Vec<u8>>, Vec<(String, Option<Vec<u8>>)>);

    fn record_strategy() -> impl Strategy<Value = OwnedRecord> {
        (
            -1_000i64..1_000_000,
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..300)),
            proptest::collection::vec(
                ("[a-z]{0,8}", proptest::option::of(proptest::collection::vec(any::<u8>(), 0..8))),
                0..4,
            ),
        )
    }

    proptest! {
        /// Whatever goes into the builder comes back out of the decoder, field by field.
        #[test]
        fn batch_roundtrip(base in 0u64..1 << 40, records in proptest::collection::vec(record_strategy(), 1..20)) {
            let mut builder = BatchBuilder::new();
            for (ts, key, value, headers) in &records {
                let headers: Vec<(&str, Option<&[u8]>)> =
                    headers.iter().map(|(k, v)| (k.as_str(), v.as_deref())).collect();
                builder.push(Timestamp(*ts), key.as_deref(), value.as_deref(), &headers);
            }
            let bytes = builder.build(Offset(base));
            let batch = RecordBatch::new(&bytes).unwrap();
            batch.validate_records().unwrap();
            prop_assert_eq!(batch.header().max_timestamp, records.iter().map(|r| r.0).max().unwrap());
            let decoded: Vec<_> = batch.records().unwrap().map(|r| r.unwrap()).collect();
            prop_assert_eq!(decoded.len(), records.len());
            for (i, (got, want)) in decoded.iter().zip(&records).enumerate() {
                prop_assert_eq!(got.offset(), Offset(base + i as u64));
                prop_assert_eq!(got.timestamp(), Timestamp(want.0));
                prop_assert_eq!(got.key(), want.1.as_deref());
                prop_assert_eq!(got.value(), want.2.as_deref());
                let headers: Vec<_> = got.headers().map(|h| h.unwrap()).collect();
                prop_assert_eq!(headers.len(), want.3.len());
                for (h, (k, v)) in headers.iter().zip(&want.3) {
                    prop_assert_eq!(h.key, k.as_str());
                    prop_assert_eq!(h.value, v.as_deref());
                }
            }
        }

        /// Arbitrary bytes never panic the decoder, with or without a valid CRC over them.
        #[test]
        fn garbage_never_panics(mut bytes in proptest::collection::vec(any::<u8>(), 0..400), fix_crc: bool) {
            // Make the header plausible so the fuzzing reaches the record decoder.
            if bytes.len() >= crate::BATCH_HEADER_LEN {
                bytes[0] &= 0x7f;
                bytes[16] = 2;
                let len = (bytes.len() - 12) as i32;
                bytes[8..12].copy_from_slice(&len.to_be_bytes());
                bytes[21] = 0;
                bytes[22] = 0;
                let count = i32::from(bytes[60] % 6) + 1;
                bytes[23..27].copy_from_slice(&(count - 1).to_be_bytes());
                bytes[57..61].copy_from_slice(&count.to_be_bytes());
                if fix_crc {
                    crate::batch::seal_crc(&mut bytes);
                }
            }
            if let Ok(batch) = RecordBatch::new(&bytes) {
                let _ = batch.validate_records();
                if let Ok(records) = batch.records() {
                    for record in records.flatten() {
                        for _ in record.headers() {}
                    }
                }
            }
        }
    }
}
