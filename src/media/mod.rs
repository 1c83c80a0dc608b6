//! What is read: plain files, block devices, optical drives ([`FileMedia`]), and test-mode media
//! with simulated damage ([`TestMedia`]), behind the small [`Media`] trait the engine reads from.
//!
//! This module must never open the source writable: every open here is `O_RDONLY`.
//!
//! ```text
//!   Media (trait) ── FileMedia   file or block device, O_DIRECT when it takes it; a disc
//!                 │              swap or eject is noticed by change::ChangeWatch
//!                 └─ TestMedia   a FileMedia + a ddrescue damage map, latency, read counts
//!   identity::fingerprint(&dyn Media) -> Identity   (size, sector size, first 64 KiB)
//!   AlignedBuf                                      (4096-aligned buffers for O_DIRECT)
//! ```

mod aligned;
mod change;
mod file;
pub mod identity;
mod ioctl;
mod testmode;

use std::io;
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::time::Duration;

pub use aligned::{is_aligned, AlignedBuf, ALIGN};
pub use file::{FileMedia, MediaOptions};
pub use identity::{fingerprint, Identity};
pub use testmode::TestMedia;

/// Something blkcache reads from. `Send + Sync`: all queues share one.
pub trait Media: Send + Sync {
    /// Size in bytes.
    fn size(&self) -> u64;
    /// Logical sector size: the unit of reads and of bad-sector marking (512 for plain files
    /// unless overridden, 2048 for optical discs).
    fn sector_size(&self) -> u32;
    /// Reads `buf.len()` bytes at `offset`; `offset` and `buf.len()` are sector multiples, and
    /// when [`direct`](Media::direct) the buffer is [`ALIGN`]-aligned. Returns the bytes read,
    /// fewer only at the end of the media. Test-mode damage, latency and read counts included.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize>;
    /// The descriptor, for callers that submit reads themselves (io_uring). Such callers must
    /// call [`injected`](Media::injected) before each read and honour [`latency`](Media::latency).
    fn raw_fd(&self) -> RawFd;
    /// Whether the descriptor is O_DIRECT (buffers must then be [`ALIGN`]-aligned).
    fn direct(&self) -> bool;
    /// Test-mode damage for a read of `len` bytes at `offset`: the error such a read must fail
    /// with, or `None` (always `None` for real media). Counts the read on test-mode media.
    fn injected(&self, offset: u64, len: u64) -> Option<io::Error>;
    /// Test-mode latency per read (zero for real media).
    fn latency(&self) -> Duration;
    /// Whether the medium was changed or removed since the media was opened (a disc swapped or
    /// ejected): its bytes may no longer be the identified disc's. Once `true`, always `true`.
    /// May ask the drive (a TEST UNIT READY on optical drives), so it can block for a drive
    /// round trip: never call it under a lock that hits need. Default `false`: media whose
    /// bytes cannot change under an open descriptor (regular files, the offline stand-in).
    fn media_changed(&self) -> bool {
        false
    }
    /// One line for logs and status: path, kind, sector size, O_DIRECT or not.
    fn describe(&self) -> String;
}

/// Errors opening or probing media; each names the path.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MediaError {
    /// The source could not be opened (read-only).
    #[error("cannot open {} read-only", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A drive with no disc in it.
    #[error("no medium in {path}")]
    NoMedium { path: PathBuf },
    /// Neither a regular file nor a block device.
    #[error("{path} is neither a regular file nor a block device")]
    Unsupported { path: PathBuf },
    /// A block-device ioctl failed.
    #[error("{what} failed on {}", path.display())]
    Ioctl {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: nix::errno::Errno,
    },
    /// A sector size that is not a power of two between 512 and 65536, or does not suit the device.
    #[error("invalid sector size {size} for {path}: {why}")]
    SectorSize {
        path: PathBuf,
        size: u32,
        why: &'static str,
    },
    /// A read needed to open or identify the media failed.
    #[error("cannot read {} at offset {offset}", path.display())]
    Read {
        path: PathBuf,
        offset: u64,
        #[source]
        source: io::Error,
    },
    /// The test-mode damage map could not be loaded.
    #[error("cannot load test-mode damage map {}", path.display())]
    DamageMap {
        path: PathBuf,
        #[source]
        source: crate::map::MapError,
    },
}

/// Whether a read error says the medium itself could not be read there (a bad sector), as opposed
/// to a drive, driver or caller problem (no disc, EINVAL, ENOMEM...) that says nothing about the
/// sector. Only medium errors may mark sectors bad.
pub fn is_medium_error(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EIO) | Some(libc::ENODATA) | Some(libc::EILSEQ) | Some(libc::EBADMSG)
    )
}

/// A sector size is a power of two in 512..=65536.
fn valid_sector_size(size: u32) -> bool {
    size.is_power_of_two() && (512..=65536).contains(&size)
}
