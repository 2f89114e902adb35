//! Node-wide group commit: one `syncfs` makes the appends of many logs durable at once.
//!
//! With fsync on every append, a node writing to many partitions at a time would otherwise
//! make one `fdatasync` per partition file. Each costs a full trip through the filesystem
//! (write-back, the inode's own write, a disk cache flush), so a thousand partitions spend
//! their time, and a core, on fsyncs of a few kilobytes each. `syncfs` writes back every
//! dirty file of the filesystem, with one cache flush, for about the price of a few
//! `fdatasync`s (see `docs/decisions.md`, "One syncfs for many partitions").
//!
//! Logs that [join](crate::Log::join_sync_group) a group hand their waits for durability
//! ([`crate::Log::when_durable`]) to the group's one thread, which works in rounds: it takes
//! every wait queued so far, makes them durable together and calls each one back, while waits
//! that arrive meanwhile gather for the next round. Nobody blocks a thread to wait. A round
//! whose waits are all for one log runs that log's own `fdatasync` instead: it is cheaper and
//! touches nothing else.
//!
//! Error reporting is what makes this safe. Since Linux 5.8, `syncfs` reports any write-back
//! error of the filesystem that happened since its file descriptor was opened; the group's
//! descriptor is opened before any member log, so no error can slip past it. But it reports
//! each error once, and the log whose data was lost may not be in the round that hears of it:
//! so after a failed `syncfs` the group stops using `syncfs` for good, and every log fsyncs
//! its own file from then on, which reports the error to the log that lost data, as it would
//! have without the group. Where `syncfs` does not report errors (Linux before 5.8) or the
//! filesystem is not one known to pass them up (ext4, XFS, Btrfs), no group is made.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use strata_record::Offset;

use crate::Log;
use crate::error::{IoContext, Result};

/// Called with the outcome of a wait for durability.
pub(crate) type Callback = Box<dyn FnOnce(Result<()>) + Send>;

/// A log's wait for its appends below `target` to be durable. `end` is the log's end when the
/// wait was queued: everything below it was written, so a round that starts later covers it.
pub(crate) struct Wait {
    pub(crate) log: Arc<Log>,
    pub(crate) target: Offset,
    pub(crate) end: Offset,
    pub(crate) done: Callback,
}

/// Shares `syncfs` calls between the logs of one filesystem. Dropped with its last member
/// log; its thread then stops.
#[derive(Debug)]
pub struct SyncGroup {
    shared: Arc<Shared>,
    /// The filesystem's device: only logs on it may join.
    device: u64,
    thread: Option<JoinHandle<()>>,
}

#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    /// Opened before any member log, so `syncfs` on it reports every write-back error since.
    handle: File,
    /// Set by the first failed `syncfs`: from then on each log fsyncs its own file.
    broken: AtomicBool,
    queue: Mutex<Queue>,
    queued: Condvar,
}

#[derive(Default)]
struct Queue {
    waits: Vec<Wait>,
    stopping: bool,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("waits", &self.waits.len())
            .field("stopping", &self.stopping)
            .finish()
    }
}

impl SyncGroup {
    /// A group for the logs on the filesystem holding `dir`, or `None` where `syncfs` does
    /// not report write-back errors (Linux before 5.8), since the group's durability rests on
    /// them. Open it before the logs that will join it.
    pub fn open(dir: impl AsRef<Path>) -> Result<Option<SyncGroup>> {
        let dir = dir.as_ref().to_path_buf();
        if !syncfs_reports_errors() {
            tracing::info!("syncfs does not report errors on this kernel: each log fsyncs alone");
            return Ok(None);
        }
        let handle = File::open(&dir).at(&dir)?;
        let filesystem = rustix::fs::fstatfs(&handle).map_err(std::io::Error::from).at(&dir)?;
        if !KNOWN_FILESYSTEMS.contains(&(filesystem.f_type as i64)) {
            tracing::info!(dir = %dir.display(), "not ext4, XFS or Btrfs: each log fsyncs alone");
            return Ok(None);
        }
        let device = handle.metadata().at(&dir)?.dev();
        let shared = Arc::new(Shared {
            dir: dir.clone(),
            handle,
            broken: AtomicBool::new(false),
            queue: Mutex::new(Queue::default()),
            queued: Condvar::new(),
        });
        let worker = shared.clone();
        let thread = std::thread::Builder::new()
            .name("strata-syncfs".into())
            .spawn(move || worker.run())
            .at(&dir)?;
        Ok(Some(SyncGroup { shared, device, thread: Some(thread) }))
    }

    /// Whether a log in `dir` is on this group's filesystem.
    pub(crate) fn covers(&self, dir: &Path) -> bool {
        std::fs::metadata(dir).is_ok_and(|m| m.dev() == self.device)
    }

    /// Queues a wait for the next round.
    pub(crate) fn enqueue(&self, wait: Wait) {
        self.shared.lock().waits.push(wait);
        self.shared.queued.notify_one();
    }
}

impl Drop for SyncGroup {
    fn drop(&mut self) {
        self.shared.lock().stopping = true;
        self.shared.queued.notify_one();
        // The group's own thread may drop it, with the last member log it called back; it
        // stops by itself then.
        if let Some(thread) = self.thread.take()
            && thread.thread().id() != std::thread::current().id()
        {
            let _ = thread.join();
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The group's thread: one round per turn, until the group is dropped (its members hold
    /// it, so by then no wait is queued).
    fn run(&self) {
        loop {
            let waits = {
                let mut queue = self.lock();
                while queue.waits.is_empty() && !queue.stopping {
                    queue = self.queued.wait(queue).unwrap_or_else(|e| e.into_inner());
                }
                if queue.waits.is_empty() {
                    return;
                }
                std::mem::take(&mut queue.waits)
            };
            self.round(waits);
        }
    }

    /// Makes every wait of the round durable and calls it back.
    fn round(&self, waits: Vec<Wait>) {
        let first = Arc::as_ptr(&waits[0].log);
        let one_log = waits.iter().all(|w| Arc::as_ptr(&w.log) == first);
        if !one_log && !self.broken.load(Ordering::Relaxed) && self.syncfs() {
            for Wait { log, end, done, .. } in waits {
                let outcome = log.covered_by_sync(end);
                // The log is let go before its waiter hears: a waiter that closes the log next
                // must find it unshared.
                drop(log);
                done(outcome);
            }
            return;
        }
        // One log (its own fsync is cheaper and touches nothing else), or `syncfs` failed
        // (now or before): each log's own fsync tells whether its data is safe. The first wait of a log pays
        // for the fsync; the others find themselves covered.
        for Wait { log, target, done, .. } in waits {
            let outcome = log.sync_through(target);
            drop(log);
            done(outcome);
        }
    }

    fn syncfs(&self) -> bool {
        match crate::observe::timed_fsync(|| rustix::fs::syncfs(&self.handle)) {
            Ok(()) => true,
            Err(err) => {
                self.broken.store(true, Ordering::Relaxed);
                tracing::error!(dir = %self.dir.display(), error = %err, "syncfs failed; from now on each log fsyncs its own file");
                false
            }
        }
    }
}

/// Filesystems whose write-back errors reach `syncfs` (`statfs` magic numbers): ext4, XFS,
/// Btrfs. Others (overlayfs, network filesystems, tmpfs) are left to per-file fsyncs.
const KNOWN_FILESYSTEMS: [i64; 3] = [0xEF53, 0x5846_5342, 0x9123_683E];

/// Whether the running kernel is Linux 5.8 or later, where `syncfs` returns write-back errors.
fn syncfs_reports_errors() -> bool {
    kernel_at_least(&rustix::system::uname().release().to_string_lossy(), (5, 8))
}

/// Whether a kernel release string such as `6.1.0-18-amd64` is at least `wanted`.
fn kernel_at_least(release: &str, wanted: (u32, u32)) -> bool {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next().and_then(|p| p.parse::<u32>().ok());
    let minor = parts.next().and_then(|p| p.parse::<u32>().ok());
    match (major, minor) {
        (Some(major), Some(minor)) => (major, minor) >= wanted,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_versions_compare_by_major_then_minor() {
        assert!(kernel_at_least("5.8.0", (5, 8)));
        assert!(kernel_at_least("6.1.0-18-amd64", (5, 8)));
        assert!(kernel_at_least("5.10.12", (5, 8)));
        assert!(!kernel_at_least("5.7.19", (5, 8)));
        assert!(!kernel_at_least("4.19.0", (5, 8)));
        assert!(!kernel_at_least("garbage", (5, 8)));
    }
}
