//! A write that the kernel refuses makes the log refuse every later write, and a reopen
//! recovers to the last whole batch. The failure is real: the test re-runs itself in a child
//! process whose file-size limit (RLIMIT_FSIZE) the log's segment crosses mid-batch.
#![allow(unsafe_code)]

mod common;

use std::process::Command;

use common::{batch, small_config};
use strata_record::Offset;
use strata_storage::{Log, LogConfig, StorageError};

const CHILD_ENV: &str = "STRATA_WRITE_FAILURE_CHILD";
const LIMIT: u64 = 20_000;

#[test]
fn failed_write_makes_the_log_refuse_writes_until_reopened() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "failed_write_makes_the_log_refuse_writes_until_reopened",
                "--nocapture",
            ])
            .env(CHILD_ENV, dir.path())
            .status()
            .unwrap();
        assert!(status.success(), "child process failed: {status}");
        return;
    };
    // SAFETY: plain libc calls on this single-threaded child process: ignore SIGXFSZ so an
    // oversized write fails with EFBIG instead of killing the process, then cap file sizes.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let limit = libc::rlimit { rlim_cur: LIMIT, rlim_max: libc::RLIM_INFINITY };
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &limit), 0);
    }
    let config = LogConfig { segment_bytes: 1 << 20, index_interval_bytes: 4096, ..small_config() };
    let log = Log::open(&dir, config.clone()).unwrap();
    let mut acknowledged = Offset(0);
    let err = loop {
        match log.append(&batch(3, 700, 0)) {
            Ok(info) => acknowledged = info.last_offset.plus(1),
            Err(err) => break err,
        }
    };
    assert!(matches!(err, StorageError::Io { .. }), "first failure is the I/O error: {err}");
    assert!(acknowledged > Offset(0));
    // From now on every write is refused, even one that would fit.
    assert!(matches!(log.append(&batch(1, 1, 0)), Err(StorageError::Failed { .. })));
    assert!(matches!(log.flush(), Err(StorageError::Failed { .. })));
    assert!(matches!(log.truncate_from(Offset(0)), Err(StorageError::Failed { .. })));
    // What was acknowledged is still readable.
    assert_eq!(log.end_offset(), acknowledged);
    assert!(!log.read(Offset(0), usize::MAX).unwrap().is_empty());
    assert!(log.close().is_err(), "a failed log does not claim a clean shutdown");

    // The disk has room again.
    // SAFETY: as above; raising the soft limit back up to the unchanged hard limit.
    unsafe {
        let limit = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &limit), 0);
    }
    let log = Log::open(&dir, config).unwrap();
    assert_eq!(log.end_offset(), acknowledged, "the torn batch is cut, acknowledged ones kept");
    log.append(&batch(1, 1, 0)).unwrap();
}
