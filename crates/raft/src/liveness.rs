//! Node-level failure detection for partition groups.
//!
//! Per-group Raft heartbeats cost a core at 1,000 idle partitions, so partition groups send
//! them only once a second and never start elections on their own timers. Instead each node
//! pings every peer every 100 ms, over a connection of its own (replication traffic queued on
//! the shared channel would delay the pings of a busy peer); when a peer has not answered for
//! [`DEAD_AFTER`], this node stands for election (after a per-group random delay, so the
//! followers of a group rarely split the vote) in every group whose leader is that peer, that
//! has no leader, or whose leader left the group (a replica move). When a peer answers again,
//! this node sends one round of heartbeats in the groups it leads, so a leader that was frozen
//! or cut off learns of a newer term and steps down at once; and leaders heartbeat lagging
//! followers every second and all followers every five seconds (see [`nudge_followers`]).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use openraft::ServerState;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::controller::ControllerSm;
use crate::network::{Peers, Router};
use crate::types::{CONTROLLER_GROUP, GroupId, NodeId};

const PING_EVERY: Duration = Duration::from_millis(100);
const PING_TIMEOUT: Duration = Duration::from_millis(400);
/// A peer silent this long is taken for dead.
pub const DEAD_AFTER: Duration = Duration::from_millis(800);
/// Between two elections this node starts in the same group.
const RETRY_ELECTION: Duration = Duration::from_millis(600);
/// How long the controller's own timers get to elect a leader before this node adds
/// elections of its own.
const CONTROLLER_GRACE: Duration = Duration::from_secs(2);
/// Spread of the random delay before the first election after a leader is lost.
const FIRST_JITTER_MS: u32 = 400;
/// Spread of the random delay before each further one: wider, because a failed round means
/// candidates collided, and without pre-vote only a candidate with the longest log can win; in
/// a group with a voter down it needs every other vote, so it needs a round of its own.
const RETRY_JITTER_MS: u32 = 1600;

pub(crate) async fn run(
    id: NodeId,
    peers: Arc<Peers>,
    router: Arc<Router>,
    metadata: ControllerSm,
    shutdown: CancellationToken,
) {
    let started = Instant::now();
    let mut last_ok: HashMap<NodeId, Instant> = HashMap::new();
    let mut dead: HashSet<NodeId> = HashSet::new();
    let mut next_election: HashMap<GroupId, Instant> = HashMap::new();
    let mut scans: u64 = 0;
    let mut ticker = tokio::time::interval(PING_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let nodes = metadata.metadata().nodes.clone();
        let pings = nodes.iter().filter(|(peer, _)| **peer != id).map(|(peer, addr)| {
            let client = peers.client(addr);
            async move {
                let Ok(mut client) = client else { return (*peer, false) };
                let request = strata_proto::internal::RaftRequest::default();
                let answered = tokio::time::timeout(PING_TIMEOUT, client.ping(request)).await;
                (*peer, matches!(answered, Ok(Ok(_))))
            }
        });
        let results = futures::future::join_all(pings).await;
        let now = Instant::now();
        let mut came_back = false;
        for (peer, ok) in results {
            if ok {
                last_ok.insert(peer, now);
                came_back |= dead.remove(&peer);
            } else {
                let since = last_ok.get(&peer).copied().unwrap_or(started);
                if now.duration_since(since) >= DEAD_AFTER && dead.insert(peer) {
                    tracing::warn!(
                        peer,
                        "peer stopped answering; taking over its partition groups"
                    );
                }
            }
        }
        if came_back {
            let groups = router.partition_groups();
            for (_, raft) in &groups {
                if raft.metrics().borrow().state == ServerState::Leader {
                    let _ = raft.trigger().heartbeat().await;
                }
            }
        }
        // Nothing to take over until the detector has had time to hear from everyone. With
        // every peer alive only leaderless groups (after a restart) need this node: looking
        // once a second is enough, and keeps an idle node idle.
        if now.duration_since(started) < DEAD_AFTER {
            continue;
        }
        scans += 1;
        if dead.is_empty() && !scans.is_multiple_of(10) {
            continue;
        }
        // The controller elects on openraft's timers, but each node draws its timeout once
        // at start: two nodes with nearly equal ones collide round after round, and with a
        // voter down a 4-node controller then never elects. An extra election at a random
        // moment of each round breaks the tie.
        if let Some(controller) = router.controller() {
            let (leader_gone, voter) = {
                let metrics = controller.metrics();
                let metrics = metrics.borrow();
                let leader_gone = metrics.current_leader.is_none_or(|l| dead.contains(&l));
                let voter = metrics.membership_config.membership().voter_ids().any(|v| v == id);
                (leader_gone, voter)
            };
            let first = CONTROLLER_GRACE + jitter(CONTROLLER_GROUP, id, RETRY_JITTER_MS);
            if !leader_gone || !voter {
                next_election.remove(&CONTROLLER_GROUP);
            } else if election_due(&mut next_election, CONTROLLER_GROUP, id, now, first) {
                tracing::info!("standing for controller election: no leader");
                let _ = controller.trigger().elect().await;
            }
        }
        let groups = router.partition_groups();
        if scans.is_multiple_of(10) {
            nudge_followers(&groups, scans.is_multiple_of(50)).await;
        }
        for (group, raft) in groups {
            let (leader_gone, voter, leading) = {
                let metrics = raft.metrics();
                let metrics = metrics.borrow();
                let membership = metrics.membership_config.membership();
                // A leader that removed itself from the group steps down but stays alive.
                let leader_gone = match metrics.current_leader {
                    Some(leader) => {
                        dead.contains(&leader) || !membership.voter_ids().any(|v| v == leader)
                    }
                    None => true,
                };
                let voter = membership.voter_ids().any(|v| v == id);
                (leader_gone, voter, metrics.state == ServerState::Leader)
            };
            if !leader_gone || !voter || leading {
                next_election.remove(&group);
                continue;
            }
            if election_due(&mut next_election, group, id, now, jitter(group, id, FIRST_JITTER_MS))
            {
                tracing::info!(group, "standing for election: its leader is gone");
                let _ = raft.trigger().elect().await;
            }
        }
    }
}

/// Heartbeats, from the groups this node leads, to followers that lag (every second) or to
/// all of them (`all`, every five seconds). Without per-group heartbeats an idle leader would
/// not notice a follower that lost its disk and came back empty, nor resume replicating to a
/// follower whose group did not exist yet when it last tried.
async fn nudge_followers(
    groups: &[(GroupId, openraft::Raft<crate::types::PartitionTc>)],
    all: bool,
) {
    for (_, raft) in groups {
        let nudge = {
            let metrics = raft.metrics();
            let metrics = metrics.borrow();
            let last = metrics.last_log_index;
            metrics.state == ServerState::Leader
                && (all
                    || metrics
                        .replication
                        .iter()
                        .flatten()
                        .any(|(_, matched)| matched.map(|m| m.index) < last))
        };
        if nudge {
            let _ = raft.trigger().heartbeat().await;
        }
    }
}

/// Whether this node should stand for election in `group` now: the first time after
/// `first_delay`, then every [`RETRY_ELECTION`] plus a random delay, rescheduled here.
fn election_due(
    next_election: &mut HashMap<GroupId, Instant>,
    group: GroupId,
    node: NodeId,
    now: Instant,
    first_delay: Duration,
) -> bool {
    let at = *next_election.entry(group).or_insert(now + first_delay);
    if now < at {
        return false;
    }
    next_election.insert(group, now + RETRY_ELECTION + jitter(group, node, RETRY_JITTER_MS));
    true
}

/// A random delay in [0, `spread_ms`) ms, so that the followers of one group do not stand at
/// the same moment again and again (each split vote would be repeated).
fn jitter(group: GroupId, node: NodeId, spread_ms: u32) -> Duration {
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let seed = [group.to_le_bytes(), node.to_le_bytes(), u64::from(clock).to_le_bytes()].concat();
    Duration::from_millis(u64::from(crc32c::crc32c(&seed) % spread_ms))
}
