//! Replaying what a crash left in the node's write-ahead files (`docs/write-ahead.md`).
//!
//! A write-ahead round made its logs' bytes durable in the write-ahead file only; a power cut
//! before the next checkpoint can then leave a segment without them. On the next start, every
//! log that opens gets back, from the files, what it lost, before it serves anything. This
//! runs at every start of a single node, whatever its durability setting now: a node that
//! crashed with fsync on every append and comes back with `--fsync interval` must not drop
//! what it acknowledged, nor keep frames that a later start could replay over newer records.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::Log;
use crate::checkpoint::sync_dir;
use crate::error::{IoContext, Result};
use crate::write_ahead::{FrameRef, file_path, list_files, scan_file};

/// The frames a crash left in a write-ahead directory, by log id, in write order.
#[derive(Debug)]
pub struct WriteAheadReplay {
    dir: PathBuf,
    sequences: Vec<u64>,
    files: HashMap<u64, File>,
    pub(crate) frames: HashMap<u64, Vec<FrameRef>>,
}

impl WriteAheadReplay {
    /// Scans the write-ahead files in `dir`, each up to its first frame that does not check
    /// out (a torn write, or older frames of a recycled file). `None` if there are none.
    /// Open it before the node's [`crate::SyncGroup`]: [`WriteAheadReplay::finish`] deletes
    /// every file it scanned, which must not include the new one the group writes to.
    pub fn open(dir: impl AsRef<Path>) -> Result<Option<WriteAheadReplay>> {
        let dir = dir.as_ref().to_path_buf();
        if !dir.is_dir() {
            return Ok(None);
        }
        let sequences = list_files(&dir)?;
        if sequences.is_empty() {
            return Ok(None);
        }
        let mut frames = HashMap::new();
        let mut files = HashMap::new();
        for &sequence in &sequences {
            let file = scan_file(&file_path(&dir, sequence), sequence, &mut frames)?;
            files.insert(sequence, file);
        }
        let count: usize = frames.values().map(Vec::len).sum();
        tracing::info!(dir = %dir.display(), files = sequences.len(), frames = count, logs = frames.len(), "write-ahead files to replay");
        Ok(Some(WriteAheadReplay { dir, sequences, files, frames }))
    }

    /// Appends to `log` what the files hold for it past its end, then fsyncs it: batches
    /// that end below its end are there already, and one that starts past it (records lost
    /// in between) refuses with an error that names the log. Call it after the log opened
    /// and before it serves anything. Returns the batches appended.
    pub fn replay_into(&mut self, log: &Log) -> Result<usize> {
        let Some(frames) = self.frames.remove(&log.id()) else { return Ok(0) };
        let mut appended = 0;
        for frame in &frames {
            let path = file_path(&self.dir, frame.sequence);
            let file = &self.files[&frame.sequence];
            let mut payload = vec![0u8; frame.len as usize];
            file.read_exact_at(&mut payload, frame.position).at(&path)?;
            appended += log.replay_frame(frame.base, &payload, &path)?;
        }
        if appended > 0 {
            log.flush()?;
            tracing::info!(dir = %log.dir().display(), batches = appended, end = %log.end_offset(), "replayed from the write-ahead file");
        }
        Ok(appended)
    }

    /// Every log of the node replayed (each is durable to its end): removes the files. Frames
    /// no log claimed were of logs deleted since.
    pub fn finish(self) -> Result<()> {
        if !self.frames.is_empty() {
            tracing::info!(
                logs = self.frames.len(),
                "write-ahead frames of logs that no longer exist skipped"
            );
        }
        drop(self.files);
        for sequence in self.sequences {
            let path = file_path(&self.dir, sequence);
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e).at(&path),
                _ => {}
            }
        }
        sync_dir(&self.dir)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use strata_record::Offset;

    use super::*;
    use crate::write_ahead::{Frame, WriteAhead, WriteAheadConfig, encode_header};

    fn frame(log_id: u64, base: u64, payload: &'static [u8]) -> Frame {
        Frame { log_id, base: Offset(base), payload: Bytes::from_static(payload) }
    }

    fn bases(replay: &WriteAheadReplay, id: u64) -> Vec<u64> {
        replay.frames[&id].iter().map(|f| f.base.0).collect()
    }

    #[test]
    fn frames_replay_in_order_up_to_a_torn_one() {
        let dir = tempfile::tempdir().unwrap();
        let config = WriteAheadConfig::new(dir.path().join("wal"));
        let mut wal = WriteAhead::open(config.clone()).unwrap();
        wal.write_round(&[frame(1, 0, b"one"), frame(2, 7, b"two")]).unwrap();
        wal.write_round(&[frame(1, 3, b"three")]).unwrap();
        let path = file_path(&config.dir, 0);
        drop(wal);
        // A torn write after the last acknowledged round.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(&encode_header(0, &frame(1, 8, b"torn"))[..20]);
        std::fs::write(&path, bytes).unwrap();

        let replay = WriteAheadReplay::open(&config.dir).unwrap().expect("one file");
        assert_eq!(bases(&replay, 1), [0, 3]);
        assert_eq!(bases(&replay, 2), [7]);
        let third = replay.frames[&1][1];
        let mut payload = vec![0u8; third.len as usize];
        replay.files[&0].read_exact_at(&mut payload, third.position).unwrap();
        assert_eq!(payload, b"three");
        // A new run starts after the crash's files and leaves them to the replay.
        let wal = WriteAhead::open(config.clone()).unwrap();
        wal.remove_all().unwrap();
        assert_eq!(list_files(&config.dir).unwrap(), [0]);
        replay.finish().unwrap();
        assert!(WriteAheadReplay::open(&config.dir).unwrap().is_none());
    }

    #[test]
    fn a_recycled_file_does_not_replay_its_older_frames() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = WriteAheadConfig::new(dir.path().join("wal"));
        config.file_bytes = 1;
        let mut wal = WriteAhead::open(config.clone()).unwrap();
        wal.write_round(&[frame(1, 0, b"a long first payload")]).unwrap();
        let next = wal.next_file().unwrap();
        wal.covered_below(next);
        wal.write_round(&[frame(1, 20, b"b")]).unwrap();
        // File 0 is now a spare: the next file reuses it, and a round writes less than was
        // there before.
        wal.next_file().unwrap();
        wal.write_round(&[frame(1, 21, b"c")]).unwrap();
        drop(wal);
        assert_eq!(list_files(&config.dir).unwrap(), [1, 2]);
        let replay = WriteAheadReplay::open(&config.dir).unwrap().expect("two files");
        assert_eq!(bases(&replay, 1), [20, 21]);
    }
}
