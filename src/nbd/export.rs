//! What an NBD connection serves: an [`Export`] (size, block size, reads), and the one that
//! serves an [`Engine`]. The protocol code sees only the trait, so the fuzz target can run whole
//! sessions over memory.
//!
//! Must never hold read policy (the engine's) nor turn an error into a success.

use std::sync::Arc;

use crate::engine::{Engine, EngineError};

use super::proto;

/// How the export presents itself during the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportInfo {
    /// Its name (`NBD_OPT_LIST`); the empty name (the default export) is always accepted too.
    pub name: String,
    /// A line for people (`nbdinfo`, `NBD_OPT_LIST`).
    pub description: String,
    /// Size in bytes.
    pub size: u64,
    /// Minimum and preferred block size: the media's sector size.
    pub block_size: u32,
}

/// A failed read, as the client is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadError {
    /// The NBD error value (`proto::EIO`, ...).
    pub error: u32,
    /// The first failing byte, when known (a bad sector).
    pub offset: Option<u64>,
    /// For people (structured replies carry it).
    pub message: String,
}

/// A read-only export.
pub trait Export: Send + Sync {
    /// How it presents itself.
    fn info(&self) -> &ExportInfo;
    /// Reads `buf.len()` bytes at `offset` (sector-aligned and in range: the connection checks):
    /// all of them, or an error.
    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), ReadError>;
}

/// The NBD error value for a failed engine read: the one place engine errors become NBD
/// errors. A request past the end is EINVAL; every failure of the media or the cache is EIO
/// (NBD has no ENOMEDIUM or ENODATA; the server's log says which it was).
pub fn read_error(err: &EngineError) -> u32 {
    match err {
        EngineError::OutOfRange { .. } | EngineError::BufferSize { .. } => proto::EINVAL,
        _ => proto::EIO,
    }
}

/// An [`Engine`] served over NBD.
#[derive(Debug)]
pub struct EngineExport {
    engine: Arc<Engine>,
    info: ExportInfo,
}

impl EngineExport {
    /// Serves `engine` under `name`.
    pub fn new(engine: Arc<Engine>, name: &str) -> EngineExport {
        let info = ExportInfo {
            name: name.to_string(),
            description: format!("blkcache: {}", engine.media().describe()),
            size: engine.size(),
            block_size: engine.sector_size(),
        };
        EngineExport { engine, info }
    }

    /// The engine served.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }
}

impl Export for EngineExport {
    fn info(&self) -> &ExportInfo {
        &self.info
    }

    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), ReadError> {
        self.engine.read(offset, buf).map_err(|e| {
            tracing::debug!(offset, len = buf.len(), error = %e, "NBD read failed");
            ReadError {
                error: read_error(&e),
                offset: match e {
                    EngineError::BadSector { offset } => Some(offset),
                    _ => None,
                },
                message: e.to_string(),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_and_cache_failures_are_eio_range_errors_einval() {
        assert_eq!(
            read_error(&EngineError::BadSector { offset: 0 }),
            proto::EIO
        );
        assert_eq!(
            read_error(&EngineError::MediaChanged { offset: 0 }),
            proto::EIO
        );
        assert_eq!(
            read_error(&EngineError::Media {
                offset: 0,
                source: std::io::Error::from_raw_os_error(libc::ENOMEDIUM)
            }),
            proto::EIO
        );
        assert_eq!(
            read_error(&EngineError::OutOfRange {
                offset: 1 << 40,
                len: 1,
                size: 1
            }),
            proto::EINVAL
        );
    }
}
