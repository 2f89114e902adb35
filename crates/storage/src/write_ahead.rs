//! The node-wide write-ahead file: one sequential write and one `fdatasync` make a round of
//! appends to many logs durable, instead of a `syncfs` that writes a few kilobytes to each of
//! their segment files.
//!
//! With keyed records over a thousand partitions, each group-commit round carries a few
//! kilobytes per partition. Write-back then makes one small write per segment file, and the
//! disk's write operations, not its bandwidth, bound the node (`docs/write-ahead.md`).
//! Here such a round's bytes go to one file in one `writev`, as frames naming their log. The
//! segment files are written back later by a checkpoint's `syncfs`, in runs that are large
//! by then; only after it are the frames it covers dropped.
//!
//! Files are `<dir>/<sequence>.wal`, 20 digits. A frame is a 36-byte header then whole record
//! batches of one log, exactly as they are in its active segment:
//!
//! | bytes | field |
//! | --- | --- |
//! | 4 | magic `"STWF"` |
//! | 8 | the file's sequence number, so frames left in a recycled file are not replayed |
//! | 8 | the log's id (its `log.id` file) |
//! | 8 | base offset of the first batch |
//! | 4 | payload length |
//! | 4 | CRC-32C of the 32 bytes above and the payload |
//!
//! All integers are big-endian. Replay reads each file in sequence order up to its first frame
//! that does not check out: that is where the last write was torn by a crash (it was never
//! acknowledged), or where a recycled file's older frames begin.

use std::collections::{HashMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, IoSlice, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use strata_record::Offset;

use crate::checkpoint::sync_dir;
use crate::error::{IoContext, Result};
use crate::segment::write_all_vectored;

const MAGIC: &[u8; 4] = b"STWF";
pub(crate) const HEADER_LEN: usize = 36;
const SUFFIX: &str = "wal";

/// How a node's write-ahead file behaves. The defaults suit a broker.
#[derive(Debug, Clone)]
pub struct WriteAheadConfig {
    /// Where the files live: a directory of their own, on the logs' filesystem.
    pub dir: PathBuf,
    /// A round uses the write-ahead file when it carries at least this many logs; fewer are
    /// made durable in place (`syncfs` or the log's own `fdatasync`), since every byte that
    /// goes through the write-ahead file is written twice.
    pub min_logs: usize,
    /// ... and at most this many bytes per log on average. Larger runs per log are written
    /// back efficiently by `syncfs` itself; writing them twice only costs (32 keyed
    /// partitions: 362–448 MB/s through the write-ahead file against 493–524 without).
    pub max_bytes_per_log: u64,
    /// A file takes rounds until it holds this many bytes; then the next file starts and a
    /// checkpoint is due.
    pub file_bytes: u64,
    /// A checkpoint starts once this many full files wait for one; rounds wait for it once
    /// twice as many do, which bounds both the disk the files take and a replay's length.
    pub files_per_checkpoint: usize,
}

impl WriteAheadConfig {
    pub fn new(dir: impl Into<PathBuf>) -> WriteAheadConfig {
        WriteAheadConfig {
            dir: dir.into(),
            min_logs: 16,
            max_bytes_per_log: 32 * 1024,
            file_bytes: 64 * 1024 * 1024,
            files_per_checkpoint: 2,
        }
    }
}

/// One log's bytes for a round: `payload` holds whole batches starting at offset `base`.
#[derive(Debug)]
pub(crate) struct Frame {
    pub(crate) log_id: u64,
    pub(crate) base: Offset,
    pub(crate) payload: Bytes,
}

pub(crate) fn encode_header(sequence: u64, frame: &Frame) -> [u8; HEADER_LEN] {
    let mut header = [0u8; HEADER_LEN];
    header[..4].copy_from_slice(MAGIC);
    header[4..12].copy_from_slice(&sequence.to_be_bytes());
    header[12..20].copy_from_slice(&frame.log_id.to_be_bytes());
    header[20..28].copy_from_slice(&frame.base.0.to_be_bytes());
    header[28..32].copy_from_slice(&(frame.payload.len() as u32).to_be_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&header[..32]), &frame.payload);
    header[32..].copy_from_slice(&crc.to_be_bytes());
    header
}

pub(crate) fn file_path(dir: &Path, sequence: u64) -> PathBuf {
    dir.join(format!("{sequence:020}.{SUFFIX}"))
}

/// The write-ahead files in `dir`, oldest first.
pub(crate) fn list_files(dir: &Path) -> Result<Vec<u64>> {
    let mut sequences = Vec::new();
    for entry in fs::read_dir(dir).at(dir)? {
        let path = entry.at(dir)?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if let Some(sequence) = name.strip_suffix(&format!(".{SUFFIX}"))
            && sequence.len() == 20
            && let Ok(sequence) = sequence.parse::<u64>()
        {
            sequences.push(sequence);
        }
    }
    sequences.sort_unstable();
    Ok(sequences)
}

/// Where one frame's payload lies, found by the replay scan.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FrameRef {
    pub(crate) sequence: u64,
    pub(crate) position: u64,
    pub(crate) len: u32,
    pub(crate) base: Offset,
}

/// Scans one file, adding its valid frames to `frames`, up to the first that does not check
/// out.
pub(crate) fn scan_file(
    path: &Path,
    sequence: u64,
    frames: &mut HashMap<u64, Vec<FrameRef>>,
) -> Result<File> {
    let file = File::open(path).at(path)?;
    let file_len = file.metadata().at(path)?.len();
    let mut reader = io::BufReader::with_capacity(1 << 20, &file);
    let mut position = 0u64;
    let mut payload = Vec::new();
    loop {
        let mut header = [0u8; HEADER_LEN];
        if position + HEADER_LEN as u64 > file_len || reader.read_exact(&mut header).is_err() {
            break;
        }
        let u64_at = |at: usize| u64::from_be_bytes(header[at..at + 8].try_into().unwrap());
        let len = u32::from_be_bytes(header[28..32].try_into().unwrap());
        let crc = u32::from_be_bytes(header[32..36].try_into().unwrap());
        let payload_at = position + HEADER_LEN as u64;
        if &header[..4] != MAGIC || u64_at(4) != sequence || payload_at + len as u64 > file_len {
            break;
        }
        payload.resize(len as usize, 0);
        reader.read_exact(&mut payload).at(path)?;
        if crc32c::crc32c_append(crc32c::crc32c(&header[..32]), &payload) != crc {
            break;
        }
        let frame = FrameRef { sequence, position: payload_at, len, base: Offset(u64_at(20)) };
        frames.entry(u64_at(12)).or_default().push(frame);
        position = payload_at + len as u64;
    }
    Ok(file)
}

/// The write-ahead files of a running node: the one rounds go to, the full ones a checkpoint
/// has yet to cover, and the covered ones kept for reuse. Used by the group's thread, and by
/// its last act when the group stops.
#[derive(Debug)]
pub(crate) struct WriteAhead {
    config: WriteAheadConfig,
    file: File,
    sequence: u64,
    position: u64,
    /// The first file this run made: files before it are a crash's, for
    /// [`crate::WriteAheadReplay`] to replay and remove, never this run's to touch.
    first_sequence: u64,
    /// Full files whose frames a checkpoint has not yet covered, oldest first.
    waiting: VecDeque<u64>,
    /// Files a checkpoint covered, ready to be renamed and written over.
    spare: Vec<u64>,
}

impl WriteAhead {
    /// Starts a new file in `config.dir` (creating the directory), after any a crash left.
    pub(crate) fn open(config: WriteAheadConfig) -> Result<WriteAhead> {
        let dir = config.dir.clone();
        create_dir(&dir)?;
        let sequence = list_files(&dir)?.last().map_or(0, |last| last + 1);
        let file = create_file(&dir, sequence)?;
        Ok(WriteAhead {
            config,
            file,
            sequence,
            position: 0,
            first_sequence: sequence,
            waiting: VecDeque::new(),
            spare: Vec::new(),
        })
    }

    /// The device of the directory the files are in.
    pub(crate) fn device(&self) -> Result<u64> {
        use std::os::unix::fs::MetadataExt;
        Ok(fs::metadata(&self.config.dir).at(&self.config.dir)?.dev())
    }

    /// Whether a round of `logs` logs with `bytes` to make durable goes through the file: many
    /// logs with little each, whose segment files would each get a small write.
    pub(crate) fn takes(&self, logs: usize, bytes: u64) -> bool {
        logs >= self.config.min_logs.max(1)
            && bytes <= self.config.max_bytes_per_log.saturating_mul(logs as u64)
    }

    pub(crate) fn min_logs(&self) -> usize {
        self.config.min_logs
    }

    /// Writes `frames` (in `writev` calls of at most 1,024 slices, the kernel's limit) and
    /// fdatasyncs them once. Returns the bytes written.
    pub(crate) fn write_round(&mut self, frames: &[Frame]) -> Result<u64> {
        let headers: Vec<[u8; HEADER_LEN]> =
            frames.iter().map(|frame| encode_header(self.sequence, frame)).collect();
        let mut slices = Vec::with_capacity(frames.len() * 2);
        for (header, frame) in headers.iter().zip(frames) {
            slices.push(IoSlice::new(header));
            slices.push(IoSlice::new(&frame.payload));
        }
        let bytes: u64 = slices.iter().map(|s| s.len() as u64).sum();
        let path = file_path(&self.config.dir, self.sequence);
        write_all_vectored(&self.file, &mut slices).at(&path)?;
        crate::observe::timed_fsync(|| self.file.sync_data()).at(&path)?;
        self.position += bytes;
        Ok(bytes)
    }

    /// Whether the current file is full: the group then calls [`WriteAhead::next_file`].
    pub(crate) fn is_full(&self) -> bool {
        self.position >= self.config.file_bytes
    }

    /// How many full files wait for a checkpoint.
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.len()
    }

    pub(crate) fn files_per_checkpoint(&self) -> usize {
        self.config.files_per_checkpoint
    }

    /// Starts the next file, reusing a spare one if there is one. Everything in the files
    /// before it was written before this returns, so a `syncfs` that starts later covers the
    /// segment bytes of their frames: [`WriteAhead::covered_below`] with the returned
    /// sequence then frees them.
    pub(crate) fn next_file(&mut self) -> Result<u64> {
        let next = self.sequence + 1;
        let dir = &self.config.dir;
        let file = match self.spare.pop() {
            Some(spare) => {
                let (from, to) = (file_path(dir, spare), file_path(dir, next));
                fs::rename(&from, &to).at(&to)?;
                let mut file = OpenOptions::new().write(true).open(&to).at(&to)?;
                file.seek(SeekFrom::Start(0)).at(&to)?;
                sync_dir(dir)?;
                file
            }
            None => create_file(dir, next)?,
        };
        self.waiting.push_back(self.sequence);
        self.file = file;
        self.sequence = next;
        self.position = 0;
        Ok(next)
    }

    /// A checkpoint that started after file `sequence` did succeeded: the files before it
    /// become spares.
    pub(crate) fn covered_below(&mut self, sequence: u64) {
        while self.waiting.front().is_some_and(|&s| s < sequence) {
            let covered = self.waiting.pop_front().expect("checked above");
            self.spare.push(covered);
        }
        // Keep at most a checkpoint's worth of spares; the rest give their disk back.
        while self.spare.len() > self.config.files_per_checkpoint + 1 {
            let extra = self.spare.remove(0);
            let path = file_path(&self.config.dir, extra);
            if let Err(err) = fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), error = %err, "could not remove a spare write-ahead file");
            }
        }
    }

    /// After a final `syncfs` with no member log left: every file this run wrote is covered,
    /// and none is needed by the next start. (A crash's files are not touched: if their
    /// replay did not finish, the next start needs them.)
    pub(crate) fn remove_all(self) -> Result<()> {
        let dir = self.config.dir;
        drop(self.file);
        for sequence in list_files(&dir)?.into_iter().filter(|&s| s >= self.first_sequence) {
            let path = file_path(&dir, sequence);
            fs::remove_file(&path).at(&path)?;
        }
        sync_dir(&dir)
    }
}

/// Creates the directory, durable in its parent, if it is new.
fn create_dir(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir).at(dir)?;
    match dir.parent() {
        Some(parent) => sync_dir(parent),
        None => Ok(()),
    }
}

/// Creates file `sequence`, durable in its directory before any frame in it counts.
fn create_file(dir: &Path, sequence: u64) -> Result<File> {
    let path = file_path(dir, sequence);
    let file = OpenOptions::new().write(true).create_new(true).open(&path).at(&path)?;
    sync_dir(dir)?;
    Ok(file)
}
