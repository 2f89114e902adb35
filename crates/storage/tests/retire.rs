//! A retired log (its topic deleted while requests still held it) writes nothing more at its
//! path, where a new log of the same name may already live; it still serves reads.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use common::{batch, with_durability};
use strata_record::{Offset, Timestamp};
use strata_storage::{Durability, FilesystemSync, Log, LogConfig, StorageError};

/// Every file under `dir` with its contents.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), fs::read(e.path()).unwrap()))
        .collect()
}

fn is_retired<T: std::fmt::Debug>(result: Result<T, StorageError>) -> bool {
    matches!(result, Err(StorageError::Retired { .. }))
}

#[test]
fn a_retired_log_never_touches_the_log_that_takes_its_path() {
    let root = tempfile::tempdir().unwrap();
    let path = root.path().join("t-0");
    // Every append fsynced (so a tail mark could be saved) and retention by size, so each
    // call below would write, roll or delete at the path if the log were not retired.
    let config = LogConfig { retention_bytes: Some(1), ..with_durability(Durability::EveryAppend) };
    let old = Log::open(&path, config.clone()).unwrap();
    for _ in 0..6 {
        old.append(&batch(2, 900, 0)).unwrap();
    }
    assert!(old.segment_count() > 2);
    let end = old.end_offset();

    old.retire();
    fs::rename(&path, root.path().join("trash")).unwrap();
    let new = Log::open(&path, config).unwrap();
    new.append(&batch(1, 10, 0)).unwrap();
    let before = files(&path);

    // The next append would roll the segment (a new file at the path) and retention would
    // delete the oldest segments by name.
    assert!(is_retired(old.append(&batch(2, 900, 0))));
    assert!(is_retired(old.apply_retention(Timestamp(i64::MAX), end)));
    assert!(is_retired(old.save_tail_mark(1)));
    assert!(is_retired(old.truncate_from(Offset(2))));
    assert!(is_retired(old.delete_before(Offset(4))));
    assert!(is_retired(old.restart_at(Offset(1_000))));
    assert!(is_retired(old.flush()));
    assert_eq!(files(&path), before, "the new log's files are untouched");

    // Reads of the old records go on (from the moved files).
    assert_eq!(old.end_offset(), end);
    assert!(!old.read(Offset(0), usize::MAX).unwrap().is_empty());
    new.close().unwrap();
    let reopened = Log::open(&path, with_durability(Durability::EveryAppend)).unwrap();
    assert_eq!(reopened.end_offset(), Offset(1));
}

#[test]
fn a_tail_mark_drafted_before_the_log_retired_is_never_written() {
    let root = tempfile::tempdir().unwrap();
    let path = root.path().join("t-0");
    let config = with_durability(Durability::EveryAppend);
    let filesystem = FilesystemSync::open(root.path()).unwrap();
    let old = Log::open(&path, config.clone()).unwrap();
    old.append(&batch(2, 900, 0)).unwrap();
    // Drafted by a tail-mark pass, one for each way of committing, before the topic's deletion
    // retires the log and moves its directory away.
    let by_fsync = old.draft_tail_mark(1).unwrap().expect("the segment grew");
    let by_syncfs = old.draft_tail_mark(1).unwrap().expect("the segment grew");
    old.retire();
    fs::rename(&path, root.path().join("trash")).unwrap();
    let new = Log::open(&path, config).unwrap();
    new.append(&batch(1, 10, 0)).unwrap();
    let before = files(&path);

    assert!(is_retired(by_fsync.commit()));
    let committed = filesystem.commit_tail_marks(vec![by_syncfs]);
    assert!(
        matches!(committed[..], [Ok(false)] | [Err(StorageError::Retired { .. })]),
        "{committed:?}"
    );
    assert_eq!(files(&path), before, "no tail mark or index entry in the new log's directory");
    assert!(!root.path().join("trash").join("tail.mark").exists());
}

/// Files kept beside a log (a replica's Raft files) are written under the retire gate: a
/// write in progress holds `retire` until it is done, and none runs after.
#[test]
fn retire_waits_for_a_write_beside_the_log_and_refuses_later_ones() {
    use std::sync::{Arc, mpsc};
    use std::thread;
    use std::time::Duration;

    let root = tempfile::tempdir().unwrap();
    let log =
        Arc::new(Log::open(root.path().join("t-0"), with_durability(Durability::Never)).unwrap());
    let (entered, wait_entered) = mpsc::channel();
    let (go, wait_go) = mpsc::channel::<()>();
    let writer = thread::spawn({
        let log = log.clone();
        move || {
            log.write_beside(|| {
                entered.send(()).unwrap();
                wait_go.recv().unwrap();
            })
        }
    });
    wait_entered.recv().unwrap();
    let retiring = thread::spawn({
        let log = log.clone();
        move || log.retire()
    });
    thread::sleep(Duration::from_millis(100));
    assert!(!retiring.is_finished(), "retire waits for the write in progress");
    go.send(()).unwrap();
    writer.join().unwrap().unwrap();
    retiring.join().unwrap();
    assert!(is_retired(log.write_beside(|| ())));
}
