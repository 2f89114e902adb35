//! The `checkpoint` file: where the log starts and up to where it is known to be durable.
//!
//! Layout (28 bytes, big-endian): `"STCK"`, version u32 = 1, log start offset u64, recovery
//! point u64, CRC-32C of the previous 24 bytes. Written to a temporary file, fsynced, renamed
//! over the old one and the directory fsynced, so it is always either the old or the new one.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use strata_record::Offset;

use crate::error::{IoContext, Result};

pub(crate) const CHECKPOINT_FILE: &str = "checkpoint";
const MAGIC: &[u8; 4] = b"STCK";
const VERSION: u32 = 1;
const LEN: usize = 28;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    /// Offsets below this were deleted (retention or an explicit prefix delete).
    pub(crate) log_start: Offset,
    /// Every segment whose base offset is below this was fsynced when it was sealed, so
    /// recovery after a crash scans only the segments from here on.
    pub(crate) recovery_point: Offset,
}

pub(crate) fn read(dir: &Path) -> Option<Checkpoint> {
    let path = dir.join(CHECKPOINT_FILE);
    let bytes = fs::read(&path).ok()?;
    let parsed = (|| {
        if bytes.len() != LEN || &bytes[..4] != MAGIC {
            return None;
        }
        let u64_at = |at: usize| u64::from_be_bytes(bytes[at..at + 8].try_into().unwrap());
        let version = u32::from_be_bytes(bytes[4..8].try_into().unwrap());
        let crc = u32::from_be_bytes(bytes[24..28].try_into().unwrap());
        (version == VERSION && crc == crc32c::crc32c(&bytes[..24])).then(|| Checkpoint {
            log_start: Offset(u64_at(8)),
            recovery_point: Offset(u64_at(16)),
        })
    })();
    if parsed.is_none() {
        tracing::warn!(path = %path.display(), "ignoring unreadable checkpoint; the whole log will be scanned");
    }
    parsed
}

pub(crate) fn write(dir: &Path, checkpoint: Checkpoint) -> Result<()> {
    let mut bytes = Vec::with_capacity(LEN);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&VERSION.to_be_bytes());
    bytes.extend_from_slice(&checkpoint.log_start.0.to_be_bytes());
    bytes.extend_from_slice(&checkpoint.recovery_point.0.to_be_bytes());
    bytes.extend_from_slice(&crc32c::crc32c(&bytes).to_be_bytes());
    write_atomically(dir, CHECKPOINT_FILE, &bytes)
}

/// Writes `dir/name` so that it is always whole, old or new: a temporary file, fsynced, then
/// renamed over it and the directory fsynced.
pub(crate) fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut file = File::create(&tmp).at(&tmp)?;
    file.write_all(bytes).at(&tmp)?;
    file.sync_all().at(&tmp)?;
    let path = dir.join(name);
    fs::rename(&tmp, &path).at(&path)?;
    sync_dir(dir)
}

/// Makes creations, renames and deletions in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).at(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()), None);
        let cp = Checkpoint { log_start: Offset(5), recovery_point: Offset(77) };
        write(dir.path(), cp).unwrap();
        assert_eq!(read(dir.path()), Some(cp));
        let path = dir.path().join(CHECKPOINT_FILE);
        let mut bytes = fs::read(&path).unwrap();
        bytes[10] ^= 1;
        fs::write(&path, bytes).unwrap();
        assert_eq!(read(dir.path()), None);
    }
}
