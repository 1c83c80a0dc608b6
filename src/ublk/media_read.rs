//! Media reads on a queue's io_uring: the engine's `Fetch` carried out by the media's
//! [`ReadPlan`](crate::media::ReadPlan) (the same plan `Media::read_at` follows on the
//! synchronous path): its delay as an io_uring `Timeout`, then its error, or `Read`s of its
//! descriptor until the whole sector-rounded length is read or the media ends.
//!
//! Must never block the queue thread: every wait is an io_uring operation.

use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

use io_uring::{opcode, types};
use libublk::helpers::IoBuf;
use libublk::uring_async::ublk_submit_sqe_async;
use libublk::UblkUringData;

use crate::engine::Fetch;
use crate::media::Media;

/// Reads what `fetch` asks into `buf` (at least `fetch.io_len()` bytes, aligned); returns the
/// bytes read.
pub(super) async fn read_media(
    media: &dyn Media,
    fetch: &Fetch,
    buf: &mut IoBuf<u8>,
) -> io::Result<usize> {
    let want = fetch.io_len();
    let plan = media.plan(fetch.offset, want);
    if !plan.delay.is_zero() {
        sleep(plan.delay).await;
    }
    let source = plan.source?;
    let sector = media.sector_size() as usize;
    let mut done = 0usize;
    let mut interrupted = 0;
    while done < want {
        let dst = &mut buf.as_mut_slice()[done..want];
        let sqe = opcode::Read::new(
            types::Fd(source.fd.as_raw_fd()),
            dst.as_mut_ptr(),
            u32::try_from(dst.len()).unwrap_or(u32::MAX),
        )
        .offset(fetch.offset + done as u64)
        .build();
        let res = ublk_submit_sqe_async(sqe, UblkUringData::Target as u64)
            .await
            .map_err(|e| io::Error::other(format!("io_uring submission failed: {e}")))?;
        match res {
            0 => break,
            n if n > 0 => {
                done += n as usize;
                // O_DIRECT cannot go on from a misaligned offset; a short read there is the end.
                if done % sector != 0 {
                    break;
                }
            }
            e if (e == -libc::EINTR || e == -libc::EAGAIN) && interrupted < 8 => interrupted += 1,
            e => return Err(io::Error::from_raw_os_error(-e)),
        }
    }
    Ok(done)
}

/// Sleeps on the queue's io_uring (a `Timeout` op), leaving the thread free for other tags.
async fn sleep(d: Duration) {
    let ts = types::Timespec::new()
        .sec(d.as_secs())
        .nsec(d.subsec_nanos());
    let sqe = opcode::Timeout::new(&ts).build();
    // The timespec lives in this future's frame until the completion: the kernel reads it at
    // submission, which happens while this future is pending.
    let _ = ublk_submit_sqe_async(sqe, UblkUringData::Target as u64).await;
}
