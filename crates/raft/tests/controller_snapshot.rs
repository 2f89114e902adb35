//! The controller's snapshot is kept on disk: after its log is purged, a restarted node
//! starts from it with the same metadata (topics, nodes, committed offsets).

use std::collections::{BTreeMap, BTreeSet};

use openraft::storage::RaftStateMachine;
use openraft::{
    BasicNode, CommittedLeaderId, Entry, EntryPayload, LogId, Membership, RaftSnapshotBuilder,
};
use std::sync::Arc;

use strata_raft::controller::{CommittedOffset, ControllerSm, MetaCommand};
use strata_raft::store::SegmentStore;
use strata_raft::types::ControllerTc;
use strata_storage::{Log, LogConfig};

fn open(dir: &std::path::Path) -> ControllerSm {
    let log = Log::open(dir.join("log"), strata_raft::replicated_log_config(LogConfig::default()))
        .expect("open log");
    let store = SegmentStore::open(&dir.join("raft"), Arc::new(log)).expect("open store");
    ControllerSm::open(store).expect("open state machine")
}

fn entry(index: u64, payload: EntryPayload<ControllerTc>) -> Entry<ControllerTc> {
    Entry { log_id: LogId::new(CommittedLeaderId::new(1, 1), index), payload }
}

#[tokio::test]
async fn a_reopened_controller_starts_from_its_kept_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = open(dir.path());
    let nodes: BTreeMap<u64, BasicNode> =
        (1..=3).map(|id| (id, BasicNode::new(format!("127.0.0.1:{}", 9000 + id)))).collect();
    let voters: BTreeSet<u64> = nodes.keys().copied().collect();
    let create = MetaCommand::CreateTopic {
        name: "orders".into(),
        partitions: 2,
        replication_factor: 0,
        config: BTreeMap::new(),
        created_ms: 1,
    };
    let commit = MetaCommand::CommitOffsets {
        group: "billing".into(),
        offsets: vec![CommittedOffset {
            topic: "orders".into(),
            partition: 1,
            offset: 42,
            metadata: String::new(),
        }],
    };
    let entries = vec![
        entry(1, EntryPayload::Membership(Membership::new(vec![voters], nodes))),
        entry(2, EntryPayload::Normal(create)),
        entry(3, EntryPayload::Normal(commit)),
    ];
    let replies = sm.apply(entries).await.unwrap();
    assert!(replies.iter().all(Result::is_ok), "{replies:?}");
    let mut builder = sm.get_snapshot_builder().await;
    let built = builder.build_snapshot().await.unwrap();
    assert_eq!(built.meta.last_log_id.map(|l| l.index), Some(3));

    let before = sm.metadata();
    drop((builder, sm));
    let mut reopened = open(dir.path());
    assert_eq!(*reopened.metadata(), *before);
    assert_eq!(reopened.metadata().offsets["billing"][&("orders".to_owned(), 1)].0, 42);
    assert_eq!(reopened.metadata().topics["orders"].partitions[0].replicas.len(), 3);
    let (applied, membership) = reopened.applied_state().await.unwrap();
    assert_eq!(applied.map(|l| l.index), Some(3));
    assert_eq!(membership.membership().voter_ids().count(), 3);
    let current = reopened.get_current_snapshot().await.unwrap().expect("kept snapshot");
    assert_eq!(current.meta.last_log_id, applied);
}
