//! Segments: a log file plus its two indexes, in two typestates.
//!
//! [`ActiveSegment`] is the one segment being appended to; [`SealedSegment`]s are immutable.
//! Rolling turns the active segment into a sealed one ([`ActiveSegment::seal`]), which is the
//! only way to get a sealed segment from a written one, so "append to a sealed segment" cannot
//! be written.

use std::fs::{File, OpenOptions};
use std::io::{IoSlice, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use strata_record::{BATCH_HEADER_LEN, BatchHeader, Offset, RecordBatch};

use crate::config::LogConfig;
use crate::error::{IoContext, Result, StorageError};
use crate::index::{
    OFFSET_ENTRY_LEN, ReadOnlyIndex, TIME_ENTRY_LEN, WritableIndex, encode_offset_entry,
    encode_time_entry, offset_entry, offset_index_is_sane, time_entry, time_index_is_sane,
};
use crate::mmap::{Access, LogMap};
use crate::tail_mark::TailMark;

pub(crate) const LOG_SUFFIX: &str = "log";
pub(crate) const OFFSET_INDEX_SUFFIX: &str = "index";
pub(crate) const TIME_INDEX_SUFFIX: &str = "timeindex";

/// `<dir>/<base offset, 20 digits>.<suffix>`, so a directory listing sorts by offset.
pub(crate) fn segment_file(dir: &Path, base: Offset, suffix: &str) -> PathBuf {
    dir.join(format!("{:020}.{suffix}", base.0))
}

/// How far past its end a growing (active) segment's file is mapped. Reads of bytes appended
/// since the last map then reuse it: remapping on every fetch of new data cost an `mmap`, an
/// `munmap` (a TLB shootdown on every core) and fresh page faults per request.
const GROWTH_HEADROOM: usize = 64 * 1024 * 1024;

/// A log file's bytes as `Bytes`, remapped lazily when a reader needs bytes past the current map.
#[derive(Debug)]
pub(crate) struct MappedLog {
    file: Arc<File>,
    path: PathBuf,
    map: Mutex<LogMap>,
    /// Bytes mapped past what a reader asks for: [`GROWTH_HEADROOM`] for the active segment,
    /// 0 for a sealed one.
    headroom: usize,
}

impl MappedLog {
    fn new(file: Arc<File>, path: PathBuf, headroom: usize) -> Self {
        MappedLog { file, path, map: Mutex::new(LogMap::default()), headroom }
    }

    /// The same file, for a segment that stopped growing: mapped again without headroom when
    /// next read (maps handed out before stay valid as long as their `Bytes` live).
    fn stop_growing(self) -> Self {
        MappedLog::new(self.file, self.path, 0)
    }

    /// Bytes covering exactly `[0, len)`. `len` must not exceed the file's length.
    pub(crate) fn view(&self, len: u64) -> Result<Bytes> {
        let len = len as usize;
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.capacity() < len {
            *map = LogMap::new(&self.file, len, len + self.headroom).at(&self.path)?;
        }
        Ok(map.bytes(len))
    }
}

/// What every segment knows about itself, whatever its state.
#[derive(Debug)]
pub(crate) struct SegmentCore {
    pub(crate) base: Offset,
    /// One past the last offset in the segment (`base` when empty).
    pub(crate) next: Offset,
    pub(crate) size: u64,
    /// Where the bytes this process has CRC-checked start: every batch it appended was checked
    /// on its way in (`Log::append*`), and a verifying scan at open checks all it keeps (then
    /// this is 0). A read checks again only the batches before this position: bytes that were
    /// on disk when the segment was opened and that no scan checked.
    pub(crate) checked_from: u64,
    /// Largest batch max timestamp, `i64::MIN` when empty.
    pub(crate) max_timestamp: i64,
    pub(crate) log_path: Arc<Path>,
    pub(crate) data: MappedLog,
}

impl SegmentCore {
    pub(crate) fn relative(&self, offset: Offset) -> u32 {
        u32::try_from(offset.0.saturating_sub(self.base.0)).unwrap_or(u32::MAX)
    }

    pub(crate) fn corrupt(&self, position: u64, reason: impl Into<String>) -> StorageError {
        StorageError::Corrupt { path: self.log_path.to_path_buf(), position, reason: reason.into() }
    }
}

/// A segment seen by readers: its core and its index entries.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SegmentRef<'a> {
    pub(crate) core: &'a SegmentCore,
    pub(crate) offset_entries: &'a [u8],
    pub(crate) time_entries: &'a [u8],
}

/// Decides which batches get index entries: one per `interval` bytes, as Kafka does.
#[derive(Debug)]
struct Indexer {
    interval: u64,
    bytes_since_entry: u64,
    last_time_entry: i64,
}

/// The segment being appended to.
#[derive(Debug)]
pub(crate) struct ActiveSegment {
    pub(crate) core: SegmentCore,
    writer: Arc<File>,
    offset_index: WritableIndex,
    time_index: WritableIndex,
    indexer: Indexer,
    /// When the segment file was created (its birth time where the filesystem keeps one), so
    /// rolling by age survives restarts.
    created: SystemTime,
}

/// How a segment's existing bytes are treated when it is opened by scanning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScanMode {
    /// Check every CRC and cut the file at the first batch that fails (tail recovery).
    VerifyAndTruncate,
    /// Walk headers only to rebuild indexes; keep every byte (a sealed segment whose index was
    /// damaged: corruption in it is reported when read, never repaired by deleting data).
    HeadersOnly,
}

/// What a scan found.
#[derive(Debug)]
pub(crate) struct ScanOutcome {
    pub(crate) valid_len: u64,
    pub(crate) file_len: u64,
    pub(crate) stop_reason: Option<String>,
}

impl ActiveSegment {
    /// Creates a new, empty segment file and its indexes at `base`.
    pub(crate) fn create(dir: &Path, base: Offset, config: &LogConfig) -> Result<Self> {
        let log_path = segment_file(dir, base, LOG_SUFFIX);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&log_path)
            .at(&log_path)?;
        Self::with_file(dir, base, file, log_path, config, None)
    }

    /// `keep_entries`: the (offset, time) index entries the existing files hold, kept, or
    /// `None` to write both indexes as new files (renamed into place, so maps of the old ones
    /// stay valid).
    fn with_file(
        dir: &Path,
        base: Offset,
        mut file: File,
        log_path: PathBuf,
        config: &LogConfig,
        keep_entries: Option<(Vec<u8>, Vec<u8>)>,
    ) -> Result<Self> {
        let size = file.seek(SeekFrom::End(0)).at(&log_path)?;
        // Room for every entry the bytes already there can need, even if the configuration
        // shrank since they were written.
        let capacity = config.index_capacity(size);
        let created =
            file.metadata().and_then(|m| m.created()).unwrap_or_else(|_| SystemTime::now());
        let offsets_path = segment_file(dir, base, OFFSET_INDEX_SUFFIX);
        let times_path = segment_file(dir, base, TIME_INDEX_SUFFIX);
        let (offset_index, time_index) = match keep_entries {
            Some((offsets, times)) => (
                WritableIndex::with_entries(&offsets_path, OFFSET_ENTRY_LEN, capacity, offsets),
                WritableIndex::with_entries(&times_path, TIME_ENTRY_LEN, capacity + 1, times),
            ),
            None => (
                WritableIndex::create_new(&offsets_path, OFFSET_ENTRY_LEN, capacity)?,
                WritableIndex::create_new(&times_path, TIME_ENTRY_LEN, capacity + 1)?,
            ),
        };
        let file = Arc::new(file);
        Ok(ActiveSegment {
            core: SegmentCore {
                base,
                next: base,
                size,
                checked_from: size,
                max_timestamp: i64::MIN,
                data: MappedLog::new(file.clone(), log_path.clone(), GROWTH_HEADROOM),
                log_path: log_path.into(),
            },
            writer: file,
            offset_index,
            time_index,
            indexer: Indexer {
                interval: config.index_interval_bytes,
                bytes_since_entry: 0,
                last_time_entry: i64::MIN,
            },
            created,
        })
    }

    /// Opens an existing segment file by scanning it and rebuilding both indexes from scratch.
    pub(crate) fn open_scanning(
        dir: &Path,
        base: Offset,
        config: &LogConfig,
        mode: ScanMode,
    ) -> Result<(Self, ScanOutcome)> {
        let log_path = segment_file(dir, base, LOG_SUFFIX);
        let file = OpenOptions::new().read(true).write(true).open(&log_path).at(&log_path)?;
        let file_len = file.metadata().at(&log_path)?.len();
        let mut segment = Self::with_file(dir, base, file, log_path, config, None)?;
        segment.core.size = 0;
        let outcome = segment.scan_from(0, file_len, mode)?;
        match mode {
            // The scan checked the CRC of every batch it kept.
            ScanMode::VerifyAndTruncate => segment.core.checked_from = 0,
            ScanMode::HeadersOnly => segment.core.size = file_len,
        }
        Ok((segment, outcome))
    }

    /// Opens the active segment left by a crash from its tail mark: the bytes below the mark
    /// and their index entries are trusted (they were fsynced before the mark was written),
    /// and only the bytes after it are scanned. `None` when the files do not bear the mark out
    /// (then the caller scans the whole segment).
    pub(crate) fn open_from_mark(
        dir: &Path,
        mark: &TailMark,
        config: &LogConfig,
    ) -> Result<Option<(Self, ScanOutcome)>> {
        let base = mark.segment;
        let log_path = segment_file(dir, base, LOG_SUFFIX);
        let file = OpenOptions::new().read(true).write(true).open(&log_path).at(&log_path)?;
        let file_len = file.metadata().at(&log_path)?.len();
        let entries = |suffix: &str, entry_len: usize, count: u32| -> Option<Vec<u8>> {
            let mut bytes = std::fs::read(segment_file(dir, base, suffix)).ok()?;
            let len = entry_len * count as usize;
            (bytes.len() >= len).then(|| {
                bytes.truncate(len);
                bytes
            })
        };
        let (Some(offsets), Some(times)) = (
            entries(OFFSET_INDEX_SUFFIX, OFFSET_ENTRY_LEN, mark.offset_entries),
            entries(TIME_INDEX_SUFFIX, TIME_ENTRY_LEN, mark.time_entries),
        ) else {
            return Ok(None);
        };
        let Some(max_relative) = mark.next.0.checked_sub(base.0 + 1) else {
            // An empty prefix: nothing to skip.
            return Ok(None);
        };
        if mark.position > file_len
            || max_relative > u64::from(u32::MAX)
            || !offset_index_is_sane(&offsets, mark.position, max_relative)
            || !time_index_is_sane(&times, max_relative)
        {
            return Ok(None);
        }
        let last_entry = (!offsets.is_empty())
            .then(|| offset_entry(&offsets, offsets.len() / OFFSET_ENTRY_LEN - 1));
        let last_time_entry = match times.len() / TIME_ENTRY_LEN {
            0 => i64::MIN,
            n => time_entry(&times, n - 1).0,
        };
        let mut segment =
            Self::with_file(dir, base, file, log_path, config, Some((offsets, times)))?;
        let data = segment.recovery_view(file_len, Access::Random)?;
        // The first batch must start the segment, and the headers from the last indexed batch
        // (at most an index interval) must land exactly on the mark's position and offset.
        let (rel, position) = last_entry.unwrap_or((0, 0));
        let lands = check_batch_at(&data, base, ScanMode::HeadersOnly).is_ok() && {
            let (mut at, mut next) = (u64::from(position), base.plus(u64::from(rel)));
            while at < mark.position {
                match check_batch_at(&data[at as usize..], next, ScanMode::HeadersOnly) {
                    Ok(header) => {
                        at += header.total_len() as u64;
                        next = header.last_offset().plus(1);
                    }
                    Err(_) => break,
                }
            }
            (at, next) == (mark.position, mark.next)
        };
        drop(data); // no map of this file may outlive a truncation (see mmap.rs)
        if !lands {
            return Ok(None);
        }
        segment.core.size = mark.position;
        segment.core.next = mark.next;
        segment.core.max_timestamp = mark.max_timestamp;
        segment.indexer.bytes_since_entry = mark.position - u64::from(position);
        segment.indexer.last_time_entry = last_time_entry;
        let outcome = segment.scan_from(mark.position, file_len, ScanMode::VerifyAndTruncate)?;
        // Reads check the CRCs of the trusted prefix; the scan checked the rest.
        segment.core.checked_from = mark.position;
        Ok(Some((segment, outcome)))
    }

    /// The file's first `file_len` bytes through a map of recovery's own, advised for `access`,
    /// never the segment's shared one: it must be dropped before any truncation (mmap.rs).
    fn recovery_view(&self, file_len: u64, access: Access) -> Result<Bytes> {
        let map = LogMap::for_recovery(&self.writer, file_len as usize, access);
        Ok(map.at(&self.core.log_path)?.bytes(file_len as usize))
    }

    /// Walks the batches from `position` (where `self.core` ends) to `file_len`, indexing
    /// them; with [`ScanMode::VerifyAndTruncate`] it cuts the file at the first that fails.
    fn scan_from(
        &mut self,
        mut position: u64,
        file_len: u64,
        mode: ScanMode,
    ) -> Result<ScanOutcome> {
        let data = self.recovery_view(file_len, Access::Sequential)?;
        let mut stop_reason = None;
        while position < file_len {
            let rest = &data[position as usize..];
            match check_batch_at(rest, self.core.next, mode) {
                Ok(header) => {
                    self.index_batch(&header, position);
                    let len = header.total_len() as u64;
                    self.note_appended(&header, len);
                    position += len;
                }
                Err(reason) => {
                    stop_reason = Some(reason);
                    break;
                }
            }
        }
        drop(data); // no map of this file may outlive a truncation (see mmap.rs)
        if mode == ScanMode::VerifyAndTruncate && position < file_len {
            let path = &self.core.log_path;
            tracing::warn!(
                path = %path.display(), valid_bytes = position, dropped_bytes = file_len - position,
                reason = stop_reason.as_deref().unwrap_or(""), "truncating torn or corrupt segment tail"
            );
            self.writer.set_len(position).at(path)?;
            self.writer.sync_all().at(path)?;
            (&*self.writer).seek(SeekFrom::Start(position)).at(path)?;
        }
        Ok(ScanOutcome { valid_len: position, file_len, stop_reason })
    }

    /// Reopens the active segment left by a clean shutdown, trusting its trimmed indexes: only
    /// the bytes after the last index entry are walked (headers, no CRC) to find the end.
    /// Returns `None` when anything does not add up; the caller then scans the whole segment.
    pub(crate) fn open_clean(dir: &Path, base: Offset, config: &LogConfig) -> Result<Option<Self>> {
        let log_path = segment_file(dir, base, LOG_SUFFIX);
        let file = OpenOptions::new().read(true).write(true).open(&log_path).at(&log_path)?;
        let file_len = file.metadata().at(&log_path)?.len();
        let indexes = ReadOnlyIndex::open(&segment_file(dir, base, OFFSET_INDEX_SUFFIX)).and_then(
            |offsets| {
                Ok((offsets, ReadOnlyIndex::open(&segment_file(dir, base, TIME_INDEX_SUFFIX))?))
            },
        );
        let Ok((offsets, times)) = indexes else {
            return Ok(None);
        };
        if !offset_index_is_sane(offsets.entries(), file_len, u64::from(u32::MAX))
            || !time_index_is_sane(times.entries(), u64::from(u32::MAX))
        {
            return Ok(None);
        }
        let kept_offsets = offsets.entries().len() / OFFSET_ENTRY_LEN;
        let kept_times = times.entries().len() / TIME_ENTRY_LEN;
        let (mut next, mut position) = match kept_offsets {
            0 => (base, 0),
            n => {
                let (rel, pos) = offset_entry(offsets.entries(), n - 1);
                (base.plus(u64::from(rel)), u64::from(pos))
            }
        };
        let max_timestamp = match kept_times {
            0 => i64::MIN,
            n => time_entry(times.entries(), n - 1).0,
        };
        // The entries are kept in memory; the read-only maps go (mmap.rs).
        let kept = (offsets.entries().to_vec(), times.entries().to_vec());
        drop((offsets, times));
        let mut segment = Self::with_file(dir, base, file, log_path, config, Some(kept))?;
        let data = segment.recovery_view(file_len, Access::Random)?;
        while position < file_len {
            match check_batch_at(&data[position as usize..], next, ScanMode::HeadersOnly) {
                Ok(header) => {
                    next = header.last_offset().plus(1);
                    position += header.total_len() as u64;
                    segment.indexer.bytes_since_entry += header.total_len() as u64;
                }
                Err(_) => return Ok(None),
            }
        }
        if kept_times == 0 && next > base {
            return Ok(None); // a non-empty segment closed cleanly always has a time entry
        }
        segment.indexer.last_time_entry = max_timestamp;
        segment.core.next = next;
        segment.core.max_timestamp = max_timestamp;
        Ok(Some(segment))
    }

    pub(crate) fn as_ref(&self) -> SegmentRef<'_> {
        SegmentRef {
            core: &self.core,
            offset_entries: self.offset_index.entries(),
            time_entries: self.time_index.entries(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.core.size == 0
    }

    pub(crate) fn age(&self) -> Duration {
        SystemTime::now().duration_since(self.created).unwrap_or(Duration::ZERO)
    }

    /// Offsets the segment can still take: index entries store offsets relative to the base
    /// in 32 bits.
    pub(crate) fn offsets_left(&self) -> u64 {
        (self.core.base.0 + u64::from(u32::MAX)).saturating_sub(self.core.next.0)
    }

    pub(crate) fn index_full(&self) -> bool {
        self.offset_index.is_full() || self.time_index.is_full()
    }

    /// Writes the index entries the index files lack and returns, for the caller to fsync
    /// outside the log's lock, the segment and both index files, with the mark they make true
    /// once fsynced.
    pub(crate) fn draft_tail_mark(&mut self) -> Result<(TailMark, [(File, PathBuf); 2])> {
        let (offsets, offset_entries) = self.offset_index.write_unpersisted()?;
        let (times, time_entries) = self.time_index.write_unpersisted()?;
        let mark = TailMark {
            segment: self.core.base,
            position: self.core.size,
            next: self.core.next,
            max_timestamp: self.core.max_timestamp,
            offset_entries,
            time_entries,
        };
        Ok((mark, [offsets, times]))
    }

    /// After a failed fsync of an index file: its entries are written again next time.
    pub(crate) fn forget_persisted_index(&mut self) {
        self.offset_index.forget_persisted();
        self.time_index.forget_persisted();
    }

    /// The handle fsync goes through, usable without the log's lock.
    pub(crate) fn sync_handle(&self) -> Arc<File> {
        self.writer.clone()
    }

    /// Writes one batch whose header is `header`, with `base` written over its base offset
    /// field and `header.partition_leader_epoch` over its leader epoch field on the way out
    /// (no copy of the batch is made; both fields are outside the CRC).
    pub(crate) fn append(
        &mut self,
        base: Offset,
        header: &BatchHeader,
        batch: &[u8],
    ) -> Result<()> {
        let position = self.core.size;
        let mut prefix = [0u8; 16];
        prefix[..8].copy_from_slice(&(base.0 as i64).to_be_bytes());
        prefix[8..12].copy_from_slice(&batch[8..12]);
        prefix[12..].copy_from_slice(&header.partition_leader_epoch.to_be_bytes());
        let mut slices = [IoSlice::new(&prefix), IoSlice::new(&batch[16..])];
        write_all_vectored(&self.writer, &mut slices).at(&self.core.log_path)?;
        let mut header = *header;
        header.base_offset = base.0 as i64;
        self.index_batch(&header, position);
        self.note_appended(&header, batch.len() as u64);
        Ok(())
    }

    fn note_appended(&mut self, header: &BatchHeader, len: u64) {
        self.core.size += len;
        self.core.next = header.last_offset().plus(1);
        self.core.max_timestamp = self.core.max_timestamp.max(header.max_timestamp);
        self.indexer.bytes_since_entry += len;
    }

    fn index_batch(&mut self, header: &BatchHeader, position: u64) {
        if self.indexer.bytes_since_entry < self.indexer.interval || position == 0 {
            return;
        }
        let rel_base = self.core.relative(header.base_offset());
        self.offset_index.push(&encode_offset_entry(rel_base, position as u32));
        self.indexer.bytes_since_entry = 0;
        let max_ts = self.core.max_timestamp.max(header.max_timestamp);
        if max_ts > self.indexer.last_time_entry {
            let rel_last = self.core.relative(header.last_offset());
            self.time_index.push(&encode_time_entry(max_ts, rel_last));
            self.indexer.last_time_entry = max_ts;
        }
    }

    /// The fallible part of sealing that leaves the segment usable if it fails: fsyncs the
    /// log and records the final max timestamp in the time index. Idempotent.
    pub(crate) fn prepare_seal(&mut self) -> Result<()> {
        crate::observe::timed_fsync(|| self.writer.sync_data()).at(&self.core.log_path)?;
        if self.core.max_timestamp > self.indexer.last_time_entry && self.core.next > self.core.base
        {
            let rel_last = self.core.relative(Offset(self.core.next.0 - 1));
            self.time_index.push(&encode_time_entry(self.core.max_timestamp, rel_last));
            self.indexer.last_time_entry = self.core.max_timestamp;
        }
        Ok(())
    }

    /// Makes the segment immutable: [`Self::prepare_seal`], then trims and fsyncs both indexes
    /// and reopens them read-only.
    pub(crate) fn seal(mut self) -> Result<SealedSegment> {
        self.prepare_seal()?;
        let mut core = self.core;
        core.data = core.data.stop_growing();
        Ok(SealedSegment {
            offset_index: self.offset_index.seal()?,
            time_index: self.time_index.seal()?,
            core,
        })
    }
}

/// Checks the batch at the front of `bytes`: a sane header, within the bytes, at the expected
/// offset, and (when verifying) a CRC that holds.
pub(crate) fn check_batch_at(
    bytes: &[u8],
    expected: Offset,
    mode: ScanMode,
) -> Result<BatchHeader, String> {
    if bytes.len() < BATCH_HEADER_LEN {
        return Err(format!("{} trailing bytes, shorter than a batch header", bytes.len()));
    }
    let header = BatchHeader::parse(bytes).map_err(|e| e.to_string())?;
    let len = header.total_len();
    if len > bytes.len() {
        return Err(format!("batch of {len} bytes runs past the end of the file"));
    }
    if header.base_offset() != expected {
        return Err(format!(
            "batch base offset {} where {expected} was expected",
            header.base_offset
        ));
    }
    if mode == ScanMode::VerifyAndTruncate {
        RecordBatch::new(&bytes[..len]).map_err(|e| e.to_string())?;
    }
    Ok(header)
}

pub(crate) fn write_all_vectored(
    mut file: &File,
    mut slices: &mut [IoSlice<'_>],
) -> std::io::Result<()> {
    IoSlice::advance_slices(&mut slices, 0);
    while !slices.is_empty() {
        match file.write_vectored(slices) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// An immutable segment.
#[derive(Debug)]
pub(crate) struct SealedSegment {
    pub(crate) core: SegmentCore,
    offset_index: ReadOnlyIndex,
    time_index: ReadOnlyIndex,
}

impl SealedSegment {
    /// Opens a segment below the recovery point, trusting its bytes (they were fsynced when it
    /// was sealed; damage is caught by the CRC check on read). `next` is the base offset of the
    /// following segment. A missing or inconsistent index is rebuilt from the log's headers.
    pub(crate) fn open(dir: &Path, base: Offset, next: Offset, config: &LogConfig) -> Result<Self> {
        let log_path = segment_file(dir, base, LOG_SUFFIX);
        let file = File::open(&log_path).at(&log_path)?;
        let size = file.metadata().at(&log_path)?.len();
        let max_relative = next.0.saturating_sub(base.0).saturating_sub(1);
        let indexes =
            ReadOnlyIndex::open(&segment_file(dir, base, OFFSET_INDEX_SUFFIX)).and_then(|o| {
                Ok((o, ReadOnlyIndex::open(&segment_file(dir, base, TIME_INDEX_SUFFIX))?))
            });
        if let Ok((offsets, times)) = indexes {
            let n_times = times.entries().len() / TIME_ENTRY_LEN;
            if offset_index_is_sane(offsets.entries(), size, max_relative)
                && time_index_is_sane(times.entries(), max_relative)
                && (n_times > 0 || size == 0)
            {
                let max_timestamp = if n_times == 0 {
                    i64::MIN
                } else {
                    time_entry(times.entries(), n_times - 1).0
                };
                let file = Arc::new(file);
                return Ok(SealedSegment {
                    core: SegmentCore {
                        base,
                        next,
                        size,
                        checked_from: size,
                        max_timestamp,
                        data: MappedLog::new(file, log_path.clone(), 0),
                        log_path: log_path.into(),
                    },
                    offset_index: offsets,
                    time_index: times,
                });
            }
        }
        tracing::warn!(path = %log_path.display(), "rebuilding missing or inconsistent segment index");
        let (active, _) = ActiveSegment::open_scanning(dir, base, config, ScanMode::HeadersOnly)?;
        let mut sealed = active.seal()?;
        sealed.core.next = next;
        Ok(sealed)
    }

    pub(crate) fn as_ref(&self) -> SegmentRef<'_> {
        SegmentRef {
            core: &self.core,
            offset_entries: self.offset_index.entries(),
            time_entries: self.time_index.entries(),
        }
    }
}
