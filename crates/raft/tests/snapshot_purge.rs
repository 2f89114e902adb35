//! A replica whose log is behind the leader's snapshot (an empty disk, or a long absence)
//! restarts its log where the snapshot ends, whichever order openraft runs the snapshot
//! install and the purge that goes with it, and after a crash between the two.

use std::sync::Arc;

use openraft::storage::RaftLogStorage;
use openraft::{CommittedLeaderId, LogId};
use strata_raft::store::SegmentStore;
use strata_raft::types::{NodeId, PartitionTc};
use strata_storage::{Log, LogConfig};

fn open(dir: &std::path::Path) -> SegmentStore<PartitionTc> {
    let log = Log::open(dir.join("log"), strata_raft::replicated_log_config(LogConfig::default()))
        .expect("open log");
    let store = SegmentStore::open(&dir.join("raft"), Arc::new(log)).expect("open store");
    // These drive the purge and the install by hand, one after the other.
    store.set_install_wait(std::time::Duration::ZERO);
    store
}

fn log_id(index: u64) -> LogId<NodeId> {
    LogId::new(CommittedLeaderId::new(3, 1), index)
}

fn bounds(store: &SegmentStore<PartitionTc>) -> (u64, u64) {
    (store.log().start_offset().0, store.log().end_offset().0)
}

#[tokio::test]
async fn a_purge_before_the_install_is_moved_to_the_snapshot_end() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    store.purge(log_id(27)).await.unwrap();
    store.snapshot_installed(log_id(27), 520).unwrap();
    assert_eq!(bounds(&store), (520, 520));
    drop(store);
    assert_eq!(bounds(&open(dir.path())), (520, 520), "the purge point is on disk");
}

#[tokio::test]
async fn a_purge_after_the_install_starts_at_the_snapshot_end() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    store.snapshot_installed(log_id(27), 520).unwrap();
    store.purge(log_id(27)).await.unwrap();
    assert_eq!(bounds(&store), (520, 520));
}

#[tokio::test]
async fn a_restart_between_install_and_purge_catches_up_to_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.catch_up_to_snapshot(log_id(27), 520).unwrap();
    assert_eq!(bounds(&store), (520, 520));
    // Already there: nothing moves.
    store.catch_up_to_snapshot(log_id(27), 520).unwrap();
    drop(store);
    let store = open(dir.path());
    store.catch_up_to_snapshot(log_id(27), 520).unwrap();
    assert_eq!(bounds(&store), (520, 520));
}
