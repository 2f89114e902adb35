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
