use std::io;
use std::path::{Path, PathBuf};

use strata_record::{Offset, RecordError};

/// Every way a log operation can fail, with the path, offset or position that explains it.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("log directory {path} is already open (locked by this or another process)")]
    Locked { path: PathBuf },
    #[error("invalid batch: {0}")]
    InvalidBatch(#[from] RecordError),
    #[error("batch of {size} bytes exceeds the limit of {limit} bytes")]
    BatchTooLarge { size: usize, limit: usize },
    #[error("offset {offset} is out of range: the log holds [{start}, {end})")]
    OffsetOutOfRange { offset: Offset, start: Offset, end: Offset },
    #[error("batch base offset {got} does not continue the log, whose end offset is {expected}")]
    NonSequentialOffset { got: Offset, expected: Offset },
    #[error("offset {offset} is not the first offset of a batch")]
    NotBatchBoundary { offset: Offset },
    #[error("corrupt segment {path} at byte {position}: {reason}")]
    Corrupt { path: PathBuf, position: u64, reason: String },
    #[error("log {dir} refuses writes after an I/O failure: {reason}")]
    Failed { dir: PathBuf, reason: String },
    #[error("log {dir} was deleted")]
    Retired { dir: PathBuf },
    #[error("invalid log configuration: {0}")]
    InvalidConfig(String),
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// Attaches the path an I/O error happened on.
pub(crate) trait IoContext<T> {
    fn at(self, path: impl AsRef<Path>) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, path: impl AsRef<Path>) -> Result<T> {
        self.map_err(|source| StorageError::Io { path: path.as_ref().to_path_buf(), source })
    }
}
