//! Records as applications see them.

use std::collections::VecDeque;

use bytes::Bytes;
use strata_record::{
    BATCH_HEADER_LEN, DEFAULT_MAX_DECOMPRESSED, Offset, RecordBatch, RecordError, Timestamp,
    batch_len_at,
};

use crate::Result;

/// A record to produce.
#[derive(Debug, Clone, Default)]
pub struct Record {
    pub topic: String,
    /// Explicit partition; otherwise the producer's partitioner chooses.
    pub partition: Option<u32>,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
    /// Create time; now if not set.
    pub timestamp: Option<Timestamp>,
}

impl Record {
    pub fn new(topic: impl Into<String>) -> Record {
        Record { topic: topic.into(), ..Record::default() }
    }
    pub fn key(mut self, key: impl Into<Bytes>) -> Record {
        self.key = Some(key.into());
        self
    }
    pub fn value(mut self, value: impl Into<Bytes>) -> Record {
        self.value = Some(value.into());
        self
    }
    pub fn header(mut self, key: impl Into<String>, value: impl Into<Bytes>) -> Record {
        self.headers.push((key.into(), Some(value.into())));
        self
    }
    pub fn partition(mut self, partition: u32) -> Record {
        self.partition = Some(partition);
        self
    }
    pub fn timestamp(mut self, timestamp: Timestamp) -> Record {
        self.timestamp = Some(timestamp);
        self
    }
}

/// Where a produced record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    pub partition: u32,
    /// The record's offset; `None` with `Acks::None`, which does not wait to learn it.
    pub offset: Option<Offset>,
}

/// A consumed record. Key, value and header values are slices of the fetched batch: no copy.
#[derive(Debug, Clone)]
pub struct ConsumerRecord {
    pub topic: String,
    pub partition: u32,
    pub offset: Offset,
    pub timestamp: Timestamp,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
}

/// The batches of a fetch answer's run (whole batches back to back), each a slice of it, split
/// at each batch's length field. A run that does not end at a batch's end is refused: an
/// answer cut short or corrupt is never decoded past what it holds.
pub(crate) fn batches_of_run(run: &Bytes) -> Result<Vec<Bytes>> {
    let mut batches = Vec::new();
    let mut at = 0;
    while at < run.len() {
        let rest = &run[at..];
        // The 8-byte base offset and 4-byte length field, then what the length declares.
        let Some(declared) = batch_len_at(rest) else {
            return Err(if rest.len() < 12 {
                RecordError::Truncated { needed: 12, available: rest.len() }
            } else {
                RecordError::InvalidHeader("negative batch length")
            }
            .into());
        };
        let Some(len) = usize::try_from(declared).ok().filter(|&len| len <= rest.len()) else {
            return Err(RecordError::LengthMismatch { declared, actual: rest.len() }.into());
        };
        batches.push(run.slice(at..at + len));
        at += len;
    }
    Ok(batches)
}

/// Decodes the records of `batch` at or after `from`, appending them to `out`. Values of an
/// uncompressed batch are slices of it; a compressed batch is decompressed once and its
/// records slice that buffer. On an error, `out` may hold some of the batch's records.
pub(crate) fn decode(
    topic: &str,
    partition: u32,
    batch: &Bytes,
    from: Offset,
    out: &mut VecDeque<ConsumerRecord>,
) -> Result<()> {
    let view = RecordBatch::new(batch)?;
    let (section, records) = match view.decompressed_records(DEFAULT_MAX_DECOMPRESSED)? {
        Some(plain) => {
            let plain = Bytes::from(plain);
            (plain.clone(), plain)
        }
        None => (batch.slice(BATCH_HEADER_LEN..), batch.clone()),
    };
    let decoded = view.records_in(&section)?;
    // Room for the batch at once (a record is ~130 bytes of struct, moved on every growth);
    // `records_in` checked that the count fits the batch's bytes.
    out.reserve(usize::try_from(view.header().record_count).unwrap_or(0));
    for record in decoded {
        let record = record?;
        if record.offset() < from {
            continue;
        }
        let slice = |s: Option<&[u8]>| s.map(|s| records.slice_ref(s));
        let mut headers = Vec::with_capacity(record.headers().len());
        for header in record.headers() {
            let header = header?;
            headers.push((header.key.to_owned(), slice(header.value)));
        }
        out.push_back(ConsumerRecord {
            topic: topic.to_owned(),
            partition,
            offset: record.offset(),
            timestamp: record.timestamp(),
            key: slice(record.key()),
            value: slice(record.value()),
            headers,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use strata_record::BatchBuilder;

    use super::*;

    fn batch(values: &[&str]) -> Bytes {
        let mut builder = BatchBuilder::new();
        for value in values {
            builder.push(Timestamp(1), None, Some(value.as_bytes()), &[]);
        }
        builder.build(Offset(0))
    }

    #[test]
    fn a_run_splits_at_each_batch_length_and_a_cut_one_is_refused() {
        let (a, b) = (batch(&["one", "two"]), batch(&["three"]));
        let run = Bytes::from([a.clone(), b.clone()].concat());
        assert_eq!(batches_of_run(&run).unwrap(), vec![a, b]);
        assert!(batches_of_run(&Bytes::new()).unwrap().is_empty());
        assert!(batches_of_run(&run.slice(..run.len() - 1)).is_err(), "the last batch is cut");
        assert!(batches_of_run(&run.slice(..5)).is_err(), "not even a length field");
    }
}
