//! [`Log`]: one partition's append-only log, the storage contract the broker and the
//! replication layer drive.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use strata_record::{Offset, RecordBatch, Timestamp};

use crate::checkpoint::{self, Checkpoint, sync_dir};
use crate::config::{Durability, LogConfig};
use crate::error::{IoContext, Result, StorageError};
use crate::read::{self, collect_batches, offset_for_time, segment_for};
use crate::recovery::{self, CLEAN_SHUTDOWN_FILE, remove_segment_files};
use crate::segment::{
    ActiveSegment, LOG_SUFFIX, ScanMode, SealedSegment, SegmentRef, segment_file,
};
use crate::sync_group::{SyncGroup, Wait};
use crate::tail_mark::{self, TailMark};
use crate::write_ahead::Frame;

const LOCK_FILE: &str = ".lock";

/// Where an appended batch landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: Offset,
    pub last_offset: Offset,
    pub max_timestamp: Timestamp,
}

/// Batches read, and the same bytes as runs (see [`Log::read_runs_until`]).
#[derive(Debug, Default)]
pub struct Runs {
    /// Whole batches in offset order, each a slice of its segment map.
    pub batches: Vec<Bytes>,
    /// The same batches, those that follow each other in one segment as one slice.
    pub runs: Vec<Bytes>,
}

/// What a retention pass removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetentionOutcome {
    pub segments_deleted: usize,
    pub bytes_deleted: u64,
}

/// One partition's log: a directory of segments, appended at the end, read from anywhere
/// between its start and end offsets.
///
/// All methods take `&self`; a `Log` is shared between threads. Appends, truncation and
/// retention serialise on a write lock; reads take a read lock only long enough to slice the
/// maps, then check CRCs outside it. Fsyncs run outside the write lock, one at a time, so
/// appends that arrive during an fsync share the next one (group commit).
#[derive(Debug)]
pub struct Log {
    dir: PathBuf,
    /// Swapped whole by [`Log::set_config`]; each operation works on one snapshot.
    config: RwLock<Arc<LogConfig>>,
    state: RwLock<State>,
    /// Serialises fsyncs and remembers when the last one finished.
    sync: Mutex<Instant>,
    /// Every offset below this is on disk.
    durable_end: AtomicU64,
    /// Set once, by the first failed write or fsync; from then on writes are refused.
    failure: OnceLock<String>,
    /// Set by [`Log::retire`]: the log's directory is being moved away, and nothing may be
    /// written at its path any more.
    retired: AtomicBool,
    /// Read-held while a file that lives and dies with this log's directory (a replica's Raft
    /// files) is written by path, write-held by [`Log::retire`]: see [`Log::write_beside`].
    beside: RwLock<()>,
    /// The node-wide group commit this log's fsyncs go through, if it joined one.
    sync_group: OnceLock<Arc<SyncGroup>>,
    /// Whether the configuration in force fsyncs every append: read on every append through
    /// [`Log::shares_fsyncs`] and [`Log::writer_fsyncs_every_append`], so kept here rather
    /// than looked up in `config`.
    every_append: AtomicBool,
    /// Names this log in write-ahead frames (`log.id`).
    id: u64,
    /// How far the active segment is durable, by fsync or in the write-ahead file: a
    /// write-ahead round writes the bytes after it. Only the group's thread moves it.
    logged: Mutex<LoggedMark>,
    /// The tail mark last saved (`tail.mark`) and the generation that invalidations bump.
    tail_mark: Mutex<TailMarkState>,
    /// Held (flock) for the log's life; released when the file is closed.
    _lock: File,
}

/// A point in the active segment up to which its bytes are durable.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LoggedMark {
    /// The active segment's base: a roll (which fsyncs the old one) starts a new segment whose
    /// bytes are all still to be logged.
    segment: Offset,
    position: u64,
    offset: Offset,
}

/// What [`Log::save_tail_mark`] knows of the marks it saved.
#[derive(Debug, Default)]
struct TailMarkState {
    /// Bumped (with the file deleted) by every truncation or restart: a mark drafted before
    /// one is not written.
    generation: u64,
    /// The mark on disk, if this process wrote one or its recovery started at one.
    saved: Option<TailMark>,
}

/// A tail mark drafted by [`Log::draft_tail_mark`], to be committed once its files are durable:
/// by [`TailMarkDraft::commit`] (an fsync of each file) or, for many logs at once, by
/// [`crate::FilesystemSync::commit_tail_marks`] (one `syncfs`).
#[derive(Debug)]
pub struct TailMarkDraft<'a> {
    log: &'a Log,
    generation: u64,
    mark: TailMark,
    segment: (Arc<File>, Arc<Path>),
    indexes: [(File, PathBuf); 2],
}

impl TailMarkDraft<'_> {
    /// Fsyncs the segment and its index files, then writes the mark. Returns false, writing
    /// nothing, if a truncation or restart came between the draft and now.
    pub fn commit(self) -> Result<bool> {
        self.finish(false)
    }

    pub(crate) fn log_dir(&self) -> &Path {
        &self.log.dir
    }

    /// `synced`: a `syncfs` of the log's filesystem, started after the draft, succeeded.
    pub(crate) fn finish(self, synced: bool) -> Result<bool> {
        let log = self.log;
        if log.tail_mark_guard().generation != self.generation {
            return Ok(false);
        }
        if !synced {
            {
                // The handle the log's own fsyncs use: a write-back error is reported to one
                // caller only, so this fsync is serialised with theirs and, like them, poisons
                // the log on failure before anyone else can call the bytes durable.
                let _sync = log.sync_guard();
                log.ensure_writable()?;
                let (file, path) = &self.segment;
                file.sync_data().at(path).map_err(|e| log.fail(e))?;
            }
            for (index, path) in &self.indexes {
                if let Err(err) = index.sync_data() {
                    log.write_state().active.forget_persisted_index();
                    return Err(err).at(path);
                }
            }
        }
        let mut marks = log.tail_mark_guard();
        // A failed fsync since the draft (here or anywhere) leaves nothing to vouch for, and a
        // log whose directory was moved away (its topic deleted) must not write into the one
        // that may now have its name.
        if marks.generation != self.generation || !log.is_writable() || !log.still_home() {
            return Ok(false);
        }
        // Still under the guard: a truncation that lowers the durable end waits for it.
        log.durable_end.fetch_max(self.mark.next.0, Ordering::AcqRel);
        tail_mark::write(&log.dir, &self.mark)?;
        marks.saved = Some(self.mark);
        Ok(true)
    }
}

/// The bytes of a log that a write-ahead round is to write.
#[derive(Debug)]
pub(crate) struct Unlogged {
    pub(crate) frame: Frame,
    pub(crate) mark: LoggedMark,
}

#[derive(Debug)]
struct State {
    sealed: Vec<SealedSegment>,
    active: ActiveSegment,
    log_start: Offset,
}

impl State {
    fn end(&self) -> Offset {
        self.active.core.next
    }

    fn segments(&self) -> Vec<SegmentRef<'_>> {
        self.segments_from(Offset::ZERO)
    }

    /// The segment holding `offset` and every later one: what a read from `offset` walks,
    /// without listing a long log's older segments on every fetch.
    fn segments_from(&self, offset: Offset) -> Vec<SegmentRef<'_>> {
        let first = self.sealed.partition_point(|s| s.core.base <= offset).saturating_sub(1);
        self.sealed[first..]
            .iter()
            .map(SealedSegment::as_ref)
            .chain([self.active.as_ref()])
            .collect()
    }

    fn checkpoint(&self) -> Checkpoint {
        Checkpoint { log_start: self.log_start, recovery_point: self.active.core.base }
    }

    /// The end of the active segment, as a mark.
    fn end_mark(&self) -> LoggedMark {
        LoggedMark {
            segment: self.active.core.base,
            position: self.active.core.size,
            offset: self.end(),
        }
    }

    fn check_readable(&self, offset: Offset) -> Result<()> {
        if offset < self.log_start || offset > self.end() {
            return Err(StorageError::OffsetOutOfRange {
                offset,
                start: self.log_start,
                end: self.end(),
            });
        }
        Ok(())
    }
}

impl Log {
    /// Opens the log in `dir`, creating the directory if needed, and recovers it: see
    /// `docs/on-disk-format.md` for what is trusted and what is scanned. Fails with
    /// [`StorageError::Locked`] if the directory is already open.
    pub fn open(dir: impl AsRef<Path>, config: LogConfig) -> Result<Log> {
        config.validate()?;
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir).at(&dir)?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .at(&lock_path)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(StorageError::Locked { path: dir }),
            Err(TryLockError::Error(e)) => return Err(e).at(&lock_path),
        }
        let recovered = recovery::open(&dir, &config)?;
        // Bytes a crashed process wrote may still sit in the page cache only.
        recovered.active.sync_handle().sync_data().at(&recovered.active.core.log_path)?;
        let id = crate::log_id::load_or_create(&dir)?;
        let end = recovered.active.core.next;
        let state = State {
            sealed: recovered.sealed,
            active: recovered.active,
            log_start: recovered.log_start,
        };
        // Everything up to here is durable: the active segment was just fsynced.
        let logged = state.end_mark();
        let every_append = config.durability == Durability::EveryAppend;
        tracing::debug!(dir = %dir.display(), start = %recovered.log_start, end = %end, "log opened");
        Ok(Log {
            dir,
            config: RwLock::new(Arc::new(config)),
            state: RwLock::new(state),
            sync: Mutex::new(Instant::now()),
            durable_end: AtomicU64::new(end.0),
            failure: OnceLock::new(),
            retired: AtomicBool::new(false),
            beside: RwLock::new(()),
            sync_group: OnceLock::new(),
            every_append: AtomicBool::new(every_append),
            id,
            logged: Mutex::new(logged),
            tail_mark: Mutex::new(TailMarkState { generation: 0, saved: recovered.tail_mark }),
            _lock: lock,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Makes this log's waits through [`Log::when_durable`] (with
    /// [`Durability::EveryAppend`]) go to `group`, shared with the other logs waiting at the
    /// same time. Returns false, and changes nothing, if the log is on another filesystem than
    /// the group's or already joined one. Only for logs whose suffix is never truncated (a
    /// single node's partitions): a round does not see a truncation between a wait and its
    /// `syncfs`, and a write-ahead replay would bring truncated records back.
    pub fn join_sync_group(&self, group: Arc<SyncGroup>) -> bool {
        group.covers(&self.dir) && self.sync_group.set(group).is_ok()
    }

    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    fn logged_guard(&self) -> MutexGuard<'_, LoggedMark> {
        self.logged.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The bytes of the active segment that are not yet known durable, for a write-ahead
    /// round: `None` if there are none. Slices of the segment's map, no copy.
    pub(crate) fn unlogged(&self) -> Result<Option<Unlogged>> {
        self.ensure_writable()?;
        let logged = *self.logged_guard();
        let state = self.read_state();
        let end = state.end_mark();
        let from = if logged.segment == end.segment && logged.position <= end.position {
            logged
        } else {
            // Rolled (the old segment was fsynced) or rewritten: the whole segment.
            LoggedMark { position: 0, offset: end.segment, ..end }
        };
        if from.position == end.position {
            return Ok(None);
        }
        let mapped = state.active.core.data.view(end.position)?;
        let payload = mapped.slice(from.position as usize..end.position as usize);
        Ok(Some(Unlogged {
            frame: Frame { log_id: self.id, base: from.offset, payload },
            mark: end,
        }))
    }

    /// A write-ahead round made the bytes up to `mark` durable.
    pub(crate) fn logged_through(&self, mark: LoggedMark) -> Result<()> {
        self.ensure_writable()?;
        *self.logged_guard() = mark;
        self.durable_end.fetch_max(mark.offset.0, Ordering::AcqRel);
        Ok(())
    }

    /// Appends what a write-ahead frame holds past this log's end: batches that end below it
    /// are already here, one that starts at it is appended (its CRC checked), and one that
    /// starts past it means records are missing, which is refused. Returns how many batches
    /// were appended; the caller flushes them.
    pub(crate) fn replay_frame(
        &self,
        base: Offset,
        payload: &[u8],
        source: &Path,
    ) -> Result<usize> {
        let mut appended = 0;
        let mut position = 0usize;
        while position < payload.len() {
            let rest = &payload[position..];
            let header = strata_record::BatchHeader::parse(rest)?;
            let batch = rest.get(..header.total_len()).ok_or_else(|| StorageError::Corrupt {
                path: source.to_path_buf(),
                position: position as u64,
                reason: format!("write-ahead frame at offset {base} ends inside a batch"),
            })?;
            let end = self.end_offset();
            if header.last_offset() < end {
                // Already in the segment.
            } else if header.base_offset() == end {
                // The CRC is checked; the size limit is not: the batch was accepted once, and
                // the topic's limit may have been lowered since.
                RecordBatch::new(batch)?;
                self.ensure_writable()?;
                self.write_in(&mut self.write_state(), batch, header, true)?;
                appended += 1;
            } else if header.base_offset() < end {
                return Err(StorageError::Corrupt {
                    path: source.to_path_buf(),
                    position: position as u64,
                    reason: format!(
                        "a write-ahead batch at offsets {}..={} does not line up with the end of log {} at {end}",
                        header.base_offset(),
                        header.last_offset(),
                        self.dir.display()
                    ),
                });
            } else {
                return Err(StorageError::Corrupt {
                    path: self.dir.clone(),
                    position: 0,
                    reason: format!(
                        "the log ends at offset {end} but the write-ahead file {} holds offsets from {} on: records in between are lost",
                        source.display(),
                        header.base_offset()
                    ),
                });
            }
            position += batch.len();
        }
        Ok(appended)
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<LogConfig> {
        self.config.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Changes the configuration of an open log (a topic's settings were altered). Sizes and
    /// ages apply from the next append or retention pass; segments already written keep their
    /// size.
    pub fn set_config(&self, config: LogConfig) -> Result<()> {
        config.validate()?;
        let every_append = config.durability == Durability::EveryAppend;
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
        self.every_append.store(every_append, Ordering::Release);
        Ok(())
    }

    fn read_state(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_state(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    fn sync_guard(&self) -> MutexGuard<'_, Instant> {
        self.sync.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// First offset that can be read.
    pub fn start_offset(&self) -> Offset {
        self.read_state().log_start
    }

    /// Offset the next appended record gets.
    pub fn end_offset(&self) -> Offset {
        self.read_state().end()
    }

    /// Every offset below this has been fsynced.
    pub fn durable_end_offset(&self) -> Offset {
        Offset(self.durable_end.load(Ordering::Acquire))
    }

    /// Bytes in all segment files.
    pub fn size_bytes(&self) -> u64 {
        let state = self.read_state();
        state.sealed.iter().map(|s| s.core.size).sum::<u64>() + state.active.core.size
    }

    pub fn segment_count(&self) -> usize {
        self.read_state().sealed.len() + 1
    }

    /// Base offsets of the segments, oldest first.
    pub fn segment_bases(&self) -> Vec<Offset> {
        self.read_state().segments().iter().map(|s| s.core.base).collect()
    }

    fn ensure_writable(&self) -> Result<()> {
        if self.retired.load(Ordering::Acquire) {
            return Err(StorageError::Retired { dir: self.dir.clone() });
        }
        match self.failure.get() {
            Some(reason) => {
                Err(StorageError::Failed { dir: self.dir.clone(), reason: reason.clone() })
            }
            None => Ok(()),
        }
    }

    /// Records the first write failure; the log refuses writes from then on, because after a
    /// failed write or fsync the kernel's view of the file can no longer be trusted.
    fn fail(&self, err: StorageError) -> StorageError {
        tracing::error!(dir = %self.dir.display(), error = %err, "log failed; refusing further writes");
        let _ = self.failure.set(err.to_string());
        err
    }

    /// Appends a batch, giving it the next offsets (its base offset field is overwritten on
    /// the way to disk). The batch must be one whole, valid RecordBatch v2; its header and CRC
    /// are checked here, its records are the caller's to validate.
    ///
    /// An error from the write or the fsync means the log has failed: the batch may or may not
    /// be on disk (and may be readable until the log is reopened), and every later write is
    /// refused. Reopening recovers to what is really on disk.
    pub fn append(&self, batch: &[u8]) -> Result<AppendInfo> {
        self.append_batch(batch, false, None)
    }

    /// Appends a batch at the base offset it already carries, which must equal the log's end
    /// offset: the replication layer uses this to copy a leader's log exactly.
    pub fn append_at(&self, batch: &[u8]) -> Result<AppendInfo> {
        self.append_batch(batch, true, None)
    }

    /// [`Log::append`] for a batch the caller already checked: a `RecordBatch` can only be made
    /// by validating its header, length and CRC, so the log skips a second CRC pass.
    pub fn append_checked(&self, batch: &RecordBatch<'_>) -> Result<AppendInfo> {
        let info = self.write_header(batch.as_bytes(), *batch.header(), false)?;
        self.make_durable(&info)?;
        Ok(info)
    }

    /// [`Log::append`] with the batch's leader epoch field set to `epoch` on disk: a replica
    /// records each entry's Raft term there (Kafka's meaning), so entries can be rebuilt from
    /// the log alone.
    pub fn append_in_epoch(&self, batch: &[u8], epoch: i32) -> Result<AppendInfo> {
        self.append_batch(batch, false, Some(epoch))
    }

    /// The write half of [`Log::append_checked`], for a batch validated earlier
    /// (`RecordBatch::new`) whose `header` the caller kept (its leader epoch is the one
    /// written): the batch is in the log (readable, not yet durable) when this returns, and
    /// [`Log::make_durable`] finishes the append. Splitting them lets a caller order its
    /// writes under its own lock and wait for the fsync outside it, so writes that arrive
    /// during an fsync share the next one.
    pub fn write_validated(
        &self,
        batch: &[u8],
        header: strata_record::BatchHeader,
    ) -> Result<AppendInfo> {
        debug_assert_eq!(header.total_len(), batch.len(), "the header is this batch's");
        self.write_header(batch, header, false)
    }

    /// Whether [`Log::when_durable`] hands waits to a [`SyncGroup`] (and returns at once)
    /// rather than fsyncing on the caller's thread.
    pub fn shares_fsyncs(&self) -> bool {
        self.shared_sync_group().is_some()
    }

    /// Whether the thread that writes an append must fsync it before it is answered: the log
    /// fsyncs every append ([`Durability::EveryAppend`]) and not through a sync group. Otherwise
    /// its fsyncs go to the group ([`Log::shares_fsyncs`]), or happen only on flush, roll and
    /// close ([`Durability::Never`]; a roll is not written by [`Log::try_write_validated`]),
    /// or once an interval has passed ([`Durability::Interval`]: [`Log::interval_fsync_due`]
    /// tells when).
    pub fn writer_fsyncs_every_append(&self) -> bool {
        self.every_append.load(Ordering::Acquire) && self.sync_group.get().is_none()
    }

    /// Whether [`Log::make_durable`] would fsync `written` now: with [`Durability::Interval`],
    /// the interval has passed since the last fsync, which did not cover `written`. False while
    /// an fsync is in flight (it is recent by definition). Takes no lock that a write or a
    /// segment roll holds, and only atomics for a log that fsyncs every append (the default,
    /// which asks on every append written on the async runtime).
    pub fn interval_fsync_due(&self, written: &AppendInfo) -> bool {
        if self.every_append.load(Ordering::Acquire) {
            return false;
        }
        let Durability::Interval(every) = self.config().durability else { return false };
        let Ok(last_sync) = self.sync.try_lock() else { return false };
        last_sync.elapsed() >= every && self.durable_end_offset() <= written.last_offset
    }

    /// The group this log's waits go to: the one it joined, while it fsyncs every append.
    fn shared_sync_group(&self) -> Option<&Arc<SyncGroup>> {
        self.sync_group.get().filter(|_| self.every_append.load(Ordering::Acquire))
    }

    /// Like [`Log::make_durable`], but reports through `done`. In a [`SyncGroup`] (see
    /// [`Log::shares_fsyncs`]) this returns at once and `done` is called from the group's
    /// thread when the batch is on disk; otherwise `done` is called here, after the fsync.
    pub fn when_durable(
        self: &Arc<Self>,
        info: &AppendInfo,
        done: impl FnOnce(Result<()>) + Send + 'static,
    ) {
        let target = info.last_offset.plus(1);
        let Some(group) = self.shared_sync_group() else { return done(self.make_durable(info)) };
        if self.durable_end.load(Ordering::Acquire) >= target.0 {
            return done(Ok(()));
        }
        if let Err(err) = self.ensure_writable() {
            return done(Err(err));
        }
        // Everything below the end is written: a round that starts after this covers it.
        let end = self.end_offset();
        group.enqueue(Wait { log: self.clone(), target, end, done: Box::new(done) });
    }

    /// Records that a `syncfs` which started once the log reached `end` succeeded.
    pub(crate) fn covered_by_sync(&self, end: Offset) -> Result<()> {
        self.ensure_writable()?;
        self.durable_end.fetch_max(end.0, Ordering::AcqRel);
        Ok(())
    }

    /// Applies the log's durability setting to a written batch: with `EveryAppend`, returns
    /// once it is on disk (sharing an fsync with concurrent callers).
    pub fn make_durable(&self, info: &AppendInfo) -> Result<()> {
        match self.config().durability {
            Durability::EveryAppend => self.sync_through(info.last_offset.plus(1)),
            Durability::Interval(every) => self.sync_if_older_than(every),
            Durability::Never => Ok(()),
        }
    }

    /// `epoch`: the leader epoch to write over the batch's own, if any.
    fn append_batch(
        &self,
        batch: &[u8],
        keep_offset: bool,
        epoch: Option<i32>,
    ) -> Result<AppendInfo> {
        // Limits before work: an oversized batch is refused before its CRC is computed.
        self.check_appendable(batch.len())?;
        let mut header = *RecordBatch::new(batch)?.header();
        if let Some(epoch) = epoch {
            header.partition_leader_epoch = epoch;
        }
        // Checked above: straight to the write (which checks writability again under the lock).
        let info = self.write_in(&mut self.write_state(), batch, header, keep_offset)?;
        self.make_durable(&info)?;
        Ok(info)
    }

    fn check_appendable(&self, len: usize) -> Result<()> {
        self.ensure_writable()?;
        let limit = self.config().max_batch_bytes;
        if len > limit {
            return Err(StorageError::BatchTooLarge { size: len, limit });
        }
        Ok(())
    }

    fn write_header(
        &self,
        batch: &[u8],
        header: strata_record::BatchHeader,
        keep_offset: bool,
    ) -> Result<AppendInfo> {
        self.check_appendable(batch.len())?;
        self.write_in(&mut self.write_state(), batch, header, keep_offset)
    }

    /// [`Log::write_validated`] if it can be done without waiting: `None` when the log is
    /// busy (another write, a roll, retention) or the batch would roll the segment (an fsync
    /// and new files). Lets a caller on an async runtime write in place when that is only a
    /// copy into the page cache, and go to a blocking thread otherwise.
    pub fn try_write_validated(
        &self,
        batch: &[u8],
        header: strata_record::BatchHeader,
    ) -> Option<Result<AppendInfo>> {
        if let Err(err) = self.check_appendable(batch.len()) {
            return Some(Err(err));
        }
        let mut state = match self.state.try_write() {
            Ok(state) => state,
            Err(std::sync::TryLockError::WouldBlock) => return None,
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
        };
        if self.needs_roll(&state.active, batch.len(), header.offset_count()) {
            return None;
        }
        Some(self.write_in(&mut state, batch, header, false))
    }

    /// Writes a batch at the end of the log, rolling the segment first if it is due.
    fn write_in(
        &self,
        state: &mut State,
        batch: &[u8],
        header: strata_record::BatchHeader,
        keep_offset: bool,
    ) -> Result<AppendInfo> {
        // Again under the write lock, which `retire` takes: an append that passed the first
        // check and then waited behind `retire` must not be acknowledged.
        self.ensure_writable()?;
        let info = {
            let end = state.end();
            let base = if keep_offset { header.base_offset() } else { end };
            if base != end {
                return Err(StorageError::NonSequentialOffset { got: base, expected: end });
            }
            if base.0.checked_add(header.offset_count()).is_none_or(|next| next > i64::MAX as u64) {
                return Err(StorageError::OffsetOutOfRange {
                    offset: base,
                    start: state.log_start,
                    end,
                });
            }
            if self.needs_roll(&state.active, batch.len(), header.offset_count()) {
                self.roll(state)?;
            }
            state.active.append(base, &header, batch).map_err(|e| self.fail(e))?;
            AppendInfo {
                base_offset: base,
                last_offset: base.plus(header.offset_count() - 1),
                max_timestamp: header.max_timestamp(),
            }
        };
        Ok(info)
    }

    fn needs_roll(&self, active: &ActiveSegment, incoming: usize, offsets: u64) -> bool {
        let config = self.config();
        !active.is_empty()
            && (active.core.size + incoming as u64 > config.segment_bytes
                || config.segment_age.is_some_and(|age| active.age() >= age)
                || active.index_full()
                || offsets > active.offsets_left())
    }

    /// Seals the active segment (fsyncing it) and starts a new one at the end offset.
    fn roll(&self, state: &mut State) -> Result<()> {
        // Under the write lock, which `retire` takes: no new file at a path given up.
        self.ensure_writable()?;
        // The fsync comes first and leaves the log as it was if it fails.
        state.active.prepare_seal().map_err(|e| self.fail(e))?;
        let next = state.end();
        let fresh = ActiveSegment::create(&self.dir, next, &self.config())?;
        sync_dir(&self.dir)?;
        let old = std::mem::replace(&mut state.active, fresh);
        let sealed = old.seal().map_err(|e| self.fail(e))?;
        state.sealed.push(sealed);
        checkpoint::write(&self.dir, state.checkpoint()).map_err(|e| self.fail(e))?;
        self.durable_end.fetch_max(next.0, Ordering::AcqRel);
        tracing::debug!(dir = %self.dir.display(), base = %next, "rolled segment");
        Ok(())
    }

    /// Makes every offset below `target` durable with this log's own fsync, shared with
    /// concurrent callers.
    pub(crate) fn sync_through(&self, target: Offset) -> Result<()> {
        if self.durable_end.load(Ordering::Acquire) >= target.0 {
            return Ok(());
        }
        let mut last_sync = self.sync_guard();
        if self.durable_end.load(Ordering::Acquire) >= target.0 {
            return Ok(()); // someone else's fsync covered us while we waited
        }
        self.sync_locked(&mut last_sync)
    }

    fn sync_locked(&self, last_sync: &mut Instant) -> Result<()> {
        // After a failed write or fsync a later fsync may succeed although the data it should
        // cover was dropped (Linux clears the error once reported): never call that durable.
        self.ensure_writable()?;
        let (file, end, path) = {
            let state = self.read_state();
            (state.active.sync_handle(), state.end_mark(), state.active.core.log_path.clone())
        };
        crate::observe::timed_fsync(|| file.sync_data()).at(&path).map_err(|e| self.fail(e))?;
        self.durable_end.fetch_max(end.offset.0, Ordering::AcqRel);
        // A write-ahead round need not write these bytes again.
        *self.logged_guard() = end;
        *last_sync = Instant::now();
        Ok(())
    }

    /// Fsyncs if `every` has passed since the last fsync. Never waits behind an fsync in
    /// flight: that one is recent by definition.
    fn sync_if_older_than(&self, every: Duration) -> Result<()> {
        let mut last_sync = match self.sync.try_lock() {
            Ok(guard) => guard,
            Err(std::sync::TryLockError::WouldBlock) => return Ok(()),
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
        };
        if last_sync.elapsed() >= every && self.durable_end_offset() < self.end_offset() {
            self.sync_locked(&mut last_sync)?;
        }
        Ok(())
    }

    /// Fsyncs everything appended so far.
    pub fn flush(&self) -> Result<()> {
        self.ensure_writable()?;
        self.sync_through(self.end_offset())
    }

    /// With [`Durability::Interval`], fsyncs if the interval has passed since the last fsync and
    /// something is pending. The owner calls this from a timer so that an idle log is flushed
    /// too. A no-op in the other modes.
    pub fn flush_if_due(&self) -> Result<()> {
        match self.config().durability {
            Durability::Interval(every) => {
                self.ensure_writable()?;
                self.sync_if_older_than(every)
            }
            _ => Ok(()),
        }
    }

    /// Whole batches starting with the one that holds `from`, up to `max_bytes` (at least one
    /// batch is returned if any exists, whatever its size). Each batch is a `Bytes` slice of the
    /// segment map: no copy. Every batch is CRC-checked by this process before it is served:
    /// on its way in if it appended it, by the recovery scan if that covered it, otherwise
    /// here, where a corrupt batch is never returned (an error if it is the first, otherwise
    /// the read stops before it).
    pub fn read(&self, from: Offset, max_bytes: usize) -> Result<Vec<Bytes>> {
        self.read_until(from, Offset(u64::MAX), max_bytes)
    }

    /// Like [`Log::read`], but never returns a batch that holds `until` or anything past it:
    /// the broker passes the high watermark so consumers see only committed records.
    pub fn read_until(&self, from: Offset, until: Offset, max_bytes: usize) -> Result<Vec<Bytes>> {
        Ok(self.checked_slices(from, until, max_bytes)?.into_iter().map(|s| s.bytes).collect())
    }

    /// Like [`Log::read_until`], and the same bytes as runs too: batches that follow each
    /// other in one segment as one slice of its map (a fetch answer sends a run of small
    /// batches as one piece, without copying them together).
    pub fn read_runs_until(&self, from: Offset, until: Offset, max_bytes: usize) -> Result<Runs> {
        let slices = self.checked_slices(from, until, max_bytes)?;
        let runs = read::runs(&slices);
        Ok(Runs { batches: slices.into_iter().map(|s| s.bytes).collect(), runs })
    }

    fn checked_slices(
        &self,
        from: Offset,
        until: Offset,
        max_bytes: usize,
    ) -> Result<Vec<read::BatchSlice>> {
        let slices = {
            let state = self.read_state();
            state.check_readable(from)?;
            if from == state.end() {
                return Ok(Vec::new());
            }
            collect_batches(&state.segments_from(from), from, until, max_bytes)?
        };
        read::verify(slices)
    }

    /// The first offset (at or after the log start) whose record timestamp is at or after
    /// `timestamp`, or `None` if every record is older (Kafka's ListOffsets by timestamp).
    pub fn offset_for_time(&self, timestamp: Timestamp) -> Result<Option<Offset>> {
        let state = self.read_state();
        offset_for_time(&state.segments(), timestamp.0, state.log_start)
    }

    /// Removes every record at or after `offset`, which must be the first offset of a batch
    /// (Raft truncates conflicting entries this way). The segment that holds `offset` is
    /// rewritten to its kept prefix under a new inode, so batches already handed out stay valid.
    pub fn truncate_from(&self, offset: Offset) -> Result<()> {
        let _sync = self.sync_guard();
        let mut state = self.write_state();
        self.ensure_writable()?; // under the locks `retire` takes
        if offset == state.end() {
            return Ok(());
        }
        state.check_readable(offset)?;
        let segments = state.segments();
        let index = segment_for(&segments, offset);
        let target = segments[index];
        let position = batch_position(target, offset)?;
        let base = target.core.base;
        let later: Vec<Offset> = segments[index + 1..].iter().map(|s| s.core.base).collect();
        drop(segments);
        self.invalidate_tail_mark()?;
        // Lower the recovery point first: a crash from here on rescans this segment.
        checkpoint::write(
            &self.dir,
            Checkpoint { log_start: state.log_start, recovery_point: base },
        )?;
        let result = self.rewrite_prefix(base, position, &later);
        let active = result.map_err(|e| self.fail(e))?;
        state.sealed.truncate(index);
        state.active = active;
        self.durable_end.fetch_min(offset.0, Ordering::AcqRel);
        tracing::info!(dir = %self.dir.display(), from = %offset, "truncated log suffix");
        Ok(())
    }

    /// Copies the first `keep` bytes of segment `base` to a new file renamed over it, deletes
    /// the segments at `later`, and reopens the segment as the active one.
    fn rewrite_prefix(&self, base: Offset, keep: u64, later: &[Offset]) -> Result<ActiveSegment> {
        let path = segment_file(&self.dir, base, LOG_SUFFIX);
        let tmp = self.dir.join(format!("{:020}.{LOG_SUFFIX}.tmp", base.0));
        {
            let mut source = io::Read::take(File::open(&path).at(&path)?, keep);
            let mut copy = File::create(&tmp).at(&tmp)?;
            io::copy(&mut source, &mut copy).at(&tmp)?;
            copy.flush().at(&tmp)?;
            copy.sync_all().at(&tmp)?;
        }
        fs::rename(&tmp, &path).at(&path)?;
        for &later in later {
            remove_segment_files(&self.dir, later)?;
        }
        sync_dir(&self.dir)?;
        let (active, outcome) = ActiveSegment::open_scanning(
            &self.dir,
            base,
            &self.config(),
            ScanMode::VerifyAndTruncate,
        )?;
        if outcome.valid_len != keep {
            return Err(StorageError::Corrupt {
                path,
                position: outcome.valid_len,
                reason: outcome.stop_reason.unwrap_or_else(|| "kept prefix does not scan".into()),
            });
        }
        Ok(active)
    }

    /// Makes `offset` the new start of the log: reads below it fail, and sealed segments that
    /// hold only older offsets are deleted. Past the end offset, the log is emptied and
    /// restarts at `offset` (see [`Log::restart_at`]).
    pub fn delete_before(&self, offset: Offset) -> Result<()> {
        let _sync = self.sync_guard();
        let mut state = self.write_state();
        self.ensure_writable()?; // under the locks `retire` takes
        if offset <= state.log_start {
            return Ok(());
        }
        if offset > state.end() {
            return self.restart_locked(&mut state, offset);
        }
        state.log_start = offset;
        let doomed = state.sealed.iter().take_while(|s| s.core.next <= offset).count();
        self.drop_oldest(&mut state, doomed)?;
        Ok(())
    }

    /// Empties the log, whatever it holds, and starts it again at `offset`, which need not be
    /// a batch boundary nor inside the log: a replica whose records a snapshot replaces
    /// (Kafka's `truncateFullyAndStartAt`). Files are deleted, never shrunk or overwritten, so
    /// batches already handed out stay valid.
    pub fn restart_at(&self, offset: Offset) -> Result<()> {
        let _sync = self.sync_guard();
        let mut state = self.write_state();
        self.ensure_writable()?; // under the locks `retire` takes
        self.restart_locked(&mut state, offset)
    }

    fn restart_locked(&self, state: &mut State, offset: Offset) -> Result<()> {
        let old: Vec<Offset> = state.segments().iter().map(|s| s.core.base).collect();
        let restart = || -> Result<ActiveSegment> {
            self.invalidate_tail_mark()?;
            // The new start first: a crash part-way opens a log that starts at `offset` or at
            // its end, whichever is lower, and serves none of the old records below it. The
            // caller redoes the restart from its own record (the Raft store's purge point).
            checkpoint::write(&self.dir, Checkpoint { log_start: offset, recovery_point: offset })?;
            // Newest first, each removal durable before the next, so that what a crash leaves
            // is still a log with no gaps; the segment named `offset`, if any, is gone before
            // a new file takes its name. (Rare: a snapshot replacing a replica's log.)
            for &base in old.iter().rev() {
                remove_segment_files(&self.dir, base)?;
                sync_dir(&self.dir)?;
            }
            let fresh = ActiveSegment::create(&self.dir, offset, &self.config())?;
            sync_dir(&self.dir)?;
            Ok(fresh)
        };
        let fresh = match restart() {
            Ok(fresh) => fresh,
            Err(e) => {
                // Poisoned; and none of the old records is served in the meantime.
                state.log_start = state.end();
                return Err(self.fail(e));
            }
        };
        state.sealed.clear();
        state.active = fresh;
        state.log_start = offset;
        self.durable_end.store(offset.0, Ordering::Release);
        tracing::info!(dir = %self.dir.display(), at = %offset, "log emptied and restarted");
        Ok(())
    }

    /// Deletes the `count` oldest sealed segments, moving the log start past them.
    fn drop_oldest(&self, state: &mut State, count: usize) -> Result<RetentionOutcome> {
        // Under the write lock, which `retire` takes: the files of the same names at a path
        // given up may be another log's.
        self.ensure_writable()?;
        let removed: Vec<SealedSegment> = state.sealed.drain(..count).collect();
        if let Some(first) = state.segments().first() {
            state.log_start = state.log_start.max(first.core.base);
        }
        checkpoint::write(&self.dir, state.checkpoint()).map_err(|e| self.fail(e))?;
        let mut outcome = RetentionOutcome::default();
        for segment in removed {
            remove_segment_files(&self.dir, segment.core.base)?;
            outcome.segments_deleted += 1;
            outcome.bytes_deleted += segment.core.size;
        }
        if outcome.segments_deleted > 0 {
            sync_dir(&self.dir)?;
        }
        Ok(outcome)
    }

    /// Deletes the oldest sealed segments whose newest record is older than the retention age,
    /// or while the log would still hold at least the retention size without them. Only
    /// segments wholly below `upto` are candidates (the broker passes the high watermark, so
    /// nothing uncommitted is deleted); the active segment is never deleted.
    pub fn apply_retention(&self, now: Timestamp, upto: Offset) -> Result<RetentionOutcome> {
        self.ensure_writable()?;
        let mut state = self.write_state();
        let doomed = self.doomed_by_retention(&state, now, upto);
        if doomed == 0 {
            return Ok(RetentionOutcome::default());
        }
        let outcome = self.drop_oldest(&mut state, doomed)?;
        tracing::info!(
            dir = %self.dir.display(), segments = outcome.segments_deleted, bytes = outcome.bytes_deleted,
            "retention deleted segments"
        );
        Ok(outcome)
    }

    /// Where retention would start the log (the base of the first segment it keeps), without
    /// deleting anything: `None` when it would delete nothing. A replicated log deletes through
    /// its Raft group's purge instead, at this point.
    pub fn retention_point(&self, now: Timestamp, upto: Offset) -> Option<Offset> {
        let state = self.read_state();
        let doomed = self.doomed_by_retention(&state, now, upto);
        (doomed > 0).then(|| state.sealed[doomed - 1].core.next)
    }

    /// How many of the oldest sealed segments retention deletes.
    fn doomed_by_retention(&self, state: &State, now: Timestamp, upto: Offset) -> usize {
        let mut total: u64 =
            state.sealed.iter().map(|s| s.core.size).sum::<u64>() + state.active.core.size;
        let config = self.config();
        let cutoff = config.retention_age.map(|age| now.0.saturating_sub(age.as_millis() as i64));
        let mut doomed = 0;
        for segment in &state.sealed {
            if segment.core.next > upto {
                break;
            }
            let too_old = cutoff.is_some_and(|cutoff| segment.core.max_timestamp < cutoff);
            let too_big =
                config.retention_bytes.is_some_and(|limit| total - segment.core.size >= limit);
            if !(too_old || too_big) {
                break;
            }
            total -= segment.core.size;
            doomed += 1;
        }
        doomed
    }

    /// Saves a tail mark (`crate::tail_mark`) if the active segment grew by at least
    /// `min_growth` bytes since the last one: fsyncs the segment and its index entries, then
    /// records how far they reach, so that recovery after a crash scans only what follows.
    /// Returns whether it saved one. Cheap to call often: below the growth it only compares.
    pub fn save_tail_mark(&self, min_growth: u64) -> Result<bool> {
        match self.draft_tail_mark(min_growth)? {
            Some(draft) => draft.commit(),
            None => Ok(false),
        }
    }

    /// The first half of [`Log::save_tail_mark`], for saving the marks of many logs with one
    /// `syncfs` ([`crate::FilesystemSync::commit_tail_marks`]): writes the index entries the
    /// files lack and notes what the mark is to say, if the segment grew by `min_growth`.
    /// A log with [`Durability::Never`] gets none: nothing of it is ever fsynced on purpose.
    pub fn draft_tail_mark(&self, min_growth: u64) -> Result<Option<TailMarkDraft<'_>>> {
        self.ensure_writable()?;
        if self.config().durability == Durability::Never {
            return Ok(None);
        }
        // Most logs of a pass did not grow enough: decided under the read lock, so appends
        // wait for the write lock only where a mark is drafted. A truncation between the two
        // bumps the generation, and the commit then writes nothing.
        let (generation, grown) = {
            let state = self.read_state();
            let marks = self.tail_mark_guard();
            let from = match marks.saved {
                Some(saved) if saved.segment == state.active.core.base => saved.position,
                _ => 0,
            };
            (marks.generation, state.active.core.size.saturating_sub(from))
        };
        if grown < min_growth.max(1) || !self.still_home() {
            return Ok(None);
        }
        let mut state = self.write_state();
        self.ensure_writable()?; // the index files are written by path
        let segment = (state.active.sync_handle(), state.active.core.log_path.clone());
        let (mark, indexes) = state.active.draft_tail_mark()?;
        Ok(Some(TailMarkDraft { log: self, generation, mark, segment, indexes }))
    }

    /// Whether the log's directory is still where it was opened: the `.lock` file at its path
    /// is the one this log holds (a deleted topic's directory is moved to the trash, and a new
    /// topic of the same name may have made a new one there).
    fn still_home(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        let (Ok(held), Ok(there)) = (self._lock.metadata(), fs::metadata(self.dir.join(LOCK_FILE)))
        else {
            return false;
        };
        (held.dev(), held.ino()) == (there.dev(), there.ino())
    }

    fn is_writable(&self) -> bool {
        self.failure.get().is_none() && !self.retired.load(Ordering::Acquire)
    }

    /// Refuses every later write, before the caller moves the log's directory away (its
    /// topic was deleted): a new topic of the same name may make a directory at the same path,
    /// and this log, still referenced by requests in flight, must not create, rewrite or
    /// delete a file there. Waits for writes in progress; reads go on being served.
    pub fn retire(&self) {
        // First: a write beside the log takes no other lock of it.
        let _beside = self.beside.write().unwrap_or_else(|e| e.into_inner());
        let _sync = self.sync_guard();
        let _state = self.write_state();
        // Also under the tail-mark guard, under which a mark's commit checks and writes.
        let _marks = self.tail_mark_guard();
        self.retired.store(true, Ordering::Release);
    }

    /// Runs `write`, which writes files kept beside this log that share its directory's fate
    /// (a replica's Raft files), unless the log is retired. Under a lock [`Log::retire`]
    /// takes, so a write in progress finishes before `retire` returns and none starts after:
    /// tasks of a replica that outlive its shutdown never write into the directory of the
    /// replica that later takes its path. Such writes do not wait for each other. `write` must
    /// not retire this log.
    pub fn write_beside<T>(&self, write: impl FnOnce() -> T) -> Result<T> {
        let _beside = self.beside.read().unwrap_or_else(|e| e.into_inner());
        if self.retired.load(Ordering::Acquire) {
            return Err(StorageError::Retired { dir: self.dir.clone() });
        }
        Ok(write())
    }

    /// Before bytes of a segment are rewritten or deleted: no mark may vouch for them again.
    fn invalidate_tail_mark(&self) -> Result<()> {
        let mut marks = self.tail_mark_guard();
        marks.generation += 1;
        marks.saved = None;
        tail_mark::remove(&self.dir)
    }

    fn tail_mark_guard(&self) -> MutexGuard<'_, TailMarkState> {
        self.tail_mark.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Flushes and closes the log, leaving a clean-shutdown marker so the next open skips the
    /// recovery scan. A log that failed is closed without the marker.
    pub fn close(self) -> Result<()> {
        self.ensure_writable()?;
        let state = self.state.into_inner().unwrap_or_else(|e| e.into_inner());
        let checkpoint = state.checkpoint();
        state.active.seal()?;
        drop(state.sealed);
        checkpoint::write(&self.dir, checkpoint)?;
        let marker = self.dir.join(CLEAN_SHUTDOWN_FILE);
        File::create(&marker).and_then(|f| f.sync_all()).at(&marker)?;
        sync_dir(&self.dir)?;
        tracing::debug!(dir = %self.dir.display(), "log closed cleanly");
        Ok(())
    }
}

/// File position of the batch that starts exactly at `offset` in `segment`.
fn batch_position(segment: SegmentRef<'_>, offset: Offset) -> Result<u64> {
    if offset == segment.core.base {
        return Ok(0);
    }
    let batches = collect_batches(&[segment], offset, Offset(u64::MAX), 0)?;
    match batches.first() {
        Some(slice) if strata_record::BatchHeader::parse(&slice.bytes)?.base_offset() == offset => {
            Ok(slice.position)
        }
        _ => Err(StorageError::NotBatchBoundary { offset }),
    }
}
