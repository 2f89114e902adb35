//! Logs that share a node-wide group commit: every append is durable when it returns, and
//! appends of different logs at the same time share `syncfs` rounds.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::batch;
use strata_record::Offset;
use strata_storage::{Log, LogConfig, SyncGroup};

static FSYNCS: AtomicU64 = AtomicU64::new(0);

fn count_fsync(_: Duration) {
    FSYNCS.fetch_add(1, Ordering::Relaxed);
}

#[test]
fn concurrent_appends_to_many_logs_share_fsyncs_and_are_durable_on_return() {
    strata_storage::set_fsync_observer(count_fsync);
    let dir = tempfile::tempdir().unwrap();
    let Some(group) = SyncGroup::open(dir.path()).unwrap() else {
        return; // a kernel whose syncfs does not report errors: logs fsync alone
    };
    let group = Arc::new(group);
    const LOGS: usize = 16;
    const APPENDS: usize = 40;
    let logs: Vec<Arc<Log>> = (0..LOGS)
        .map(|i| {
            let log = Log::open(dir.path().join(i.to_string()), LogConfig::default()).unwrap();
            assert!(log.join_sync_group(group.clone()));
            assert!(!log.join_sync_group(group.clone()), "a log joins one group once");
            Arc::new(log)
        })
        .collect();
    let before = FSYNCS.load(Ordering::Relaxed);
    let writers: Vec<_> = logs
        .iter()
        .map(|log| {
            let log = log.clone();
            std::thread::spawn(move || {
                for i in 0..APPENDS {
                    let info = log.append(&batch(2, 100, i as i64)).unwrap();
                    assert!(
                        log.durable_end_offset() > info.last_offset,
                        "an append returns once it is durable"
                    );
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().unwrap();
    }
    let fsyncs = FSYNCS.load(Ordering::Relaxed) - before;
    assert!(
        fsyncs < (LOGS * APPENDS) as u64,
        "{fsyncs} fsyncs for {} appends: rounds were shared",
        LOGS * APPENDS
    );
    drop(logs);
    for i in 0..LOGS {
        let log = Log::open(dir.path().join(i.to_string()), LogConfig::default()).unwrap();
        assert_eq!(log.end_offset(), Offset(2 * APPENDS as u64));
    }
}
