//! The tail mark: recovery after a crash scans only the bytes after it, and nothing it does not
//! vouch for is trusted.

mod common;

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;

use common::*;
use strata_record::{Offset, Timestamp};
use strata_storage::{Durability, FilesystemSync, Log, LogConfig, StorageError};

const MARK: &str = "tail.mark";

/// One segment of up to 1 MiB, with an index entry every 256 bytes, fsynced only when asked
/// (a log with `Durability::Never` gets no marks).
fn config() -> LogConfig {
    LogConfig { segment_bytes: 1 << 20, ..marked_config() }
}

fn marked_config() -> LogConfig {
    with_durability(Durability::Interval(std::time::Duration::from_secs(3600)))
}

/// Appends `count` batches of 2 records (timestamps from `ts`), returning each one's size.
fn append(log: &Log, count: usize, ts: i64) -> Vec<u64> {
    (0..count)
        .map(|i| {
            let batch = batch(2, 100, ts + 2 * i as i64);
            log.append(&batch).unwrap();
            batch.len() as u64
        })
        .collect()
}

fn damage(file: &Path, position: u64) {
    let file = fs::OpenOptions::new().write(true).open(file).unwrap();
    file.write_at(&[0xAA], position).unwrap();
}

/// Every offset of the log is found by a read starting at it, and every timestamp by time.
fn assert_every_offset_and_time_found(log: &Log, from: u64) {
    for offset in from..log.end_offset().0 {
        let batches = log.read(Offset(offset), 1).unwrap();
        let first = base_of(&batches[0]);
        assert!(first.0 <= offset && offset < first.0 + 2, "offset {offset} found in {first}");
        assert_eq!(log.offset_for_time(Timestamp(offset as i64)).unwrap(), Some(Offset(offset)));
    }
}

#[test]
fn recovery_after_a_crash_scans_only_what_follows_the_mark() {
    let dir = tempfile::tempdir().unwrap();
    let sizes = {
        let log = Log::open(dir.path(), config()).unwrap();
        let mut sizes = append(&log, 20, 0);
        assert!(log.save_tail_mark(1).unwrap());
        assert!(!log.save_tail_mark(1).unwrap(), "nothing grew since");
        sizes.extend(append(&log, 10, 40));
        assert!(!log.save_tail_mark(10 * sizes[0] + 1).unwrap(), "grew less than asked");
        sizes
    }; // dropped without close: a crash
    let segment = active_segment(dir.path());
    let end_of = |n: usize| sizes[..n].iter().sum::<u64>();
    // A value byte of batch 2, below the mark, and a torn last batch, above it.
    damage(&segment, end_of(3) - 5);
    let len = fs::metadata(&segment).unwrap().len();
    fs::OpenOptions::new().write(true).open(&segment).unwrap().set_len(len - 7).unwrap();

    let log = Log::open(dir.path(), config()).unwrap();
    assert_eq!(log.end_offset(), Offset(58), "the tail after the mark is scanned and cut");
    // The bytes below the mark were not scanned, but are checked when read: never served.
    assert!(matches!(log.read(Offset(4), 1), Err(StorageError::Corrupt { .. })));
    assert_eq!(log.read(Offset(0), usize::MAX).unwrap().len(), 2, "up to the damage");
    assert_every_offset_and_time_found(&log, 6);
    // Appends go on after the scanned tail, indexed as before.
    append(&log, 5, 58);
    assert_every_offset_and_time_found(&log, 6);
    drop(log);

    // Without the mark the whole segment is scanned, and cut at the damage.
    fs::remove_file(dir.path().join(MARK)).unwrap();
    let log = Log::open(dir.path(), config()).unwrap();
    assert_eq!(log.end_offset(), Offset(4));
}

#[test]
fn a_mark_is_kept_across_clean_restarts_and_followed_by_new_ones() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = Log::open(dir.path(), config()).unwrap();
        append(&log, 12, 0);
        assert!(log.save_tail_mark(1).unwrap());
        append(&log, 3, 24);
        log.close().unwrap();
    }
    {
        let log = Log::open(dir.path(), config()).unwrap();
        append(&log, 5, 30);
        assert!(log.save_tail_mark(1).unwrap(), "the segment grew since the last mark");
        append(&log, 5, 40);
    } // crash
    let log = Log::open(dir.path(), config()).unwrap();
    assert_eq!(log.end_offset(), Offset(50));
    assert_every_offset_and_time_found(&log, 0);
}

#[test]
fn truncation_and_restart_delete_the_mark_before_rewriting() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = Log::open(dir.path(), config()).unwrap();
        append(&log, 20, 0);
        assert!(log.save_tail_mark(1).unwrap());
        log.truncate_from(Offset(10)).unwrap();
        assert!(!dir.path().join(MARK).exists());
        // Other batches now fill the bytes the mark had vouched for.
        for i in 0..15 {
            log.append(&batch(3, 40, 10 + 3 * i)).unwrap();
        }
    } // crash
    {
        let log = Log::open(dir.path(), config()).unwrap();
        assert_eq!(log.end_offset(), Offset(55));
        let batches = log.read(Offset(10), usize::MAX).unwrap();
        assert_eq!(batches.len(), 15);
        assert!(log.save_tail_mark(1).unwrap());
        log.restart_at(Offset(7)).unwrap();
        assert!(!dir.path().join(MARK).exists());
        append(&log, 4, 7);
    } // crash
    let log = Log::open(dir.path(), config()).unwrap();
    assert_eq!((log.start_offset(), log.end_offset()), (Offset(7), Offset(15)));
    assert_every_offset_and_time_found(&log, 7);
}

#[test]
fn a_mark_the_files_do_not_bear_out_is_dropped_for_a_full_scan() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = Log::open(dir.path(), config()).unwrap();
        append(&log, 20, 0);
        assert!(log.save_tail_mark(1).unwrap());
    } // crash
    // The index holds fewer entries than the mark counts.
    let index = active_segment(dir.path()).with_extension("index");
    let len = fs::metadata(&index).unwrap().len();
    assert!(len > 8, "the mark's entries reached the index file");
    fs::OpenOptions::new().write(true).open(&index).unwrap().set_len(len - 8).unwrap();
    let log = Log::open(dir.path(), config()).unwrap();
    assert!(!dir.path().join(MARK).exists(), "a mark not used is deleted");
    assert_eq!(log.end_offset(), Offset(40));
    assert_every_offset_and_time_found(&log, 0);
}

#[test]
fn a_mark_for_a_segment_that_rolled_since_is_not_used() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = Log::open(dir.path(), marked_config()).unwrap();
        append(&log, 5, 0);
        assert!(log.save_tail_mark(1).unwrap());
        append(&log, 40, 10); // 4 KiB segments: several rolls
        assert!(log.segment_count() > 2);
    } // crash
    let log = Log::open(dir.path(), marked_config()).unwrap();
    assert!(!dir.path().join(MARK).exists());
    assert_eq!(log.end_offset(), Offset(90));
    assert_every_offset_and_time_found(&log, 0);
}

#[test]
fn a_draft_overtaken_by_a_truncation_writes_no_mark() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config()).unwrap();
    append(&log, 20, 0);
    let draft = log.draft_tail_mark(1).unwrap().expect("the segment grew");
    // The draft borrows the log, as the broker's pass does; a truncation cannot run while it
    // is held here, so it is committed after a truncation on a second handle of the same log.
    drop(draft);
    let draft = log.draft_tail_mark(1).unwrap().unwrap();
    std::thread::scope(|scope| {
        scope.spawn(|| log.truncate_from(Offset(10)).unwrap()).join().unwrap();
    });
    assert!(!draft.commit().unwrap(), "the truncation came between");
    assert!(!dir.path().join(MARK).exists());
}

#[test]
fn one_syncfs_commits_the_marks_of_many_logs() {
    let root = tempfile::tempdir().unwrap();
    let sync = FilesystemSync::open(root.path()).unwrap();
    let dirs: Vec<_> = (0..3).map(|i| root.path().join(i.to_string())).collect();
    {
        let logs: Vec<Log> = dirs.iter().map(|d| Log::open(d, config()).unwrap()).collect();
        for (i, log) in logs.iter().enumerate() {
            append(log, 10 + i, 0);
        }
        let drafts = logs.iter().filter_map(|l| l.draft_tail_mark(1).unwrap()).collect();
        let outcomes = sync.commit_tail_marks(drafts);
        assert_eq!(outcomes.len(), 3);
        assert!(outcomes.into_iter().all(|o| o.unwrap()));
        for (i, log) in logs.iter().enumerate() {
            append(log, 3, 2 * (10 + i as i64));
        }
    } // crash
    for (i, dir) in dirs.iter().enumerate() {
        assert!(dir.join(MARK).exists());
        let log = Log::open(dir, config()).unwrap();
        assert_eq!(log.end_offset(), Offset(2 * (13 + i as u64)));
        assert_every_offset_and_time_found(&log, 0);
    }
}

#[test]
fn a_clean_reopen_that_falls_back_to_a_scan_drops_the_mark() {
    let dir = tempfile::tempdir().unwrap();
    let sizes = {
        let log = Log::open(dir.path(), config()).unwrap();
        let sizes = append(&log, 20, 0);
        assert!(log.save_tail_mark(1).unwrap());
        log.close().unwrap();
        sizes
    };
    // A missing active index makes the clean open scan; damage below the mark cuts it there.
    let segment = active_segment(dir.path());
    fs::remove_file(segment.with_extension("index")).unwrap();
    damage(&segment, sizes[0] * 3 - 5);
    let log = Log::open(dir.path(), config()).unwrap();
    assert_eq!(log.end_offset(), Offset(4));
    assert!(!dir.path().join(MARK).exists(), "the cut fell below the mark");
}

#[test]
fn logs_that_never_fsync_get_no_mark() {
    let dir = tempfile::tempdir().unwrap();
    let log =
        Log::open(dir.path(), LogConfig { durability: Durability::Never, ..config() }).unwrap();
    append(&log, 20, 0);
    assert!(log.draft_tail_mark(1).unwrap().is_none());
}
