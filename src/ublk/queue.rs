//! One ublk queue: an async task per tag, each serving its requests through the engine.
//!
//! Hit path with `USER_COPY` (the device has it when the driver does: Linux 6.5+): a request
//! whose bytes are all cached is written straight from the image's mapping into the request
//! with one `pwrite` to `/dev/ublkcN` at the request's user-copy offset: the kernel copies once,
//! as the loop driver does. A page of the image the kernel cannot provide (the image truncated
//! under us, a cache-disk I/O error) fails that `pwrite` with EFAULT, and the request with EIO;
//! nothing in this process touches the page, so there is no SIGBUS. A synchronous `pwrite`, not
//! an io_uring `Write`: `/dev/ublkcN` cannot take non-blocking writes, so io_uring would hand
//! every one to a worker thread. Other requests are stepped through the engine into a tag
//! buffer, which is then written into the request the same way. Without `USER_COPY` the tag
//! buffer is the request's buffer and the kernel copies it out (today's path on older kernels).
//!
//! Misses: a `Fetch` is read from the media with `Read`s on this queue's own io_uring (see
//! `media_read.rs`), so a slow miss on one tag never blocks hits on the others. Before it is
//! landed, the engine's media-change watcher must have probed the drive after the read (see
//! `Engine::read_done`); the tag waits for that, and for other requests' fetches
//! (`Step::Wait`), on the queue's wake-up eventfd (`wake.rs`), never by polling.
//!
//! Must never contain read policy (the engine decides hits, misses, retries and bad sectors), and
//! never block the queue thread on the drive (no sync media reads, no change probes, no sleeps).

use std::io;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::Arc;

use io_uring::types::{SubmitArgs, Timespec};
use libublk::helpers::IoBuf;
use libublk::io::{with_task_io_ring_mut, UblkDev, UblkIOCtx, UblkQueue};
use libublk::uring_async::{
    run_uring_tasks, ublk_reap_io_events_with_update_queue, ublk_wake_task,
};
use libublk::{sys, BufDesc, UblkError};

use crate::engine::{Engine, EngineError, Step};

use super::errno::{copy_errno, read_errno, refused_op_errno};
use super::media_read::read_media;
use super::wake::QueueWaiters;

/// How long an idle queue sleeps in the kernel before libublk marks it idle.
const IDLE_SECS: u64 = 20;

/// What every tag of a queue shares.
struct QueueCtx {
    engine: Arc<Engine>,
    waiters: QueueWaiters,
    qid: u16,
    /// `/dev/ublkcN` when the device has `USER_COPY` (libublk keeps it open for the device's life).
    user_copy: Option<RawFd>,
    max_io: usize,
}

/// Serves queue `qid` until the device stops. Runs on the queue's thread (libublk spawns it).
pub(crate) fn run_queue(qid: u16, dev: &UblkDev, engine: Arc<Engine>) {
    let queue = match UblkQueue::new(qid, dev) {
        Ok(q) => Rc::new(q),
        Err(e) => {
            tracing::error!(qid, error = %e, "cannot set up ublk queue");
            return;
        }
    };
    let waiters = match QueueWaiters::new(&engine) {
        Ok(w) => w,
        Err(e) => {
            tracing::error!(qid, error = %e, "cannot set up the queue's wake-up eventfd");
            return;
        }
    };
    let user_copy =
        (dev.dev_info.flags & u64::from(sys::UBLK_F_USER_COPY) != 0).then_some(dev.tgt.fds[0]);
    let ctx = Rc::new(QueueCtx {
        engine,
        waiters,
        qid,
        user_copy,
        max_io: dev.dev_info.max_io_buf_bytes as usize,
    });
    let exe = Rc::new(smol::LocalExecutor::new());
    let mut tasks = Vec::new();
    for tag in queue.tags() {
        let q = queue.clone();
        let ctx = ctx.clone();
        tasks.push(exe.spawn(async move {
            match io_task(&q, tag, &ctx).await {
                Ok(()) | Err(UblkError::QueueIsDown) => {}
                Err(e) => tracing::error!(qid, tag, error = %e, "ublk io task failed"),
            }
        }));
    }
    let wake_ctx = ctx.clone();
    let _wake_task = exe.spawn(async move { wake_ctx.waiters.run().await });
    let run = exe.clone();
    let q = queue.clone();
    smol::block_on(exe.run(async move {
        let run_ops = || while run.try_tick() {};
        let done = || tasks.iter().all(|t| t.is_finished());
        let poll = || async { poll_ring(&q) };
        let reap = |timed_out| {
            ublk_reap_io_events_with_update_queue(&q, timed_out, None, |cqe| {
                ublk_wake_task(cqe.user_data(), cqe)
            })
        };
        if let Err(e) = run_uring_tasks(poll, reap, run_ops, done).await {
            tracing::error!(qid, error = %e, "ublk queue event loop failed");
        }
    }));
    tracing::debug!(qid, "ublk queue stopped");
}

/// Submits and waits for at least one completion: `Ok(true)` on the idle timeout. Once the
/// queue is stopping, still waits (libublk's own loop stops waiting then, and spins a core
/// until the last slow media read returns), and says `QueueIsDown` so the loop ends as soon as
/// every tag is done.
fn poll_ring(q: &UblkQueue<'_>) -> Result<bool, UblkError> {
    let stopping = q.is_stopping();
    let ts = Timespec::new().sec(if stopping { 1 } else { IDLE_SECS });
    let args = SubmitArgs::new().timespec(&ts);
    let res = with_task_io_ring_mut(|r| r.submitter().submit_with_args(1, &args));
    let timed_out = match res {
        Ok(_) => false,
        Err(e) if e.raw_os_error() == Some(libc::ETIME) => true,
        Err(e) if e.raw_os_error() == Some(libc::EINTR) => false,
        Err(e) => return Err(UblkError::IOError(e)),
    };
    if stopping {
        Err(UblkError::QueueIsDown)
    } else {
        Ok(timed_out)
    }
}

/// The per-tag loop: fetch a request, serve it, commit its result and fetch the next.
async fn io_task(q: &UblkQueue<'_>, tag: u16, ctx: &QueueCtx) -> Result<(), UblkError> {
    // Without USER_COPY the kernel copies the reply out of this buffer; with it, the buffer is
    // only where non-hit requests are assembled (allocated on the first one).
    let mut buf: Option<IoBuf<u8>> = None;
    let mut media_buf: Option<IoBuf<u8>> = None;
    if ctx.user_copy.is_some() {
        q.submit_io_prep_cmd(tag, BufDesc::Slice(&[]), 0, None)
            .await?;
    } else {
        let b = buf.insert(IoBuf::new(ctx.max_io));
        q.submit_io_prep_cmd(tag, BufDesc::Slice(b.as_slice()), 0, Some(b))
            .await?;
    }
    loop {
        let iod = q.get_iod(tag);
        let op = iod.op_flags & 0xff;
        let offset = iod.start_sector << 9;
        let len = (iod.nr_sectors as usize) << 9;
        let res = match op {
            sys::UBLK_IO_OP_READ => {
                serve_read(ctx, tag, offset, len, &mut buf, &mut media_buf).await
            }
            // Read-only: nothing is ever cached dirty, so there is nothing to flush.
            sys::UBLK_IO_OP_FLUSH => 0,
            other => refused_op_errno(other),
        };
        let desc = match (&buf, ctx.user_copy) {
            (Some(b), None) => BufDesc::Slice(b.as_slice()),
            _ => BufDesc::Slice(&[]),
        };
        q.submit_io_commit_cmd(tag, desc, res).await?;
    }
}

/// Serves one read of `len` bytes at `offset`: the byte count or `-errno`.
async fn serve_read(
    ctx: &QueueCtx,
    tag: u16,
    offset: u64,
    len: usize,
    buf: &mut Option<IoBuf<u8>>,
    media_buf: &mut Option<IoBuf<u8>>,
) -> i32 {
    let Ok(done) = i32::try_from(len) else {
        return -libc::EINVAL;
    };
    let engine = &ctx.engine;
    if let Some(cdev) = ctx.user_copy {
        let pos = UblkIOCtx::ublk_user_copy_pos(ctx.qid, tag, 0);
        let hit = engine.serve_hit(offset, len, |m| {
            write_request(cdev, pos, m.as_ptr(), m.len())
        });
        match hit {
            Some(Ok(())) => return done,
            Some(Err(e)) => {
                tracing::warn!(offset, len, error = &e as &dyn std::error::Error, "copying cached bytes into the request failed (the image lost pages: truncated, or a cache-disk I/O error)");
                return copy_errno(&e);
            }
            None => {}
        }
    }
    let b = buf.get_or_insert_with(|| IoBuf::new(ctx.max_io));
    let Some(dst) = b.as_mut_slice().get_mut(..len) else {
        return -libc::EINVAL;
    };
    if let Err(e) = read_through(ctx, offset, dst, media_buf).await {
        tracing::warn!(
            offset,
            len,
            error = &e as &dyn std::error::Error,
            "read failed"
        );
        return read_errno(&e);
    }
    if let Some(cdev) = ctx.user_copy {
        let pos = UblkIOCtx::ublk_user_copy_pos(ctx.qid, tag, 0);
        if let Err(e) = write_request(cdev, pos, dst.as_ptr(), len) {
            tracing::warn!(
                offset,
                len,
                error = &e as &dyn std::error::Error,
                "copying the bytes into the request failed"
            );
            return copy_errno(&e);
        }
    }
    done
}

/// Writes `len` bytes from `src` into the request at user-copy position `pos` of `/dev/ublkcN`.
fn write_request(cdev: RawFd, pos: u64, src: *const u8, len: usize) -> io::Result<()> {
    let mut done = 0usize;
    while done < len {
        let at = libc::off_t::try_from(pos + done as u64)
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: `src..src+len` is readable memory for the call: either a live buffer of ours
        // or the image's mapping (kept alive by the engine); the kernel only reads it, and a
        // page it cannot read fails the call with EFAULT instead of a signal. `cdev` is the
        // device's char device, open for the device's life.
        let n = unsafe { libc::pwrite(cdev, src.add(done).cast(), len - done, at) };
        match n {
            n if n > 0 => done += n as usize,
            0 => return Err(io::Error::from_raw_os_error(libc::EIO)),
            _ => {
                let err = io::Error::last_os_error();
                if err.kind() != io::ErrorKind::Interrupted {
                    return Err(err);
                }
            }
        }
    }
    Ok(())
}

/// Drives one request through the engine until it is done or failed.
async fn read_through(
    ctx: &QueueCtx,
    offset: u64,
    buf: &mut [u8],
    media_buf: &mut Option<IoBuf<u8>>,
) -> Result<(), EngineError> {
    let engine = &ctx.engine;
    let mut req = engine.begin(offset, buf.len());
    loop {
        match engine.step(&mut req, buf)? {
            Step::Done => return Ok(()),
            Step::Fetch(mut fetch) => {
                let mb = media_buffer(media_buf, fetch.io_len());
                let got = read_media(engine.media().as_ref(), &fetch, mb).await;
                engine.read_done(&mut fetch);
                while !engine.probe_ready(&fetch) {
                    let woken = ctx.waiters.listen();
                    if engine.probe_ready(&fetch) {
                        break;
                    }
                    woken.await;
                }
                let data = got.map(|n| &mb.as_slice()[..n.min(fetch.len)]);
                engine.complete(fetch, data)?;
            }
            Step::Wait => {
                let woken = ctx.waiters.listen();
                if !engine.wait_over(&req) {
                    woken.await;
                }
            }
        }
    }
}

/// The tag's media buffer, (re)allocated aligned when too small; kept for the next miss.
fn media_buffer(slot: &mut Option<IoBuf<u8>>, len: usize) -> &mut IoBuf<u8> {
    if slot.as_ref().map_or(true, |b| b.len() < len) {
        *slot = Some(IoBuf::new(len.max(1)));
    }
    // The slot was filled just above if it was empty.
    slot.get_or_insert_with(|| IoBuf::new(len.max(1)))
}
