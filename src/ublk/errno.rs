//! The one place where errors become the `-errno` a ublk request completes with.
//!
//! Must never return 0 or a positive value (that would complete a failed read as a success).

use crate::engine::EngineError;

/// The `-errno` for a failed read: media and image failures are EIO (what a disk returns for an
/// unreadable sector; the block layer logs it as an I/O error), a full image disk ENOSPC is still
/// EIO to the reader (the cache failed, not the media), a request past the end or a malformed
/// request EINVAL, an uncached read after the disc was swapped or ejected ENOMEDIUM (the disc that
/// was cached is gone). Linux 6.12's ublk driver turns any errno it has no block status for,
/// ENOMEDIUM included, into BLK_STS_IOERR, so readers see EIO either way (seen in the guest); the
/// daemon's log says which it was.
pub fn read_errno(err: &EngineError) -> i32 {
    match err {
        EngineError::OutOfRange { .. } | EngineError::BufferSize { .. } => -libc::EINVAL,
        EngineError::MediaChanged { .. } => -libc::ENOMEDIUM,
        _ => -libc::EIO,
    }
}

/// The `-errno` for a request whose bytes could not be copied into it through `/dev/ublkcN`
/// (USER_COPY): EIO. EFAULT there means the image's mapping lost the page (the image was
/// truncated, or the cache disk failed to read it back); the reader sees an I/O error, as a
/// disk's unreadable sector gives, and the daemon's log says which it was.
pub fn copy_errno(_err: &std::io::Error) -> i32 {
    -libc::EIO
}

/// The result of a request the device refuses by its kind.
pub fn refused_op_errno(op: u32) -> i32 {
    use libublk::sys;
    match op {
        sys::UBLK_IO_OP_WRITE | sys::UBLK_IO_OP_DISCARD | sys::UBLK_IO_OP_WRITE_ZEROES => {
            -libc::EROFS
        }
        _ => -libc::EINVAL,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_is_negative() {
        let errs = [
            EngineError::BadSector { offset: 2048 },
            EngineError::Media {
                offset: 0,
                source: std::io::Error::from_raw_os_error(libc::ENOMEDIUM),
            },
            EngineError::OutOfRange {
                offset: 1 << 40,
                len: 512,
                size: 4096,
            },
            EngineError::Config("x".into()),
            EngineError::MediaChanged { offset: 4096 },
        ];
        let got: Vec<i32> = errs.iter().map(read_errno).collect();
        assert_eq!(
            got,
            [
                -libc::EIO,
                -libc::EIO,
                -libc::EINVAL,
                -libc::EIO,
                -libc::ENOMEDIUM
            ]
        );
    }

    #[test]
    fn writes_are_refused_read_only() {
        use libublk::sys;
        assert_eq!(refused_op_errno(sys::UBLK_IO_OP_WRITE), -libc::EROFS);
        assert_eq!(refused_op_errno(sys::UBLK_IO_OP_DISCARD), -libc::EROFS);
        assert_eq!(refused_op_errno(sys::UBLK_IO_OP_WRITE_ZEROES), -libc::EROFS);
        assert_eq!(refused_op_errno(0xff), -libc::EINVAL);
    }
}
