//! Reading batches and searching by time across a log's segments. Runs under the log's read
//! lock; CRCs (of bytes this process has not checked: see `SegmentCore::checked_from`) are
//! checked by the caller after the lock is released.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use strata_record::{BatchHeader, DEFAULT_MAX_DECOMPRESSED, Offset, RecordBatch};

use crate::error::{Result, StorageError};
use crate::index::{entry_at_or_before, time_search_start};
use crate::segment::SegmentRef;

/// One batch sliced out of a segment map, with where it came from for error reports.
#[derive(Debug)]
pub(crate) struct BatchSlice {
    pub(crate) bytes: Bytes,
    /// The whole segment map it was sliced from, to slice runs of batches from.
    pub(crate) segment: Bytes,
    pub(crate) path: Arc<Path>,
    pub(crate) position: u64,
    /// Whether this process CRC-checked the batch already, appending or scanning it (see
    /// `SegmentCore::checked_from`), so [`verify`] need not again.
    pub(crate) checked: bool,
}

/// Walks the batches of `segment` from the indexed position at or before `from`, checking
/// that headers chain (each batch starts where the previous one ended, at the next offset).
struct BatchWalk<'a> {
    segment: SegmentRef<'a>,
    data: Bytes,
    position: u64,
    expected: Offset,
}

impl<'a> BatchWalk<'a> {
    fn starting_at(segment: SegmentRef<'a>, relative_offset: u32) -> Result<Self> {
        let data = segment.core.data.view(segment.core.size)?;
        // Start at the indexed batch, which must carry the offset the index recorded for it.
        let (relative, position) =
            entry_at_or_before(segment.offset_entries, relative_offset).unwrap_or((0, 0));
        let expected = segment.core.base.plus(u64::from(relative));
        Ok(BatchWalk { segment, data, position: u64::from(position), expected })
    }

    /// The next batch header and its position, or `None` at the end of the segment.
    fn next_header(&mut self) -> Result<Option<(BatchHeader, u64)>> {
        let size = self.segment.core.size;
        if self.position >= size {
            return Ok(None);
        }
        let at = self.position;
        let bytes = &self.data[at as usize..size as usize];
        let header =
            BatchHeader::parse(bytes).map_err(|e| self.segment.core.corrupt(at, e.to_string()))?;
        let len = header.total_len() as u64;
        if len > size - at {
            return Err(self.segment.core.corrupt(at, "batch runs past the end of the segment"));
        }
        if header.base_offset() != self.expected {
            return Err(self.segment.core.corrupt(
                at,
                format!(
                    "batch base offset {} where {} was expected",
                    header.base_offset, self.expected
                ),
            ));
        }
        if header.last_offset() >= self.segment.core.next {
            return Err(self.segment.core.corrupt(at, "batch runs past the segment's last offset"));
        }
        self.expected = header.last_offset().plus(1);
        self.position = at + len;
        Ok(Some((header, at)))
    }

    fn slice(&self, position: u64, len: usize) -> Bytes {
        self.data.slice(position as usize..position as usize + len)
    }
}

/// Index of the segment that holds `offset`: the last one whose base is at or below it.
pub(crate) fn segment_for(segments: &[SegmentRef<'_>], offset: Offset) -> usize {
    segments.partition_point(|s| s.core.base <= offset).saturating_sub(1)
}

/// Whole batches from the one containing `from`, stopping before any batch that reaches
/// `until`, once `max_bytes` would be exceeded (but always at least one batch), or at the end.
pub(crate) fn collect_batches(
    segments: &[SegmentRef<'_>],
    from: Offset,
    until: Offset,
    max_bytes: usize,
) -> Result<Vec<BatchSlice>> {
    let mut out = Vec::new();
    let mut budget = max_bytes;
    for segment in segments.iter().skip(segment_for(segments, from)) {
        if segment.core.base >= until {
            break;
        }
        let mut walk = BatchWalk::starting_at(*segment, segment.core.relative(from))?;
        loop {
            let (header, position) = match walk.next_header() {
                Ok(Some(next)) => next,
                Ok(None) => break,
                // Serve what was found before the damage; the next read reports it.
                Err(_) if !out.is_empty() => return Ok(out),
                Err(err) => return Err(err),
            };
            if header.last_offset() < from {
                continue;
            }
            let len = header.total_len();
            if header.last_offset() >= until || (!out.is_empty() && len > budget) {
                return Ok(out);
            }
            out.push(BatchSlice {
                bytes: walk.slice(position, len),
                segment: walk.data.clone(),
                path: segment.core.log_path.clone(),
                position,
                checked: position >= segment.core.checked_from,
            });
            budget = budget.saturating_sub(len);
        }
    }
    Ok(out)
}

/// Checks the CRC of every slice this process has not checked yet (when appending it or
/// scanning it at open), keeping the good ones before the first bad one. A bad first batch is
/// an error: corrupt data from disk is never served.
pub(crate) fn verify(mut slices: Vec<BatchSlice>) -> Result<Vec<BatchSlice>> {
    let mut good = 0;
    for slice in &slices {
        if !slice.checked
            && let Err(err) = RecordBatch::new(&slice.bytes)
        {
            if good == 0 {
                return Err(StorageError::Corrupt {
                    path: slice.path.to_path_buf(),
                    position: slice.position,
                    reason: err.to_string(),
                });
            }
            break;
        }
        good += 1;
    }
    slices.truncate(good);
    Ok(slices)
}

/// The bytes of `slices` as runs: batches that follow each other in one segment map as one
/// slice of it, so that a reader can send many small batches as one piece, without copying.
pub(crate) fn runs(slices: &[BatchSlice]) -> Vec<Bytes> {
    let mut runs = Vec::new();
    let mut open: Option<(&BatchSlice, u64)> = None; // first slice of the run, and its end
    for slice in slices {
        let len = slice.bytes.len() as u64;
        match &mut open {
            Some((first, end))
                if first.segment.as_ptr() == slice.segment.as_ptr() && *end == slice.position =>
            {
                *end += len;
            }
            _ => {
                if let Some((first, end)) = open.take() {
                    runs.push(first.segment.slice(first.position as usize..end as usize));
                }
                open = Some((slice, slice.position + len));
            }
        }
    }
    if let Some((first, end)) = open {
        runs.push(first.segment.slice(first.position as usize..end as usize));
    }
    runs
}

/// First offset at or after `log_start` whose record timestamp is at or after `timestamp`, or
/// `None` if there is none. Inside a compressed batch the batch's base offset is returned.
pub(crate) fn offset_for_time(
    segments: &[SegmentRef<'_>],
    timestamp: i64,
    log_start: Offset,
) -> Result<Option<Offset>> {
    for segment in segments {
        if segment.core.next <= log_start || segment.core.max_timestamp < timestamp {
            continue;
        }
        let hint =
            segment.core.base.plus(u64::from(time_search_start(segment.time_entries, timestamp)));
        let start = hint.max(log_start);
        let mut walk = BatchWalk::starting_at(*segment, segment.core.relative(start))?;
        while let Some((header, position)) = walk.next_header()? {
            if header.last_offset() < start || header.max_timestamp < timestamp {
                continue;
            }
            let bytes = walk.slice(position, header.total_len());
            let batch = RecordBatch::new(&bytes)
                .map_err(|e| segment.core.corrupt(position, e.to_string()))?;
            let section = batch
                .records_section(DEFAULT_MAX_DECOMPRESSED)
                .map_err(|e| segment.core.corrupt(position, e.to_string()))?;
            for record in batch.records_in(&section)? {
                let record = record.map_err(|e| segment.core.corrupt(position, e.to_string()))?;
                if record.offset() >= start && record.timestamp().0 >= timestamp {
                    return Ok(Some(record.offset()));
                }
            }
        }
    }
    Ok(None)
}
