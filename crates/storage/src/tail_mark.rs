//! The `tail.mark` file: how much of the active segment is known durable, with its index
//! entries on disk, so that recovery after a crash scans only the bytes after it.
//!
//! Without it, recovery checks every batch of the active segment, up to a whole segment
//! (128 MiB by default) per partition: with a thousand partitions, a restart reads gigabytes.
//! A mark is saved by [`crate::Log::save_tail_mark`], or for many logs with one `syncfs` by
//! [`crate::Log::draft_tail_mark`] and [`crate::FilesystemSync::commit_tail_marks`] (the broker
//! does that every few seconds), in this order, so that whatever version of the file survives
//! a crash tells the truth:
//!
//! 1. the segment's bytes up to `position` and the index entries of those bytes are written and
//!    made durable;
//! 2. only then the mark is written, over the old one.
//!
//! The mark itself is never fsynced: losing it, or finding it torn (the CRC catches that), only
//! means the next recovery scans the whole segment, as it did before marks existed. A truncation
//! or restart that rewrites a segment deletes the mark, durably, before it touches a byte.
//!
//! Layout (52 bytes, big-endian): `"STTM"`, version u32 = 1, segment base u64, position u64,
//! next offset u64, max timestamp i64, offset index entries u32, time index entries u32,
//! CRC-32C of the previous 48 bytes.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::Path;

use strata_record::Offset;

use crate::checkpoint::sync_dir;
use crate::error::{IoContext, Result};

pub(crate) const TAIL_MARK_FILE: &str = "tail.mark";
const MAGIC: &[u8; 4] = b"STTM";
const VERSION: u32 = 1;
const LEN: usize = 52;

/// A durable prefix of one segment: its bytes below `position` and the first entries of its
/// two index files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TailMark {
    pub(crate) segment: Offset,
    pub(crate) position: u64,
    /// The offset of the batch that starts at `position` (one past the last offset below it).
    pub(crate) next: Offset,
    /// Largest batch max timestamp below `position`, `i64::MIN` when there is none.
    pub(crate) max_timestamp: i64,
    pub(crate) offset_entries: u32,
    pub(crate) time_entries: u32,
}

/// The mark in `dir`, if there is one that reads back whole.
pub(crate) fn read(dir: &Path) -> Option<TailMark> {
    let bytes = fs::read(dir.join(TAIL_MARK_FILE)).ok()?;
    if bytes.len() != LEN || &bytes[..4] != MAGIC {
        return None;
    }
    let u64_at = |at: usize| u64::from_be_bytes(bytes[at..at + 8].try_into().unwrap());
    let u32_at = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
    if u32_at(4) != VERSION || u32_at(48) != crc32c::crc32c(&bytes[..48]) {
        return None;
    }
    Some(TailMark {
        segment: Offset(u64_at(8)),
        position: u64_at(16),
        next: Offset(u64_at(24)),
        max_timestamp: u64_at(32) as i64,
        offset_entries: u32_at(40),
        time_entries: u32_at(44),
    })
}

/// Replaces the mark. The caller made everything it claims durable first.
pub(crate) fn write(dir: &Path, mark: &TailMark) -> Result<()> {
    let mut bytes = Vec::with_capacity(LEN);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&VERSION.to_be_bytes());
    for field in [mark.segment.0, mark.position, mark.next.0, mark.max_timestamp as u64] {
        bytes.extend_from_slice(&field.to_be_bytes());
    }
    bytes.extend_from_slice(&mark.offset_entries.to_be_bytes());
    bytes.extend_from_slice(&mark.time_entries.to_be_bytes());
    bytes.extend_from_slice(&crc32c::crc32c(&bytes).to_be_bytes());
    // Written over the old one in place: 52 bytes within one sector, so a crash leaves the old
    // mark or the new one (and a torn one fails the CRC, costing only a longer scan). A
    // temporary file and a rename would add a file creation and a directory update per log
    // per pass.
    let path = dir.join(TAIL_MARK_FILE);
    let file = fs::OpenOptions::new().write(true).create(true).truncate(false).open(&path);
    file.and_then(|f| f.write_all_at(&bytes, 0)).at(&path)
}

/// Deletes the mark, durably: from here on no recovery trusts it. The directory is fsynced
/// even when the file is already gone: an earlier removal may have failed at that step.
pub(crate) fn remove(dir: &Path) -> Result<()> {
    let path = dir.join(TAIL_MARK_FILE);
    match fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(e).at(&path),
    }
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_torn_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()), None);
        let mark = TailMark {
            segment: Offset(100),
            position: 1 << 20,
            next: Offset(1_100),
            max_timestamp: -5,
            offset_entries: 250,
            time_entries: 249,
        };
        write(dir.path(), &mark).unwrap();
        assert_eq!(read(dir.path()), Some(mark));
        let path = dir.path().join(TAIL_MARK_FILE);
        let whole = fs::read(&path).unwrap();
        let mut flipped = whole.clone();
        flipped[20] ^= 1;
        fs::write(&path, &flipped).unwrap();
        assert_eq!(read(dir.path()), None, "a flipped bit fails the CRC");
        fs::write(&path, &whole[..30]).unwrap();
        assert_eq!(read(dir.path()), None, "a torn file is ignored");
        remove(dir.path()).unwrap();
        assert!(!path.exists());
        remove(dir.path()).unwrap();
    }
}
