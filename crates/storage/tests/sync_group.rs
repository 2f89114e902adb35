//! Logs that share a node-wide group commit: every wait for durability is answered once the
//! batch is on disk, and waits of different logs at the same time share `syncfs` rounds.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use common::batch;
use strata_record::{Offset, RecordBatch};
use strata_storage::{Log, LogConfig, SyncGroup};

static FSYNCS: AtomicU64 = AtomicU64::new(0);

fn count_fsync(_: Duration) {
    FSYNCS.fetch_add(1, Ordering::Relaxed);
}

#[test]
fn waits_of_many_logs_share_fsyncs_and_are_answered_once_durable() {
    strata_storage::set_fsync_observer(count_fsync);
    let dir = tempfile::tempdir().unwrap();
    let Some(group) = SyncGroup::open(dir.path(), None).unwrap() else {
        return; // a kernel whose syncfs does not report errors: logs fsync alone
    };
    let group = Arc::new(group);
    const LOGS: usize = 50;
    const ROUNDS: usize = 20;
    let logs: Vec<Arc<Log>> = (0..LOGS)
        .map(|i| {
            let log = Log::open(dir.path().join(i.to_string()), LogConfig::default()).unwrap();
            assert!(log.join_sync_group(group.clone()));
            assert!(!log.join_sync_group(group.clone()), "a log joins one group once");
            assert!(log.shares_fsyncs());
            Arc::new(log)
        })
        .collect();
    drop(group); // the logs keep it
    let before = FSYNCS.load(Ordering::Relaxed);
    let (answers, answered) = mpsc::channel();
    for round in 0..ROUNDS {
        // A batch for every log, then a wait for each: the waits queue up together.
        for log in &logs {
            let data = batch(2, 100, round as i64);
            let header = *RecordBatch::new(&data).unwrap().header();
            let info = log.write_validated(&data, header).unwrap();
            let (log_for_check, answers) = (log.clone(), answers.clone());
            log.when_durable(&info, move |outcome| {
                let durable = log_for_check.durable_end_offset() > info.last_offset;
                answers.send((outcome.is_ok(), durable)).unwrap();
            });
        }
    }
    for _ in 0..LOGS * ROUNDS {
        let (ok, durable) = answered.recv_timeout(Duration::from_secs(30)).unwrap();
        assert!(ok && durable, "each wait is answered once its batch is durable");
    }
    let fsyncs = FSYNCS.load(Ordering::Relaxed) - before;
    assert!(
        fsyncs < (LOGS * ROUNDS) as u64 / 2,
        "{fsyncs} fsyncs for {} waits: rounds are shared",
        LOGS * ROUNDS
    );
    drop(logs);
    for i in 0..LOGS {
        let log = Log::open(dir.path().join(i.to_string()), LogConfig::default()).unwrap();
        assert_eq!(log.end_offset(), Offset(2 * ROUNDS as u64));
    }
}
