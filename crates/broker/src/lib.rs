//! The Strata broker: topics and partitions on the storage engine, consumer groups with
//! server-side assignment and durable offsets, and the gRPC services (`proto/strata/v1`).
//!
//! Run one with [`run`]; `strata server` is a thin wrapper around it.

mod cluster;
mod error;
pub mod groups;
mod metrics;
pub mod offsets;
mod partition;
mod sequencer;
mod server;
mod service;
mod topic_config;
mod topics;

pub use error::{BrokerError, Result};
pub use server::{BrokerConfig, run};
pub use topic_config::TopicConfig;
