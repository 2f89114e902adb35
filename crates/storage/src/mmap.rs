//! The only place Strata maps files, and so the only `unsafe` in the storage engine.
//!
//! Mapping a file is unsafe because another writer could change or shrink it under the map
//! (changing bytes behind a `&[u8]`, or SIGBUS past a new end). The invariants that make every
//! map here sound:
//!
//! 1. **Exclusive directory.** A log holds an exclusive `flock` on `<dir>/.lock` for its whole
//!    life ([`crate::Log::open`]), so no other process (or second `Log`) writes its files.
//! 2. **Log files only grow while mapped.** Appends add bytes past every mapped length, and
//!    a map never covers bytes past the file's length when it is made. Truncation never shrinks
//!    a mapped log file: it writes the kept prefix to a new file and renames it over the old
//!    name, so existing maps keep the old inode, unchanged, until their last `Bytes` drops.
//!    Recovery cuts a torn tail only before any map of the file escapes the scan.
//! 3. **Index maps are private to their segment.** Readers borrow index entries only while
//!    holding the log's lock; an index file is shrunk only after its writable map was dropped,
//!    and rebuilt indexes are new files renamed into place.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;

use bytes::Bytes;
use memmap2::{Mmap, MmapMut, MmapOptions};

/// Maps the first `len` bytes of a log file read-only and hands them out as `Bytes`, so reads
/// can slice batches without copying. `len` must not exceed the file's current length.
pub(crate) fn map_log(file: &File, len: usize) -> io::Result<Bytes> {
    if len == 0 {
        return Ok(Bytes::new());
    }
    debug_assert!(file.metadata().map(|m| m.len() >= len as u64).unwrap_or(true));
    // SAFETY: invariants 1 and 2 of this module: nothing shrinks or rewrites the first `len`
    // bytes of this inode while the map lives, and `len` is within the file.
    let map = unsafe { MmapOptions::new().len(len).map(file)? };
    Ok(Bytes::from_owner(map))
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

/// Maps an index file of `len` bytes read-write for appending entries.
pub(crate) fn map_index_mut(file: &File, len: usize) -> io::Result<MmapMut> {
    // SAFETY: invariants 1 and 3, as for `map_index`; the file has been extended to `len`.
    unsafe { MmapOptions::new().len(len).map_mut(file) }
}
