//! Consumer groups in the style of Kafka's KIP-848: members heartbeat, the coordinator computes
//! the assignment and hands a partition to its new owner only once the old owner has stopped
//! reporting it, and stale members are fenced by epoch.

pub mod assignor;
pub mod offsets;
mod reset;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub use assignor::{Assignor, TopicPartition};
pub use offsets::{Committed, OffsetStore};
pub use reset::{OffsetChange, ResetScope, ResetStrategy, reset_offsets};

use crate::error::{BrokerError, Result};
use crate::topics::Topics;

const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_SESSION_TIMEOUT: Duration = Duration::from_secs(300);
const MIN_SESSION_TIMEOUT: Duration = Duration::from_millis(500);
/// Most members one group may have.
const MAX_MEMBERS: usize = 1000;
/// Most topics one member may subscribe to, and partitions it may report owning.
const MAX_SUBSCRIBED_TOPICS: usize = 1000;
const MAX_OWNED_PARTITIONS: usize = 100_000;

#[derive(Debug)]
struct Member {
    client_id: String,
    /// The epoch last sent to the member; its requests must carry it (or the one before).
    epoch: i32,
    previous_epoch: i32,
    subscribed: BTreeSet<String>,
    /// What the member last reported owning.
    owned: BTreeSet<TopicPartition>,
    /// What the assignor wants it to own.
    target: BTreeSet<TopicPartition>,
    /// What it was last told to own.
    sent: BTreeSet<TopicPartition>,
    session_timeout: Duration,
    last_seen: Instant,
}

#[derive(Debug)]
struct Group {
    epoch: i32,
    assignor: Assignor,
    members: BTreeMap<String, Member>,
    offsets_epoch: u64,
}

impl Group {
    fn new(assignor: Assignor) -> Group {
        Group { epoch: 0, assignor, members: BTreeMap::new(), offsets_epoch: 0 }
    }

    fn expire(&mut self, now: Instant, group_id: &str) {
        let before = self.members.len();
        self.members.retain(|id, m| {
            let alive = now.duration_since(m.last_seen) <= m.session_timeout;
            if !alive {
                tracing::info!(group = group_id, member = %id, "member session expired");
            }
            alive
        });
        if self.members.len() != before {
            self.epoch += 1;
        }
    }

    /// Recomputes every member's target from subscriptions and current partition counts.
    fn retarget(&mut self, topics: &Topics) {
        let subscriptions: BTreeMap<String, BTreeSet<String>> =
            self.members.iter().map(|(id, m)| (id.clone(), m.subscribed.clone())).collect();
        let wanted: BTreeSet<&String> = subscriptions.values().flatten().collect();
        let partitions: BTreeMap<String, u32> = wanted
            .into_iter()
            .filter_map(|t| topics.get(t).ok().map(|topic| (t.clone(), topic.partition_count())))
            .collect();
        let targets = self.assignor.assign(&subscriptions, &partitions);
        let mut changed = false;
        for (id, target) in targets {
            let member = self.members.get_mut(&id).expect("assigned member exists");
            if member.target != target {
                member.target = target;
                changed = true;
            }
        }
        if changed {
            self.epoch += 1;
        }
    }

    /// What `member_id` may own now: its target, less partitions another member still owns or
    /// was last told to own (it may not have heard yet that the partition moved).
    fn assignable(&self, member_id: &str) -> BTreeSet<TopicPartition> {
        let member = &self.members[member_id];
        member
            .target
            .iter()
            .filter(|tp| {
                !self.members.iter().any(|(id, m)| {
                    id != member_id && (m.owned.contains(*tp) || m.sent.contains(*tp))
                })
            })
            .cloned()
            .collect()
    }

    fn state(&self) -> &'static str {
        if self.members.is_empty() {
            "empty"
        } else if self.members.values().all(|m| m.sent == m.target && m.owned == m.target) {
            "stable"
        } else {
            "reconciling"
        }
    }
}

/// A heartbeat as the service decoded it.
#[derive(Debug, Default)]
pub struct Heartbeat {
    pub group_id: String,
    pub member_id: String,
    pub member_epoch: i32,
    pub subscribed_topics: Vec<String>,
    pub owned: Vec<TopicPartition>,
    pub session_timeout_ms: u32,
    pub assignor: String,
    pub client_id: String,
}

#[derive(Debug)]
pub struct HeartbeatReply {
    pub member_id: String,
    pub member_epoch: i32,
    pub heartbeat_interval: Duration,
    pub assignment: BTreeSet<TopicPartition>,
    pub offsets_epoch: u64,
}

/// A group as `strata group describe` shows it.
#[derive(Debug)]
pub struct GroupView {
    pub group_id: String,
    pub state: &'static str,
    pub epoch: i32,
    pub assignor: &'static str,
    pub members: Vec<MemberView>,
    pub offsets_epoch: u64,
    pub committed: BTreeMap<TopicPartition, Committed>,
    /// Current owner of each owned partition.
    pub owners: BTreeMap<TopicPartition, String>,
}

#[derive(Debug)]
pub struct MemberView {
    pub member_id: String,
    pub client_id: String,
    pub epoch: i32,
    pub subscribed: Vec<String>,
    pub assignment: BTreeSet<TopicPartition>,
}

#[derive(Debug)]
pub struct Groups {
    groups: Mutex<BTreeMap<String, Group>>,
    offsets: Arc<OffsetStore>,
    /// Serialises every change to committed offsets (check, append, apply), so a member's
    /// commit can never land between an offset reset's epoch bump and its write, and the
    /// in-memory map always applies commits in log order.
    commit_lock: Mutex<()>,
}

fn validate_group_id(group_id: &str) -> Result<()> {
    if group_id.is_empty() || group_id.len() > 255 || group_id.contains('\0') {
        return Err(BrokerError::InvalidArgument(format!(
            "invalid group id {group_id:?}: 1 to 255 bytes, no NUL"
        )));
    }
    Ok(())
}

fn new_member_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

impl Groups {
    pub fn new(offsets: Arc<OffsetStore>) -> Groups {
        Groups { groups: Mutex::new(BTreeMap::new()), offsets, commit_lock: Mutex::new(()) }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Group>> {
        self.groups.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn offsets(&self) -> &Arc<OffsetStore> {
        &self.offsets
    }

    /// Joins, refreshes or leaves a member, and returns what it should own now.
    pub fn heartbeat(&self, request: Heartbeat, topics: &Topics) -> Result<HeartbeatReply> {
        validate_group_id(&request.group_id)?;
        if request.subscribed_topics.len() > MAX_SUBSCRIBED_TOPICS
            || request.owned.len() > MAX_OWNED_PARTITIONS
        {
            return Err(BrokerError::TooLarge(format!(
                "a member may subscribe to at most {MAX_SUBSCRIBED_TOPICS} topics and own at most \
                 {MAX_OWNED_PARTITIONS} partitions"
            )));
        }
        let assignor = Assignor::parse(&request.assignor).ok_or_else(|| {
            BrokerError::InvalidArgument(format!(
                "unknown assignor {:?}: use range or uniform",
                request.assignor
            ))
        })?;
        let now = Instant::now();
        let mut groups = self.lock();
        let group = groups.entry(request.group_id.clone()).or_insert_with(|| Group::new(assignor));
        group.expire(now, &request.group_id);
        if group.members.is_empty() {
            group.assignor = assignor;
        }

        if request.member_epoch == -1 {
            if group.members.remove(&request.member_id).is_some() {
                tracing::info!(group = %request.group_id, member = %request.member_id, "member left");
                group.epoch += 1;
                group.retarget(topics);
            }
            return Ok(HeartbeatReply {
                member_id: request.member_id,
                member_epoch: -1,
                heartbeat_interval: Duration::ZERO,
                assignment: BTreeSet::new(),
                offsets_epoch: group.offsets_epoch,
            });
        }

        let member_id = if request.member_epoch == 0 {
            if group.members.len() >= MAX_MEMBERS && !group.members.contains_key(&request.member_id)
            {
                return Err(BrokerError::TooLarge(format!(
                    "group {} already has {MAX_MEMBERS} members",
                    request.group_id
                )));
            }
            let id = if request.member_id.is_empty() {
                new_member_id()
            } else {
                request.member_id.clone()
            };
            let timeout = match request.session_timeout_ms {
                0 => DEFAULT_SESSION_TIMEOUT,
                ms => Duration::from_millis(u64::from(ms))
                    .clamp(MIN_SESSION_TIMEOUT, MAX_SESSION_TIMEOUT),
            };
            group.members.insert(
                id.clone(),
                Member {
                    client_id: request.client_id.clone(),
                    epoch: 0,
                    previous_epoch: 0,
                    subscribed: request.subscribed_topics.iter().cloned().collect(),
                    owned: BTreeSet::new(),
                    target: BTreeSet::new(),
                    sent: BTreeSet::new(),
                    session_timeout: timeout,
                    last_seen: now,
                },
            );
            group.epoch += 1;
            tracing::info!(group = %request.group_id, member = %id, "member joined");
            id
        } else {
            let Some(member) = group.members.get_mut(&request.member_id) else {
                return Err(BrokerError::Fenced(format!(
                    "member {} is not in group {} (expired or never joined): rejoin with epoch 0",
                    request.member_id, request.group_id
                )));
            };
            if request.member_epoch != member.epoch {
                return Err(BrokerError::Fenced(format!(
                    "member {} sent epoch {} but its epoch is {}: rejoin with epoch 0",
                    request.member_id, request.member_epoch, member.epoch
                )));
            }
            member.last_seen = now;
            member.owned = request.owned.iter().cloned().collect();
            let subscribed: BTreeSet<String> = request.subscribed_topics.iter().cloned().collect();
            if !subscribed.is_empty() && subscribed != member.subscribed {
                member.subscribed = subscribed;
            }
            request.member_id.clone()
        };
        group.retarget(topics);
        let assignment = group.assignable(&member_id);
        let group_epoch = group.epoch;
        let member = group.members.get_mut(&member_id).expect("member present");
        if assignment != member.sent || member.epoch == 0 {
            member.previous_epoch = member.epoch;
            member.epoch = group_epoch.max(member.epoch + 1);
            member.sent = assignment.clone();
        }
        let interval = (member.session_timeout / 3).min(Duration::from_secs(1));
        Ok(HeartbeatReply {
            member_id,
            member_epoch: member.epoch,
            heartbeat_interval: interval,
            assignment,
            offsets_epoch: group.offsets_epoch,
        })
    }

    /// Checks that a commit comes from a live member at its current (or previous) epoch, or
    /// from outside the group while it has no members.
    fn check_committer(
        &self,
        group_id: &str,
        member_id: &str,
        member_epoch: i32,
        offsets_epoch: u64,
    ) -> Result<()> {
        let mut groups = self.lock();
        let Some(group) = groups.get_mut(group_id) else {
            // No member joined since this start: only standalone commits are valid.
            if member_id.is_empty() {
                return Ok(());
            }
            return Err(BrokerError::Fenced(format!(
                "member {member_id} is not in group {group_id}"
            )));
        };
        group.expire(Instant::now(), group_id);
        if member_id.is_empty() {
            if group.members.is_empty() {
                return Ok(());
            }
            return Err(BrokerError::Fenced(format!(
                "group {group_id} has live members: only they may commit"
            )));
        }
        match group.members.get(member_id) {
            Some(_) if offsets_epoch < group.offsets_epoch => {
                Err(BrokerError::OffsetsReset(format!(
                    "group {group_id}'s offsets were reset (offsets epoch {}, commit from epoch {offsets_epoch}): \
                 re-read the committed offsets",
                    group.offsets_epoch
                )))
            }
            Some(m) if member_epoch == m.epoch || member_epoch == m.previous_epoch => Ok(()),
            Some(m) => Err(BrokerError::Fenced(format!(
                "stale member epoch {member_epoch} for {member_id} (current {})",
                m.epoch
            ))),
            None => {
                Err(BrokerError::Fenced(format!("member {member_id} is not in group {group_id}")))
            }
        }
    }

    /// Stores offsets after fencing checks (blocking: it fsyncs).
    pub fn commit(
        &self,
        group_id: &str,
        member_id: &str,
        member_epoch: i32,
        offsets_epoch: u64,
        offsets: &[(TopicPartition, Committed)],
        topics: &Topics,
    ) -> Result<()> {
        validate_group_id(group_id)?;
        for ((topic, partition), committed) in offsets {
            // Checked where this node holds the partition; elsewhere its leader serves only
            // offsets below its high watermark, so a consumer has no offset beyond it.
            let high_watermark = match topics.partition(topic, *partition) {
                Ok(p) => p.high_watermark().0,
                Err(BrokerError::NotHosted { .. }) => continue,
                Err(err) => return Err(err),
            };
            if committed.offset > high_watermark {
                return Err(BrokerError::OffsetOutOfRange {
                    topic: topic.clone(),
                    partition: *partition,
                    offset: committed.offset,
                    start: 0,
                    end: high_watermark,
                });
            }
        }
        let _serial = self.commit_lock.lock().unwrap_or_else(|e| e.into_inner());
        self.check_committer(group_id, member_id, member_epoch, offsets_epoch)?;
        self.offsets.commit(group_id, offsets)
    }

    /// Stores an operator's offset reset and bumps the group's offsets epoch in one step
    /// (blocking: it fsyncs). Members learn of it from the epoch in their next heartbeat, and
    /// their commits from before it are refused.
    pub fn commit_reset(
        &self,
        group_id: &str,
        offsets: &[(TopicPartition, Committed)],
    ) -> Result<u64> {
        let _serial = self.commit_lock.lock().unwrap_or_else(|e| e.into_inner());
        let epoch = self.bump_offsets_epoch(group_id);
        self.offsets.commit(group_id, offsets)?;
        Ok(epoch)
    }

    /// Forgets every group's offsets for a deleted topic (blocking: it fsyncs).
    pub fn forget_topic(&self, topic: &str) -> Result<()> {
        let _serial = self.commit_lock.lock().unwrap_or_else(|e| e.into_inner());
        self.offsets.delete_topic(topic)
    }

    pub fn list(&self) -> Vec<(String, &'static str, usize)> {
        let mut names: BTreeSet<String> = self.offsets.groups().into_iter().collect();
        let mut groups = self.lock();
        let now = Instant::now();
        for (name, group) in groups.iter_mut() {
            group.expire(now, name);
        }
        // Groups with neither members nor offsets are forgotten.
        let committed = names.clone();
        groups.retain(|name, g| {
            !g.members.is_empty() || committed.contains(name) || g.offsets_epoch > 0
        });
        names.extend(groups.iter().filter(|(_, g)| !g.members.is_empty()).map(|(n, _)| n.clone()));
        names
            .into_iter()
            .map(|name| match groups.get(&name) {
                Some(g) => (name, g.state(), g.members.len()),
                None => (name, "empty", 0),
            })
            .collect()
    }

    pub fn describe(&self, group_id: &str) -> Result<GroupView> {
        let committed = self.offsets.get(group_id);
        let mut groups = self.lock();
        let group = groups.get_mut(group_id);
        let Some(group) = group else {
            if committed.is_empty() {
                return Err(BrokerError::UnknownGroup(group_id.to_owned()));
            }
            return Ok(GroupView {
                group_id: group_id.to_owned(),
                state: "empty",
                epoch: 0,
                assignor: Assignor::Range.name(),
                members: Vec::new(),
                offsets_epoch: 0,
                committed,
                owners: BTreeMap::new(),
            });
        };
        group.expire(Instant::now(), group_id);
        if group.members.is_empty() && committed.is_empty() {
            return Err(BrokerError::UnknownGroup(group_id.to_owned()));
        }
        let mut owners = BTreeMap::new();
        for (id, m) in &group.members {
            for tp in &m.sent {
                owners.insert(tp.clone(), id.clone());
            }
        }
        Ok(GroupView {
            group_id: group_id.to_owned(),
            state: group.state(),
            epoch: group.epoch,
            assignor: group.assignor.name(),
            members: group
                .members
                .iter()
                .map(|(id, m)| MemberView {
                    member_id: id.clone(),
                    client_id: m.client_id.clone(),
                    epoch: m.epoch,
                    subscribed: m.subscribed.iter().cloned().collect(),
                    assignment: m.sent.clone(),
                })
                .collect(),
            offsets_epoch: group.offsets_epoch,
            committed,
            owners,
        })
    }

    /// Deletes a group's offsets; refused while it has live members.
    pub fn delete(&self, group_id: &str) -> Result<()> {
        let _serial = self.commit_lock.lock().unwrap_or_else(|e| e.into_inner());
        {
            let mut groups = self.lock();
            if let Some(group) = groups.get_mut(group_id) {
                group.expire(Instant::now(), group_id);
                if !group.members.is_empty() {
                    return Err(BrokerError::GroupNotEmpty(format!(
                        "group {group_id} has {} live members; stop them first",
                        group.members.len()
                    )));
                }
                groups.remove(group_id);
            }
        }
        self.offsets.delete_group(group_id)
    }

    /// Topics a group subscribes to or has offsets for.
    pub(crate) fn topics_of(&self, group_id: &str) -> BTreeSet<String> {
        let mut topics: BTreeSet<String> =
            self.offsets.get(group_id).into_keys().map(|(t, _)| t).collect();
        if let Some(group) = self.lock().get(group_id) {
            topics.extend(group.members.values().flat_map(|m| m.subscribed.iter().cloned()));
        }
        topics
    }

    /// Tells live members that the offsets changed under them.
    pub(crate) fn bump_offsets_epoch(&self, group_id: &str) -> u64 {
        let mut groups = self.lock();
        let group =
            groups.entry(group_id.to_owned()).or_insert_with(|| Group::new(Assignor::Range));
        group.offsets_epoch += 1;
        group.offsets_epoch
    }

    pub fn offsets_epoch(&self, group_id: &str) -> u64 {
        self.lock().get(group_id).map_or(0, |g| g.offsets_epoch)
    }
}

impl Groups {
    /// Closes the offsets log cleanly (at shutdown, when nothing else holds it).
    pub fn close(self) -> Result<()> {
        match Arc::try_unwrap(self.offsets) {
            Ok(store) => store.close(),
            Err(_) => Ok(()),
        }
    }
}
