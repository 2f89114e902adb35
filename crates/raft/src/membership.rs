//! Changing who votes in a Raft group, from its leader: a joining node is added as a learner
//! and promoted only once it has caught up (so a slow or empty newcomer never counts towards
//! a quorum it cannot serve), and the whole voter set is then replaced in one joint change.
//! A leader that removes itself steps down once the change commits; the remaining voters
//! elect a successor.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::raft::responder::OneshotResponder;
use openraft::{BasicNode, ChangeMembers, Raft, RaftTypeConfig, ServerState};
use serde::{Deserialize, Serialize};

use crate::types::NodeId;
use crate::{ReplicaError, Result};

/// A change of the cluster's nodes (the controller group's voters).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeChange {
    /// A node, already started with `--node-id ID`, joins at `addr`.
    Add { id: NodeId, addr: String },
    /// A node leaves; its replicas move to the others.
    Remove { id: NodeId },
}

/// The voters of a group as its leader last saw them, with their addresses.
pub(crate) fn voters<C>(raft: &Raft<C>) -> BTreeMap<NodeId, BasicNode>
where
    C: RaftTypeConfig<NodeId = NodeId, Node = BasicNode>,
{
    let metrics = raft.metrics();
    let metrics = metrics.borrow();
    let membership = metrics.membership_config.membership();
    membership
        .voter_ids()
        .map(|id| (id, membership.get_node(&id).cloned().unwrap_or_default()))
        .collect()
}

/// Makes `target` the group's voters, from its leader. Returns whether anything changed;
/// [`ReplicaError::NotLeader`] elsewhere. Newcomers must catch up within `catch_up`.
pub(crate) async fn change_voters<C>(
    raft: &Raft<C>,
    target: &BTreeMap<NodeId, BasicNode>,
    catch_up: Duration,
) -> Result<bool>
where
    C: RaftTypeConfig<NodeId = NodeId, Node = BasicNode, Responder = OneshotResponder<C>>,
{
    let (leading, in_group, current, own_id) = {
        let metrics = raft.metrics();
        let metrics = metrics.borrow();
        let membership = metrics.membership_config.membership();
        let in_group: BTreeSet<NodeId> = membership.nodes().map(|(id, _)| *id).collect();
        let current: BTreeSet<NodeId> = membership.voter_ids().collect();
        (metrics.state == ServerState::Leader, in_group, current, metrics.id)
    };
    if !leading {
        return Err(ReplicaError::NotLeader { leader: None });
    }
    let wanted: BTreeSet<NodeId> = target.keys().copied().collect();
    if wanted == current {
        return Ok(false);
    }
    let joining: Vec<NodeId> = wanted.difference(&current).copied().collect();
    for id in &joining {
        if !in_group.contains(id) {
            raft.add_learner(*id, target[id].clone(), false).await.map_err(write_error)?;
        }
    }
    wait_caught_up(raft, &joining, catch_up).await?;
    if !wanted.contains(&own_id) {
        // A leader that removes itself steps down on its next tick once the change is
        // applied; partition groups run without ticks otherwise (see `partition_config`).
        raft.runtime_config().tick(true);
    }
    raft.change_membership(ChangeMembers::ReplaceAllVoters(wanted), false)
        .await
        .map_err(write_error)?;
    Ok(true)
}

/// Waits until every node of `joining` holds the leader's log as it is now.
async fn wait_caught_up<C>(raft: &Raft<C>, joining: &[NodeId], limit: Duration) -> Result<()>
where
    C: RaftTypeConfig<NodeId = NodeId, Node = BasicNode>,
{
    if joining.is_empty() {
        return Ok(());
    }
    let goal = raft.metrics().borrow().last_log_index;
    let caught_up = raft
        .wait(Some(limit))
        .metrics(
            |m| {
                let matched = |id: &NodeId| {
                    m.replication
                        .as_ref()
                        .and_then(|r| r.get(id).copied().flatten())
                        .map(|l| l.index)
                };
                joining.iter().all(|id| matched(id) >= goal)
            },
            "learners caught up",
        )
        .await;
    caught_up.map(|_| ()).map_err(|_| {
        ReplicaError::Unavailable(format!(
            "node(s) {joining:?} did not catch up within {limit:?}: are they running, with these ids, and reachable?"
        ))
    })
}

fn write_error(e: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>) -> ReplicaError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(forward)) => {
            ReplicaError::NotLeader {
                leader: forward
                    .leader_id
                    .map(|id| (id, forward.leader_node.map(|n| n.addr).unwrap_or_default())),
            }
        }
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            ReplicaError::Unavailable(format!("membership change refused: {e}"))
        }
        other => ReplicaError::Unavailable(other.to_string()),
    }
}
