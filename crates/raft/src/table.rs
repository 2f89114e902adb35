//! The entry table: which Raft index is which batch of the segment log.
//!
//! The partition's segment log holds the data, written once. Raft also needs, per index, the
//! entry's term and kind, and blank and membership entries take an index but no record offset.
//! The table keeps one small record per index, in memory and in `raft/entries`: an append-only
//! file of frames `[len u32][crc32c u32][postcard EntryMeta]`. Truncation and purges (rare)
//! rewrite the file (tmp, fsync, rename, fsync dir). Appends are fsynced for blank and
//! membership entries (after the segment log) and now and then; at open, records naming data
//! the log lost are dropped and data records past the table's end are rebuilt from the log
//! (`store.rs`).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use openraft::{LogId, Membership};
use serde::{Deserialize, Serialize};

use crate::types::{Node, NodeId};

const FRAME_HEADER: usize = 8;
/// A frame longer than this is corruption, not an entry (a membership of a few nodes is tiny).
const MAX_FRAME: usize = 1024 * 1024;

/// What one Raft index is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryMeta {
    pub log_id: LogId<NodeId>,
    /// Log end offset before this entry: a data entry's base offset.
    pub offset: u64,
    pub kind: EntryKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    /// One batch of `records` offsets and `bytes` bytes at `offset`.
    Data {
        records: u64,
        bytes: u32,
    },
    Blank,
    Membership(Membership<NodeId, Node>),
}

impl EntryMeta {
    /// Log end offset after this entry.
    pub fn end_offset(&self) -> u64 {
        match self.kind {
            EntryKind::Data { records, .. } => self.offset + records,
            _ => self.offset,
        }
    }
}

/// The in-memory table over its file.
#[derive(Debug)]
pub struct EntryTable {
    path: PathBuf,
    file: File,
    /// Entries in index order, without gaps.
    entries: std::collections::VecDeque<EntryMeta>,
}

impl EntryTable {
    /// Loads the table, keeping the longest prefix of whole, CRC-valid, gap-free frames (and
    /// cutting the file there).
    pub fn open(path: &Path) -> io::Result<EntryTable> {
        let mut bytes = Vec::new();
        match File::open(path) {
            Ok(mut f) => {
                f.read_to_end(&mut bytes)?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let mut entries = std::collections::VecDeque::new();
        let mut at = 0;
        while let Some((meta, len)) = parse_frame(&bytes[at..]) {
            let follows = entries
                .back()
                .is_none_or(|prev: &EntryMeta| prev.log_id.index + 1 == meta.log_id.index);
            if !follows {
                break;
            }
            entries.push_back(meta);
            at += len;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        if at < bytes.len() {
            tracing::warn!(path = %path.display(), kept = at, len = bytes.len(), "cutting a torn entry table tail");
            file.set_len(at as u64)?;
            file.sync_all()?;
        }
        Ok(EntryTable { path: path.to_owned(), file, entries })
    }

    pub fn first(&self) -> Option<&EntryMeta> {
        self.entries.front()
    }

    pub fn last(&self) -> Option<&EntryMeta> {
        self.entries.back()
    }

    pub fn get(&self, index: u64) -> Option<&EntryMeta> {
        let first = self.first()?.log_id.index;
        self.entries.get(usize::try_from(index.checked_sub(first)?).ok()?)
    }

    /// The last entry whose data ends at or before log offset `offset` (entries' offsets only
    /// grow with their indexes).
    pub fn last_ending_by(&self, offset: u64) -> Option<&EntryMeta> {
        let after = self.entries.partition_point(|e| e.end_offset() <= offset);
        after.checked_sub(1).and_then(|i| self.entries.get(i))
    }

    /// Entries with indexes in `[from, to)`.
    pub fn range(&self, from: u64, to: u64) -> impl Iterator<Item = &EntryMeta> {
        let first = self.first().map_or(0, |e| e.log_id.index);
        let skip = from.saturating_sub(first) as usize;
        let take = to.saturating_sub(from.max(first)) as usize;
        self.entries.iter().skip(skip).take(take)
    }

    /// Appends entries to memory and to the file's page cache (see [`EntryTable::sync`]).
    pub fn append(&mut self, metas: &[EntryMeta]) -> io::Result<()> {
        let mut buf = Vec::new();
        for meta in metas {
            encode_frame(meta, &mut buf);
        }
        self.file.write_all(&buf)?;
        self.entries.extend(metas.iter().cloned());
        Ok(())
    }

    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// A second handle on the file, to fsync it without holding the table (appends go on
    /// meanwhile). After a rewrite it names the old file, which the rewrite already synced.
    pub fn sync_handle(&self) -> io::Result<File> {
        self.file.try_clone()
    }

    /// Keeps only entries before `index`.
    pub fn truncate_from(&mut self, index: u64) -> io::Result<()> {
        while self.last().is_some_and(|e| e.log_id.index >= index) {
            self.entries.pop_back();
        }
        self.rewrite()
    }

    /// Drops entries up to and including `index`.
    pub fn purge_upto(&mut self, index: u64) -> io::Result<()> {
        while self.first().is_some_and(|e| e.log_id.index <= index) {
            self.entries.pop_front();
        }
        self.rewrite()
    }

    /// Keeps only entries whose data the log holds (`end_offset <= log_end`), from the first
    /// one that does not: recovery after a crash where the table reached the disk before the
    /// data did.
    pub fn cut_to_log_end(&mut self, log_end: u64) -> io::Result<bool> {
        let keep = self.entries.iter().position(|e| e.end_offset() > log_end);
        match keep {
            Some(at) => {
                self.entries.truncate(at);
                self.rewrite()?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn rewrite(&mut self) -> io::Result<()> {
        let mut buf = Vec::new();
        for meta in &self.entries {
            encode_frame(meta, &mut buf);
        }
        let tmp = self.path.with_extension("tmp");
        {
            let mut f = File::create(&tmp)?;
            f.write_all(&buf)?;
            f.sync_all()?;
        }
        fs::rename(&tmp, &self.path)?;
        sync_parent(&self.path)?;
        self.file = OpenOptions::new().append(true).open(&self.path)?;
        Ok(())
    }
}

fn encode_frame(meta: &EntryMeta, out: &mut Vec<u8>) {
    let body = postcard::to_stdvec(meta).expect("entry metadata always serializes");
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    out.extend_from_slice(&body);
}

fn parse_frame(buf: &[u8]) -> Option<(EntryMeta, usize)> {
    let len = u32::from_le_bytes(buf.get(0..4)?.try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(buf.get(4..8)?.try_into().ok()?);
    if len > MAX_FRAME {
        return None;
    }
    let body = buf.get(FRAME_HEADER..FRAME_HEADER + len)?;
    if crc32c::crc32c(body) != crc {
        return None;
    }
    let meta = postcard::from_bytes(body).ok()?;
    Some((meta, FRAME_HEADER + len))
}

/// Writes a small file atomically and durably: tmp, fsync, rename, fsync dir.
pub fn write_small_file(path: &Path, contents: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = File::create(&tmp)?;
        let crc = crc32c::crc32c(contents);
        f.write_all(&crc.to_le_bytes())?;
        f.write_all(contents)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    sync_parent(path)?;
    Ok(())
}

/// Fsyncs the directory holding `path`, so a rename or removal in it is durable.
pub fn sync_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) => File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

/// Reads a file written by [`write_small_file`]; `None` if absent, an error if corrupt.
pub fn read_small_file(path: &Path) -> io::Result<Option<Vec<u8>>> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if bytes.len() < 4 || crc32c::crc32c(&bytes[4..]).to_le_bytes() != bytes[..4] {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is corrupt (CRC mismatch)", path.display()),
        ));
    }
    Ok(Some(bytes[4..].to_vec()))
}
