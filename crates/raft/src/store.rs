//! A Raft log store whose log *is* the segment log: openraft's `RaftLogStorage` over a
//! [`Log`] plus the [`EntryTable`], so each entry's bytes are written to disk once.
//!
//! Contract kept (openraft storage-v2): the vote is on disk before `save_vote` returns; entries
//! are readable when `append` returns and on disk before the flush callback fires; `truncate`
//! cuts the segment log before the table, so a crash in between leaves a prefix of the old log,
//! never shifted indexes.
//!
//! A data entry is on disk once its batch is: each batch carries its entry's term in its
//! leader epoch field, and opening the store rebuilds the table records of batches past the
//! table's end (index after index, as appended), so the flush fsyncs only the segment. Blank
//! and membership entries exist only in the table, which is fsynced as they are appended,
//! before anything after them is written; otherwise the table is fsynced about once a second,
//! which bounds the rebuild.

use std::fmt::Debug;
use std::io;
use std::marker::PhantomData;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, TryLockError};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{
    Entry, EntryPayload, LogId, OptionalSend, RaftLogReader, RaftTypeConfig, StorageError,
    StorageIOError, Vote,
};
use strata_record::{Offset, RecordBatch};
use strata_storage::Log;

use crate::table::{
    EntryKind, EntryMeta, EntryTable, read_small_file, sync_parent, write_small_file,
};
use crate::types::{LogPayload, Node, NodeId};

/// Most bytes of entries one read hands to replication (at least one entry): 300 entries of
/// 1 MiB would otherwise make a 300 MiB message.
const MAX_READ_BYTES: u64 = 8 * 1024 * 1024;

/// Most bytes of entries appended on the Raft core's task rather than the blocking pool (see
/// `SegmentStore::append_inline`): the single node's inline-write limit.
const INLINE_APPEND_BYTES: usize = 64 * 1024;

/// How often the entry table is fsynced when only data entries were appended: the table
/// records of data entries are rebuilt from the log at open, so this only bounds that work.
const TABLE_SYNC_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// What a group's type configuration must be for its log to live in a segment log.
pub trait SegmentTc:
    RaftTypeConfig<NodeId = NodeId, Node = Node, Entry = Entry<Self>, D: LogPayload>
{
}
impl<C> SegmentTc for C where
    C: RaftTypeConfig<NodeId = NodeId, Node = Node, Entry = Entry<C>, D: LogPayload>
{
}

type Callback = Box<dyn FnOnce(io::Result<()>) + Send>;

#[derive(Debug)]
struct Core {
    dir: PathBuf,
    log: Arc<Log>,
    table: Mutex<EntryTable>,
    /// Last purged log id and the log offset after it.
    purged: Mutex<Option<(LogId<NodeId>, u64)>>,
    /// The last snapshot installed from the leader and the log offset after it: where a purge
    /// past the last entry restarts the log.
    installed: Mutex<Option<(LogId<NodeId>, u64)>>,
    /// Signalled when `installed` changes, for a purge waiting for its install.
    install_done: Condvar,
    /// How long such a purge waits (see [`INSTALL_WAIT`]).
    install_wait_ms: std::sync::atomic::AtomicU64,
    flushes: Mutex<Flushes>,
    /// Whether the [`REPLACING`] marker is on disk.
    replacing: std::sync::atomic::AtomicBool,
    /// When the table was last fsynced (see [`TABLE_SYNC_EVERY`]).
    table_synced: Mutex<std::time::Instant>,
    /// The `committed` file, kept open: rewritten in place on every commit (see
    /// [`CommittedFile`]).
    committed: Mutex<CommittedFile>,
}

/// Appends waiting for their fsync. A flush loop runs on tokio's blocking pool only while some
/// wait, so an idle group holds no thread (a thread per group was 1,000 parked threads on a
/// node with 1,000 partitions).
#[derive(Default)]
struct Flushes {
    waiting: Vec<Callback>,
    /// A flush loop is running for this store; it takes `waiting` before its next fsync.
    running: bool,
}

impl Debug for Flushes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flushes")
            .field("waiting", &self.waiting.len())
            .field("running", &self.running)
            .finish()
    }
}

/// The store of one group; clones share it (openraft's log reader is a clone).
pub struct SegmentStore<C> {
    core: Arc<Core>,
    _tc: PhantomData<fn() -> C>,
}

impl<C> Clone for SegmentStore<C> {
    fn clone(&self) -> Self {
        SegmentStore { core: self.core.clone(), _tc: PhantomData }
    }
}

impl<C> Debug for SegmentStore<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentStore").field("dir", &self.core.dir).finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

impl Core {
    /// Runs `write`, which writes a file of the Raft directory by path, unless the log is
    /// retired (see [`Log::write_beside`]): a replica moved away and back reuses its
    /// directory's path, and tasks of the old one that outlive its shutdown (openraft's state
    /// machine worker finishing a queued snapshot install, a snapshot build) must not replace
    /// the new one's files. Writes through a file already open go on without it: after a
    /// retire that file is in the trash.
    fn beside<T>(&self, write: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
        self.log.write_beside(write).map_err(io_err)?
    }
}

impl<C: SegmentTc> SegmentStore<C> {
    /// Opens the store of a group over `log`, keeping its Raft files in `raft_dir`, and
    /// reconciles the two after a crash: table entries whose data the log lost are dropped,
    /// entries for batches past the table's end are rebuilt from their leader epoch (the term),
    /// and log data that cannot be (no term, or one out of order) is cut from the log.
    pub fn open(raft_dir: &Path, log: Arc<Log>) -> io::Result<SegmentStore<C>> {
        std::fs::create_dir_all(raft_dir)?;
        let mut table = EntryTable::open(&raft_dir.join("entries"))?;
        let purged: Option<(LogId<NodeId>, u64)> = match read_small_file(&raft_dir.join("purged"))?
        {
            Some(bytes) => Some(postcard::from_bytes(&bytes).map_err(io_err)?),
            None => None,
        };
        if let Some((_, offset)) = purged
            && log.start_offset().0 < offset
        {
            log.delete_before(Offset(offset)).map_err(io_err)?;
        }
        // A crash in a purge after its point reached the disk: the table (fsynced only now
        // and then) may still hold entries up to it, or end before it.
        if let Some((id, _)) = purged
            && table.first().is_some_and(|e| e.log_id.index <= id.index)
        {
            table.purge_upto(id.index)?;
        }
        let replacing = raft_dir.join(REPLACING);
        let replacing = replacing.exists().then_some(replacing);
        let log_end = log.end_offset().0;
        if table.cut_to_log_end(log_end)? {
            tracing::warn!(dir = %raft_dir.display(), "entry table named data the log lost; cut");
        }
        let table_end = match table.last() {
            Some(last) => last.end_offset(),
            None => purged.map_or(log.start_offset().0, |(_, o)| o),
        };
        if log_end > table_end {
            let last = table.last().map(|e| e.log_id).or(purged.map(|(id, _)| id));
            let vote_term = match read_small_file(&raft_dir.join("vote"))? {
                Some(b) => {
                    postcard::from_bytes::<Vote<NodeId>>(&b).map_err(io_err)?.leader_id().get_term()
                }
                None => 0,
            };
            // While a snapshot replaces the log, its data past the table is the replaced log's,
            // whose blank and membership entries the table no longer holds: cut, not rebuilt.
            let metas = match replacing {
                Some(_) => Vec::new(),
                None => rebuild_entries(&log, last, table_end, vote_term)?,
            };
            let rebuilt_end = metas.last().map_or(table_end, EntryMeta::end_offset);
            if !metas.is_empty() {
                table.append(&metas)?;
                table.sync()?;
            }
            if log_end > rebuilt_end {
                tracing::warn!(dir = %raft_dir.display(), table_end = rebuilt_end, log_end, "cutting log data no entry names");
                // With no entry left, the end is the purge point, which a snapshot that
                // replaced the log may have put inside one of its batches.
                match table.last() {
                    Some(_) => log.truncate_from(Offset(rebuilt_end)),
                    None => log.restart_at(Offset(rebuilt_end)),
                }
                .map_err(io_err)?;
            }
        }
        if let Some(marker) = &replacing {
            remove_durably(marker)?;
        }
        let core = Arc::new(Core {
            dir: raft_dir.to_owned(),
            log,
            table: Mutex::new(table),
            purged: Mutex::new(purged),
            installed: Mutex::new(None),
            install_done: Condvar::new(),
            install_wait_ms: std::sync::atomic::AtomicU64::new(INSTALL_WAIT.as_millis() as u64),
            flushes: Mutex::new(Flushes::default()),
            replacing: std::sync::atomic::AtomicBool::new(false),
            table_synced: Mutex::new(std::time::Instant::now()),
            committed: Mutex::new(CommittedFile::new(raft_dir.join("committed"))),
        });
        Ok(SegmentStore { core, _tc: PhantomData })
    }

    pub fn log(&self) -> &Arc<Log> {
        &self.core.log
    }

    /// How long a purge past the log's last entry waits for the snapshot install it goes with
    /// ([`INSTALL_WAIT`] by default); tests that purge by hand, with no install coming,
    /// shorten it.
    pub fn set_install_wait(&self, wait: std::time::Duration) {
        self.core.install_wait_ms.store(wait.as_millis() as u64, Ordering::Relaxed);
    }

    /// Tells the store that the state machine installed a snapshot ending at `log_id`, with
    /// the log going on at `next_offset`. openraft runs the purge that follows an install
    /// without waiting for it: a purge past the log that ran first, not knowing where the log
    /// goes on, only dropped the entries; the purge is made durable here.
    pub fn snapshot_installed(&self, log_id: LogId<NodeId>, next_offset: u64) -> io::Result<()> {
        let mut table = lock(&self.core.table);
        *lock(&self.core.installed) = Some((log_id, next_offset));
        self.core.install_done.notify_all();
        if lock(&self.core.purged).is_some_and(|(id, _)| id == log_id) {
            purge_to(&self.core, &mut table, log_id, next_offset)?;
        }
        Ok(())
    }

    /// At start, with the state machine's snapshot ending at `log_id` (`next_offset` after
    /// it): if the log stops short of it (a crash between installing a snapshot and the purge
    /// after it), purges up to it, so the next entry is appended at `next_offset`.
    pub fn catch_up_to_snapshot(&self, log_id: LogId<NodeId>, next_offset: u64) -> io::Result<()> {
        let mut table = lock(&self.core.table);
        let purged = *lock(&self.core.purged);
        let in_log = table.last().is_some_and(|e| e.log_id >= log_id);
        let purged_past = purged.is_some_and(|(id, _)| id > log_id);
        if in_log || purged_past || purged == Some((log_id, next_offset)) {
            return Ok(());
        }
        tracing::warn!(dir = %self.core.dir.display(), %log_id, next_offset, "log behind the snapshot; purging to it");
        purge_to(&self.core, &mut table, log_id, next_offset)
    }

    /// Runs `write`, which writes a file of the group's Raft directory by path, unless the
    /// log is retired (see [`Log::write_beside`]).
    pub(crate) fn write_beside<T>(&self, write: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
        self.core.beside(write)
    }

    /// The directory of the group's Raft files.
    pub fn dir(&self) -> &Path {
        &self.core.dir
    }

    /// The last entry whose data ends at or before log offset `offset`, and the offset after
    /// it.
    pub fn last_entry_ending_by(&self, offset: u64) -> Option<(LogId<NodeId>, u64)> {
        lock(&self.core.table).last_ending_by(offset).map(|e| (e.log_id, e.end_offset()))
    }

    /// The log offset where entry `index` starts, if the table holds it.
    pub fn entry_offset(&self, index: u64) -> Option<u64> {
        lock(&self.core.table).get(index).map(|e| e.offset)
    }

    fn read_entries(&self, from: u64, to: u64, max_bytes: u64) -> io::Result<Vec<Entry<C>>> {
        let metas: Vec<EntryMeta> = {
            let table = lock(&self.core.table);
            let mut bytes = 0u64;
            let mut out = Vec::new();
            for meta in table.range(from, to) {
                if let EntryKind::Data { bytes: len, .. } = meta.kind {
                    if !out.is_empty() && bytes + u64::from(len) > max_bytes {
                        break;
                    }
                    bytes += u64::from(len);
                }
                out.push(meta.clone());
            }
            out
        };
        let mut entries = Vec::with_capacity(metas.len());
        for meta in metas {
            let payload = match meta.kind {
                EntryKind::Blank => EntryPayload::Blank,
                EntryKind::Membership(m) => EntryPayload::Membership(m),
                EntryKind::Data { bytes, .. } => {
                    let batch = self
                        .core
                        .log
                        .read(Offset(meta.offset), bytes as usize)
                        .map_err(io_err)?
                        .into_iter()
                        .next()
                        .filter(|b| b.len() == bytes as usize)
                        .ok_or_else(|| {
                            io_err(format!(
                                "entry {} names a {bytes}-byte batch at offset {} the log does not hold",
                                meta.log_id, meta.offset
                            ))
                        })?;
                    EntryPayload::Normal(C::D::from_batch(batch).map_err(io_err)?)
                }
            };
            entries.push(Entry { log_id: meta.log_id, payload });
        }
        Ok(entries)
    }

    /// Appends entries on the caller's task (the Raft core's) while that is only a copy into
    /// the page cache: up to [`INLINE_APPEND_BYTES`] of batches, none of which waits for the
    /// log's lock or rolls the segment. openraft appends each client write on its own, and
    /// awaits it before the next, so a trip to the blocking pool per entry held up the group
    /// (as `docs/decisions.md`, "Small writes on the async runtime", says of single nodes).
    /// Returns the entries left, from the first that declined, for [`Self::append_now`].
    fn append_inline(&self, entries: Vec<Entry<C>>) -> io::Result<Vec<Entry<C>>> {
        // Blank and membership entries fsync the table, and so do the first entries after a
        // purge past the log (see `append_now`).
        if self.core.replacing.load(Ordering::Acquire)
            || entries.iter().any(|e| !matches!(e.payload, EntryPayload::Normal(_)))
        {
            return Ok(entries);
        }
        // Each entry's batch, made once (the controller's entries serialise theirs).
        let batches: Vec<Option<bytes::Bytes>> = entries
            .iter()
            .map(|e| match &e.payload {
                EntryPayload::Normal(data) => Some(data.to_batch()),
                _ => None,
            })
            .collect();
        if batches.iter().flatten().map(|b| b.len()).sum::<usize>() > INLINE_APPEND_BYTES {
            return Ok(entries);
        }
        // Never wait for the table either: a snapshot install holds it through a purge's
        // fsyncs.
        let mut table = match self.core.table.try_lock() {
            Ok(table) => table,
            Err(TryLockError::WouldBlock) => return Ok(entries),
            Err(TryLockError::Poisoned(e)) => e.into_inner(),
        };
        let log = &self.core.log;
        let mut metas = Vec::with_capacity(entries.len());
        let mut failed = None;
        for (entry, batch) in entries.iter().zip(&batches) {
            let offset = log.end_offset().0;
            let kind = match (&entry.payload, batch) {
                (EntryPayload::Normal(_), Some(batch)) => match write_inline(log, batch, entry) {
                    None => break,
                    Some(Ok(info)) => data_kind(&info, batch),
                    Some(Err(err)) => {
                        failed = Some(err);
                        break;
                    }
                },
                (EntryPayload::Membership(m), _) => EntryKind::Membership(m.clone()),
                _ => EntryKind::Blank,
            };
            metas.push(EntryMeta { log_id: entry.log_id, offset, kind });
        }
        // The table names what was written even when a later entry failed.
        table.append(&metas)?;
        if let Some(err) = failed {
            return Err(err);
        }
        Ok(entries.into_iter().skip(metas.len()).collect())
    }

    fn append_now(&self, entries: Vec<Entry<C>>) -> io::Result<()> {
        let log = &self.core.log;
        let mut table = lock(&self.core.table);
        let mut metas = Vec::with_capacity(entries.len());
        for entry in entries {
            let offset = log.end_offset().0;
            let kind = match &entry.payload {
                EntryPayload::Normal(data) => {
                    let batch = data.to_batch();
                    let epoch = epoch_of(&entry.log_id)?;
                    data_kind(&log.append_in_epoch(&batch, epoch).map_err(io_err)?, &batch)
                }
                EntryPayload::Blank => EntryKind::Blank,
                EntryPayload::Membership(m) => EntryKind::Membership(m.clone()),
            };
            let rebuildable = matches!(kind, EntryKind::Data { .. });
            metas.push(EntryMeta { log_id: entry.log_id, offset, kind });
            if !rebuildable {
                // An entry the log cannot rebuild: on disk before anything after it is written
                // (the data before it first, so the table never names data the log lacks).
                log.flush().map_err(io_err)?;
                table.append(&metas)?;
                metas.clear();
                table.sync()?;
            }
        }
        table.append(&metas)?;
        // Entries after a purge past the log, before its snapshot's install: once the table
        // durably names them, a crash no longer leaves only the replaced log's data past the
        // table, and the marker that would cut it (these entries with it) goes.
        if self.core.replacing.load(Ordering::Acquire) {
            table.sync()?;
            self.core.beside(|| remove_durably(&self.core.dir.join(REPLACING)))?;
            self.core.replacing.store(false, Ordering::Release);
        }
        Ok(())
    }
}

/// Ends a flush loop that stopped without emptying the queue (it panicked, or the runtime
/// shut down before running it): the waiting appends fail instead of hanging, and the next
/// append may start a loop again.
struct LoopGuard {
    core: Arc<Core>,
    /// Cleared by the loop itself when it ends normally, having found nothing waiting.
    armed: bool,
}

impl Drop for LoopGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let waiting = {
            let mut flushes = lock(&self.core.flushes);
            flushes.running = false;
            std::mem::take(&mut flushes.waiting)
        };
        for callback in waiting {
            callback(Err(io_err("the flush loop stopped")));
        }
    }
}

/// Group commit: every callback queued while one fsync runs shares the next. At most one
/// loop runs per store, so each fsync covers every append made before it started.
fn flush_loop(mut guard: LoopGuard) {
    loop {
        let core = &guard.core;
        let callbacks = {
            let mut flushes = lock(&core.flushes);
            if flushes.waiting.is_empty() {
                flushes.running = false;
                guard.armed = false;
                return;
            }
            std::mem::take(&mut flushes.waiting)
        };
        let result = flush_log(core);
        for callback in callbacks {
            let result = match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
            };
            callback(result);
        }
        sync_table_if_due(core);
    }
}

/// Makes the appended entries durable: their batches (the table's records of data entries are
/// rebuilt from them at open; see the module's note).
fn flush_log(core: &Core) -> io::Result<()> {
    core.log.flush().map_err(io_err)
}

/// Fsyncs the entry table if [`TABLE_SYNC_EVERY`] has passed, after a flush's callbacks ran
/// (off their path). A failure is only logged: the table is rebuilt from the log at open.
fn sync_table_if_due(core: &Core) {
    {
        let mut synced = lock(&core.table_synced);
        if synced.elapsed() < TABLE_SYNC_EVERY {
            return;
        }
        *synced = std::time::Instant::now();
    }
    let result = lock(&core.table).sync_handle().and_then(|table| table.sync_data());
    if let Err(err) = result {
        tracing::warn!(dir = %core.dir.display(), error = %err, "entry table fsync failed");
    }
}

/// The table's record of a data entry whose `batch` landed as `info` says.
fn data_kind(info: &strata_storage::AppendInfo, batch: &[u8]) -> EntryKind {
    EntryKind::Data {
        records: info.last_offset.0 - info.base_offset.0 + 1,
        bytes: batch.len() as u32,
    }
}

/// The leader epoch a replica writes into an entry's batch: the entry's term.
fn epoch_of(log_id: &LogId<NodeId>) -> io::Result<i32> {
    i32::try_from(log_id.leader_id.term).map_err(|_| {
        io_err(format!("term {} does not fit a batch's leader epoch", log_id.leader_id.term))
    })
}

/// Table records for the batches of `log` from `from` to its end, each the entry after the
/// one before (`last`), with the term its batch carries. Stops at the first batch whose term
/// is not a Raft term this replica could hold (below 1 or the previous entry's term, above its
/// vote's): data written without one, by an earlier build, is not rebuilt but cut.
fn rebuild_entries(
    log: &Log,
    last: Option<LogId<NodeId>>,
    from: u64,
    vote_term: u64,
) -> io::Result<Vec<EntryMeta>> {
    let Some(mut last) = last else { return Ok(Vec::new()) };
    let mut metas = Vec::new();
    let mut offset = from;
    let end = log.end_offset().0;
    'scan: while offset < end {
        let batches = log.read(Offset(offset), MAX_READ_BYTES as usize).map_err(io_err)?;
        if batches.is_empty() {
            break;
        }
        for batch in batches {
            let header = strata_record::BatchHeader::parse(&batch).map_err(io_err)?;
            let term = u64::try_from(header.partition_leader_epoch).unwrap_or(0);
            if header.base_offset() != Offset(offset)
                || term == 0
                || term < last.leader_id.term
                || term > vote_term
            {
                break 'scan;
            }
            last = LogId::new(openraft::CommittedLeaderId::new(term, 0), last.index + 1);
            let records = header.offset_count();
            metas.push(EntryMeta {
                log_id: last,
                offset,
                kind: EntryKind::Data { records, bytes: batch.len() as u32 },
            });
            offset += records;
        }
    }
    Ok(metas)
}

/// Writes a batch if the log can take it without waiting ([`Log::try_write_validated`]),
/// after checking its CRC; `None` if it would wait or roll the segment.
fn write_inline<C: SegmentTc>(
    log: &Log,
    batch: &[u8],
    entry: &Entry<C>,
) -> Option<io::Result<strata_storage::AppendInfo>> {
    let header = match (RecordBatch::new(batch), epoch_of(&entry.log_id)) {
        (Ok(checked), Ok(epoch)) => {
            let mut header = *checked.header();
            header.partition_leader_epoch = epoch;
            header
        }
        (Err(err), _) => return Some(Err(io_err(err))),
        (_, Err(err)) => return Some(Err(err)),
    };
    log.try_write_validated(batch, header).map(|written| written.map_err(io_err))
}

/// The last committed log id, in one fixed-size frame `[crc32c u32 LE][len u8][postcard]`
/// rewritten in place at offset 0. openraft saves it on every commit; a temporary file renamed
/// over the last one (a new inode, a directory update and an unlink per commit) was an eighth
/// of a 3-node cluster's CPU at 500 records/s, on the Raft core's own task. A torn or foreign
/// frame reads as `None`, which costs only re-applying from the last snapshot at start.
#[derive(Debug)]
struct CommittedFile {
    path: PathBuf,
    file: Option<std::fs::File>,
}

const COMMITTED_FRAME: usize = 64;

impl CommittedFile {
    fn new(path: PathBuf) -> Self {
        CommittedFile { path, file: None }
    }

    fn is_open(&self) -> bool {
        self.file.is_some()
    }

    /// Opens (creates) the file by path: once, before the first save.
    fn open(&mut self) -> io::Result<()> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.path)?;
        self.file = Some(file);
        Ok(())
    }

    fn save(&mut self, committed: &Option<LogId<NodeId>>) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        let mut frame = [0u8; COMMITTED_FRAME];
        let len = postcard::to_slice(committed, &mut frame[5..]).map_err(io_err)?.len();
        frame[4] = len as u8;
        let crc = crc32c::crc32c(&frame[4..5 + len]);
        frame[..4].copy_from_slice(&crc.to_le_bytes());
        let file = self.file.as_ref().ok_or_else(|| io_err("the committed file is not open"))?;
        file.write_all_at(&frame, 0)
    }

    fn read(&self) -> Option<LogId<NodeId>> {
        let bytes = std::fs::read(&self.path).ok()?;
        let len = usize::from(*bytes.get(4)?);
        let body = bytes.get(4..5 + len)?;
        if crc32c::crc32c(body).to_le_bytes()[..] != bytes[..4] {
            return None;
        }
        postcard::from_bytes(&body[1..]).ok().flatten()
    }
}

fn range_bounds(range: &impl RangeBounds<u64>) -> (u64, u64) {
    let from = match range.start_bound() {
        Bound::Included(&i) => i,
        Bound::Excluded(&i) => i + 1,
        Bound::Unbounded => 0,
    };
    let to = match range.end_bound() {
        Bound::Included(&i) => i + 1,
        Bound::Excluded(&i) => i,
        Bound::Unbounded => u64::MAX,
    };
    (from, to)
}

fn sto(e: io::Error) -> StorageError<NodeId> {
    StorageIOError::write_logs(&e).into()
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(io_err)?
}

impl<C: SegmentTc> RaftLogReader<C> for SegmentStore<C> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<C>>, StorageError<NodeId>> {
        let (from, to) = range_bounds(&range);
        self.read_entries(from, to, u64::MAX).map_err(|e| StorageIOError::read_logs(&e).into())
    }

    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry<C>>, StorageError<NodeId>> {
        self.read_entries(start, end, MAX_READ_BYTES)
            .map_err(|e| StorageIOError::read_logs(&e).into())
    }
}

impl<C: SegmentTc> RaftLogStorage<C> for SegmentStore<C> {
    type LogReader = SegmentStore<C>;

    async fn get_log_state(&mut self) -> Result<LogState<C>, StorageError<NodeId>> {
        let purged = lock(&self.core.purged).map(|(id, _)| id);
        let last = lock(&self.core.table).last().map(|e| e.log_id).or(purged);
        Ok(LogState { last_purged_log_id: purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        let core = self.core.clone();
        let bytes = postcard::to_stdvec(vote).map_err(|e| StorageIOError::write_vote(&e))?;
        blocking(move || core.beside(|| write_small_file(&core.dir.join("vote"), &bytes)))
            .await
            .map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        let bytes = read_small_file(&self.core.dir.join("vote"))
            .map_err(|e| StorageIOError::read_vote(&e))?;
        match bytes {
            Some(b) => {
                Ok(Some(postcard::from_bytes(&b).map_err(|e| StorageIOError::read_vote(&e))?))
            }
            None => Ok(None),
        }
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        // Only speeds up re-applying at start (openraft re-applies up to it): a lost or stale
        // value costs nothing but time, so it is written in place without an fsync.
        let mut file = lock(&self.core.committed);
        if !file.is_open() {
            self.core.beside(|| file.open()).map_err(sto)?;
        }
        file.save(&committed).map_err(sto)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        let committed = lock(&self.core.committed).read();
        // Never past what the log holds (the file is not fsynced).
        let last = lock(&self.core.table).last().map(|e| e.log_id);
        Ok(committed.filter(|c| Some(*c) <= last))
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<C>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<C>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry<C>> = entries.into_iter().collect();
        let rest = self.append_inline(entries).map_err(sto)?;
        if !rest.is_empty() {
            let store = self.clone();
            blocking(move || store.append_now(rest)).await.map_err(sto)?;
        }
        let start_loop = {
            let mut flushes = lock(&self.core.flushes);
            flushes.waiting.push(Box::new(move |result| callback.log_io_completed(result)));
            !std::mem::replace(&mut flushes.running, true)
        };
        if start_loop {
            let guard = LoopGuard { core: self.core.clone(), armed: true };
            tokio::task::spawn_blocking(move || flush_loop(guard));
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let core = self.core.clone();
        blocking(move || {
            let mut table = lock(&core.table);
            let Some(offset) = table.get(log_id.index).map(|e| e.offset) else {
                return Ok(());
            };
            core.log.truncate_from(Offset(offset)).map_err(io_err)?;
            core.beside(|| table.truncate_from(log_id.index))
        })
        .await
        .map_err(sto)
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let core = self.core.clone();
        blocking(move || {
            // Past the log's last entry (a snapshot from the leader replaced it), the log goes
            // on after the installed snapshot. openraft hands the install to the state machine
            // and runs this purge without waiting for it: wait here, so that nothing is
            // appended (the Raft core waits for the purge) before the log restarts where the
            // snapshot ends. Entries appended at the old log's end would keep offsets the
            // leader's log does not have.
            let past_log = {
                let table = lock(&core.table);
                let purged = lock(&core.purged).map(|(id, _)| id.index);
                table.last().is_none_or(|e| e.log_id.index < log_id.index)
                    && purged.is_none_or(|index| index < log_id.index)
            };
            if past_log {
                wait_for_install(&core, log_id);
            }
            let mut table = lock(&core.table);
            let installed = lock(&core.installed).filter(|(id, _)| *id == log_id);
            let offset = match (table.get(log_id.index), installed) {
                (Some(entry), _) => entry.end_offset(),
                (None, Some((_, offset))) => offset,
                (None, None) => {
                    // The install did not come in time: drop the entries, but leave the
                    // purge point on disk and the data to `snapshot_installed`, so a crash in
                    // between restarts with a log that matches the state machine. The marker
                    // keeps that restart from rebuilding entries from the data; the table is
                    // made whole on disk first, so that restart cuts only data no entry
                    // names, as before the marker.
                    tracing::warn!(dir = %core.dir.display(), %log_id, "purge past the log without its snapshot installed");
                    table.sync()?;
                    mark_replacing(&core)?;
                    core.beside(|| table.purge_upto(log_id.index))?;
                    *lock(&core.purged) = Some((log_id, core.log.end_offset().0));
                    return Ok(());
                }
            };
            purge_to(&core, &mut table, log_id, offset)
        })
        .await
        .map_err(sto)
    }
}

/// How long a purge past the log waits for the snapshot install it goes with. Installs are
/// small state (see `partition_sm`); this only bounds a failed one.
const INSTALL_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Waits, up to the store's install wait ([`INSTALL_WAIT`] unless set), until the snapshot
/// ending at `log_id` is installed.
fn wait_for_install(core: &Core, log_id: LogId<NodeId>) {
    let wait = std::time::Duration::from_millis(core.install_wait_ms.load(Ordering::Relaxed));
    let installed = lock(&core.installed);
    let _unused = core
        .install_done
        .wait_timeout_while(installed, wait, |i| !i.is_some_and(|(id, _)| id == log_id))
        .unwrap_or_else(|e| e.into_inner());
}

/// Purges the entries up to `log_id` and the log data before `offset` (the offset after it):
/// the purge point is on disk first, so a crash leaves at most data a restart deletes.
///
/// A purge that leaves no entry while the log does not end at `offset` is a snapshot
/// replacing the log: whatever data it holds from there on is not the leader's (a deposed
/// leader's records, in batches that need not even break at `offset`), and the log restarts
/// empty at `offset`.
fn purge_to(
    core: &Core,
    table: &mut EntryTable,
    log_id: LogId<NodeId>,
    offset: u64,
) -> io::Result<()> {
    // The table whole on disk before the purge point is (see `open`).
    table.sync()?;
    let keeps_entries = table.last().is_some_and(|e| e.log_id.index > log_id.index);
    let replaces_log = !keeps_entries && core.log.end_offset().0 != offset;
    if replaces_log {
        // A crash before the restart is done must not rebuild entries from the old data.
        mark_replacing(core)?;
    }
    let bytes = postcard::to_stdvec(&(log_id, offset)).map_err(io_err)?;
    core.beside(|| write_small_file(&core.dir.join("purged"), &bytes))?;
    *lock(&core.purged) = Some((log_id, offset));
    core.beside(|| table.purge_upto(log_id.index))?;
    if replaces_log {
        core.log.restart_at(Offset(offset)).map_err(io_err)?;
    } else {
        core.log.delete_before(Offset(offset)).map_err(io_err)?;
    }
    core.beside(|| remove_durably(&core.dir.join(REPLACING)))?;
    core.replacing.store(false, Ordering::Release);
    Ok(())
}

/// Marks a group whose log a snapshot is replacing (from a purge that leaves no entry until
/// the log restarts at the snapshot's end, or from a purge past the log's last entry that gave
/// up waiting for its install until that install's purge): `open` must cut the log's data
/// past the table instead of rebuilding entries from it. Removed once the purge is done, by
/// the first append the table then durably names, or by the `open` that cut.
const REPLACING: &str = "replacing";

/// Puts the [`REPLACING`] marker on disk.
fn mark_replacing(core: &Core) -> io::Result<()> {
    core.beside(|| write_small_file(&core.dir.join(REPLACING), &[]))?;
    core.replacing.store(true, Ordering::Release);
    Ok(())
}

/// Removes `path` if present, and makes the removal durable.
fn remove_durably(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    }
    sync_parent(path)
}

#[cfg(test)]
mod tests {
    use openraft::CommittedLeaderId;
    use strata_record::{BatchBuilder, Timestamp};
    use strata_storage::LogConfig;

    use super::*;
    use crate::types::{Batch, PartitionTc};

    fn open(dir: &Path) -> SegmentStore<PartitionTc> {
        let config = crate::replicated_log_config(LogConfig::default());
        let log = Log::open(dir.join("log"), config).unwrap();
        let store = SegmentStore::open(&dir.join("raft"), Arc::new(log)).unwrap();
        store.set_install_wait(std::time::Duration::from_millis(300));
        store
    }

    /// A fresh store whose node voted in `term`.
    async fn voted(term: u64) -> (tempfile::TempDir, SegmentStore<PartitionTc>) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path());
        store.save_vote(&Vote::new(term, 1)).await.unwrap();
        (dir, store)
    }

    fn id(term: u64, index: u64) -> LogId<NodeId> {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    fn data(term: u64, index: u64, records: usize) -> Entry<PartitionTc> {
        let mut builder = BatchBuilder::new();
        for i in 0..records {
            builder.push(Timestamp(i as i64), None, Some(b"value"), &[]);
        }
        Entry {
            log_id: id(term, index),
            payload: EntryPayload::Normal(Batch(builder.build(Offset(0)))),
        }
    }

    fn metas(store: &SegmentStore<PartitionTc>) -> Vec<EntryMeta> {
        let table = lock(&store.core.table);
        table.range(0, u64::MAX).cloned().collect()
    }

    fn blank(term: u64, index: u64) -> Entry<PartitionTc> {
        Entry { log_id: id(term, index), payload: EntryPayload::Blank }
    }

    fn table_len(dir: &Path) -> u64 {
        std::fs::metadata(dir.join("raft/entries")).unwrap().len()
    }

    /// A crash loses what the table had not fsynced: keep only its first `len` bytes.
    fn lose_table_past(dir: &Path, len: u64) {
        let file = std::fs::OpenOptions::new().write(true).open(dir.join("raft/entries")).unwrap();
        file.set_len(len).unwrap();
    }

    /// The table's records of data entries reach the disk only now and then: after a crash
    /// they are rebuilt from the batches, whose leader epoch holds each entry's term, up to
    /// the first batch without a term this replica could hold. Blank and membership entries,
    /// which only the table holds, are fsynced as they are appended, so indexes never shift.
    #[tokio::test]
    async fn data_entries_past_the_table_on_disk_are_rebuilt_from_the_log() {
        let (dir, mut store) = voted(3).await;
        store.append_now(vec![blank(1, 0), data(1, 1, 3)]).unwrap();
        let rest = store.append_inline(vec![data(2, 2, 2)]).unwrap();
        assert!(rest.is_empty(), "small entries are written in place");
        assert_eq!(store.append_inline(vec![blank(2, 3)]).unwrap().len(), 1, "never in place");
        store.append_now(vec![blank(2, 3)]).unwrap();
        let synced = table_len(dir.path());
        store.append_inline(vec![data(2, 4, 1), data(3, 5, 2)]).unwrap();
        store.append_now(vec![data(3, 6, 4)]).unwrap();
        store.core.log.flush().unwrap();
        let before = metas(&store);
        assert_eq!(before.len(), 7);
        drop(store);
        lose_table_past(dir.path(), synced);
        store = open(dir.path());
        assert_eq!(metas(&store), before, "rebuilt with indexes, terms, offsets and sizes");
        let end = store.core.log.end_offset();
        assert_eq!(end, Offset(12));
        // Batches whose term cannot be right are cut, with all after them: none (as an
        // earlier build wrote them), one below the previous entry's, one above the vote's.
        for epoch in [-1, 2, 4] {
            let synced = table_len(dir.path());
            store.core.log.append_in_epoch(&data(3, 7, 1).payload_batch(), epoch).unwrap();
            store.core.log.append_in_epoch(&data(3, 8, 1).payload_batch(), 3).unwrap();
            store.core.log.flush().unwrap();
            drop(store);
            lose_table_past(dir.path(), synced);
            let reopened = open(dir.path());
            assert_eq!(metas(&reopened), before, "epoch {epoch}");
            assert_eq!(reopened.core.log.end_offset(), end, "epoch {epoch}");
            store = reopened;
        }
    }

    /// A crash in a purge after its point reached the disk, with a table on disk that ends
    /// before it: the open purges the table too and rebuilds from the purge point.
    #[tokio::test]
    async fn a_purge_point_past_the_table_on_disk_opens_and_rebuilds_after_it() {
        let (dir, mut store) = voted(1).await;
        store.append_now(vec![blank(1, 0)]).unwrap();
        let synced = table_len(dir.path());
        store.append_inline((1..=5).map(|i| data(1, i, 2)).collect()).unwrap();
        store.core.log.flush().unwrap();
        let stale: Vec<u8> = std::fs::read(dir.path().join("raft/entries")).unwrap();
        let after = metas(&store)[4..].to_vec();
        store.purge(id(1, 3)).await.unwrap();
        assert_eq!(metas(&store), after);
        drop(store);
        std::fs::write(dir.path().join("raft/entries"), &stale[..synced as usize]).unwrap();
        let store = open(dir.path());
        assert_eq!(metas(&store), after);
        assert_eq!(store.core.log.start_offset(), Offset(6));
        assert_eq!(store.core.log.end_offset(), Offset(10));
    }

    /// A purge past the log's last entry that ran before its snapshot's install, then a
    /// crash: the log's data past the table belongs to the replaced log and is cut, not
    /// rebuilt into entries (its blank and membership entries are gone from the table).
    #[tokio::test]
    async fn a_log_being_replaced_by_a_snapshot_is_cut_not_rebuilt() {
        let (dir, mut store) = voted(2).await;
        store.append_now(vec![blank(1, 0)]).unwrap();
        store.append_inline((1..=3).map(|i| data(1, i, 1)).collect()).unwrap();
        store.core.log.flush().unwrap();
        store.purge(id(2, 10)).await.unwrap();
        assert!(dir.path().join("raft").join(REPLACING).exists());
        drop(store);
        let store = open(dir.path());
        assert!(metas(&store).is_empty());
        assert_eq!(store.core.log.end_offset(), Offset(0), "cut, as before the rebuild existed");
        assert!(!dir.path().join("raft").join(REPLACING).exists(), "the open that cut clears it");
        // Entries that come after such a purge, before the install, take the marker away as
        // soon as the table durably names them: a crash then keeps them.
        let mut store = store;
        store.append_now(vec![blank(2, 0)]).unwrap();
        store.append_inline(vec![data(2, 1, 2)]).unwrap();
        store.purge(id(2, 10)).await.unwrap();
        assert!(dir.path().join("raft").join(REPLACING).exists());
        assert_eq!(store.append_inline(vec![data(2, 11, 3)]).unwrap().len(), 1, "not in place");
        store.append_now(vec![data(2, 11, 3)]).unwrap();
        assert!(!dir.path().join("raft").join(REPLACING).exists());
        store.core.log.flush().unwrap();
        let kept = metas(&store);
        assert_eq!(kept.len(), 1);
        drop(store);
        let store = open(dir.path());
        assert_eq!(metas(&store), kept, "the entry after the purge survives the crash");
        // Without a crash the install's purge finishes the job and clears the marker.
        let mut store = store;
        store.append_inline(vec![data(2, 1, 1)]).unwrap();
        store.purge(id(2, 10)).await.unwrap();
        store.snapshot_installed(id(2, 10), 40).unwrap();
        assert_eq!(store.core.log.start_offset(), Offset(40));
        assert!(!dir.path().join("raft").join(REPLACING).exists());
    }

    /// A deposed leader's records its successor never had, replaced by a snapshot whose log
    /// goes on below their end, inside one of their batches: the log restarts empty there,
    /// whether the purge waits for the install, runs out of patience first, or runs after it,
    /// and after a crash between the purge point reaching the disk and the restart.
    #[tokio::test]
    async fn a_snapshot_below_the_log_end_restarts_the_log_at_its_end() {
        let stale = |store: &mut SegmentStore<PartitionTc>| {
            store.append_now(vec![blank(1, 0)]).unwrap();
            store.append_inline((1..=3).map(|i| data(1, i, 10)).collect()).unwrap();
            store.core.log.flush().unwrap();
            assert_eq!(store.core.log.end_offset(), Offset(30));
        };
        let restarted_at_15 = |store: &SegmentStore<PartitionTc>, dir: &Path| {
            assert!(metas(store).is_empty());
            let log = &store.core.log;
            assert_eq!((log.start_offset(), log.end_offset()), (Offset(15), Offset(15)));
            assert!(!dir.join("raft").join(REPLACING).exists());
        };
        // The purge first: it waits for the install, so nothing is appended in between.
        let (dir, mut store) = voted(2).await;
        stale(&mut store);
        // The wait ends when the install comes; a long one only keeps a busy machine from
        // ending it first.
        store.set_install_wait(std::time::Duration::from_secs(10));
        let installer = store.clone();
        let installing = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let install = std::thread::spawn({
            let installing = installing.clone();
            move || {
                std::thread::sleep(std::time::Duration::from_millis(30));
                installing.store(true, Ordering::SeqCst);
                installer.snapshot_installed(id(2, 5), 15).unwrap();
            }
        });
        store.purge(id(2, 5)).await.unwrap();
        assert!(installing.load(Ordering::SeqCst), "the purge returned before the install");
        restarted_at_15(&store, dir.path());
        install.join().unwrap();
        // An install that does not come in time: the purge drops the entries and leaves the
        // restart to the install, whenever it comes.
        let (dir, mut store) = voted(2).await;
        stale(&mut store);
        store.purge(id(2, 5)).await.unwrap();
        store.snapshot_installed(id(2, 5), 15).unwrap();
        restarted_at_15(&store, dir.path());
        store.append_now(vec![data(2, 6, 2)]).unwrap();
        store.core.log.flush().unwrap();
        drop(store);
        let store = open(dir.path());
        assert_eq!(metas(&store)[0].offset, 15);
        assert_eq!(store.core.log.end_offset(), Offset(17));
        // The install first, then the purge.
        let (dir, mut store) = voted(2).await;
        stale(&mut store);
        store.snapshot_installed(id(2, 5), 15).unwrap();
        store.purge(id(2, 5)).await.unwrap();
        restarted_at_15(&store, dir.path());
        // A crash with the purge point on disk and the old data still there.
        let (dir, mut store) = voted(2).await;
        stale(&mut store);
        store.purge(id(2, 5)).await.unwrap();
        drop(store);
        let point = postcard::to_stdvec(&(id(2, 5), 15u64)).unwrap();
        write_small_file(&dir.path().join("raft/purged"), &point).unwrap();
        let store = open(dir.path());
        restarted_at_15(&store, dir.path());
    }

    trait PayloadBatch {
        fn payload_batch(&self) -> bytes::Bytes;
    }

    impl PayloadBatch for Entry<PartitionTc> {
        fn payload_batch(&self) -> bytes::Bytes {
            match &self.payload {
                EntryPayload::Normal(batch) => batch.0.clone(),
                _ => unreachable!("a data entry"),
            }
        }
    }

    #[test]
    fn the_committed_frame_round_trips_and_damage_reads_as_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("committed");
        let mut file = CommittedFile::new(path.clone());
        assert_eq!(file.read(), None, "no file yet");
        file.open().unwrap();
        let id = |index| Some(LogId::new(CommittedLeaderId::new(u64::MAX, 7), index));
        file.save(&id(u64::MAX)).unwrap();
        file.save(&id(3)).unwrap();
        assert_eq!(CommittedFile::new(path.clone()).read(), id(3), "the last save, in place");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), COMMITTED_FRAME as u64);
        file.save(&None).unwrap();
        assert_eq!(file.read(), None);
        file.save(&id(9)).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[6] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(file.read(), None, "a damaged frame costs only re-applying");
        // The earlier format (bare postcard) is not mistaken for a frame.
        std::fs::write(&path, postcard::to_stdvec(&id(9)).unwrap()).unwrap();
        assert_eq!(file.read(), None);
    }

    /// Every file of `dir` with its contents.
    fn files(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap())
            .map(|e| {
                (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap())
            })
            .collect()
    }

    /// A replica moved away and back reuses its directory's path. Once its log is retired,
    /// the old store and state machine write nothing there, however late their tasks run
    /// (openraft's state machine worker finishes a queued snapshot install after shutdown).
    #[tokio::test]
    async fn a_retired_store_never_touches_the_store_that_takes_its_path() {
        use openraft::RaftSnapshotBuilder;
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("0.g7");
        let mut old = open(&dir);
        let high_watermark = Arc::new(tokio::sync::watch::channel(0).0);
        let mut sm = crate::partition_sm::PartitionSm::new(old.clone(), high_watermark).unwrap();
        old.save_vote(&Vote::new(1, 1)).await.unwrap();
        old.append_now(vec![blank(1, 0)]).unwrap();
        old.append_now((1..=4).map(|i| data(1, i, 2)).collect()).unwrap();
        old.core.log.flush().unwrap();
        // Moved away (shut down, log retired, directory to the trash), then back.
        old.core.log.retire();
        std::fs::rename(&dir, root.path().join("trash")).unwrap();
        let mut new = open(&dir);
        new.save_vote(&Vote::new(2, 2)).await.unwrap();
        new.append_now(vec![blank(2, 0)]).unwrap();
        let before = files(&dir.join("raft"));
        // What the old incarnation's late tasks would do: each writes by path.
        assert!(old.save_vote(&Vote::new(1, 1)).await.is_err(), "vote");
        assert!(old.save_committed(Some(id(1, 2))).await.is_err(), "committed, opened by path");
        assert!(old.truncate(id(1, 3)).await.is_err(), "truncate (the log refuses first)");
        assert!(old.purge(id(1, 2)).await.is_err(), "purged, entries rewritten");
        assert!(old.purge(id(2, 10)).await.is_err(), "replacing (past the log)");
        assert!(sm.build_snapshot().await.is_err(), "snapshot");
        assert_eq!(files(&dir.join("raft")), before, "the new store's files are untouched");
        drop(new);
        let reopened = open(&dir);
        assert_eq!(metas(&reopened).iter().map(|m| m.log_id).collect::<Vec<_>>(), [id(2, 0)]);
    }
}
