//! A partition's offsets (log start, high watermark, offset for a time) wherever the partition
//! is: read locally where this node holds a replica, otherwise asked of a node that does, the
//! way a client would (`ListOffsets`). The group coordinator needs them for lag and offset
//! resets, and `topic describe` for every partition.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use strata_proto::broker_client::BrokerClient;
use strata_proto::{ListOffsetsRequest, OffsetSpec};
use strata_record::Timestamp;
use tonic::transport::{Channel, Endpoint};

use crate::error::{BrokerError, Result};
use crate::partition::Partition;

/// How long asking another node for offsets may take, connection included.
const REMOTE_TIMEOUT: Duration = Duration::from_secs(3);

/// Where one partition's offsets come from.
#[derive(Debug, Clone)]
pub enum OffsetSource {
    Local(Arc<Partition>),
    /// Held elsewhere: the addresses of its replicas, its leader first.
    Remote {
        topic: String,
        partition: u32,
        replicas: Vec<String>,
    },
}

impl OffsetSource {
    /// The log start offset.
    pub async fn earliest(&self) -> Result<u64> {
        match self {
            OffsetSource::Local(p) => Ok(p.log_start().0),
            OffsetSource::Remote { .. } => self.ask(OffsetSpec::Earliest, 0).await,
        }
    }

    /// The high watermark.
    pub async fn latest(&self) -> Result<u64> {
        match self {
            OffsetSource::Local(p) => Ok(p.high_watermark().0),
            OffsetSource::Remote { .. } => self.ask(OffsetSpec::Latest, 0).await,
        }
    }

    /// The first offset whose record is at or after `timestamp` (the high watermark if none).
    pub async fn for_time(&self, timestamp: Timestamp) -> Result<u64> {
        match self {
            OffsetSource::Local(p) => Ok(p.offset_for_time(timestamp).await?.0),
            OffsetSource::Remote { .. } => self.ask(OffsetSpec::Timestamp, timestamp.0).await,
        }
    }

    /// Asks the replicas in turn (leader first), and next any leader a refusal names (only
    /// the leader answers while one is known); the first answer wins.
    async fn ask(&self, spec: OffsetSpec, timestamp_ms: i64) -> Result<u64> {
        let OffsetSource::Remote { topic, partition, replicas } = self else {
            unreachable!("only remote sources are asked");
        };
        let mut last = format!("no replica of {topic}/{partition} is known");
        let mut queue: std::collections::VecDeque<String> = replicas.iter().cloned().collect();
        let mut tried = std::collections::HashSet::new();
        while let Some(address) = queue.pop_front() {
            if !tried.insert(address.clone()) {
                continue;
            }
            let request = ListOffsetsRequest {
                topic: topic.clone(),
                partition: *partition,
                spec: spec.into(),
                timestamp_ms,
            };
            match tokio::time::timeout(REMOTE_TIMEOUT, list_offsets(&address, request)).await {
                Ok(Ok(offset)) => return Ok(offset),
                Ok(Err(e)) => {
                    if let Some(leader) = strata_proto::leader_named_in(&e) {
                        queue.push_front(leader);
                    }
                    last = format!("{address}: {e}");
                }
                Err(_) => last = format!("{address}: no answer within {REMOTE_TIMEOUT:?}"),
            }
        }
        Err(BrokerError::Replication(format!(
            "offsets of {topic}/{partition} are held on other nodes, which did not answer: {last}"
        )))
    }
}

async fn list_offsets(
    address: &str,
    request: ListOffsetsRequest,
) -> std::result::Result<u64, String> {
    let mut client = BrokerClient::new(channel(address)?);
    let reply = client.list_offsets(request).await.map_err(|s| s.message().to_owned())?;
    Ok(reply.into_inner().offset)
}

/// One lazily connected channel per node address, shared by every lookup.
fn channel(address: &str) -> std::result::Result<Channel, String> {
    static CHANNELS: OnceLock<Mutex<HashMap<String, Channel>>> = OnceLock::new();
    let mut channels =
        CHANNELS.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    if let Some(channel) = channels.get(address) {
        return Ok(channel.clone());
    }
    let channel = Endpoint::from_shared(format!("http://{address}"))
        .map_err(|e| e.to_string())?
        .connect_timeout(REMOTE_TIMEOUT)
        .connect_lazy();
    channels.insert(address.to_owned(), channel.clone());
    Ok(channel)
}
