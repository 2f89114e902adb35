//! The partition log: Strata's storage engine.
//!
//! A [`Log`] is a directory of segments named by their zero-padded base offset. Each segment is
//! a log file of RecordBatch v2 batches plus a sparse offset index and a time index, all
//! memory-mapped. The active (last) segment is appended; sealed segments are immutable.
//! Durability is explicit ([`Durability`]), recovery after a crash scans only the tail, and
//! retention drops whole sealed segments. The byte layouts and recovery rules are in
//! `docs/on-disk-format.md`.
//!
//! This crate is synchronous on purpose: it knows nothing of tokio, gRPC or Raft, so the
//! layers above decide where blocking I/O runs.

mod checkpoint;
mod config;
mod error;
mod fs_sync;
mod index;
mod log;
mod log_id;
mod mmap;
mod observe;
mod read;
mod recovery;
mod replay;
mod segment;
mod sync_group;
mod tail_mark;
mod write_ahead;

pub use config::{Durability, LogConfig, MAX_BATCH_BYTES, MAX_SEGMENT_BYTES};
pub use error::{Result, StorageError};
pub use fs_sync::FilesystemSync;
pub use log::{AppendInfo, Log, RetentionOutcome, Runs, TailMarkDraft};
pub use observe::{WriteAheadEvent, set_fsync_observer, set_write_ahead_observer};
pub use replay::WriteAheadReplay;
pub use sync_group::SyncGroup;
pub use write_ahead::WriteAheadConfig;
