//! What is read: plain files, block devices, optical drives ([`FileMedia`]), and test-mode media
//! with simulated damage ([`TestMedia`]), behind the small [`Media`] trait the engine reads from.
//!
//! This module must never open the source writable: every open here is `O_RDONLY`.
//!
//! ```text
//!   Media (trait) ── FileMedia   file or block device, O_DIRECT when it takes it; a disc
//!                 │              swap or eject is noticed by change::ChangeWatch
//!                 └─ TestMedia   a FileMedia + a ddrescue damage map, latency, read counts
//!   ReadPlan                     how one read is done (delay, then error or descriptor), the
//!                                same for Media::read_at and the ublk queues' io_uring
//!   identity::read_head(&dyn Media) -> Head         (first 64 KiB, sector by sector if damaged)
//!   DriveInfo                                       (vendor, model, rev, serial from sysfs/udev)
//!   AlignedBuf                                      (4096-aligned buffers for O_DIRECT)
//! ```

mod aligned;
mod change;
mod drive;
mod file;
pub mod identity;
mod ioctl;
mod plan;
mod testmode;
mod tray;

use std::io;
use std::path::PathBuf;

pub use aligned::{is_aligned, AlignedBuf, ALIGN};
pub use drive::DriveInfo;
pub use file::{FileMedia, MediaOptions};
pub use identity::{fingerprint, read_head, Head, Identity};
pub use plan::{ReadPlan, ReadSource};
pub use testmode::TestMedia;
pub use tray::eject;

/// Something blkcache reads from. `Send + Sync`: all queues share one.
pub trait Media: Send + Sync {
    /// Size in bytes.
    fn size(&self) -> u64;
    /// Logical sector size: the unit of reads and of bad-sector marking (512 for plain files
    /// unless overridden, 2048 for optical discs).
    fn sector_size(&self) -> u32;
    /// How a read of `len` bytes at `offset` is done: a delay, then an error or a descriptor
    /// to read from ([`ReadPlan`]). The one definition of a media read: [`read_at`](Media::read_at)
    /// carries it out on the calling thread, the ublk queues on their io_uring. `offset` and
    /// `len` are sector multiples (a read at the end of the media comes back short). Counts
    /// the read on test-mode media.
    fn plan(&self, offset: u64, len: usize) -> ReadPlan<'_>;
    /// Reads `buf.len()` bytes at `offset` on this thread (sleeping for any delay): the bytes
    /// read, fewer only at the end of the media. Carries out [`plan`](Media::plan); not meant
    /// to be overridden.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.plan(offset, buf.len()).read_sync(offset, buf)
    }
    /// Whether the medium can change under the open descriptor (a block device: a disc can be
    /// swapped or ejected). Only then does the engine run a watcher calling
    /// [`media_changed`](Media::media_changed). Default `false`.
    fn can_change(&self) -> bool {
        false
    }
    /// Whether the medium was changed or removed since the media was opened (a disc swapped or
    /// ejected): its bytes may no longer be the identified disc's. Once `true`, always `true`.
    /// May ask the drive (a TEST UNIT READY on optical drives), so it can block for as long as
    /// the drive is busy: the engine calls it only from its watcher thread, never on a thread
    /// that serves reads. Default `false`: media whose bytes cannot change under an open
    /// descriptor (regular files, the offline stand-in).
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
