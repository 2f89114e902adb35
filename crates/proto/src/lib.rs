//! Strata's gRPC API, generated from `proto/strata/v1/*.proto`.
//!
//! The generated code is kept in a private module and re-exported, so its lint exceptions stay
//! in one place. Every message and field is documented in the `.proto` files.

#[allow(
    missing_debug_implementations,
    unreachable_pub,
    clippy::all,
    clippy::pedantic,
    rust_2018_idioms
)]
mod generated {
    tonic::include_proto!("strata.v1");

    /// The node-to-node replication API (`proto/strata/v1/internal.proto`).
    pub mod internal {
        tonic::include_proto!("strata.v1.internal");
    }
}

pub mod calls;
pub mod codec;
pub mod frames;

pub use generated::*;

/// Default port of a Strata server (Kafka's 9092, plus one thousand).
pub const DEFAULT_PORT: u16 = 10092;

/// The largest HTTP/2 DATA frame a Strata server accepts (its `SETTINGS_MAX_FRAME_SIZE`), so
/// the largest a client or a replicating leader sends it. HTTP/2's default, 16 KiB, cuts a
/// 1 MiB produce request into 64 frames, each a separate header parse, wake-up and buffer
/// append on the server; whole requests in one frame doubled single-partition produce
/// throughput with 1 MiB batches (`docs/benchmarks.md`, session 9).
pub const SERVER_MAX_FRAME_BYTES: u32 = 4 * 1024 * 1024;

/// The largest HTTP/2 DATA frame a Strata client accepts, so the largest a server answers
/// with: HTTP/2's largest. A server sends each large record batch of a fetch answer in frames
/// of its own, and a batch that comes in one frame is decoded where h2 read it, without a copy
/// (`strata-client`, `unary_frames.rs`); h2 cuts a frame short only where the flow-control
/// window (8 MiB per stream, 32 MiB per connection) runs out, and a batch cut so is copied
/// together. (With tonic's decoding, which copied every frame anyway, 1 MiB frames had
/// measured faster than 16 KiB, 2 MiB or 4 MiB ones.)
pub const CLIENT_MAX_FRAME_BYTES: u32 = (1 << 24) - 1;

impl TopicPartitions {
    /// Groups `(topic, partition)` pairs by topic, topics and partitions sorted, as the API
    /// lists them.
    pub fn group<T: AsRef<str>>(pairs: impl IntoIterator<Item = (T, u32)>) -> Vec<TopicPartitions> {
        let mut by_topic: std::collections::BTreeMap<String, Vec<u32>> = Default::default();
        for (topic, partition) in pairs {
            by_topic.entry(topic.as_ref().to_owned()).or_default().push(partition);
        }
        by_topic
            .into_iter()
            .map(|(topic, mut partitions)| {
                partitions.sort_unstable();
                TopicPartitions { topic, partitions }
            })
            .collect()
    }

    /// The `(topic, partition)` pairs a list names.
    pub fn pairs(list: &[TopicPartitions]) -> impl Iterator<Item = (String, u32)> + '_ {
        list.iter().flat_map(|tp| tp.partitions.iter().map(move |p| (tp.topic.clone(), *p)))
    }
}

/// The leader's address in a not-leader refusal ("...; leader is node 2 at host:port"), as
/// brokers word it: clients follow it, and brokers asking each other for offsets too.
pub fn leader_named_in(message: &str) -> Option<String> {
    let (_, rest) = message.split_once("leader is node ")?;
    let (_, address) = rest.split_once(" at ")?;
    let address = address.split_whitespace().next()?.trim_end_matches([';', ',', '.']);
    (!address.is_empty()).then(|| address.to_owned())
}

#[cfg(test)]
mod tests {
    use super::leader_named_in;

    #[test]
    fn finds_the_leader_in_a_not_leader_message() {
        let msg = "not the leader for t/0; leader is node 2 at 127.0.0.1:10093";
        assert_eq!(leader_named_in(msg).as_deref(), Some("127.0.0.1:10093"));
        assert_eq!(leader_named_in("not the leader for t/0; no leader is known yet"), None);
    }
}
