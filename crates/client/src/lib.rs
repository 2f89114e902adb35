//! The Strata client library.
//!
//! - [`Client`]: a connection to a cluster, shared by everything else (cheap to clone).
//! - [`Producer`]: batches records per partition (linger, batch size), picks partitions (key
//!   hash; keyless records fill one partition's batch at a time; round robin or explicit),
//!   retries retriable failures with backoff, and resolves a future per record with its offset.
//! - [`Consumer`]: reads assigned partitions or joins a consumer group (server-side
//!   assignment), with seek, pause/resume, auto or manual commit, and a bounded prefetch.
//! - [`Admin`]: topics, groups and offset resets, as the `strata` CLI uses them.
//!
//! ```no_run
//! # async fn example() -> Result<(), strata_client::ClientError> {
//! use strata_client::{Client, Producer, ProducerConfig, Record};
//! let client = Client::connect(&["localhost:10092"]).await?;
//! let producer = Producer::new(client.clone(), ProducerConfig::default());
//! let delivery = producer.send(Record::new("orders").key("order-42").value("{\"qty\":3}")).await?;
//! let offset = delivery.await?.offset;
//! producer.close().await?;
//! # Ok(()) }
//! ```

mod accumulator;
mod admin;
mod answers;
mod buffer_room;
mod client;
mod consumer;
mod error;
mod produce_request;
mod producer;
mod record;
mod unary_frames;

pub use admin::{Admin, ResetSpec, ResetTarget, TopicSpec};
pub use client::Client;
pub use consumer::{Consumer, ConsumerConfig, OffsetReset};
pub use error::ClientError;
pub use producer::{Acks, DeliveryFuture, Partitioner, Producer, ProducerConfig};
pub use record::{ConsumerRecord, Delivered, Record};

/// Generated API types, for callers that need the raw messages (descriptions, lag rows).
pub use strata_proto as proto;
/// Batch compression codecs (`Compression::Lz4`, `Compression::Zstd`).
pub use strata_record::Compression;

pub type Result<T, E = ClientError> = std::result::Result<T, E>;
