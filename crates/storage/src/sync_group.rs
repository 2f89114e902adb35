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
//! filesystem is not one known to pass them up (ext4, XFS, Btrfs), no group is made. The
//! checkpoint thread of the write-ahead file (`crate::write_ahead`) has a handle of its own,
//! opened at the same time, since each open file hears each error once.
//!
//! Rounds that carry many logs go through the node's write-ahead file instead, when the group
//! has one: one write and one `fdatasync` for all of them, the segments written back later by
//! a checkpoint (`docs/write-ahead.md`).

use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use strata_record::Offset;

use crate::Log;
use crate::error::{IoContext, Result};
use crate::fs_sync::{KNOWN_FILESYSTEMS, syncfs_reports_errors, syncfs_until_it_fails};
use crate::observe::WriteAheadEvent;
use crate::write_ahead::{WriteAhead, WriteAheadConfig};

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
    checkpointer: Option<JoinHandle<()>>,
}

#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    /// Opened before any member log, so `syncfs` on it reports every write-back error since.
    /// Used by the group's thread only: the kernel reports each error once per open file, so
    /// a second caller must not share it.
    handle: File,
    /// The checkpoint thread's own handle, opened at the same time, for the same reason.
    checkpoint_handle: File,
    /// Set by the first failed `syncfs`: from then on each log fsyncs its own file.
    broken: AtomicBool,
    queue: Mutex<Queue>,
    queued: Condvar,
    /// The write-ahead file, if the group has one and it has not failed. Used by the group's
    /// thread only (a mutex for `Sync`).
    write_ahead: Mutex<Option<WriteAhead>>,
    checkpoints: Mutex<Checkpoints>,
    checkpoint_changed: Condvar,
}

/// Between the group's thread, which asks for checkpoints as write-ahead files fill, and the
/// checkpoint thread, which runs them (a `syncfs` of many segment files takes a while, and
/// rounds go on meanwhile).
#[derive(Debug, Default)]
struct Checkpoints {
    /// A checkpoint is wanted that covers the write-ahead files before this one.
    wanted_below: Option<u64>,
    /// A checkpoint is running.
    running: bool,
    /// The last checkpoint done covered the files before this one.
    covered_below: Option<u64>,
    stopping: bool,
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
    ///
    /// With `write_ahead`, rounds that carry many logs go through a write-ahead file in its
    /// directory (see [`WriteAheadConfig`]). What a crash left there is not this group's: replay
    /// it into the logs first ([`crate::WriteAheadReplay`]).
    pub fn open(
        dir: impl AsRef<Path>,
        write_ahead: Option<WriteAheadConfig>,
    ) -> Result<Option<SyncGroup>> {
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
        let checkpoint_handle = File::open(&dir).at(&dir)?;
        let write_ahead = match write_ahead {
            Some(config) => {
                let write_ahead = WriteAhead::open(config)?;
                if write_ahead.device()? == device {
                    Some(write_ahead)
                } else {
                    tracing::info!(
                        "the write-ahead directory is on another filesystem than the logs: not used"
                    );
                    write_ahead.remove_all()?;
                    None
                }
            }
            None => None,
        };
        let has_write_ahead = write_ahead.is_some();
        let shared = Arc::new(Shared {
            dir: dir.clone(),
            handle,
            checkpoint_handle,
            broken: AtomicBool::new(false),
            queue: Mutex::new(Queue::default()),
            queued: Condvar::new(),
            write_ahead: Mutex::new(write_ahead),
            checkpoints: Mutex::new(Checkpoints::default()),
            checkpoint_changed: Condvar::new(),
        });
        let worker = shared.clone();
        let thread = std::thread::Builder::new()
            .name("strata-syncfs".into())
            .spawn(move || worker.run())
            .at(&dir)?;
        let checkpointer = if has_write_ahead {
            let worker = shared.clone();
            let thread = std::thread::Builder::new()
                .name("strata-checkpoint".into())
                .spawn(move || worker.run_checkpoints())
                .at(&dir)?;
            Some(thread)
        } else {
            None
        };
        Ok(Some(SyncGroup { shared, device, thread: Some(thread), checkpointer }))
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
        self.shared.checkpoints().stopping = true;
        self.shared.checkpoint_changed.notify_all();
        if let Some(thread) = self.checkpointer.take() {
            let _ = thread.join();
        }
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

    fn write_ahead(&self) -> MutexGuard<'_, Option<WriteAhead>> {
        self.write_ahead.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn checkpoints(&self) -> MutexGuard<'_, Checkpoints> {
        self.checkpoints.lock().unwrap_or_else(|e| e.into_inner())
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
                    drop(queue);
                    self.finish();
                    return;
                }
                std::mem::take(&mut queue.waits)
            };
            self.round(waits);
        }
    }

    /// No member log is left: a last `syncfs` makes every segment durable, so the
    /// write-ahead files are not needed by the next start. Kept if the `syncfs` fails.
    fn finish(&self) {
        let Some(write_ahead) = self.write_ahead().take() else { return };
        if !self.broken.load(Ordering::Relaxed)
            && self.syncfs(&self.handle)
            && let Err(err) = write_ahead.remove_all()
        {
            tracing::warn!(error = %err, "could not remove the write-ahead files");
        }
    }

    /// The checkpoint thread: one `syncfs` per request, each covering the write-ahead files
    /// that were full when it was asked for.
    fn run_checkpoints(&self) {
        loop {
            let below = {
                let mut checkpoints = self.checkpoints();
                while checkpoints.wanted_below.is_none() && !checkpoints.stopping {
                    checkpoints = self
                        .checkpoint_changed
                        .wait(checkpoints)
                        .unwrap_or_else(|e| e.into_inner());
                }
                match checkpoints.wanted_below.take() {
                    Some(below) if !checkpoints.stopping => {
                        checkpoints.running = true;
                        below
                    }
                    _ => return,
                }
            };
            let started = std::time::Instant::now();
            let ok = !self.broken.load(Ordering::Relaxed) && self.syncfs(&self.checkpoint_handle);
            if ok {
                let elapsed = started.elapsed();
                crate::observe::write_ahead_event(WriteAheadEvent::Checkpoint { elapsed });
            }
            let mut checkpoints = self.checkpoints();
            checkpoints.running = false;
            if ok {
                checkpoints.covered_below = checkpoints.covered_below.max(Some(below));
            }
            drop(checkpoints);
            self.checkpoint_changed.notify_all();
        }
    }

    /// Makes every wait of the round durable and calls it back.
    fn round(&self, waits: Vec<Wait>) {
        if !self.broken.load(Ordering::Relaxed) && self.write_ahead_round(&waits) {
            for Wait { log, target, done, .. } in waits {
                // Logged through the round, unless the log failed meanwhile (its own fsync
                // then reports that) or was rolled past the round (sealing fsynced it).
                let outcome = log.sync_through(target);
                drop(log);
                done(outcome);
            }
            // Only now, with the round answered, may the thread wait for a checkpoint.
            self.after_write_ahead_round();
            return;
        }
        let first = Arc::as_ptr(&waits[0].log);
        let one_log = waits.iter().all(|w| Arc::as_ptr(&w.log) == first);
        if !one_log && !self.broken.load(Ordering::Relaxed) && self.syncfs(&self.handle) {
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

    /// Writes the round's logs' unlogged bytes to the write-ahead file, if the group has one
    /// and the round carries enough logs. False if it did not, and the round is to be made
    /// durable in place; a write-ahead file that failed is given up for good.
    fn write_ahead_round(&self, waits: &[Wait]) -> bool {
        let mut guard = self.write_ahead();
        let Some(write_ahead) = guard.as_mut() else { return false };
        let mut seen = HashSet::with_capacity(waits.len());
        let logs: Vec<&Arc<Log>> =
            waits.iter().map(|w| &w.log).filter(|log| seen.insert(Arc::as_ptr(log))).collect();
        if logs.len() < write_ahead.min_logs() {
            return false;
        }
        let mut marks = Vec::with_capacity(logs.len());
        let mut frames = Vec::with_capacity(logs.len());
        for log in logs {
            match log.unlogged() {
                Ok(Some(unlogged)) => {
                    marks.push((log, unlogged.mark));
                    frames.push(unlogged.frame);
                }
                Ok(None) => {}
                // A failed log: the round goes the ordinary way, which reports it.
                Err(_) => return false,
            }
        }
        if frames.is_empty() {
            return true; // every log's bytes were made durable since they were written
        }
        let bytes: u64 = frames.iter().map(|f| f.payload.len() as u64).sum();
        if !write_ahead.takes(frames.len(), bytes) {
            return false;
        }
        match write_ahead.write_round(&frames) {
            Ok(bytes) => {
                let logs = frames.len();
                crate::observe::write_ahead_event(WriteAheadEvent::Round { logs, bytes });
            }
            Err(err) => {
                tracing::error!(error = %err, "write-ahead file failed; rounds are made durable in place from now on");
                *guard = None;
                return false;
            }
        }
        drop(frames);
        for (log, mark) in marks {
            // An error means the log failed; its waits hear it from `sync_through`.
            let _ = log.logged_through(mark);
        }
        true
    }

    /// After a write-ahead round: see [`Shared::rotate`]. A file that cannot be started gives
    /// the write-ahead file up.
    fn after_write_ahead_round(&self) {
        let mut guard = self.write_ahead();
        let Some(write_ahead) = guard.as_mut() else { return };
        if let Err(err) = self.rotate(write_ahead) {
            tracing::error!(error = %err, "write-ahead file failed; rounds are made durable in place from now on");
            *guard = None;
        }
    }

    /// Frees the files a finished checkpoint covered; once the file is full, starts the next,
    /// asks for a checkpoint, and waits for one if too many files are waiting for it.
    fn rotate(&self, write_ahead: &mut WriteAhead) -> Result<()> {
        if let Some(below) = self.checkpoints().covered_below {
            write_ahead.covered_below(below);
        }
        if !write_ahead.is_full() {
            return Ok(());
        }
        let next = write_ahead.next_file()?;
        if write_ahead.waiting() >= write_ahead.files_per_checkpoint() {
            self.checkpoints().wanted_below = Some(next);
            self.checkpoint_changed.notify_all();
        }
        while write_ahead.waiting() >= 2 * write_ahead.files_per_checkpoint()
            && !self.broken.load(Ordering::Relaxed)
        {
            let mut checkpoints = self.checkpoints();
            let covered = checkpoints.covered_below;
            while checkpoints.covered_below == covered
                && (checkpoints.wanted_below.is_some() || checkpoints.running)
                && !checkpoints.stopping
                && !self.broken.load(Ordering::Relaxed)
            {
                checkpoints =
                    self.checkpoint_changed.wait(checkpoints).unwrap_or_else(|e| e.into_inner());
            }
            let Some(below) = checkpoints.covered_below else { break };
            drop(checkpoints);
            let before = write_ahead.waiting();
            write_ahead.covered_below(below);
            if write_ahead.waiting() == before {
                break; // nothing more to free: go on rather than stall
            }
        }
        Ok(())
    }

    fn syncfs(&self, handle: &File) -> bool {
        syncfs_until_it_fails(handle, &self.broken, &self.dir, "each log fsyncs its own file")
    }
}
