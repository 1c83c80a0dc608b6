//! The few block-device ioctls blkcache needs, each with its C definition quoted, behind safe
//! wrappers. Every ioctl here only reads information; none changes the device.
//!
//! Note: there is no `CDROM_GET_BLKSIZE`; an optical drive's 2048-byte sectors come from
//! `BLKSSZGET` like any other block device's.

use std::os::fd::{AsRawFd, BorrowedFd};

// <linux/fs.h>: #define BLKGETSIZE64 _IOR(0x12,114,size_t)   /* return device size in bytes (u64 *arg) */
// The number encodes sizeof(size_t) but the kernel always writes a u64, hence the _bad form.
nix::ioctl_read_bad!(
    blkgetsize64,
    nix::request_code_read!(0x12, 114, std::mem::size_of::<usize>()),
    u64
);

// <linux/fs.h>: #define BLKSSZGET  _IO(0x12,104)   /* get block device sector size (int *arg) */
nix::ioctl_read_bad!(blksszget, nix::request_code_none!(0x12, 104), libc::c_int);

// <linux/fs.h>: #define BLKPBSZGET _IO(0x12,123)   /* physical block size (unsigned int *arg) */
nix::ioctl_read_bad!(blkpbszget, nix::request_code_none!(0x12, 123), libc::c_uint);

// <linux/fs.h>: #define BLKGETDISKSEQ _IOR(0x12,128,__u64)  /* get disk sequence number (Linux 5.15+) */
nix::ioctl_read!(blkgetdiskseq, 0x12, 128, u64);

// <linux/cdrom.h>: #define CDROM_MEDIA_CHANGED 0x5325  /* Check is media changed  */
//                  #define CDSL_CURRENT ((int) (~0U>>1))  /* arg: the current slot */
nix::ioctl_write_int_bad!(cdrom_media_changed, 0x5325);
const CDSL_CURRENT: libc::c_int = libc::c_int::MAX;

/// The device's size in bytes.
pub fn size_bytes(fd: BorrowedFd<'_>) -> nix::Result<u64> {
    let mut size: u64 = 0;
    // SAFETY: `fd` is a valid open descriptor for the call; BLKGETSIZE64 writes exactly one u64
    // through the pointer, which points at a live, writable u64 on our stack.
    unsafe { blkgetsize64(fd.as_raw_fd(), &mut size) }?;
    Ok(size)
}

/// The device's logical sector size (the unit of O_DIRECT alignment): 512, 2048 for optical discs.
pub fn logical_sector_size(fd: BorrowedFd<'_>) -> nix::Result<u32> {
    let mut size: libc::c_int = 0;
    // SAFETY: valid descriptor; BLKSSZGET writes one int through the pointer to our stack int.
    unsafe { blksszget(fd.as_raw_fd(), &mut size) }?;
    u32::try_from(size).map_err(|_| nix::errno::Errno::EINVAL)
}

/// The device's physical block size (informational).
pub fn physical_block_size(fd: BorrowedFd<'_>) -> nix::Result<u32> {
    let mut size: libc::c_uint = 0;
    // SAFETY: valid descriptor; BLKPBSZGET writes one unsigned int through the pointer.
    unsafe { blkpbszget(fd.as_raw_fd(), &mut size) }?;
    Ok(size)
}

/// The disk sequence number: bumped by the block layer each time it handles a media change
/// (when something opens the device after a change), never reused while the system runs.
/// `Err` on kernels before 5.15 (ENOTTY) and on regular files.
pub fn disk_seq(fd: BorrowedFd<'_>) -> nix::Result<u64> {
    let mut seq: u64 = 0;
    // SAFETY: valid descriptor; BLKGETDISKSEQ writes exactly one u64 through the pointer, which
    // points at a live, writable u64 on our stack.
    unsafe { blkgetdiskseq(fd.as_raw_fd(), &mut seq) }?;
    Ok(seq)
}

/// Whether an optical drive's medium changed since the last call of this ioctl by anyone (the
/// flag is one per drive, shared by every caller, and consumed by the call; see `change.rs`);
/// `Err` on devices that are not CD-ROM drives (ENOTTY, EINVAL) and on regular files.
pub fn cdrom_media_changed_now(fd: BorrowedFd<'_>) -> nix::Result<bool> {
    // SAFETY: valid descriptor; CDROM_MEDIA_CHANGED takes an integer slot argument by value and
    // writes no memory.
    let changed = unsafe { cdrom_media_changed(fd.as_raw_fd(), CDSL_CURRENT) }?;
    Ok(changed != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn request_numbers_match_the_kernel_headers() {
        // Values as compiled from <linux/fs.h> on x86_64/aarch64.
        #[cfg(target_pointer_width = "64")]
        assert_eq!(
            nix::request_code_read!(0x12, 114, std::mem::size_of::<usize>()),
            0x8008_1272
        );
        assert_eq!(nix::request_code_none!(0x12, 104), 0x1268);
        assert_eq!(nix::request_code_none!(0x12, 123), 0x127b);
        assert_eq!(nix::request_code_read!(0x12, 128, 8), 0x8008_1280);
    }

    #[test]
    fn ioctls_on_a_regular_file_fail_cleanly() {
        let file = tempfile::tempfile().unwrap();
        assert_eq!(size_bytes(file.as_fd()), Err(nix::errno::Errno::ENOTTY));
        assert!(logical_sector_size(file.as_fd()).is_err());
        assert!(cdrom_media_changed_now(file.as_fd()).is_err());
        assert!(disk_seq(file.as_fd()).is_err());
    }
}
