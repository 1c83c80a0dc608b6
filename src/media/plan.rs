//! `ReadPlan`: the one definition of how a media read is done, whoever does it.
//!
//! A media says what a read of `len` bytes at `offset` must do ([`Media::plan`](super::Media::plan)):
//! wait `delay` (test-mode latency: a slow drive spends its time first, then answers), then either
//! fail with an error (test-mode damage, the offline stand-in) or read the bytes from a descriptor
//! (O_DIRECT or not). The synchronous path ([`ReadPlan::read_sync`], behind `Media::read_at`) and
//! the io_uring path of the ublk queues (`src/ublk/media_read.rs`) both carry out the same plan, in
//! that order, so test-mode media behave the same on both.
//!
//! Must never open, write or close the descriptor: it is borrowed from the media.

use std::io;
use std::os::fd::BorrowedFd;
use std::time::Duration;

use super::{is_aligned, AlignedBuf};

/// What one media read does: `delay`, then `source`'s error or a read from its descriptor.
#[derive(Debug)]
pub struct ReadPlan<'a> {
    /// Time the read takes before anything else happens (zero for real media).
    pub delay: Duration,
    /// Where the bytes come from, or the error the read fails with.
    pub source: Result<ReadSource<'a>, io::Error>,
}

/// A descriptor to read from with `pread` (or an io_uring `Read`) at the plan's offset.
#[derive(Debug, Clone, Copy)]
pub struct ReadSource<'a> {
    /// The media's read-only descriptor.
    pub fd: BorrowedFd<'a>,
    /// Whether it is O_DIRECT: buffers must then be [`ALIGN`](super::ALIGN)-aligned and lengths
    /// whole sectors.
    pub direct: bool,
}

impl ReadPlan<'_> {
    /// A plain read from `fd`: no delay, no injected error.
    pub fn read(fd: BorrowedFd<'_>, direct: bool) -> ReadPlan<'_> {
        ReadPlan {
            delay: Duration::ZERO,
            source: Ok(ReadSource { fd, direct }),
        }
    }

    /// A read that fails with `err` (after `delay`).
    pub fn fail(err: io::Error, delay: Duration) -> ReadPlan<'static> {
        ReadPlan {
            delay,
            source: Err(err),
        }
    }

    /// Carries the plan out on this thread (sleeping for the delay): `buf.len()` bytes at
    /// `offset`, fewer only at the end of the media. Bounces through an aligned buffer when the
    /// descriptor is O_DIRECT and `buf` is not aligned.
    pub fn read_sync(self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        if !self.delay.is_zero() {
            std::thread::sleep(self.delay);
        }
        let source = self.source?;
        if source.direct && !is_aligned(buf) {
            let mut bounce = AlignedBuf::new(buf.len());
            let n = pread_full(source.fd, offset, &mut bounce)?;
            buf[..n].copy_from_slice(&bounce[..n]);
            return Ok(n);
        }
        pread_full(source.fd, offset, buf)
    }
}

/// `pread` until `buf` is full or the end of the file.
pub(crate) fn pread_full(fd: BorrowedFd<'_>, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        let at = i64::try_from(offset + done as u64)
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        match nix::sys::uio::pread(fd, &mut buf[done..], at) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(nix::errno::Errno::EINTR) => {}
            Err(err) => return Err(err.into()),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::time::Instant;

    /// The delay comes first, then the error: a damaged sector on a slow drive costs its time.
    #[test]
    fn the_delay_is_spent_before_the_error() {
        let plan = ReadPlan::fail(
            io::Error::from_raw_os_error(libc::ENODATA),
            Duration::from_millis(50),
        );
        let t0 = Instant::now();
        let err = plan.read_sync(0, &mut [0u8; 512]).unwrap_err();
        assert!(t0.elapsed() >= Duration::from_millis(50));
        assert_eq!(err.raw_os_error(), Some(libc::ENODATA));
    }

    #[test]
    fn a_read_plan_reads_to_the_end_of_the_file() {
        let mut file = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut file, &[7u8; 1000]).unwrap();
        let mut buf = [0u8; 1024];
        let n = ReadPlan::read(file.as_fd(), false)
            .read_sync(512, &mut buf)
            .unwrap();
        assert_eq!(n, 488);
        assert!(buf[..n].iter().all(|&b| b == 7));
    }
}
