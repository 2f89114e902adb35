//! The only place Strata maps files, and so the only `unsafe` in the storage engine.
//!
//! Mapping a file is unsafe because another writer could change or shrink it under the map
//! (changing bytes behind a `&[u8]`, or SIGBUS past a new end). The invariants that make every
//! map here sound:
//!
//! 1. **Exclusive directory.** A log holds an exclusive `flock` on `<dir>/.lock` for its whole
//!    life ([`crate::Log::open`]), so no other process (or second `Log`) writes its files.
//! 2. **Log files only grow while mapped.** Appends add bytes past every length handed out,
//!    and a map hands out only bytes below the file's length when they were asked for. (A
//!    growing file's map reaches past its end, so later reads reuse it; those pages are never
//!    touched before appends fill them, so they cannot fault.) Truncation never shrinks
//!    a mapped log file: it writes the kept prefix to a new file and renames it over the old
//!    name, so existing maps keep the old inode, unchanged, until their last `Bytes` drops.
//!    Recovery cuts a torn tail only before any map of the file escapes the scan.
//! 3. **Index maps are read-only and private to their segment.** Only sealed segments' indexes
//!    are mapped (the active segment keeps its entries in memory). Readers borrow index entries
//!    only while holding the log's lock; an index file is written or shrunk only while no map
//!    of it exists (reopening an active segment drops its read-only maps first), and rebuilt
//!    indexes are new files renamed into place.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;

use bytes::Bytes;
use memmap2::{Advice, Mmap, MmapOptions};

/// How a recovery reads a map it made for itself. On a page fault the kernel reads around the
/// faulting page as far as the device's read-ahead (8 MiB on this machine's virtio disk): a
/// recovery that touched a segment's first page and the page of its tail mark read the whole
/// segment, and a thousand partitions' restart read every byte of them from a cold cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// A few headers here and there: each fault reads its page only.
    Random,
    /// A scan forward: read-ahead from the faulting page on, never behind it.
    Sequential,
}

/// A read-only map of a log file. Reads slice batches out of it as `Bytes` without copying.
#[derive(Debug, Clone, Default)]
pub(crate) struct LogMap {
    /// The whole mapped range, possibly past the file's end: never handed out as it is.
    mapped: Bytes,
}

impl LogMap {
    /// Maps `capacity` bytes of a log file whose first `len` bytes are written; `capacity`
    /// may reach past the file's end, for the file to grow into.
    pub(crate) fn new(file: &File, len: usize, capacity: usize) -> io::Result<LogMap> {
        debug_assert!(len <= capacity);
        debug_assert!(file.metadata().map(|m| m.len() >= len as u64).unwrap_or(true));
        if capacity == 0 {
            return Ok(LogMap::default());
        }
        // SAFETY: invariants 1 and 2 of this module: nothing shrinks or rewrites the bytes of
        // this inode below any length handed out while the map lives, and `bytes` hands out
        // only lengths the caller knows to be written.
        let map = unsafe { MmapOptions::new().len(capacity).map(file)? };
        Ok(LogMap { mapped: Bytes::from_owner(map) })
    }

    /// A map of the first `len` bytes of a log file, for a recovery step that reads it the
    /// way `access` says.
    pub(crate) fn for_recovery(file: &File, len: usize, access: Access) -> io::Result<LogMap> {
        if len == 0 {
            return Ok(LogMap::default());
        }
        // SAFETY: as in `LogMap::new`; recovery drops this map before it cuts the file.
        let map = unsafe { MmapOptions::new().len(len).map(file)? };
        let advice = match access {
            Access::Random => Advice::Random,
            Access::Sequential => Advice::Sequential,
        };
        // Only a hint: without it the open is slower, not wrong.
        if let Err(err) = map.advise(advice) {
            tracing::debug!(error = %err, "madvise on a recovery map failed");
        }
        Ok(LogMap { mapped: Bytes::from_owner(map) })
    }

    /// How far the map reaches.
    pub(crate) fn capacity(&self) -> usize {
        self.mapped.len()
    }

    /// The first `len` bytes, which must be written (within the file) and within the map.
    pub(crate) fn bytes(&self, len: usize) -> Bytes {
        self.mapped.slice(..len)
    }
}

/// Maps a whole index file read-only.
pub(crate) fn map_index(file: &File, len: usize) -> io::Result<Option<Mmap>> {
    if len == 0 {
        return Ok(None);
    }
    // SAFETY: invariants 1 and 3: only the owning segment touches this file, and it drops this
    // map before it shrinks or rewrites the file.
    let map = unsafe { MmapOptions::new().len(len).map(file)? };
    Ok(Some(map))
}
