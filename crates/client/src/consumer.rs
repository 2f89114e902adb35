//! The consumer: assigned partitions or a consumer group, poll, seek, pause/resume, commits.
//!
//! In a group the consumer heartbeats from `poll` (and between the long-poll fetches inside
//! it), applies the assignment the coordinator sends — committing and dropping revoked
//! partitions before reporting them gone, resuming new ones from their committed offsets — and
//! re-reads its offsets when an operator resets them.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use strata_proto::{
    CommitOffsetsRequest, FetchOffsetsRequest, FetchRequest, FetchResponse, GroupHeartbeatRequest,
    ListOffsetsRequest, OffsetSpec, PartitionOffset, TopicPartitions,
};
use strata_record::{Offset, Timestamp};
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;
use tonic::Code;

use crate::client::MAX_RESPONSE_BYTES;
use crate::record::{ConsumerRecord, batches_of_run, decode};
use crate::unary_frames;
use crate::{Client, ClientError, Result};

/// How often finding a partition's offsets follows a leader change before giving up.
const LIST_OFFSET_TRIES: u64 = 8;

type TopicPartition = (String, u32);

/// Where a partition without a committed offset starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OffsetReset {
    Earliest,
    #[default]
    Latest,
}

#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Consumer group; required for `subscribe` and for commits.
    pub group: Option<String>,
    /// Commit positions every `auto_commit_interval`, on revocation and on close.
    pub auto_commit: bool,
    pub auto_commit_interval: Duration,
    /// The group drops the member after this long without a heartbeat.
    pub session_timeout: Duration,
    /// "range" or "uniform".
    pub assignor: String,
    pub offset_reset: OffsetReset,
    /// Longest a single fetch waits on the server for data.
    pub max_wait: Duration,
    /// Byte budget per partition fetch: also the bound of the prefetch buffer per partition.
    pub fetch_max_bytes: u32,
    /// Most records one `poll` returns.
    pub max_poll_records: usize,
    pub client_id: String,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            group: None,
            auto_commit: true,
            auto_commit_interval: Duration::from_secs(5),
            session_timeout: Duration::from_secs(10),
            assignor: "range".into(),
            offset_reset: OffsetReset::Latest,
            max_wait: Duration::from_millis(500),
            fetch_max_bytes: 1024 * 1024,
            max_poll_records: 500,
            client_id: "strata-client".into(),
        }
    }
}

#[derive(Debug, Default)]
struct Member {
    id: String,
    epoch: i32,
    offsets_epoch: Option<u64>,
    next_heartbeat: Option<Instant>,
}

#[derive(Debug, Default)]
struct PartitionState {
    /// Next offset `poll` returns: what a commit stores.
    position: Offset,
    /// Next offset to fetch (ahead of `position` by what is buffered).
    fetch_from: Offset,
    buffered: VecDeque<ConsumerRecord>,
    /// Key and value bytes in `buffered`: the prefetch bound.
    buffered_bytes: usize,
}

fn record_bytes(record: &ConsumerRecord) -> usize {
    record.key.as_ref().map_or(0, |k| k.len()) + record.value.as_ref().map_or(0, |v| v.len())
}

#[derive(Debug)]
pub struct Consumer {
    client: Client,
    config: ConsumerConfig,
    partitions: BTreeMap<TopicPartition, PartitionState>,
    paused: BTreeSet<TopicPartition>,
    subscription: Vec<String>,
    member: Option<Member>,
    committed: BTreeMap<TopicPartition, Offset>,
    last_commit: Instant,
    /// Fetches running in the background (the prefetch): at most one per partition, each
    /// bringing at most `fetch_max_bytes`, started while the partition's buffer is below that.
    fetches: JoinSet<FetchOutcome>,
    in_flight: BTreeMap<TopicPartition, (Offset, AbortHandle)>,
}

type FetchOutcome = (TopicPartition, Offset, std::result::Result<FetchResponse, tonic::Status>);

impl Consumer {
    pub fn new(client: Client, config: ConsumerConfig) -> Consumer {
        Consumer {
            client,
            config,
            partitions: BTreeMap::new(),
            paused: BTreeSet::new(),
            subscription: Vec::new(),
            member: None,
            committed: BTreeMap::new(),
            last_commit: Instant::now(),
            fetches: JoinSet::new(),
            in_flight: BTreeMap::new(),
        }
    }

    /// Cancels a partition's background fetch (after a seek or when it is no longer owned).
    fn forget_fetch(&mut self, tp: &TopicPartition) {
        if let Some((_, handle)) = self.in_flight.remove(tp) {
            handle.abort();
        }
    }

    fn forget_all_fetches(&mut self) {
        for (_, (_, handle)) in std::mem::take(&mut self.in_flight) {
            handle.abort();
        }
    }

    /// Reads these partitions directly (no group membership). Each starts at the group's
    /// committed offset if a group is configured and has one, else per `offset_reset`.
    pub async fn assign(&mut self, partitions: Vec<TopicPartition>) -> Result<()> {
        self.partitions.clear();
        self.forget_all_fetches();
        let starts = self.start_offsets(&partitions).await?;
        for (tp, offset) in starts {
            self.partitions.insert(
                tp,
                PartitionState { position: offset, fetch_from: offset, ..Default::default() },
            );
        }
        Ok(())
    }

    /// Joins the configured group for these topics; partitions arrive through `poll`.
    pub async fn subscribe(&mut self, topics: Vec<String>) -> Result<()> {
        if self.config.group.is_none() {
            return Err(ClientError::InvalidArgument("subscribe needs a consumer group".into()));
        }
        self.subscription = topics;
        self.member = Some(Member::default());
        self.heartbeat().await
    }

    /// Partitions currently owned.
    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.partitions.keys().cloned().collect()
    }

    /// The next offset `poll` will return for a partition.
    pub fn position(&self, topic: &str, partition: u32) -> Option<Offset> {
        self.partitions.get(&(topic.to_owned(), partition)).map(|s| s.position)
    }

    pub fn pause(&mut self, topic: &str, partition: u32) {
        self.paused.insert((topic.to_owned(), partition));
    }

    pub fn resume(&mut self, topic: &str, partition: u32) {
        self.paused.remove(&(topic.to_owned(), partition));
    }

    /// Moves a partition's position; buffered records are dropped.
    pub fn seek(&mut self, topic: &str, partition: u32, offset: Offset) -> Result<()> {
        let state = self.partitions.get_mut(&(topic.to_owned(), partition)).ok_or_else(|| {
            ClientError::InvalidArgument(format!(
                "{topic}/{partition} is not assigned to this consumer"
            ))
        })?;
        *state = PartitionState { position: offset, fetch_from: offset, ..Default::default() };
        self.forget_fetch(&(topic.to_owned(), partition));
        Ok(())
    }

    async fn list_offset(
        &self,
        tp: &TopicPartition,
        spec: OffsetSpec,
        timestamp_ms: i64,
    ) -> Result<Offset> {
        let request = ListOffsetsRequest {
            topic: tp.0.clone(),
            partition: tp.1,
            spec: spec as i32,
            timestamp_ms,
        };
        // Asked of the partition's leader (any other node answers with NotLeader, naming it
        // when it knows it), following leader changes a few times.
        let mut attempt = 0;
        loop {
            let mut broker = self.client.broker_for(&tp.0, tp.1);
            match broker.list_offsets(request.clone()).await {
                Ok(reply) => return Ok(Offset(reply.into_inner().offset)),
                Err(status)
                    if status.code() == Code::Unavailable && attempt < LIST_OFFSET_TRIES =>
                {
                    attempt += 1;
                    if !self.client.partition_failed(&tp.0, tp.1, &status).await {
                        tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
                    }
                }
                Err(status) => return Err(status.into()),
            }
        }
    }

    pub async fn seek_to_beginning(&mut self) -> Result<()> {
        self.seek_all(OffsetSpec::Earliest, 0).await
    }

    pub async fn seek_to_end(&mut self) -> Result<()> {
        self.seek_all(OffsetSpec::Latest, 0).await
    }

    /// Every owned partition to its first record at or after `timestamp` (its end if none).
    pub async fn seek_to_time(&mut self, timestamp: Timestamp) -> Result<()> {
        self.seek_all(OffsetSpec::Timestamp, timestamp.0).await
    }

    async fn seek_all(&mut self, spec: OffsetSpec, timestamp_ms: i64) -> Result<()> {
        let owned: Vec<TopicPartition> = self.partitions.keys().cloned().collect();
        for tp in owned {
            let offset = self.list_offset(&tp, spec, timestamp_ms).await?;
            self.seek(&tp.0, tp.1, offset)?;
        }
        Ok(())
    }

    fn reset_spec(&self) -> OffsetSpec {
        match self.config.offset_reset {
            OffsetReset::Earliest => OffsetSpec::Earliest,
            OffsetReset::Latest => OffsetSpec::Latest,
        }
    }

    /// Committed offsets of the group, or the reset position where there is none.
    async fn start_offsets(
        &mut self,
        partitions: &[TopicPartition],
    ) -> Result<Vec<(TopicPartition, Offset)>> {
        let mut committed = BTreeMap::new();
        if let Some(group) = &self.config.group
            && !partitions.is_empty()
        {
            let response = self.fetch_committed(group, partitions.iter().cloned()).await?;
            for o in response.offsets {
                committed.insert((o.topic, o.partition), Offset(o.offset));
            }
        }
        let mut out = Vec::with_capacity(partitions.len());
        for tp in partitions {
            let offset = match committed.get(tp) {
                Some(&offset) => {
                    self.committed.insert(tp.clone(), offset);
                    offset
                }
                None => self.list_offset(tp, self.reset_spec(), 0).await?,
            };
            out.push((tp.clone(), offset));
        }
        Ok(out)
    }

    fn heartbeat_due(&self) -> bool {
        self.member.as_ref().is_some_and(|m| m.next_heartbeat.is_none_or(|t| Instant::now() >= t))
    }

    /// One heartbeat: report what is owned, apply the assignment that comes back.
    async fn heartbeat(&mut self) -> Result<()> {
        let Some(group) = self.config.group.clone() else {
            return Ok(());
        };
        let Some(member) = self.member.as_ref() else {
            return Ok(());
        };
        let joining = member.epoch == 0;
        let request = GroupHeartbeatRequest {
            group_id: group,
            member_id: member.id.clone(),
            member_epoch: member.epoch,
            subscribed_topics: if joining { self.subscription.clone() } else { Vec::new() },
            owned_partitions: TopicPartitions::group(self.partitions.keys().cloned()),
            session_timeout_ms: self.config.session_timeout.as_millis() as u32,
            assignor: self.config.assignor.clone(),
            client_id: self.config.client_id.clone(),
        };
        let sent = self
            .client
            .with_coordinator(|c| {
                let request = request.clone();
                async move { c.broker().group_heartbeat(request).await }
            })
            .await;
        let response = match sent {
            Ok(r) => r,
            Err(ClientError::Server(status)) if status.code() == Code::FailedPrecondition => {
                // Fenced: our partitions may already belong to someone else. Drop them
                // without committing and join again.
                tracing::warn!(
                    reason = status.message(),
                    "fenced by the group coordinator; rejoining"
                );
                self.partitions.clear();
                self.forget_all_fetches();
                self.member = Some(Member::default());
                return Ok(());
            }
            Err(err) => return Err(err),
        };
        let member = self.member.as_mut().expect("member present");
        member.id = response.member_id;
        member.epoch = response.member_epoch;
        let interval = Duration::from_millis(u64::from(response.heartbeat_interval_ms.max(100)));
        member.next_heartbeat = Some(Instant::now() + interval);
        let reset_seen = member.offsets_epoch.is_some_and(|e| e != response.offsets_epoch);
        member.offsets_epoch = Some(response.offsets_epoch);

        let target: BTreeSet<TopicPartition> =
            TopicPartitions::pairs(&response.assignment).collect();
        let revoked: Vec<TopicPartition> =
            self.partitions.keys().filter(|tp| !target.contains(*tp)).cloned().collect();
        if !revoked.is_empty() {
            if self.config.auto_commit {
                self.commit_partitions(&revoked).await?;
            }
            for tp in &revoked {
                self.partitions.remove(tp);
                self.forget_fetch(tp);
            }
            // Tell the coordinator at once, so the new owner does not wait a whole interval.
            if let Some(m) = self.member.as_mut() {
                m.next_heartbeat = None;
            }
        }
        let added: Vec<TopicPartition> =
            target.into_iter().filter(|tp| !self.partitions.contains_key(tp)).collect();
        if reset_seen {
            tracing::info!("group offsets were reset; resuming from the new committed offsets");
            self.adopt_committed().await?;
        }
        for (tp, offset) in self.start_offsets(&added).await? {
            self.partitions.insert(
                tp,
                PartitionState { position: offset, fetch_from: offset, ..Default::default() },
            );
        }
        Ok(())
    }

    /// The group's committed offsets for `partitions`, from its coordinator.
    async fn fetch_committed(
        &self,
        group: &str,
        partitions: impl IntoIterator<Item = TopicPartition>,
    ) -> Result<strata_proto::FetchOffsetsResponse> {
        let request = FetchOffsetsRequest {
            group_id: group.to_owned(),
            partitions: TopicPartitions::group(partitions),
        };
        self.client
            .with_coordinator(|c| {
                let request = request.clone();
                async move { c.broker().fetch_offsets(request).await }
            })
            .await
    }

    /// Moves every owned partition that has a committed offset to it (after an offset reset),
    /// and remembers the group's offsets epoch. Partitions without one keep their position.
    async fn adopt_committed(&mut self) -> Result<()> {
        let Some(group) = self.config.group.clone() else { return Ok(()) };
        let owned: Vec<TopicPartition> = self.partitions.keys().cloned().collect();
        let response = self.fetch_committed(&group, owned).await?;
        if let Some(member) = self.member.as_mut() {
            member.offsets_epoch = Some(response.offsets_epoch);
        }
        for o in response.offsets {
            let tp = (o.topic, o.partition);
            if self.partitions.contains_key(&tp) {
                self.committed.insert(tp.clone(), Offset(o.offset));
                self.seek(&tp.0, tp.1, Offset(o.offset))?;
            }
        }
        Ok(())
    }

    /// Waits up to `timeout` for records and returns those available (at most
    /// `max_poll_records`), in offset order per partition.
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.heartbeat_due() {
                self.heartbeat().await?;
            }
            if self.config.auto_commit
                && self.last_commit.elapsed() >= self.config.auto_commit_interval
            {
                self.commit().await?;
            }
            self.start_fetches();
            let records = self.drain();
            if !records.is_empty() {
                // The partitions drained have room again: their next fetches run while the
                // application handles these records, and the next poll finds their answers.
                self.start_fetches();
                return Ok(records);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(Vec::new());
            }
            let mut wait = deadline - now;
            if let Some(next) = self.member.as_ref().and_then(|m| m.next_heartbeat) {
                wait = wait.min(next.saturating_duration_since(now));
            }
            if self.fetches.is_empty() {
                tokio::time::sleep(wait.min(Duration::from_millis(100))).await;
                continue;
            }
            // Wait for the first background fetch to answer (or the deadline / a heartbeat).
            if let Ok(Some(joined)) = tokio::time::timeout(wait, self.fetches.join_next()).await
                && let Ok((tp, offset, result)) = joined
            {
                self.take_fetch(tp, offset, result).await?;
                // Take whatever else already arrived.
                while let Some(Ok((tp, offset, result))) = self.fetches.try_join_next() {
                    self.take_fetch(tp, offset, result).await?;
                }
            }
        }
    }

    /// Starts a background fetch for every owned, unpaused partition that has none running
    /// and less than one fetch's worth of records buffered.
    fn start_fetches(&mut self) {
        let limit = self.config.fetch_max_bytes as usize;
        let wanted: Vec<(TopicPartition, Offset)> = self
            .partitions
            .iter()
            .filter(|(tp, s)| {
                s.buffered_bytes < limit
                    && !self.paused.contains(*tp)
                    && !self.in_flight.contains_key(*tp)
            })
            .map(|(tp, s)| (tp.clone(), s.fetch_from))
            .collect();
        for (tp, offset) in wanted {
            let channel = self.client.channel_for(&tp.0, tp.1);
            let request = FetchRequest {
                topic: tp.0.clone(),
                partition: tp.1,
                offset: offset.0,
                max_wait_ms: self.config.max_wait.as_millis() as u32,
                min_bytes: 1,
                max_bytes: self.config.fetch_max_bytes,
                // Small batches come back to back, as the node stores them: no copy there.
                runs: true,
            };
            let key = tp.clone();
            let handle = self.fetches.spawn(async move {
                let answer = unary_frames::fetch(channel, &request, MAX_RESPONSE_BYTES).await;
                (key, offset, answer)
            });
            self.in_flight.insert(tp, (offset, handle));
        }
    }

    fn drain(&mut self) -> Vec<ConsumerRecord> {
        let max = self.config.max_poll_records;
        let buffered: usize = self.partitions.values().map(|s| s.buffered.len()).sum();
        let mut out = Vec::with_capacity(buffered.min(max));
        for (tp, state) in &mut self.partitions {
            if self.paused.contains(tp) {
                continue;
            }
            let take = state.buffered.len().min(max - out.len());
            let Some(last) = take.checked_sub(1).map(|i| state.buffered[i].offset) else {
                continue;
            };
            let start = out.len();
            out.extend(state.buffered.drain(..take));
            let bytes: usize = out[start..].iter().map(record_bytes).sum();
            state.position = last.plus(1);
            state.buffered_bytes = state.buffered_bytes.saturating_sub(bytes);
        }
        out
    }

    /// Buffers the records of one fetch answer; true if there were any.
    async fn take_fetch(
        &mut self,
        tp: TopicPartition,
        offset: Offset,
        result: std::result::Result<FetchResponse, tonic::Status>,
    ) -> Result<bool> {
        // Only the answer to the fetch still registered for this partition counts: after a
        // seek or a revocation the partition moved on.
        match self.in_flight.get(&tp) {
            Some((registered, _)) if *registered == offset => {
                self.in_flight.remove(&tp);
            }
            _ => return Ok(false),
        }
        match result {
            Ok(response) => {
                let Some(state) = self.partitions.get_mut(&tp) else { return Ok(false) };
                // Decoded in place: a record moves once into the buffer and once out of it.
                let before = state.buffered.len();
                let decoded = response.runs.iter().try_for_each(|run| {
                    for batch in batches_of_run(run)? {
                        decode(&tp.0, tp.1, &batch, offset, &mut state.buffered)?;
                    }
                    Ok::<_, ClientError>(())
                });
                // A node that does not know runs answers with batches.
                let decoded = decoded.and_then(|()| {
                    for batch in &response.batches {
                        decode(&tp.0, tp.1, batch, offset, &mut state.buffered)?;
                    }
                    Ok(())
                });
                if let Err(err) = decoded {
                    state.buffered.truncate(before);
                    return Err(err);
                }
                let Some(last) = state.buffered.back().filter(|_| state.buffered.len() > before)
                else {
                    return Ok(false);
                };
                state.fetch_from = last.offset.plus(1);
                state.buffered_bytes +=
                    state.buffered.range(before..).map(record_bytes).sum::<usize>();
                Ok(true)
            }
            Err(status) if status.code() == Code::OutOfRange => {
                // Retention passed us, or the log was truncated: start over per policy.
                let reset = self.list_offset(&tp, self.reset_spec(), 0).await?;
                tracing::warn!(topic = %tp.0, partition = tp.1, from = %offset, to = %reset, "offset out of range; resetting");
                self.seek(&tp.0, tp.1, reset)?;
                Ok(false)
            }
            Err(status) if status.code() == Code::Unavailable => {
                // A leader change or a node down: find the leader and fetch again on the next
                // poll, after a pause that keeps a dead node from being hammered (none when
                // the answer named the leader).
                if !self.client.partition_failed(&tp.0, tp.1, &status).await {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Ok(false)
            }
            Err(status) => Err(status.into()),
        }
    }

    /// Commits the positions of every owned partition that moved since the last commit.
    pub async fn commit(&mut self) -> Result<()> {
        let owned: Vec<TopicPartition> = self.partitions.keys().cloned().collect();
        self.commit_partitions(&owned).await
    }

    async fn commit_partitions(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        self.last_commit = Instant::now();
        let Some(group) = self.config.group.clone() else {
            return Ok(());
        };
        let offsets: Vec<PartitionOffset> = partitions
            .iter()
            .filter_map(|tp| {
                let position = self.partitions.get(tp)?.position;
                (self.committed.get(tp) != Some(&position)).then(|| PartitionOffset {
                    topic: tp.0.clone(),
                    partition: tp.1,
                    offset: position.0,
                    metadata: String::new(),
                })
            })
            .collect();
        if offsets.is_empty() {
            return Ok(());
        }
        let (member_id, member_epoch) = match &self.member {
            Some(m) => (m.id.clone(), m.epoch),
            None => (String::new(), -1),
        };
        let offsets_epoch = self.member.as_ref().and_then(|m| m.offsets_epoch).unwrap_or(0);
        let request = CommitOffsetsRequest {
            group_id: group,
            member_id,
            member_epoch,
            offsets: offsets.clone(),
            offsets_epoch,
        };
        let sent = self
            .client
            .with_coordinator(|c| {
                let request = request.clone();
                async move { c.broker().commit_offsets(request).await }
            })
            .await;
        match sent {
            Ok(_) => {}
            // An operator reset the offsets since our last heartbeat: theirs win.
            Err(ClientError::Server(status)) if status.code() == Code::Aborted => {
                return self.adopt_committed().await;
            }
            Err(err) => return Err(err),
        }
        for o in offsets {
            self.committed.insert((o.topic, o.partition), Offset(o.offset));
        }
        Ok(())
    }

    /// Commits (with auto commit) and leaves the group.
    pub async fn close(mut self) -> Result<()> {
        if self.config.auto_commit {
            self.commit().await?;
        }
        if let (Some(group), Some(member)) = (self.config.group.clone(), self.member.take())
            && member.epoch > 0
        {
            let request = GroupHeartbeatRequest {
                group_id: group,
                member_id: member.id,
                member_epoch: -1,
                ..Default::default()
            };
            self.client
                .with_coordinator(|c| {
                    let request = request.clone();
                    async move { c.broker().group_heartbeat(request).await }
                })
                .await?;
        }
        Ok(())
    }
}
