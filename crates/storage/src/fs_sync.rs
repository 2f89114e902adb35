//! [`FilesystemSync`]: one `syncfs` for the tail marks of every log on a filesystem, and the
//! rule for when a `syncfs` can be trusted at all (shared with the group commit,
//! `crate::sync_group`).
//!
//! Since Linux 5.8, `syncfs` reports any write-back error of the filesystem that happened
//! since its file descriptor was opened, on filesystems that pass errors up (ext4, XFS,
//! Btrfs). It reports each error once per descriptor: after one failure, nothing a later
//! `syncfs` says is trusted.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::TailMarkDraft;
use crate::error::{IoContext, Result};

/// Filesystems whose write-back errors reach `syncfs` (`statfs` magic numbers): ext4, XFS,
/// Btrfs. Others (overlayfs, network filesystems, tmpfs) are left to per-file fsyncs.
pub(crate) const KNOWN_FILESYSTEMS: [i64; 3] = [0xEF53, 0x5846_5342, 0x9123_683E];

/// Whether the running kernel is Linux 5.8 or later, where `syncfs` returns write-back errors.
pub(crate) fn syncfs_reports_errors() -> bool {
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

/// A `syncfs` through `handle`, unless one failed before (`broken`); a failure sets `broken` for
/// good, logging that from now on `fallback`. True when it made everything written before it
/// durable.
pub(crate) fn syncfs_until_it_fails(
    handle: &File,
    broken: &AtomicBool,
    dir: &Path,
    fallback: &str,
) -> bool {
    if broken.load(Ordering::Relaxed) {
        return false;
    }
    match crate::observe::timed_fsync(|| rustix::fs::syncfs(handle)) {
        Ok(()) => true,
        Err(err) => {
            broken.store(true, Ordering::Relaxed);
            tracing::error!(dir = %dir.display(), error = %err, "syncfs failed; from now on {fallback}");
            false
        }
    }
}

/// A descriptor on a filesystem for `syncfs`, opened before the logs whose writes it is to
/// cover, so that no write-back error of theirs can slip past it.
#[derive(Debug)]
pub struct FilesystemSync {
    dir: PathBuf,
    /// `None` where `syncfs` cannot be trusted (an older kernel, another filesystem).
    handle: Option<File>,
    device: u64,
    /// Set by the first failed `syncfs`.
    broken: AtomicBool,
}

impl FilesystemSync {
    pub fn open(dir: impl AsRef<Path>) -> Result<FilesystemSync> {
        let dir = dir.as_ref().to_path_buf();
        let handle = File::open(&dir).at(&dir)?;
        let filesystem = rustix::fs::fstatfs(&handle).map_err(std::io::Error::from).at(&dir)?;
        let trusted =
            syncfs_reports_errors() && KNOWN_FILESYSTEMS.contains(&(filesystem.f_type as i64));
        let device = handle.metadata().at(&dir)?.dev();
        Ok(FilesystemSync {
            dir,
            handle: trusted.then_some(handle),
            device,
            broken: AtomicBool::new(false),
        })
    }

    /// Makes the drafts' files durable with one `syncfs`, then writes each mark. A draft whose
    /// log is on another filesystem, or every draft if the `syncfs` cannot be trusted, fsyncs
    /// its own files instead. One result per draft, in order (see [`TailMarkDraft::commit`]).
    pub fn commit_tail_marks(&self, drafts: Vec<TailMarkDraft<'_>>) -> Vec<Result<bool>> {
        let synced = !drafts.is_empty() && self.sync();
        drafts
            .into_iter()
            .map(|draft| {
                let covered = synced
                    && std::fs::metadata(draft.log_dir()).is_ok_and(|m| m.dev() == self.device);
                draft.finish(covered)
            })
            .collect()
    }

    /// Writes back every dirty file of the filesystem. True when that made everything
    /// written before the call durable; false when the caller must fsync its files itself
    /// (`syncfs` cannot be trusted here, or it failed, now or before).
    fn sync(&self) -> bool {
        let Some(handle) = &self.handle else { return false };
        syncfs_until_it_fails(handle, &self.broken, &self.dir, "tail marks fsync each file")
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
