//! `EngineError`: why a read or a save failed. Carries offsets and paths; never an errno (the
//! ublk adapter maps errors to `-errno`, in one place).

use std::io;
use std::path::PathBuf;

use crate::image::ImageError;
use crate::map::MapError;

/// Errors of the read path, of saving and of opening an engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The request touches a sector that could not be read from the media (`-` in the map).
    #[error("bad sector at offset {offset}")]
    BadSector {
        /// The first unreadable byte of the request.
        offset: u64,
    },
    /// The media failed in a way that says nothing about the sectors (no disc, drive gone, a
    /// short read); nothing was marked.
    #[error("media read at offset {offset} failed")]
    Media {
        /// Start of the failed media read.
        offset: u64,
        #[source]
        source: io::Error,
    },
    /// The disc was changed or removed while being served: only cached bytes can be read until
    /// blkcache opens the drive again (the new disc then gets its own cache). Latched:
    /// every later miss fails with it, and nothing is marked from the media any more.
    #[error(
        "the media was changed or removed since blkcache opened it: bytes at offset {offset} are not cached \
         and cannot be read from it (cached bytes still are); the disc now in the drive is served once blkcache \
         opens the drive again (blkcache@.service does it by itself; otherwise `blkcache del`, then `blkcache add`)"
    )]
    MediaChanged {
        /// Start of the media read that was refused or discarded.
        offset: u64,
    },
    /// The bytes lie past the end of the media in this drive (a drive that reports the disc a
    /// few sectors smaller than the cache: `cache::size`) and are not cached; nothing is marked.
    #[error(
        "bytes at offset {offset} are past the end of the media in this drive ({media_end} bytes) \
         and not cached; a drive that reads the disc larger can read them"
    )]
    PastMediaEnd {
        /// The first such byte the request needs.
        offset: u64,
        /// The media's size in this drive.
        media_end: u64,
    },
    /// The image could not be read (a failing disk, a truncated image) or synced.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// The request goes past the end of the media.
    #[error("request {offset}+{len} is past the end of the media ({size} bytes)")]
    OutOfRange {
        /// Request offset.
        offset: u64,
        /// Request length.
        len: usize,
        /// Media size.
        size: u64,
    },
    /// `step` got a buffer of another length than the request's.
    #[error("buffer of {got} bytes for a request of {expected}")]
    BufferSize {
        /// The request's length.
        expected: usize,
        /// The buffer's length.
        got: usize,
    },
    /// Saving the mapfile failed (the in-memory map is kept and the save retried).
    #[error("cannot save mapfile {}", path.display())]
    Save {
        /// The mapfile.
        path: PathBuf,
        #[source]
        source: MapError,
    },
    /// A mapfile or image of another size than the media: a cache of something else.
    #[error("{what} {path} is {found} bytes but the media is {expected} bytes")]
    SizeMismatch {
        /// "mapfile" or "image".
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// Its size.
        found: u64,
        /// The media's size.
        expected: u64,
    },
    /// The mapfile records another sector size than the media's.
    #[error("mapfile {path} was made with {found}-byte sectors but the media has {expected}-byte sectors")]
    SectorSizeMismatch {
        /// The mapfile.
        path: PathBuf,
        /// Sector size recorded in the mapfile.
        found: u32,
        /// The media's sector size.
        expected: u32,
    },
    /// An invalid `EngineConfig`.
    #[error("invalid engine configuration: {0}")]
    Config(String),
}

impl EngineError {
    /// Whether the media failed (a bad sector or a media I/O error): the adapter reports EIO.
    pub fn is_media_error(&self) -> bool {
        matches!(
            self,
            EngineError::BadSector { .. } | EngineError::Media { .. }
        )
    }

    /// Whether the media was changed or removed under the engine (latched).
    pub fn is_media_changed(&self) -> bool {
        matches!(self, EngineError::MediaChanged { .. })
    }

    /// Whether it is an unreadable sector.
    pub fn is_bad_sector(&self) -> bool {
        matches!(self, EngineError::BadSector { .. })
    }

    /// Whether the image's disk is full.
    pub fn is_no_space(&self) -> bool {
        matches!(self, EngineError::Image(ImageError::NoSpace { .. }))
    }

    /// The underlying OS error of a media or image failure, if any (for the adapter's errno).
    pub fn io_error(&self) -> Option<&io::Error> {
        match self {
            EngineError::Media { source, .. } => Some(source),
            EngineError::Image(
                ImageError::Write { source, .. }
                | ImageError::Sync { source, .. }
                | ImageError::Open { source, .. }
                | ImageError::Map { source, .. }
                | ImageError::Read { source, .. },
            ) => Some(source),
            _ => None,
        }
    }
}
