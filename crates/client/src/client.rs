//! The connection to a cluster.

use std::time::Duration;

use strata_proto::admin_client::AdminClient;
use strata_proto::broker_client::BrokerClient;
use strata_proto::{MetadataRequest, MetadataResponse};
use tonic::transport::{Channel, Endpoint};

use crate::{ClientError, Result};

/// Largest message the client accepts from the server (a fetch answer).
const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;

/// A connection to a Strata cluster, cheap to clone. One HTTP/2 connection carries every
/// request, multiplexed.
#[derive(Debug, Clone)]
pub struct Client {
    channel: Channel,
    address: String,
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
                .http2_keep_alive_interval(Duration::from_secs(30))
        })
        .map_err(|e| {
            ClientError::InvalidArgument(format!("invalid broker address {address:?}: {e}"))
        })
}

impl Client {
    /// Connects to the first of `brokers` (`host:port`) that answers.
    pub async fn connect(brokers: &[impl AsRef<str>]) -> Result<Client> {
        let mut last = ClientError::InvalidArgument("no broker address given".into());
        for address in brokers {
            let address = address.as_ref().trim();
            if address.is_empty() {
                continue;
            }
            match endpoint(address)?.connect().await {
                Ok(channel) => {
                    return Ok(Client { channel, address: address.to_owned() });
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

    /// The broker this client is connected to.
    pub fn address(&self) -> &str {
        &self.address
    }

    pub(crate) fn broker(&self) -> BrokerClient<Channel> {
        BrokerClient::new(self.channel.clone()).max_decoding_message_size(MAX_RESPONSE_BYTES)
    }

    pub(crate) fn admin(&self) -> AdminClient<Channel> {
        AdminClient::new(self.channel.clone()).max_decoding_message_size(MAX_RESPONSE_BYTES)
    }

    /// Brokers, topics and partition leaders; `topics` empty for all topics.
    pub async fn metadata(&self, topics: &[String]) -> Result<MetadataResponse> {
        Ok(self.broker().metadata(MetadataRequest { topics: topics.to_vec() }).await?.into_inner())
    }

    /// Number of partitions of `topic`.
    pub async fn partition_count(&self, topic: &str) -> Result<u32> {
        let metadata = self.metadata(&[topic.to_owned()]).await?;
        Ok(metadata.topics.first().map_or(0, |t| t.partitions.len() as u32))
    }
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
