//! Noticing that the medium under an open block device was changed or removed (a disc swapped or
//! ejected while blkcache serves it), so that no byte of another disc ever lands in a cache.
//!
//! What Linux 6.12 does to an fd that stays open across a change (learned in the guest: sr +
//! QEMU scsi-cd, `tests/guest/scenarios/h_disc_swap.sh`):
//! - Nothing closes or poisons the fd. The first reads after an eject or a swap fail with EIO
//!   (the drive's UNIT ATTENTION, then sr "quietly refuses" reads while its `changed` bit is
//!   set); with no disc they keep failing with EIO, never ENOMEDIUM (ENOMEDIUM comes only from
//!   `open`). EIO looks like a bad sector: without this check an eject would mark sectors `*`/`-`.
//! - As soon as anything runs the drive's event check (`CDROM_MEDIA_CHANGED`, or an `open` of
//!   the device), the `changed` bit is reset and reads on the *old* fd succeed again, returning
//!   the **new** disc's bytes. The size reported by `BLKGETSIZE64` stays the old disc's until
//!   something opens the device (the open revalidates it and bumps the disk sequence number).
//! - `CDROM_MEDIA_CHANGED` reports changes seen by any path since the last call of the ioctl
//!   (the block layer's own polling and opens feed it without consuming it), but the flag is one
//!   per drive for *all* ioctl callers (`cdi->mc_flags`, bit 1; `CDSL_CURRENT` changes nothing),
//!   and a call consumes it. A stale flag (the disc inserted at boot) is usually set at open, so
//!   the watch consumes it when armed, right after open and before the identity is read.
//! - While the device is open the kernel locks the tray (`CDO_LOCK`): a user's eject button only
//!   sends an eject request, which udev honours (`cdrom_id --eject-media`) and then opens the
//!   device again, which bumps the disk sequence number and updates the size.
//!
//! So three signals, cheapest first: the size (`BLKGETSIZE64`), the disk sequence number
//! (`BLKGETDISKSEQ`, Linux 5.15+), and for optical drives `CDROM_MEDIA_CHANGED` (a TEST UNIT
//! READY to the drive, so it blocks for a drive round trip). Any of them latches the watch.
//! Known limit: another program calling `CDROM_MEDIA_CHANGED` between a swap and our next check,
//! with nothing opening the device, steals the flag; the size and sequence number then stay
//! stale and the swap goes unseen.
//!
//! Removable disks that are not optical drives (card readers, USB floppy drives; sd with
//! `/sys/block/sdX/removable` = 1) have no such ioctl, and pulling a card out changes neither the
//! size nor the sequence number until something opens the device: reads fail with EIO (sd's
//! `changed` bit, as above) while both still say "same", so a probe that only looked at them
//! would let an EIO of a pulled card mark sectors bad. So for them the probe first opens the
//! device again (through `/proc/self/fd`, the very device held): the open runs the kernel's
//! media check (sd's `check_events`: a TEST UNIT READY), which on a change bumps the sequence
//! number and revalidates the size, and fails with ENOMEDIUM when no medium is in.
//!
//! Never changes the device: every ioctl here only reads.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

use super::ioctl;

/// Media-change state of one open block device. Once changed, always changed.
#[derive(Debug)]
pub(crate) struct ChangeWatch {
    /// The device answered `CDROM_MEDIA_CHANGED` when armed.
    cdrom: bool,
    /// A removable disk that is not an optical drive: each probe opens it again first.
    reopen: bool,
    /// Size when armed.
    size: u64,
    /// Disk sequence number when armed, where the kernel has one.
    disk_seq: Option<u64>,
    changed: AtomicBool,
    /// Makes "ask the device, then latch" one step: `CDROM_MEDIA_CHANGED` consumes the flag, so
    /// a second checker asking after the first consumed it must find the latch already set.
    probing: Mutex<()>,
}

impl ChangeWatch {
    /// Arms a watch on a freshly opened block device of `size` bytes (`removable`: its disk's
    /// sysfs `removable` flag): consumes a stale `CDROM_MEDIA_CHANGED` flag and records the size
    /// and sequence number. Call it before the media's identity is read, so that a change after
    /// that is a change of the identified disc.
    pub(crate) fn arm(fd: BorrowedFd<'_>, size: u64, removable: bool) -> ChangeWatch {
        let cdrom = match ioctl::cdrom_media_changed_now(fd) {
            Ok(stale) => {
                tracing::debug!(stale, "optical drive: media-change flag armed");
                true
            }
            Err(_) => false,
        };
        ChangeWatch {
            cdrom,
            reopen: removable && !cdrom,
            size,
            disk_seq: ioctl::disk_seq(fd).ok(),
            changed: AtomicBool::new(false),
            probing: Mutex::new(()),
        }
    }

    /// Whether the medium changed (or went away) since the watch was armed. Asks the device
    /// each time until a change is seen, then answers `true` without asking.
    pub(crate) fn check(&self, fd: BorrowedFd<'_>) -> bool {
        if self.changed.load(Ordering::Acquire) {
            return true;
        }
        let _one_at_a_time = self.probing.lock().unwrap_or_else(PoisonError::into_inner);
        if self.changed.load(Ordering::Acquire) {
            return true;
        }
        let Some(why) = self.probe(fd) else {
            return false;
        };
        self.changed.store(true, Ordering::Release);
        tracing::warn!("medium changed or removed: {why}");
        true
    }

    /// The reason to believe the medium changed, if any.
    fn probe(&self, fd: BorrowedFd<'_>) -> Option<String> {
        if self.reopen {
            if let Some(why) = media_check_by_open(fd) {
                return Some(why);
            }
        }
        match ioctl::size_bytes(fd) {
            Ok(size) if size != self.size => {
                return Some(format!(
                    "the device's size went from {} to {size} bytes",
                    self.size
                ))
            }
            Ok(_) => {}
            Err(e) if gone(e) => return Some(format!("the device is gone ({e})")),
            Err(_) => {}
        }
        if let (Some(then), Ok(now)) = (self.disk_seq, ioctl::disk_seq(fd)) {
            if now != then {
                return Some(format!(
                    "the disk sequence number went from {then} to {now} (the kernel handled a media change)"
                ));
            }
        }
        if self.cdrom {
            match ioctl::cdrom_media_changed_now(fd) {
                Ok(true) => return Some("the drive reports a media change".to_owned()),
                Ok(false) => {}
                Err(e) if gone(e) => return Some(format!("the drive is gone ({e})")),
                Err(e) => {
                    tracing::debug!(error = %io::Error::from(e), "CDROM_MEDIA_CHANGED failed; not a change")
                }
            }
        }
        None
    }
}

/// Opens the device held by `fd` again and closes it: the kernel checks the medium on open (see
/// the module's notes). The reason to believe it changed if the open says so (no medium, device
/// gone); otherwise the caller reads the size and sequence number the check refreshed.
fn media_check_by_open(fd: BorrowedFd<'_>) -> Option<String> {
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    match std::fs::File::open(&path) {
        Ok(_) => None,
        Err(e) if e.raw_os_error() == Some(libc::ENOMEDIUM) => {
            Some("no medium in the device any more".to_owned())
        }
        Err(e)
            if e.raw_os_error()
                .is_some_and(|n| gone(nix::errno::Errno::from_raw(n))) =>
        {
            Some(format!("the device is gone ({e})"))
        }
        Err(e) => {
            tracing::debug!(error = %e, "opening the device again to check its medium failed; not a change");
            None
        }
    }
}

/// Errors that say the device itself went away (unplugged), which is a change too.
fn gone(e: nix::errno::Errno) -> bool {
    matches!(e, nix::errno::Errno::ENODEV | nix::errno::Errno::ENXIO)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    /// On a regular file every ioctl fails with ENOTTY and opening it again succeeds: the watch
    /// never fires.
    #[test]
    fn a_regular_file_never_changes() {
        let file = tempfile::tempfile().unwrap();
        let watch = ChangeWatch::arm(file.as_fd(), 0, true);
        assert!(!watch.cdrom);
        assert!(
            watch.reopen,
            "a removable non-optical device is opened again by each probe"
        );
        assert_eq!(watch.disk_seq, None);
        assert!(!watch.check(file.as_fd()));
    }
}
