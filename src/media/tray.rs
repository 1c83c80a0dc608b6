//! Ejecting a disc from an optical drive (`blkcache eject`): unlock the tray, then open it.
//!
//! The tray is unlocked first because udev's `cdrom_id --lock-media` locks it behind the
//! kernel's back on every event. The kernel refuses the eject (EBUSY) while another program
//! holds the drive open: eject only after the daemon serving it has stopped.

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::MediaError;

// CDROM_LOCKDOOR (linux/cdrom.h): argument 0 unlocks.
nix::ioctl_write_int_bad!(cdrom_lockdoor, 0x5329);
// CDROMEJECT (linux/cdrom.h): no argument.
nix::ioctl_none_bad!(cdromeject, 0x5309);

/// Unlocks the tray of the optical drive at `path` and ejects its disc.
pub fn eject(path: &Path) -> Result<(), MediaError> {
    // O_NONBLOCK: the drive opens even with no disc or while it is becoming ready.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|source| MediaError::Open {
            path: path.to_path_buf(),
            source,
        })?;
    let ioctl_err = |what| {
        move |source| MediaError::Ioctl {
            path: path.to_path_buf(),
            what,
            source,
        }
    };
    // SAFETY: CDROM_LOCKDOOR takes an int by value and touches no memory of ours; the fd is
    // open for the whole call.
    unsafe { cdrom_lockdoor(file.as_raw_fd(), 0) }.map_err(ioctl_err("CDROM_LOCKDOOR"))?;
    // SAFETY: CDROMEJECT takes no argument; the fd is open for the whole call.
    unsafe { cdromeject(file.as_raw_fd()) }.map_err(ioctl_err("CDROMEJECT"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_not_a_drive() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("disc.iso");
        std::fs::write(&f, [0u8; 4096]).unwrap();
        let e = eject(&f).unwrap_err().to_string();
        assert!(e.contains("CDROM_LOCKDOOR"), "{e}");
    }
}
