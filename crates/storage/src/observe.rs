//! A hook for the owner's metrics: how long each fsync took. A plain function pointer keeps
//! this crate free of any metrics library.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

static FSYNC_OBSERVER: OnceLock<fn(Duration)> = OnceLock::new();

/// Registers the function every log calls with the duration of each fsync of a segment.
/// The first registration wins; later calls are ignored.
pub fn set_fsync_observer(observer: fn(Duration)) {
    let _ = FSYNC_OBSERVER.set(observer);
}

/// Runs `fsync` and reports its duration to the observer, if any.
pub(crate) fn timed_fsync<T>(fsync: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let result = fsync();
    if let Some(observer) = FSYNC_OBSERVER.get() {
        observer(started.elapsed());
    }
    result
}

/// What the write-ahead file did, for the owner's metrics.
#[derive(Debug, Clone, Copy)]
pub enum WriteAheadEvent {
    /// A round of `logs` logs wrote `bytes` (frame headers included) and fdatasynced them.
    Round { logs: usize, bytes: u64 },
    /// A checkpoint's `syncfs` took `elapsed`.
    Checkpoint { elapsed: Duration },
}

static WRITE_AHEAD_OBSERVER: OnceLock<fn(WriteAheadEvent)> = OnceLock::new();

/// Registers the function the write-ahead file reports its rounds and checkpoints to. The
/// first registration wins; later calls are ignored.
pub fn set_write_ahead_observer(observer: fn(WriteAheadEvent)) {
    let _ = WRITE_AHEAD_OBSERVER.set(observer);
}

pub(crate) fn write_ahead_event(event: WriteAheadEvent) {
    if let Some(observer) = WRITE_AHEAD_OBSERVER.get() {
        observer(event);
    }
}
