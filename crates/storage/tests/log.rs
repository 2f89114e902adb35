//! Behaviour of the partition log through its public API, on real files.

mod common;

use std::fs;

use common::*;
use strata_record::{Offset, RecordBatch, Timestamp};
use strata_storage::{Durability, Log, LogConfig, StorageError};

fn segment_files(dir: &std::path::Path, suffix: &str) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == suffix))
        .collect();
    files.sort();
    files
}

#[test]
fn append_assigns_dense_offsets_and_reads_back_whole_batches() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    let a = log.append(&batch(3, 10, 1000)).unwrap();
    let b = log.append(&batch(2, 10, 2000)).unwrap();
    assert_eq!((a.base_offset, a.last_offset), (Offset(0), Offset(2)));
    assert_eq!((b.base_offset, b.last_offset), (Offset(3), Offset(4)));
    assert_eq!(log.end_offset(), Offset(5));
    assert_eq!(log.durable_end_offset(), Offset(5), "EveryAppend fsyncs before returning");

    let all = log.read(Offset(0), usize::MAX).unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(base_of(&all[1]), Offset(3));
    RecordBatch::new(&all[1]).unwrap().validate_records().unwrap();

    // From the middle of a batch: the whole batch that holds the offset.
    let mid = log.read(Offset(4), usize::MAX).unwrap();
    assert_eq!(mid.len(), 1);
    assert_eq!(base_of(&mid[0]), Offset(3));
    // A budget smaller than one batch still returns one batch.
    assert_eq!(log.read(Offset(0), 1).unwrap().len(), 1);
    // At the end: nothing; past it: an error naming the range.
    assert!(log.read(Offset(5), 100).unwrap().is_empty());
    assert!(matches!(log.read(Offset(6), 100), Err(StorageError::OffsetOutOfRange { .. })));
    // read_until never returns a batch that reaches the bound.
    assert_eq!(log.read_until(Offset(0), Offset(4), usize::MAX).unwrap().len(), 1);
}

#[test]
fn invalid_batches_are_rejected_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig { max_batch_bytes: 2048, ..small_config() };
    let log = Log::open(dir.path(), config).unwrap();
    log.append(&batch(1, 10, 0)).unwrap();
    let mut bad_crc = batch(1, 10, 0).to_vec();
    *bad_crc.last_mut().unwrap() ^= 1;
    assert!(matches!(log.append(&bad_crc), Err(StorageError::InvalidBatch(_))));
    assert!(matches!(log.append(b"garbage"), Err(StorageError::InvalidBatch(_))));
    assert!(matches!(log.append(&batch(1, 4096, 0)), Err(StorageError::BatchTooLarge { .. })));
    let wrong_offset = at_offset(&batch(1, 10, 0), Offset(7));
    assert!(matches!(log.append_at(&wrong_offset), Err(StorageError::NonSequentialOffset { .. })));
    assert_eq!(log.end_offset(), Offset(1));
    assert_eq!(log.read(Offset(0), usize::MAX).unwrap().len(), 1);
    // append_at at the right offset works.
    log.append_at(&at_offset(&batch(2, 10, 0), Offset(1))).unwrap();
    assert_eq!(log.end_offset(), Offset(3));
}

#[test]
fn rolls_segments_and_reads_across_them_after_clean_and_unclean_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut expected = Vec::new();
    {
        let log = Log::open(dir.path(), small_config()).unwrap();
        for i in 0..60 {
            let info = log.append(&batch(1 + i % 4, 100, i as i64 * 10)).unwrap();
            expected.push((info.base_offset, info.last_offset));
        }
        assert!(log.segment_count() > 5, "small segments roll: {}", log.segment_count());
        log.close().unwrap();
    }
    for round in 0..2 {
        let log = Log::open(dir.path(), small_config()).unwrap();
        let end = expected.last().unwrap().1.plus(1);
        assert_eq!(log.end_offset(), end, "round {round}");
        let mut seen = Vec::new();
        let mut from = Offset(0);
        while from < end {
            for b in log.read(from, 700).unwrap() {
                let h = *RecordBatch::new(&b).unwrap().header();
                seen.push((h.base_offset(), h.last_offset()));
                from = h.last_offset().plus(1);
            }
        }
        assert_eq!(seen, expected, "round {round}");
        // Every offset can be looked up, whatever segment and index entry it falls under.
        for &(base, last) in &expected {
            assert_eq!(base_of(&log.read(last, 1).unwrap()[0]), base);
        }
        drop(log); // round 1 reopens without the clean-shutdown marker
    }
}

#[test]
fn second_open_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert!(matches!(Log::open(dir.path(), small_config()), Err(StorageError::Locked { .. })));
    drop(log);
    Log::open(dir.path(), small_config()).unwrap();
}

#[test]
fn finds_offsets_by_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    // 40 batches of 3 records, timestamps 1000*i + {0,1,2}.
    for i in 0..40 {
        log.append(&batch(3, 100, 1000 * i)).unwrap();
    }
    assert_eq!(log.offset_for_time(Timestamp(-5)).unwrap(), Some(Offset(0)));
    assert_eq!(log.offset_for_time(Timestamp(0)).unwrap(), Some(Offset(0)));
    assert_eq!(log.offset_for_time(Timestamp(1)).unwrap(), Some(Offset(1)));
    assert_eq!(log.offset_for_time(Timestamp(3)).unwrap(), Some(Offset(3)));
    assert_eq!(log.offset_for_time(Timestamp(17_002)).unwrap(), Some(Offset(53)));
    assert_eq!(log.offset_for_time(Timestamp(17_003)).unwrap(), Some(Offset(54)));
    assert_eq!(log.offset_for_time(Timestamp(39_002)).unwrap(), Some(Offset(119)));
    assert_eq!(log.offset_for_time(Timestamp(39_003)).unwrap(), None);
    log.close().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.offset_for_time(Timestamp(17_003)).unwrap(), Some(Offset(54)));
}

#[test]
fn truncation_keeps_handed_out_batches_intact() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    for i in 0..50 {
        log.append(&batch(2, 150, i)).unwrap();
    }
    let before = log.read(Offset(0), usize::MAX).unwrap();
    let copies: Vec<Vec<u8>> = before.iter().map(|b| b.to_vec()).collect();
    assert!(matches!(log.truncate_from(Offset(31)), Err(StorageError::NotBatchBoundary { .. })));
    log.truncate_from(Offset(30)).unwrap(); // inside a sealed segment
    assert_eq!(log.end_offset(), Offset(30));
    let info = log.append(&batch(1, 10, 0)).unwrap();
    assert_eq!(info.base_offset, Offset(30));
    log.truncate_from(Offset(30)).unwrap(); // inside the active segment
    log.truncate_from(Offset(30)).unwrap(); // at the end: nothing to do
    for (old, copy) in before.iter().zip(&copies) {
        assert_eq!(&old[..], &copy[..], "a batch read before truncation changed under the reader");
    }
    let after = log.read(Offset(0), usize::MAX).unwrap();
    assert_eq!(after.len(), 15);
    assert_eq!(after[..], before[..15]);
    drop(log);
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.end_offset(), Offset(30));
}

#[test]
fn prefix_deletion_and_reset() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    for i in 0..40 {
        log.append(&batch(2, 150, i)).unwrap();
    }
    let segments = log.segment_count();
    log.delete_before(Offset(41)).unwrap();
    assert_eq!(log.start_offset(), Offset(41));
    assert!(log.segment_count() < segments);
    assert!(matches!(log.read(Offset(40), 10), Err(StorageError::OffsetOutOfRange { .. })));
    assert_eq!(base_of(&log.read(Offset(41), 10).unwrap()[0]), Offset(40));
    drop(log);
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.start_offset(), Offset(41), "log start survives a reopen");
    // Past the end: the log restarts there, empty.
    log.delete_before(Offset(1000)).unwrap();
    assert_eq!(
        (log.start_offset(), log.end_offset(), log.segment_count()),
        (Offset(1000), Offset(1000), 1)
    );
    assert_eq!(log.append(&batch(1, 1, 0)).unwrap().base_offset, Offset(1000));
    log.close().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!((log.start_offset(), log.end_offset()), (Offset(1000), Offset(1001)));
}

/// A replica whose records a snapshot replaces restarts its log at the snapshot's end, which
/// can fall inside a batch it holds and below its end: nothing of the old log survives, and
/// batches handed out before stay intact.
#[test]
fn restart_empties_the_log_wherever_the_new_start_falls() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    for i in 0..40 {
        log.append(&batch(2, 150, i)).unwrap();
    }
    let held = log.read(Offset(0), usize::MAX).unwrap();
    let copies: Vec<Vec<u8>> = held.iter().map(|b| b.to_vec()).collect();
    log.restart_at(Offset(41)).unwrap(); // inside the batch at 40, below the end (80)
    assert_eq!(
        (log.start_offset(), log.end_offset(), log.segment_count()),
        (Offset(41), Offset(41), 1)
    );
    assert!(log.read(Offset(41), usize::MAX).unwrap().is_empty());
    for (old, copy) in held.iter().zip(&copies) {
        assert_eq!(&old[..], &copy[..], "a batch read before the restart changed under the reader");
    }
    assert_eq!(log.append(&batch(1, 10, 0)).unwrap().base_offset, Offset(41));
    // At the base of the only segment, and then below the start: the file is replaced.
    log.restart_at(Offset(41)).unwrap();
    assert_eq!(log.end_offset(), Offset(41));
    log.restart_at(Offset(7)).unwrap();
    assert_eq!(log.append(&batch(3, 10, 0)).unwrap().base_offset, Offset(7));
    drop(log);
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!((log.start_offset(), log.end_offset()), (Offset(7), Offset(10)));
    assert_eq!(segment_files(dir.path(), "log").len(), 1);
}

#[test]
fn retention_by_size_and_age_drops_whole_sealed_segments() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig { retention_bytes: Some(8192), ..small_config() };
    let log = Log::open(dir.path(), config).unwrap();
    for i in 0..60 {
        log.append(&batch(2, 150, i)).unwrap();
    }
    let size = log.size_bytes();
    // Nothing is deleted above the bound the caller gives (the high watermark).
    assert_eq!(log.apply_retention(Timestamp(0), Offset(3)).unwrap().segments_deleted, 0);
    let outcome = log.apply_retention(Timestamp(0), log.end_offset()).unwrap();
    assert!(outcome.segments_deleted > 0);
    assert!(log.size_bytes() >= 8192 && log.size_bytes() < size);
    assert_eq!(log.start_offset(), log.segment_bases()[0]);
    assert_eq!(log.end_offset(), Offset(120));
    drop(log);

    let config =
        LogConfig { retention_age: Some(std::time::Duration::from_secs(10)), ..small_config() };
    let log = Log::open(dir.path(), config).unwrap();
    // Timestamps are 0..60 ms: at now = 10 s + 30 ms, segments whose newest record is < 30 go.
    log.apply_retention(Timestamp(10_030), log.end_offset()).unwrap();
    let first = log.read(log.start_offset(), 1).unwrap();
    let header = *RecordBatch::new(&first[0]).unwrap().header();
    assert!(header.max_timestamp >= 20, "kept segments are the young ones");
    // Everything old: all sealed segments go, the active one stays.
    log.apply_retention(Timestamp(1_000_000), log.end_offset()).unwrap();
    assert_eq!(log.segment_count(), 1);
    assert_eq!(log.end_offset(), Offset(120));
}

#[test]
fn torn_tail_is_cut_at_the_last_good_batch() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = Log::open(dir.path(), LogConfig::default()).unwrap();
        for i in 0..10 {
            log.append(&batch(2, 100, i)).unwrap();
        }
    } // dropped without close: an unclean stop
    let file = segment_files(dir.path(), "log").pop().unwrap();
    let len = fs::metadata(&file).unwrap().len();
    fs::OpenOptions::new().write(true).open(&file).unwrap().set_len(len - 7).unwrap();
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    assert_eq!(log.end_offset(), Offset(18));
    assert_eq!(log.append(&batch(1, 1, 0)).unwrap().base_offset, Offset(18));
}

#[test]
fn a_clean_shutdown_skips_the_scan_and_corruption_is_still_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    for i in 0..10 {
        log.append(&batch(2, 100, i)).unwrap();
    }
    log.close().unwrap();
    assert!(dir.path().join("clean-shutdown").exists());
    // Damage a value byte of the last batch: a clean open does not scan, so it keeps the batch
    // and the read reports it as corrupt instead of serving it.
    let file = segment_files(dir.path(), "log").pop().unwrap();
    let mut bytes = fs::read(&file).unwrap();
    let last = bytes.len() - 5;
    bytes[last] ^= 0x10;
    fs::write(&file, &bytes).unwrap();
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    assert!(!dir.path().join("clean-shutdown").exists(), "marker is consumed on open");
    assert_eq!(log.end_offset(), Offset(20));
    assert_eq!(
        log.read(Offset(0), usize::MAX).unwrap().len(),
        9,
        "reading stops before the bad batch"
    );
    assert!(matches!(log.read(Offset(18), usize::MAX), Err(StorageError::Corrupt { .. })));
    // After a crash the scan finds the same damage and cuts the tail there.
    drop(log);
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    assert_eq!(log.end_offset(), Offset(18));
}

/// A read re-checks the CRC only of bytes that were on disk when the log opened; batches this
/// process appended were checked on their way in. Damage to those after the append reaches the
/// reader unchanged, where the consumer's own CRC check reports it (as with Kafka's brokers).
#[test]
fn reads_recheck_only_the_bytes_that_were_on_disk_at_open() {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let mut sizes = Vec::new();
    {
        let log = Log::open(dir.path(), LogConfig::default()).unwrap();
        for i in 0..3 {
            sizes.push(batch(2, 100, i).len() as u64);
            log.append(&batch(2, 100, i)).unwrap();
        }
        log.close().unwrap();
    }
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    for i in 3..6 {
        log.append(&batch(2, 100, i)).unwrap();
    }
    let file = fs::OpenOptions::new()
        .write(true)
        .open(segment_files(dir.path(), "log").pop().unwrap())
        .unwrap();
    // A value byte near the end of batch 1 (from disk) and of batch 4 (appended since).
    let end_of = |n: usize| sizes[0] * n as u64;
    file.write_at(&[0xAA], end_of(2) - 5).unwrap();
    file.write_at(&[0xAA], end_of(5) - 5).unwrap();
    assert!(matches!(log.read(Offset(2), 1), Err(StorageError::Corrupt { .. })));
    let appended = log.read(Offset(8), 1).unwrap();
    assert_eq!(base_of(&appended[0]), Offset(8));
    assert!(RecordBatch::new(&appended[0]).is_err(), "served as stored, for the consumer to catch");
    // Reopened after a crash, the recovery scan checks the same bytes and cuts at the damage.
    drop(log);
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    assert_eq!(log.end_offset(), Offset(2), "the crash scan cuts at the first damage");
}

#[test]
fn damaged_or_missing_indexes_are_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = Log::open(dir.path(), small_config()).unwrap();
        for i in 0..40 {
            log.append(&batch(2, 150, i)).unwrap();
        }
        log.close().unwrap();
    }
    let indexes = segment_files(dir.path(), "index");
    fs::remove_file(&indexes[0]).unwrap();
    fs::write(&indexes[1], [0xff; 8]).unwrap();
    fs::write(segment_files(dir.path(), "timeindex")[2].clone(), [1, 2, 3]).unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    let mut from = Offset(0);
    let mut count = 0;
    while from < log.end_offset() {
        let b = log.read(from, 1).unwrap();
        from = RecordBatch::new(&b[0]).unwrap().header().last_offset().plus(1);
        count += 1;
    }
    assert_eq!(count, 40);
    // Batch 19 holds offsets 38 and 39 with timestamps 19 and 20.
    assert_eq!(log.offset_for_time(Timestamp(20)).unwrap(), Some(Offset(39)));
}

#[test]
fn interval_durability_flushes_when_due() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), with_durability(Durability::Interval(SHORT))).unwrap();
    log.append(&batch(1, 10, 0)).unwrap();
    std::thread::sleep(SHORT * 2);
    log.flush_if_due().unwrap();
    assert_eq!(log.durable_end_offset(), Offset(1));
    let log2dir = tempfile::tempdir().unwrap();
    let never = Log::open(log2dir.path(), with_durability(Durability::Never)).unwrap();
    never.append(&batch(1, 10, 0)).unwrap();
    assert_eq!(never.durable_end_offset(), Offset(0));
    never.flush().unwrap();
    assert_eq!(never.durable_end_offset(), Offset(1));
}

#[test]
fn only_a_log_fsyncing_every_append_outside_a_group_fsyncs_on_the_writing_thread() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), with_durability(Durability::Never)).unwrap();
    assert!(!log.writer_fsyncs_every_append(), "never: nothing to fsync per append");
    log.set_config(with_durability(Durability::EveryAppend)).unwrap();
    assert!(log.writer_fsyncs_every_append(), "every append, no group: the writer fsyncs");
    log.set_config(with_durability(Durability::Interval(SHORT))).unwrap();
    assert!(!log.writer_fsyncs_every_append(), "an interval: only once it is due");
    log.set_config(with_durability(Durability::Never)).unwrap();
    assert!(!log.writer_fsyncs_every_append());
}

#[test]
fn an_interval_fsync_falls_due_once_the_interval_passed_with_something_written() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), with_durability(Durability::Interval(SHORT))).unwrap();
    // Written without the durability step, as the broker writes on its async runtime.
    let write = |log: &Log, base: i64| {
        let data = batch(1, 10, base);
        log.write_validated(&data, *RecordBatch::new(&data).unwrap().header()).unwrap()
    };
    let info = write(&log, 0);
    std::thread::sleep(SHORT * 2);
    assert!(log.interval_fsync_due(&info));
    log.make_durable(&info).unwrap();
    assert_eq!(log.durable_end_offset(), Offset(1));
    assert!(!log.interval_fsync_due(&info), "that fsync covered it");
    let long = tempfile::tempdir().unwrap();
    let long = Log::open(
        long.path(),
        with_durability(Durability::Interval(std::time::Duration::from_secs(3600))),
    )
    .unwrap();
    let info = write(&long, 0);
    assert!(!long.interval_fsync_due(&info), "the interval has not passed");
    let never = tempfile::tempdir().unwrap();
    let never = Log::open(never.path(), with_durability(Durability::Never)).unwrap();
    let info = write(&never, 0);
    std::thread::sleep(SHORT * 2);
    assert!(!never.interval_fsync_due(&info));
}

#[test]
fn concurrent_appenders_share_fsyncs_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = std::sync::Arc::new(Log::open(dir.path(), LogConfig::default()).unwrap());
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                (0..50)
                    .map(|i| log.append(&batch(1, 64, t * 1000 + i)).unwrap().base_offset)
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut offsets: Vec<Offset> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    offsets.sort();
    assert_eq!(offsets, (0..200).map(Offset).collect::<Vec<_>>());
    assert_eq!(log.durable_end_offset(), Offset(200));
}

#[test]
fn reopening_with_a_smaller_configuration_keeps_every_batch() {
    let dir = tempfile::tempdir().unwrap();
    let big = LogConfig { segment_bytes: 1 << 20, index_interval_bytes: 4096, ..small_config() };
    {
        let log = Log::open(dir.path(), big).unwrap();
        for i in 0..100 {
            log.append(&batch(2, 150, i)).unwrap();
        }
        log.flush().unwrap();
    } // crash
    // Far denser index and far smaller segments than the data was written with.
    let small = LogConfig { index_interval_bytes: 64, segment_bytes: 2048, ..small_config() };
    let log = Log::open(dir.path(), small.clone()).unwrap();
    assert_eq!(log.end_offset(), Offset(200));
    log.close().unwrap();
    let log = Log::open(dir.path(), small).unwrap();
    assert_eq!(log.end_offset(), Offset(200));
    assert_eq!(log.read(Offset(0), usize::MAX).unwrap().len(), 100);
}

#[test]
fn clean_reopen_with_a_missing_active_index_scans_instead() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = Log::open(dir.path(), small_config()).unwrap();
        for i in 0..40 {
            log.append(&batch(2, 150, i)).unwrap();
        }
        log.close().unwrap();
    }
    fs::remove_file(segment_files(dir.path(), "timeindex").pop().unwrap()).unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.end_offset(), Offset(80));
    assert_eq!(log.offset_for_time(Timestamp(39)).unwrap(), Some(Offset(77)));
}

#[test]
fn without_a_checkpoint_only_the_last_segments_are_scanned() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = Log::open(dir.path(), small_config()).unwrap();
        for i in 0..40 {
            log.append(&batch(2, 150, i)).unwrap();
        }
        log.flush().unwrap();
    }
    // Damage the oldest segment and lose the checkpoint: the damage is reported on read, and
    // does not make recovery delete the segments after it.
    let first = segment_files(dir.path(), "log")[0].clone();
    let mut bytes = fs::read(&first).unwrap();
    bytes[100] ^= 1;
    fs::write(&first, bytes).unwrap();
    fs::remove_file(dir.path().join("checkpoint")).unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.end_offset(), Offset(80));
    assert!(matches!(log.read(Offset(0), 1), Err(StorageError::Corrupt { .. })));
    assert_eq!(log.read(Offset(40), usize::MAX).unwrap().len(), 20);
}

#[test]
fn the_active_index_reaches_its_files_only_when_sealed() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig { segment_bytes: 1 << 20, ..small_config() };
    let log = Log::open(dir.path(), config.clone()).unwrap();
    for i in 0..20 {
        log.append(&batch(2, 150, i)).unwrap();
    }
    // Entries stay in memory while the segment is active: no dirty index pages for a
    // filesystem-wide sync to write back.
    let index = segment_files(dir.path(), "index").pop().unwrap();
    let time_index = segment_files(dir.path(), "timeindex").pop().unwrap();
    assert_eq!(fs::metadata(&index).unwrap().len(), 0);
    assert_eq!(fs::metadata(&time_index).unwrap().len(), 0);
    assert_eq!(log.offset_for_time(Timestamp(12)).unwrap(), Some(Offset(23)));
    log.close().unwrap();
    // A clean close writes them out whole; the next open trusts them and appends after them.
    let entries = fs::metadata(&index).unwrap().len();
    assert!(entries > 0 && entries.is_multiple_of(8), "{entries} bytes of offset index");
    assert!(fs::metadata(&time_index).unwrap().len() > 0);
    let log = Log::open(dir.path(), config).unwrap();
    assert_eq!(log.end_offset(), Offset(40));
    log.append(&batch(2, 150, 20)).unwrap();
    assert_eq!(fs::metadata(&index).unwrap().len(), entries, "new entries stay in memory");
    assert_eq!(log.offset_for_time(Timestamp(12)).unwrap(), Some(Offset(23)));
    assert_eq!(log.offset_for_time(Timestamp(21)).unwrap(), Some(Offset(41)));
    log.close().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.read(Offset(40), 1).unwrap().len(), 1);
}

#[test]
fn runs_are_the_batches_back_to_back_one_per_segment_read() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    for i in 0..40 {
        log.append(&batch(1 + i % 3, 150, i as i64)).unwrap();
    }
    let segments = log.segment_count();
    assert!(segments > 3, "small segments roll: {segments}");
    let (from, until) = (Offset(5), log.end_offset());
    let read = log.read_runs_until(from, until, usize::MAX).unwrap();
    assert_eq!(read.batches, log.read_until(from, until, usize::MAX).unwrap());
    // The same bytes, in the same order, cut only where a segment ends.
    assert_eq!(read.runs.concat(), read.batches.concat());
    assert!(read.runs.len() <= segments && read.runs.len() > 1, "{} runs", read.runs.len());
    assert!(read.runs.len() < read.batches.len(), "a run holds several batches");
    let mut starts = read.batches.iter().map(|b| b.as_ptr());
    for run in &read.runs {
        // Each run starts where one of its batches does: a whole batch, sliced in place.
        assert!(starts.any(|p| p == run.as_ptr()), "a run starts at a batch of the map");
    }
    // A budget stops a read at a batch boundary, in runs as in batches.
    let short = log.read_runs_until(from, until, 700).unwrap();
    assert_eq!(short.runs.concat(), short.batches.concat());
}
