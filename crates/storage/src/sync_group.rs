//! Node-wide group commit: one `syncfs` makes the appends of many logs durable at once.
//!
//! With fsync on every append, a node writing to many partitions at a time would otherwise
//! make one `fdatasync` per partition file. Each costs a full trip through the filesystem
//! (write-back, the inode's own write, a disk cache flush), so a thousand partitions spend
//! their time, and a core, on fsyncs of a few kilobytes each. `syncfs` writes back every
//! dirty file of the filesystem, with one cache flush, for about the price of a few
//! `fdatasync`s (see `docs/decisions.md`, "One syncfs for many partitions").
//!
//! Logs that [join](crate::Log::join_sync_group) a group wait for their appends in rounds:
//! whoever finds no round running leads the next one and syncs for everyone who joined it,
//! while appends that arrive meanwhile gather for the round after (the same group commit a
//! single log does with its own fsyncs, across logs). A round with one log in it does not call
//! `syncfs`: that log's own `fdatasync` is cheaper and touches nothing else.
//!
//! Error reporting is what makes this safe. Since Linux 5.8, `syncfs` reports any write-back
//! error of the filesystem that happened since its file descriptor was opened; the group's
//! descriptor is opened before any member log, so no error can slip past it. A failed round
//! tells its members to fsync their own files, and the one whose data was lost gets the
//! error from its own `fdatasync`, as it would have without the group. Older kernels do not
//! report errors from `syncfs`, so there the group is not used.

use std::collections::{HashSet, VecDeque};
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};

use crate::error::{IoContext, Result};

/// Rounds whose outcome is remembered for members still waking up from them; a member that
/// finds its round forgotten fsyncs its own file, which is always correct.
const OUTCOMES_KEPT: usize = 64;

/// Shares `syncfs` calls between the logs of one filesystem.
#[derive(Debug)]
pub struct SyncGroup {
    dir: PathBuf,
    /// The filesystem's device: only logs on it may join.
    device: u64,
    /// Opened before any member log, so `syncfs` on it reports every write-back error since.
    handle: File,
    rounds: Mutex<Rounds>,
    round_finished: Condvar,
}

#[derive(Debug, Default)]
struct Rounds {
    /// The round that logs joining now belong to; it has not started.
    open: u64,
    /// Logs in the open round (by address: a log waiting twice counts once).
    joined: HashSet<usize>,
    /// A round's leader is syncing.
    running: bool,
    /// Recent rounds and whether each synced the filesystem for its members.
    outcomes: VecDeque<(u64, bool)>,
}

/// How a member's round went.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Round<R> {
    /// `syncfs` succeeded: what the member wrote before joining is durable.
    Synced,
    /// The member was alone in the round, which ran its own fsync: this is its result.
    Alone(R),
    /// `syncfs` failed: the member must fsync its own file to learn whether its data is safe.
    Unsynced,
}

impl Rounds {
    fn outcome(&self, round: u64) -> Option<bool> {
        if self.outcomes.front().is_some_and(|&(oldest, _)| round < oldest) {
            return Some(false);
        }
        self.outcomes.iter().find(|&&(r, _)| r == round).map(|&(_, synced)| synced)
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
        let device = handle.metadata().at(&dir)?.dev();
        Ok(Some(SyncGroup {
            dir,
            device,
            handle,
            rounds: Mutex::new(Rounds::default()),
            round_finished: Condvar::new(),
        }))
    }

    /// Whether a log in `dir` is on this group's filesystem.
    pub(crate) fn covers(&self, dir: &Path) -> bool {
        std::fs::metadata(dir).is_ok_and(|m| m.dev() == self.device)
    }

    fn lock(&self) -> MutexGuard<'_, Rounds> {
        self.rounds.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for a round that starts after this call, on behalf of the log at address
    /// `member`, and says how it went. Everything the caller wrote before calling is durable
    /// if the round [`Round::Synced`]. A round that holds this log alone runs `alone` (the
    /// log's own fsync) instead of `syncfs`: it is cheaper and touches nothing else, and the
    /// round still counts as running meanwhile, so other logs' appends gather for the next.
    pub(crate) fn sync<R>(&self, member: usize, alone: impl FnOnce() -> R) -> Round<R> {
        let mut rounds = self.lock();
        let round = rounds.open;
        rounds.joined.insert(member);
        loop {
            if let Some(synced) = rounds.outcome(round) {
                return if synced { Round::Synced } else { Round::Unsynced };
            }
            if !rounds.running && rounds.open == round {
                return self.lead(rounds, round, alone);
            }
            rounds = self.round_finished.wait(rounds).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Runs round `round` for everyone who joined it.
    fn lead<R>(
        &self,
        mut rounds: MutexGuard<'_, Rounds>,
        round: u64,
        alone: impl FnOnce() -> R,
    ) -> Round<R> {
        rounds.running = true;
        rounds.open += 1;
        let members = std::mem::take(&mut rounds.joined).len();
        drop(rounds);
        let outcome = if members > 1 {
            if self.syncfs() { Round::Synced } else { Round::Unsynced }
        } else {
            Round::Alone(alone())
        };
        let mut rounds = self.lock();
        rounds.running = false;
        rounds.outcomes.push_back((round, matches!(outcome, Round::Synced)));
        if rounds.outcomes.len() > OUTCOMES_KEPT {
            rounds.outcomes.pop_front();
        }
        self.round_finished.notify_all();
        outcome
    }

    fn syncfs(&self) -> bool {
        match crate::observe::timed_fsync(|| rustix::fs::syncfs(&self.handle)) {
            Ok(()) => true,
            Err(err) => {
                tracing::warn!(dir = %self.dir.display(), error = %err, "syncfs failed; each log fsyncs its own file");
                false
            }
        }
    }
}

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
    use std::sync::Arc;

    #[test]
    fn kernel_versions_compare_by_major_then_minor() {
        assert!(kernel_at_least("5.8.0", (5, 8)));
        assert!(kernel_at_least("6.1.0-18-amd64", (5, 8)));
        assert!(kernel_at_least("5.10.12", (5, 8)));
        assert!(!kernel_at_least("5.7.19", (5, 8)));
        assert!(!kernel_at_least("4.19.0", (5, 8)));
        assert!(!kernel_at_least("garbage", (5, 8)));
    }

    #[test]
    fn a_log_alone_in_its_round_runs_its_own_fsync() {
        let dir = tempfile::tempdir().unwrap();
        let Some(group) = SyncGroup::open(dir.path()).unwrap() else { return };
        assert_eq!(group.sync(1, || "own fsync"), Round::Alone("own fsync"));
        assert_eq!(group.sync(1, || "again"), Round::Alone("again"));
    }

    #[test]
    fn logs_waiting_together_share_one_syncfs() {
        let dir = tempfile::tempdir().unwrap();
        let Some(group) = SyncGroup::open(dir.path()).unwrap() else { return };
        let group = Arc::new(group);
        // Hold a round open so that everyone below joins the next one together.
        let mut rounds = group.lock();
        rounds.running = true;
        drop(rounds);
        let waiters: Vec<_> = (0..4)
            .map(|member| {
                let group = group.clone();
                std::thread::spawn(move || group.sync(member, || ()))
            })
            .collect();
        while group.lock().joined.len() < 4 {
            std::thread::yield_now();
        }
        let mut rounds = group.lock();
        rounds.running = false;
        drop(rounds);
        group.round_finished.notify_all();
        for waiter in waiters {
            assert_eq!(waiter.join().unwrap(), Round::Synced, "one syncfs served every member");
        }
        assert_eq!(group.lock().outcomes.len(), 1, "one round served all four");
    }
}
