//! Opening a log directory: find the segments, decide which can be trusted, scan the rest.
//!
//! Rules (also in docs/on-disk-format.md):
//! - With a clean-shutdown marker, every segment and index is trusted; only the bytes after the
//!   active segment's last index entry are walked to find the end.
//! - Otherwise segments below the checkpoint's recovery point are trusted (they were fsynced
//!   when sealed) and every segment from the recovery point on is scanned with CRC checks. At
//!   the first bad batch the segment is cut there and every later segment is deleted: nothing
//!   after the first bad byte is ever served.
//! - Leftover temporary files are removed; an index that is missing or inconsistent is rebuilt.

use std::fs;
use std::path::Path;

use strata_record::Offset;

use crate::checkpoint::{self, Checkpoint};
use crate::config::LogConfig;
use crate::error::{IoContext, Result};
use crate::segment::{
    ActiveSegment, LOG_SUFFIX, OFFSET_INDEX_SUFFIX, ScanMode, SealedSegment, TIME_INDEX_SUFFIX,
    segment_file,
};
use crate::tail_mark;

pub(crate) const CLEAN_SHUTDOWN_FILE: &str = "clean-shutdown";

/// The segments of a freshly opened log.
#[derive(Debug)]
pub(crate) struct Recovered {
    pub(crate) sealed: Vec<SealedSegment>,
    pub(crate) active: ActiveSegment,
    pub(crate) log_start: Offset,
    /// The tail mark the recovery scan started at, if any: still true, and the log's latest.
    pub(crate) tail_mark: Option<tail_mark::TailMark>,
}

/// Base offsets of the segment log files in `dir`, sorted; removes leftovers of interrupted
/// operations (temporary files, indexes without a log).
fn list_segments(dir: &Path) -> Result<Vec<Offset>> {
    let mut bases = Vec::new();
    let mut indexes = Vec::new();
    for entry in fs::read_dir(dir).at(dir)? {
        let path = entry.at(dir)?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if name.ends_with(".tmp") {
            fs::remove_file(&path).at(&path)?;
            continue;
        }
        let Some((stem, suffix)) = name.split_once('.') else {
            continue;
        };
        let Ok(base) = stem.parse::<u64>() else {
            continue;
        };
        if stem.len() != 20 {
            continue;
        }
        match suffix {
            LOG_SUFFIX => bases.push(Offset(base)),
            OFFSET_INDEX_SUFFIX | TIME_INDEX_SUFFIX => indexes.push((Offset(base), path)),
            _ => {}
        }
    }
    bases.sort();
    for (base, path) in indexes {
        if bases.binary_search(&base).is_err() {
            fs::remove_file(&path).at(&path)?;
        }
    }
    Ok(bases)
}

pub(crate) fn remove_segment_files(dir: &Path, base: Offset) -> Result<()> {
    for suffix in [LOG_SUFFIX, OFFSET_INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
        let path = segment_file(dir, base, suffix);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e).at(&path),
            _ => {}
        }
    }
    Ok(())
}

pub(crate) fn open(dir: &Path, config: &LogConfig) -> Result<Recovered> {
    let marker = dir.join(CLEAN_SHUTDOWN_FILE);
    let clean = marker.exists();
    let checkpoint = checkpoint::read(dir);
    let bases = list_segments(dir)?;
    let first_base = bases.first().copied();
    let log_start = match (checkpoint, first_base) {
        (Some(cp), Some(first)) => cp.log_start.max(first),
        (Some(cp), None) => cp.log_start,
        (None, Some(first)) => first,
        (None, None) => Offset::ZERO,
    };
    let recovered = if bases.is_empty() {
        Recovered {
            sealed: Vec::new(),
            active: ActiveSegment::create(dir, log_start, config)?,
            log_start,
            tail_mark: None,
        }
    } else if clean {
        open_clean(dir, &bases, config, log_start)?
    } else {
        // Without a readable checkpoint, scan the last two segments: a roll fsyncs the old
        // segment before the checkpoint moves on, so only those two can hold unsynced bytes.
        // Scanning (and possibly cutting) older, sealed segments would risk deleting good data.
        let recovery_point =
            checkpoint.map_or_else(|| bases[bases.len().saturating_sub(2)], |cp| cp.recovery_point);
        open_after_crash(dir, &bases, config, log_start, recovery_point)?
    };
    // From here on a crash is an unclean stop again.
    if clean {
        fs::remove_file(&marker).at(&marker)?;
    }
    let active_base = recovered.active.core.base;
    let now = Checkpoint { log_start: recovered.log_start, recovery_point: active_base };
    // Rewritten, with its directory fsync, unless nothing changed: the directory fsync also makes
    // durable what recovery created, renamed or removed (a new segment, the active segment's
    // rebuilt index files, the clean-shutdown marker). A recovery that started at the active
    // segment's tail mark created none of those; skipping saves a thousand partitions two
    // thousand fsyncs (~0.3 s of a cold restart).
    let from_mark_only = recovered.tail_mark.is_some_and(|mark| mark.segment == active_base);
    if clean || checkpoint != Some(now) || !from_mark_only {
        checkpoint::write(dir, now)?;
    }
    Ok(recovered)
}

fn open_clean(
    dir: &Path,
    bases: &[Offset],
    config: &LogConfig,
    log_start: Offset,
) -> Result<Recovered> {
    let (last, earlier) = bases.split_last().expect("at least one segment");
    let mut sealed = Vec::with_capacity(earlier.len());
    for (i, &base) in earlier.iter().enumerate() {
        sealed.push(SealedSegment::open(dir, base, bases[i + 1], config)?);
    }
    let active = match ActiveSegment::open_clean(dir, *last, config)? {
        Some(active) => active,
        None => {
            tracing::warn!(dir = %dir.display(), "clean-shutdown marker present but the active segment does not check out; scanning it");
            // The scan may cut below a tail mark, which must then not outlive it.
            tail_mark::remove(dir)?;
            ActiveSegment::open_scanning(dir, *last, config, ScanMode::VerifyAndTruncate)?.0
        }
    };
    Ok(Recovered { sealed, active, log_start, tail_mark: None })
}

fn open_after_crash(
    dir: &Path,
    bases: &[Offset],
    config: &LogConfig,
    log_start: Offset,
    recovery_point: Offset,
) -> Result<Recovered> {
    // The segment holding the recovery point is the first one that may hold unsynced bytes.
    let first_scanned = bases.partition_point(|&b| b <= recovery_point).saturating_sub(1);
    let mut sealed = Vec::with_capacity(bases.len());
    for i in 0..first_scanned {
        sealed.push(SealedSegment::open(dir, bases[i], bases[i + 1], config)?);
    }
    tracing::info!(
        dir = %dir.display(), scanned_segments = bases.len() - first_scanned,
        "recovering log after an unclean shutdown"
    );
    // The tail mark, if it is for the first segment scanned, lets that scan start at the mark.
    // A mark that is not used is deleted: it could otherwise outlive what it describes (say,
    // the segment is cut below it here and later grows back with other batches).
    let mut from_mark = match tail_mark::read(dir) {
        Some(mark) if mark.segment == bases[first_scanned] => {
            ActiveSegment::open_from_mark(dir, &mark, config)?.map(|opened| (mark, opened))
        }
        _ => None,
    };
    let used_mark = from_mark.as_ref().map(|(mark, _)| *mark);
    match &used_mark {
        Some(mark) => tracing::info!(
            dir = %dir.display(), segment = %mark.segment, from = mark.position,
            "recovery scan starts at the tail mark"
        ),
        None => tail_mark::remove(dir)?,
    }
    let mut i = first_scanned;
    loop {
        let (segment, outcome) = match from_mark.take() {
            Some((_, opened)) => opened,
            None => {
                ActiveSegment::open_scanning(dir, bases[i], config, ScanMode::VerifyAndTruncate)?
            }
        };
        let next_base = bases.get(i + 1).copied();
        let intact = outcome.valid_len == outcome.file_len && Some(segment.core.next) == next_base;
        if !intact {
            if let Some(next_base) = next_base {
                tracing::warn!(
                    dir = %dir.display(), segment = %bases[i], next_segment = %next_base,
                    "segment ends short of the next one; deleting every later segment"
                );
                for &later in &bases[i + 1..] {
                    remove_segment_files(dir, later)?;
                }
                checkpoint::sync_dir(dir)?;
            }
            let log_start = log_start.min(segment.core.next);
            return Ok(Recovered { sealed, active: segment, log_start, tail_mark: used_mark });
        }
        sealed.push(segment.seal()?);
        i += 1;
    }
}
