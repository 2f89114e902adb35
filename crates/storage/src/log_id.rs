//! The `log.id` file: a random 64-bit id, made when a log directory is first opened, that
//! names the log in write-ahead frames. A topic deleted and created again under the same name
//! gets a new id, so a replay never hands it the old topic's frames.
//!
//! Layout (12 bytes, big-endian): the id, then a CRC-32C of it. Written to a temporary file,
//! fsynced and renamed, so it is whole or absent.

use std::fs;
use std::path::Path;

use crate::StorageError;
use crate::checkpoint::write_atomically;
use crate::error::{IoContext, Result};

pub(crate) const LOG_ID_FILE: &str = "log.id";

/// The id of the log in `dir`, made and stored now if it has none yet (a new log, or one
/// written before ids existed: it has no frames to claim).
pub(crate) fn load_or_create(dir: &Path) -> Result<u64> {
    let path = dir.join(LOG_ID_FILE);
    match fs::read(&path) {
        Ok(bytes) => {
            let parsed = (bytes.len() == 12).then(|| {
                let id = u64::from_be_bytes(bytes[..8].try_into().unwrap());
                let crc = u32::from_be_bytes(bytes[8..].try_into().unwrap());
                (crc == crc32c::crc32c(&bytes[..8])).then_some(id)
            });
            // A new id would silently disown the log's frames: refuse instead.
            parsed.flatten().ok_or_else(|| StorageError::Corrupt {
                path,
                position: 0,
                reason: "unreadable log id".into(),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id =
                getrandom::u64().map_err(|e| std::io::Error::other(e.to_string())).at(&path)?;
            let mut bytes = id.to_be_bytes().to_vec();
            bytes.extend_from_slice(&crc32c::crc32c(&bytes).to_be_bytes());
            write_atomically(dir, LOG_ID_FILE, &bytes)?;
            Ok(id)
        }
        Err(e) => Err(e).at(&path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let id = load_or_create(dir.path()).unwrap();
        assert_eq!(load_or_create(dir.path()).unwrap(), id);
        let other = tempfile::tempdir().unwrap();
        assert_ne!(load_or_create(other.path()).unwrap(), id);
        fs::write(dir.path().join(LOG_ID_FILE), b"garbage").unwrap();
        assert!(matches!(load_or_create(dir.path()), Err(StorageError::Corrupt { .. })));
    }
}
