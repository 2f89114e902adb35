//! Sparse offset and time indexes of a segment, each a file of fixed-size entries: mapped
//! read-only once the segment is sealed, kept in memory while it is active.
//!
//! Offset index entry (8 bytes): `relative base offset u32 BE, file position u32 BE` of a batch.
//! Time index entry (12 bytes): `max timestamp so far i64 BE, relative last offset u32 BE`:
//! every record at or before that offset has a timestamp at most that value.
//!
//! Both are rebuilt from the log whenever they cannot be trusted, so they are written and fsynced
//! on seal and close, and when a tail mark is saved (`crate::tail_mark`), never on the append
//! path.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::error::{IoContext, Result};
use crate::mmap::map_index;

pub(crate) const OFFSET_ENTRY_LEN: usize = 8;
pub(crate) const TIME_ENTRY_LEN: usize = 12;

pub(crate) fn offset_entry(entries: &[u8], i: usize) -> (u32, u32) {
    let e = &entries[i * OFFSET_ENTRY_LEN..(i + 1) * OFFSET_ENTRY_LEN];
    (u32::from_be_bytes(e[..4].try_into().unwrap()), u32::from_be_bytes(e[4..].try_into().unwrap()))
}

pub(crate) fn time_entry(entries: &[u8], i: usize) -> (i64, u32) {
    let e = &entries[i * TIME_ENTRY_LEN..(i + 1) * TIME_ENTRY_LEN];
    (i64::from_be_bytes(e[..8].try_into().unwrap()), u32::from_be_bytes(e[8..].try_into().unwrap()))
}

pub(crate) fn encode_offset_entry(relative_offset: u32, position: u32) -> [u8; OFFSET_ENTRY_LEN] {
    let mut e = [0; OFFSET_ENTRY_LEN];
    e[..4].copy_from_slice(&relative_offset.to_be_bytes());
    e[4..].copy_from_slice(&position.to_be_bytes());
    e
}

pub(crate) fn encode_time_entry(timestamp: i64, relative_offset: u32) -> [u8; TIME_ENTRY_LEN] {
    let mut e = [0; TIME_ENTRY_LEN];
    e[..8].copy_from_slice(&timestamp.to_be_bytes());
    e[8..].copy_from_slice(&relative_offset.to_be_bytes());
    e
}

/// The last indexed batch that starts at or before `relative_offset`, as (relative base
/// offset, file position); `None` when no entry does (scanning then starts at the head).
pub(crate) fn entry_at_or_before(entries: &[u8], relative_offset: u32) -> Option<(u32, u32)> {
    let n = entries.len() / OFFSET_ENTRY_LEN;
    let after = partition_point(n, |i| offset_entry(entries, i).0 <= relative_offset);
    (after > 0).then(|| offset_entry(entries, after - 1))
}

/// The relative offset from which a search for the first record at or after `timestamp` must
/// start: just past the last entry whose timestamp is below it, or 0.
pub(crate) fn time_search_start(entries: &[u8], timestamp: i64) -> u32 {
    let n = entries.len() / TIME_ENTRY_LEN;
    let after = partition_point(n, |i| time_entry(entries, i).0 < timestamp);
    if after == 0 { 0 } else { time_entry(entries, after - 1).1 + 1 }
}

fn partition_point(n: usize, pred: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (0, n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pred(mid) { lo = mid + 1 } else { hi = mid }
    }
    lo
}

/// Checks an offset index read from disk: entries strictly increasing in both fields, within
/// the segment. A failed check means the index is rebuilt from the log.
pub(crate) fn offset_index_is_sane(entries: &[u8], segment_len: u64, max_relative: u64) -> bool {
    if !entries.len().is_multiple_of(OFFSET_ENTRY_LEN) {
        return false;
    }
    let mut prev: Option<(u32, u32)> = None;
    for i in 0..entries.len() / OFFSET_ENTRY_LEN {
        let (rel, pos) = offset_entry(entries, i);
        if u64::from(pos) >= segment_len || u64::from(rel) > max_relative {
            return false;
        }
        if let Some((prel, ppos)) = prev
            && (rel <= prel || pos <= ppos)
        {
            return false;
        }
        prev = Some((rel, pos));
    }
    true
}

/// Checks a time index read from disk: timestamps and offsets non-decreasing, within range.
pub(crate) fn time_index_is_sane(entries: &[u8], max_relative: u64) -> bool {
    if !entries.len().is_multiple_of(TIME_ENTRY_LEN) {
        return false;
    }
    let mut prev: Option<(i64, u32)> = None;
    for i in 0..entries.len() / TIME_ENTRY_LEN {
        let (ts, rel) = time_entry(entries, i);
        if u64::from(rel) > max_relative {
            return false;
        }
        if let Some((pts, prel)) = prev
            && (ts < pts || rel < prel)
        {
            return false;
        }
        prev = Some((ts, rel));
    }
    true
}

/// The index of the active segment. Its entries live in memory and reach the file when the
/// segment is sealed (roll, clean close) or a tail mark is saved (`crate::tail_mark`, which
/// says how many of the file's entries are durable); after a crash the active segment's
/// indexes are rebuilt by scanning from the mark, or from the start without one. Entries written
/// through a shared map of the file were dirty pages of their own: every `syncfs` round of
/// the node-wide group commit wrote them back, and the next entry on a cleaned page took a
/// write fault (with 1,000 partitions: rounds several times slower, `docs/benchmarks.md`).
#[derive(Debug)]
pub(crate) struct WritableIndex {
    path: PathBuf,
    entries: Vec<u8>,
    /// Bytes of `entries` already written to the file (not necessarily fsynced).
    persisted: usize,
    /// Most bytes of entries the index may hold (a full index makes the segment roll).
    capacity: usize,
    entry_len: usize,
}

impl WritableIndex {
    /// The index whose file at `path` holds `entries` (read by the caller), with room for
    /// `capacity` entries.
    pub(crate) fn with_entries(
        path: &Path,
        entry_len: usize,
        capacity: usize,
        entries: Vec<u8>,
    ) -> Self {
        let capacity = (capacity * entry_len).max(entries.len());
        WritableIndex {
            path: path.to_owned(),
            persisted: entries.len(),
            entries,
            capacity,
            entry_len,
        }
    }

    /// Starts a new, empty index: an empty file is written under a temporary name and renamed
    /// to `path`, so whatever map of a previous file exists keeps the old inode.
    pub(crate) fn create_new(path: &Path, entry_len: usize, capacity: usize) -> Result<Self> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        File::create(&tmp).at(&tmp)?;
        std::fs::rename(&tmp, path).at(path)?;
        Ok(WritableIndex {
            path: path.to_owned(),
            entries: Vec::new(),
            persisted: 0,
            capacity: capacity * entry_len,
            entry_len,
        })
    }

    pub(crate) fn entries(&self) -> &[u8] {
        &self.entries
    }

    pub(crate) fn is_full(&self) -> bool {
        self.entries.len() + self.entry_len > self.capacity
    }

    /// Appends an entry; the caller checked `is_full` (a full index makes the segment roll).
    pub(crate) fn push(&mut self, entry: &[u8]) {
        debug_assert_eq!(entry.len(), self.entry_len);
        self.entries.extend_from_slice(entry);
    }

    /// Writes the entries the file lacks after those it has (no fsync), and returns the file
    /// and its path, for the caller to fsync outside its lock, and the number of entries it
    /// then holds.
    pub(crate) fn write_unpersisted(&mut self) -> Result<((File, PathBuf), u32)> {
        let file = OpenOptions::new().write(true).open(&self.path).at(&self.path)?;
        file.write_all_at(&self.entries[self.persisted..], self.persisted as u64).at(&self.path)?;
        self.persisted = self.entries.len();
        Ok(((file, self.path.clone()), (self.entries.len() / self.entry_len) as u32))
    }

    /// After a failed fsync of the file: its written entries may have been dropped, so the
    /// next [`Self::write_unpersisted`] writes them all again.
    pub(crate) fn forget_persisted(&mut self) {
        self.persisted = 0;
    }

    /// Writes the entries to the file, trims it to them, fsyncs, and maps it read-only.
    pub(crate) fn seal(self) -> Result<ReadOnlyIndex> {
        let WritableIndex { path, entries, .. } = self;
        let file = OpenOptions::new().read(true).write(true).open(&path).at(&path)?;
        file.write_all_at(&entries, 0).at(&path)?;
        file.set_len(entries.len() as u64).at(&path)?;
        file.sync_all().at(&path)?;
        let map = map_index(&file, entries.len()).at(&path)?;
        Ok(ReadOnlyIndex { map })
    }
}

/// The index of a sealed segment, mapped read-only.
#[derive(Debug)]
pub(crate) struct ReadOnlyIndex {
    map: Option<Mmap>,
}

impl ReadOnlyIndex {
    pub(crate) fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).at(path)?;
        let len = file.metadata().at(path)?.len() as usize;
        Ok(ReadOnlyIndex { map: map_index(&file, len).at(path)? })
    }

    pub(crate) fn entries(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offsets(entries: &[(u32, u32)]) -> Vec<u8> {
        entries.iter().flat_map(|&(r, p)| encode_offset_entry(r, p)).collect()
    }

    #[test]
    fn position_lookup() {
        let idx = offsets(&[(10, 4096), (25, 8200), (40, 12300)]);
        assert_eq!(entry_at_or_before(&idx, 0), None);
        assert_eq!(entry_at_or_before(&idx, 9), None);
        assert_eq!(entry_at_or_before(&idx, 10), Some((10, 4096)));
        assert_eq!(entry_at_or_before(&idx, 39), Some((25, 8200)));
        assert_eq!(entry_at_or_before(&idx, 1000), Some((40, 12300)));
        assert_eq!(entry_at_or_before(&[], 5), None);
    }

    #[test]
    fn time_lookup() {
        let idx: Vec<u8> = [(100i64, 9u32), (200, 19), (200, 25), (300, 29)]
            .iter()
            .flat_map(|&(t, r)| encode_time_entry(t, r))
            .collect();
        assert_eq!(time_search_start(&idx, 50), 0);
        assert_eq!(time_search_start(&idx, 100), 0);
        assert_eq!(time_search_start(&idx, 101), 10);
        assert_eq!(time_search_start(&idx, 250), 26);
        assert_eq!(time_search_start(&idx, 301), 30);
        assert!(time_index_is_sane(&idx, 29));
        assert!(!time_index_is_sane(&idx, 28));
    }

    #[test]
    fn sanity_checks() {
        assert!(offset_index_is_sane(&offsets(&[(1, 10), (2, 20)]), 100, 5));
        assert!(!offset_index_is_sane(&offsets(&[(2, 10), (2, 20)]), 100, 5));
        assert!(!offset_index_is_sane(&offsets(&[(1, 10), (2, 200)]), 100, 5));
        assert!(!offset_index_is_sane(&[0; 7], 100, 5));
    }
}
