//! The connection to a cluster.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use strata_proto::admin_client::AdminClient;
use strata_proto::broker_client::BrokerClient;
use strata_proto::{MetadataRequest, MetadataResponse};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::{ClientError, Result};

/// Largest message the client accepts from the server (a fetch answer).
pub(crate) const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;

/// A connection to a Strata cluster, cheap to clone (clones share connections and what they
/// learnt). Requests about a partition go to its leader, learnt from metadata and from
/// not-leader answers; other requests go to one broker, and move to the next known broker
/// when that one stops answering. Each broker is one HTTP/2 connection carrying every request.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Brokers to try: the bootstrap list, then brokers learnt from metadata.
    addresses: RwLock<Vec<String>>,
    /// Index in `addresses` of the broker for requests not tied to a partition.
    current: AtomicUsize,
    channels: Mutex<HashMap<String, Channel>>,
    /// Leader address per partition.
    leaders: RwLock<HashMap<(String, u32), String>>,
}

impl Client {
    /// Connects to the first of `brokers` (`host:port`) that answers; the others are kept to
    /// fail over to.
    pub async fn connect(brokers: &[impl AsRef<str>]) -> Result<Client> {
        let mut last = ClientError::InvalidArgument("no broker address given".into());
        let addresses: Vec<String> = brokers
            .iter()
            .map(|a| a.as_ref().trim().to_owned())
            .filter(|a| !a.is_empty())
            .collect();
        for (index, address) in addresses.iter().enumerate() {
            match endpoint(address)?.connect().await {
                Ok(channel) => {
                    let inner = Inner {
                        addresses: RwLock::new(addresses.clone()),
                        current: AtomicUsize::new(index),
                        channels: Mutex::new(HashMap::from([(address.clone(), channel)])),
                        leaders: RwLock::default(),
                    };
                    return Ok(Client { inner: Arc::new(inner) });
                }
                Err(e) => {
                    last = ClientError::Connect {
                        address: address.to_owned(),
                        reason: error_chain(&e),
                    }
                }
            }
        }
        Err(last)
    }

    /// The broker this client sends requests not tied to a partition to.
    pub fn address(&self) -> String {
        let addresses = self.inner.addresses.read().unwrap_or_else(|e| e.into_inner());
        let current = self.inner.current.load(Ordering::Relaxed) % addresses.len().max(1);
        addresses.get(current).cloned().unwrap_or_default()
    }

    /// The connection to the broker at `address`.
    pub(crate) fn channel_at(&self, address: &str) -> Channel {
        let mut channels = self.inner.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(channel) = channels.get(address) {
            return channel.clone();
        }
        // Addresses come from the user or the cluster's metadata; a malformed one fails each
        // request with a clear error rather than here.
        let channel = match endpoint(address) {
            Ok(endpoint) => endpoint.connect_lazy(),
            Err(_) => endpoint("invalid.invalid:1").expect("valid").connect_lazy(),
        };
        channels.insert(address.to_owned(), channel.clone());
        channel
    }

    pub(crate) fn broker(&self) -> BrokerClient<Channel> {
        BrokerClient::new(self.channel_at(&self.address()))
            .max_decoding_message_size(MAX_RESPONSE_BYTES)
    }

    /// The broker to send requests about `topic`/`partition` to: its leader if known.
    pub(crate) fn broker_for(&self, topic: &str, partition: u32) -> BrokerClient<Channel> {
        self.broker_at(&self.leader_address(topic, partition))
    }

    /// The address of `topic`/`partition`'s leader if known, else of the current broker.
    pub(crate) fn leader_address(&self, topic: &str, partition: u32) -> String {
        let leaders = self.inner.leaders.read().unwrap_or_else(|e| e.into_inner());
        match leaders.get(&(topic.to_owned(), partition)) {
            Some(leader) => leader.clone(),
            None => {
                drop(leaders);
                self.address()
            }
        }
    }

    /// The connection to `topic`/`partition`'s leader if known, else to the current broker.
    pub(crate) fn channel_for(&self, topic: &str, partition: u32) -> Channel {
        self.channel_at(&self.leader_address(topic, partition))
    }

    /// The broker at `address`.
    pub(crate) fn broker_at(&self, address: &str) -> BrokerClient<Channel> {
        BrokerClient::new(self.channel_at(address)).max_decoding_message_size(MAX_RESPONSE_BYTES)
    }

    pub(crate) fn admin(&self) -> AdminClient<Channel> {
        AdminClient::new(self.channel_at(&self.address()))
            .max_decoding_message_size(MAX_RESPONSE_BYTES)
    }

    /// Learns from a failed request about a partition: a not-leader answer names the new
    /// leader (returns true, to retry at once, if that is not the leader already cached);
    /// anything else unavailable drops the cached leader, moves to the next broker and
    /// refreshes the partition's leaders from metadata.
    pub(crate) async fn partition_failed(
        &self,
        topic: &str,
        partition: u32,
        status: &Status,
    ) -> bool {
        if status.code() != Code::Unavailable && status.code() != Code::Unknown {
            return false;
        }
        let key = (topic.to_owned(), partition);
        if let Some(address) = strata_proto::leader_named_in(status.message()) {
            self.remember(&address);
            let mut leaders = self.inner.leaders.write().unwrap_or_else(|e| e.into_inner());
            let previous = leaders.insert(key, address.clone());
            return previous.as_deref() != Some(address.as_str());
        }
        self.inner.leaders.write().unwrap_or_else(|e| e.into_inner()).remove(&key);
        if !status.message().contains("not the leader") {
            self.inner.current.fetch_add(1, Ordering::Relaxed);
        }
        let _ = self.metadata(&[topic.to_owned()]).await;
        false
    }

    /// Runs a consumer-group request against the group coordinator (in a cluster, the
    /// controller's leader): while the answer is UNAVAILABLE, follows the coordinator it names
    /// (or moves to the next broker) and tries again, for up to about ten seconds.
    pub(crate) async fn with_coordinator<T, F, Fut>(&self, mut call: F) -> Result<T>
    where
        F: FnMut(Client) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<tonic::Response<T>, Status>>,
    {
        let mut attempt = 0u32;
        loop {
            match call(self.clone()).await {
                Ok(response) => return Ok(response.into_inner()),
                Err(status) if status.code() == Code::Unavailable && attempt < 40 => {
                    self.coordinator_failed(&status);
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(status) => return Err(status.into()),
            }
        }
    }

    /// Moves requests not tied to a partition to the coordinator a refusal names, or to the
    /// next known broker.
    fn coordinator_failed(&self, status: &Status) {
        match strata_proto::leader_named_in(status.message()) {
            Some(address) => {
                self.remember(&address);
                let addresses = self.inner.addresses.read().unwrap_or_else(|e| e.into_inner());
                if let Some(index) = addresses.iter().position(|a| *a == address) {
                    self.inner.current.store(index, Ordering::Relaxed);
                }
            }
            None => {
                self.inner.current.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn remember(&self, address: &str) {
        let mut addresses = self.inner.addresses.write().unwrap_or_else(|e| e.into_inner());
        if !addresses.iter().any(|a| a == address) {
            addresses.push(address.to_owned());
        }
    }

    /// Brokers, topics and partition leaders; `topics` empty for all topics. Tries each known
    /// broker in turn while they are unreachable, and remembers the leaders it learns.
    pub async fn metadata(&self, topics: &[String]) -> Result<MetadataResponse> {
        let attempts = self.inner.addresses.read().unwrap_or_else(|e| e.into_inner()).len();
        let request = MetadataRequest { topics: topics.to_vec() };
        let mut result = self.broker().metadata(request.clone()).await;
        for _ in 1..attempts.max(1) {
            match &result {
                Err(status) if status.code() == Code::Unavailable => {
                    self.inner.current.fetch_add(1, Ordering::Relaxed);
                    result = self.broker().metadata(request.clone()).await;
                }
                _ => break,
            }
        }
        let metadata = result?.into_inner();
        let brokers: HashMap<u64, &str> =
            metadata.brokers.iter().map(|b| (b.node_id, b.address.as_str())).collect();
        for broker in &metadata.brokers {
            self.remember(&broker.address);
        }
        let mut leaders = self.inner.leaders.write().unwrap_or_else(|e| e.into_inner());
        for topic in &metadata.topics {
            for p in &topic.partitions {
                match brokers.get(&p.leader) {
                    Some(address) => {
                        leaders.insert((topic.name.clone(), p.partition), (*address).to_owned())
                    }
                    None => leaders.remove(&(topic.name.clone(), p.partition)),
                };
            }
        }
        drop(leaders);
        Ok(metadata)
    }

    /// Number of partitions of `topic`.
    pub async fn partition_count(&self, topic: &str) -> Result<u32> {
        let metadata = self.metadata(&[topic.to_owned()]).await?;
        Ok(metadata.topics.first().map_or(0, |t| t.partitions.len() as u32))
    }
}

fn endpoint(address: &str) -> Result<Endpoint> {
    let uri =
        if address.contains("://") { address.to_owned() } else { format!("http://{address}") };
    Endpoint::from_shared(uri)
        .map(|e| {
            e.connect_timeout(Duration::from_secs(5))
                .tcp_nodelay(true)
                .initial_stream_window_size(8 * 1024 * 1024)
                .initial_connection_window_size(32 * 1024 * 1024)
                .max_frame_size(strata_proto::CLIENT_MAX_FRAME_BYTES)
                .http2_keep_alive_interval(Duration::from_secs(30))
        })
        .map_err(|e| {
            ClientError::InvalidArgument(format!("invalid broker address {address:?}: {e}"))
        })
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
