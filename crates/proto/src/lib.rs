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
}

pub use generated::*;

/// Default port of a Strata server (Kafka's 9092, plus one thousand).
pub const DEFAULT_PORT: u16 = 10092;
