//! The client API: produce, fetch, metadata, list offsets, group membership and offsets.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use std::collections::{BTreeSet, HashSet};

use strata_proto::TopicPartitions;
use strata_proto::broker_server::Broker;
use strata_proto::{
    BatchOffsets, CommitOffsetsRequest, CommitOffsetsResponse, FetchOffsetsRequest,
    FetchOffsetsResponse, FetchRequest, FetchResponse, GroupHeartbeatRequest,
    GroupHeartbeatResponse, ListOffsetsRequest, ListOffsetsResponse, MetadataRequest,
    MetadataResponse, OffsetSpec, PartitionBatches, PartitionOffset, PartitionProduced,
    ProduceManyRequest, ProduceManyResponse, ProduceRequest, ProduceResponse,
};
use strata_record::{Offset, Timestamp};
use tonic::{Code, Request, Response, Status};

use super::{blocking, record_count, respond};
use crate::error::BrokerError;
use crate::groups::{Committed, Heartbeat};
use crate::partition::Fetched;
use crate::server::Shared;

const MAX_WAIT_CAP: Duration = Duration::from_secs(30);
const DEFAULT_FETCH_BYTES: usize = 1024 * 1024;
const MAX_FETCH_BYTES: usize = 64 * 1024 * 1024;
/// How long one round of a Subscribe stream waits before looking again.
const SUBSCRIBE_POLL: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct BrokerService {
    shared: Arc<Shared>,
}

impl BrokerService {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        BrokerService { shared }
    }

    /// Appends one partition's batches (acks make no difference here: a leader answers after
    /// its durable append on one node and after the commit on a majority in a cluster).
    async fn produce_partition(
        &self,
        topic: &str,
        partition: u32,
        batches: Vec<bytes::Bytes>,
    ) -> Result<ProduceResponse, BrokerError> {
        if batches.is_empty() {
            return Err(BrokerError::InvalidArgument(
                "a produce request needs at least one batch".into(),
            ));
        }
        let log = self.shared.partition(topic, partition)?;
        let records = record_count(&batches);
        let bytes: usize = batches.iter().map(|b| b.len()).sum();
        let infos = log.append(batches).await?;
        self.shared.metrics.produced(topic, partition, records, bytes as u64);
        Ok(ProduceResponse {
            batches: infos
                .iter()
                .map(|i| BatchOffsets {
                    base_offset: i.base_offset.0,
                    last_offset: i.last_offset.0,
                })
                .collect(),
            log_end_offset: log.log().end_offset().0,
        })
    }
}

/// One partition's answer within a ProduceMany response.
fn partition_produced(
    topic: String,
    partition: u32,
    outcome: Result<ProduceResponse, BrokerError>,
) -> PartitionProduced {
    match outcome {
        Ok(produced) => PartitionProduced {
            topic,
            partition,
            code: Code::Ok as i32,
            message: String::new(),
            batches: produced.batches,
            log_end_offset: produced.log_end_offset,
        },
        Err(err) => {
            tracing::debug!(topic, partition, error = %err, "partition of a produce request rejected");
            let status = Status::from(err);
            PartitionProduced {
                topic,
                partition,
                code: status.code() as i32,
                message: status.message().to_owned(),
                batches: Vec::new(),
                log_end_offset: 0,
            }
        }
    }
}

fn fetch_bytes(requested: u32) -> usize {
    match requested {
        0 => DEFAULT_FETCH_BYTES,
        n => (n as usize).min(MAX_FETCH_BYTES),
    }
}

/// A fetch answer: the batches one by one, or as runs if the reader takes them.
fn fetch_response(fetched: Fetched, runs: bool) -> FetchResponse {
    let (batches, runs) =
        if runs { (Vec::new(), fetched.runs) } else { (fetched.batches, Vec::new()) };
    FetchResponse {
        batches,
        high_watermark: fetched.high_watermark.0,
        log_start_offset: fetched.log_start.0,
        runs,
    }
}

type FetchStream = Pin<Box<dyn Stream<Item = Result<FetchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Broker for BrokerService {
    #[tracing::instrument(skip_all, fields(topic = %request.get_ref().topic, partition = request.get_ref().partition))]
    async fn produce(
        &self,
        request: Request<ProduceRequest>,
    ) -> Result<Response<ProduceResponse>, Status> {
        let ProduceRequest { topic, partition, acks: _, batches } = request.into_inner();
        respond(&self.shared.metrics, "produce", self.produce_partition(&topic, partition, batches))
            .await
    }

    #[tracing::instrument(skip_all, fields(partitions = request.get_ref().partitions.len()))]
    async fn produce_many(
        &self,
        request: Request<ProduceManyRequest>,
    ) -> Result<Response<ProduceManyResponse>, Status> {
        let request = request.into_inner();
        respond(&self.shared.metrics, "produce_many", async {
            if request.partitions.is_empty() {
                return Err(BrokerError::InvalidArgument(
                    "a produce request needs at least one partition".into(),
                ));
            }
            let mut seen = HashSet::with_capacity(request.partitions.len());
            let appends = request.partitions.into_iter().map(|entry| {
                let first = seen.insert((entry.topic.clone(), entry.partition));
                async move {
                    let PartitionBatches { topic, partition, batches } = entry;
                    let outcome = if first {
                        self.produce_partition(&topic, partition, batches).await
                    } else {
                        Err(BrokerError::InvalidArgument(format!(
                            "partition {topic}/{partition} appears more than once in the request"
                        )))
                    };
                    if let Err(err) = &outcome {
                        self.shared.metrics.request_part_failed("produce_many", err.code());
                    }
                    partition_produced(topic, partition, outcome)
                }
            });
            let partitions = futures::future::join_all(appends).await;
            Ok(ProduceManyResponse { partitions })
        })
        .await
    }

    async fn fetch(
        &self,
        request: Request<FetchRequest>,
    ) -> Result<Response<FetchResponse>, Status> {
        let request = request.into_inner();
        respond(&self.shared.metrics, "fetch", async {
            let partition = self.shared.partition(&request.topic, request.partition)?;
            let wait = Duration::from_millis(u64::from(request.max_wait_ms)).min(MAX_WAIT_CAP);
            let fetched = partition
                .fetch(
                    Offset(request.offset),
                    fetch_bytes(request.max_bytes),
                    request.min_bytes as usize,
                    wait,
                    &self.shared.shutdown,
                )
                .await?;
            let bytes: usize = fetched.batches.iter().map(|b| b.len()).sum();
            let records = record_count(&fetched.batches);
            self.shared.metrics.fetched(&request.topic, request.partition, records, bytes as u64);
            Ok(fetch_response(fetched, request.runs))
        })
        .await
    }

    type SubscribeStream = FetchStream;

    async fn subscribe(
        &self,
        request: Request<FetchRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let request = request.into_inner();
        let partition =
            self.shared.partition(&request.topic, request.partition).map_err(Status::from)?;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let shutdown = self.shared.shutdown.clone();
        let max_bytes = fetch_bytes(request.max_bytes);
        let metrics = self.shared.metrics.clone();
        self.shared.tasks.spawn(async move {
            let mut offset = Offset(request.offset);
            loop {
                let fetched = tokio::select! {
                    _ = tx.closed() => return,
                    fetched = partition.fetch(offset, max_bytes, 1, SUBSCRIBE_POLL, &shutdown) => fetched,
                };
                if shutdown.is_cancelled() {
                    return;
                }
                match fetched {
                    Ok(fetched) if fetched.batches.is_empty() => continue,
                    Ok(fetched) => {
                        let bytes: usize = fetched.batches.iter().map(|b| b.len()).sum();
                        metrics.fetched(&request.topic, request.partition, record_count(&fetched.batches), bytes as u64);
                        let last = fetched.batches.last().and_then(|b| strata_record::BatchHeader::parse(b).ok());
                        if let Some(header) = last {
                            offset = header.last_offset().plus(1);
                        }
                        // A subscriber that stops reading must not hold up shutdown.
                        tokio::select! {
                            sent = tx.send(Ok(fetch_response(fetched, request.runs))) => if sent.is_err() { return },
                            _ = shutdown.cancelled() => return,
                        }
                    }
                    Err(err) => {
                        let _ = tx.send(Err(err.into())).await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn metadata(
        &self,
        request: Request<MetadataRequest>,
    ) -> Result<Response<MetadataResponse>, Status> {
        let request = request.into_inner();
        respond(&self.shared.metrics, "metadata", async { self.shared.metadata(&request.topics) })
            .await
    }

    async fn list_offsets(
        &self,
        request: Request<ListOffsetsRequest>,
    ) -> Result<Response<ListOffsetsResponse>, Status> {
        let request = request.into_inner();
        respond(&self.shared.metrics, "list_offsets", async {
            let partition = self.shared.partition(&request.topic, request.partition)?;
            partition.check_serves_reads()?;
            let offset = match request.spec() {
                OffsetSpec::Earliest => partition.log_start(),
                OffsetSpec::Latest | OffsetSpec::Unspecified => partition.high_watermark(),
                OffsetSpec::Timestamp => {
                    partition.offset_for_time(Timestamp(request.timestamp_ms)).await?
                }
            };
            Ok(ListOffsetsResponse { offset: offset.0 })
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(group = %request.get_ref().group_id))]
    async fn group_heartbeat(
        &self,
        request: Request<GroupHeartbeatRequest>,
    ) -> Result<Response<GroupHeartbeatResponse>, Status> {
        let request = request.into_inner();
        respond(&self.shared.metrics, "group_heartbeat", async {
            self.shared.check_coordinator()?;
            let heartbeat = Heartbeat {
                owned: TopicPartitions::pairs(&request.owned_partitions).collect(),
                group_id: request.group_id,
                member_id: request.member_id,
                member_epoch: request.member_epoch,
                subscribed_topics: request.subscribed_topics,
                session_timeout_ms: request.session_timeout_ms,
                assignor: request.assignor,
                client_id: request.client_id,
            };
            let reply = self.shared.groups.heartbeat(heartbeat, &self.shared.topics)?;
            Ok(GroupHeartbeatResponse {
                member_id: reply.member_id,
                member_epoch: reply.member_epoch,
                heartbeat_interval_ms: reply.heartbeat_interval.as_millis() as u32,
                assignment: TopicPartitions::group(reply.assignment.iter().map(|(t, p)| (t, *p))),
                offsets_epoch: reply.offsets_epoch,
            })
        })
        .await
    }

    async fn commit_offsets(
        &self,
        request: Request<CommitOffsetsRequest>,
    ) -> Result<Response<CommitOffsetsResponse>, Status> {
        let request = request.into_inner();
        respond(&self.shared.metrics, "commit_offsets", async {
            self.shared.check_coordinator()?;
            let offsets: Vec<_> = request
                .offsets
                .into_iter()
                .map(|o| {
                    ((o.topic, o.partition), Committed { offset: o.offset, metadata: o.metadata })
                })
                .collect();
            let shared = self.shared.clone();
            blocking(&self.shared.tasks, move || {
                shared.groups.commit(
                    &request.group_id,
                    &request.member_id,
                    request.member_epoch,
                    request.offsets_epoch,
                    &offsets,
                    &shared.topics,
                )
            })
            .await?;
            Ok(CommitOffsetsResponse {})
        })
        .await
    }

    async fn fetch_offsets(
        &self,
        request: Request<FetchOffsetsRequest>,
    ) -> Result<Response<FetchOffsetsResponse>, Status> {
        let request = request.into_inner();
        respond(&self.shared.metrics, "fetch_offsets", async {
            self.shared.check_coordinator()?;
            let wanted: BTreeSet<_> = TopicPartitions::pairs(&request.partitions).collect();
            let offsets = self
                .shared
                .groups
                .offsets()
                .get(&request.group_id)
                .into_iter()
                .filter(|(tp, _)| wanted.is_empty() || wanted.contains(tp))
                .map(|((topic, partition), c)| PartitionOffset {
                    topic,
                    partition,
                    offset: c.offset,
                    metadata: c.metadata,
                })
                .collect();
            Ok(FetchOffsetsResponse {
                offsets,
                offsets_epoch: self.shared.groups.offsets_epoch(&request.group_id),
            })
        })
        .await
    }
}
