//! openraft's own storage test suite (`openraft::testing::Suite`) against the segment-log
//! store and the partition state machine: the storage contract, checked by its authors' tests.

use std::sync::Arc;

use openraft::StorageError;
use openraft::testing::{StoreBuilder, Suite};
use strata_raft::partition_sm::PartitionSm;
use strata_raft::store::SegmentStore;
use strata_raft::types::{NodeId, PartitionTc};
use strata_storage::{Log, LogConfig};
use tokio::sync::watch;

struct TempStores;

impl StoreBuilder<PartitionTc, SegmentStore<PartitionTc>, PartitionSm, tempfile::TempDir>
    for TempStores
{
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, SegmentStore<PartitionTc>, PartitionSm), StorageError<NodeId>>
    {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = Log::open(
            dir.path().join("log"),
            strata_raft::replicated_log_config(LogConfig::default()),
        )
        .expect("open log");
        let store =
            SegmentStore::open(&dir.path().join("raft"), Arc::new(log)).expect("open store");
        // The suite purges past the log with no snapshot install to wait for.
        store.set_install_wait(std::time::Duration::ZERO);
        let (high_watermark, _) = watch::channel(0);
        let sm = PartitionSm::new(store.clone(), Arc::new(high_watermark)).expect("open sm");
        Ok((dir, store, sm))
    }
}

// The suite runs every case on its own runtime: a plain test, not a tokio one.
#[test]
fn segment_store_passes_the_openraft_storage_suite() {
    Suite::test_all(TempStores).unwrap();
}
