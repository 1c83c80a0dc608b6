//! One ublk queue: an async task per tag, each serving its requests through the engine.
//!
//! A read is driven through the engine's sans-IO API: `step` copies hits out of the image; a
//! `Fetch` is read from the media with an `opcode::Read` on this queue's own io_uring (so a slow
//! miss on one tag never blocks hits on the others); `Wait` (another request is fetching the same
//! bytes) sleeps ~1 ms on an io_uring timeout and steps again. Test-mode latency and injected
//! errors are applied here too, since the media's own `read_at` is bypassed.
//!
//! Must never contain read policy (the engine decides hits, misses, retries and bad sectors), and
//! never block the queue thread (no sync media reads, no sleeps).

use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use io_uring::{opcode, types};
use libublk::helpers::IoBuf;
use libublk::io::{UblkDev, UblkQueue};
use libublk::uring_async::ublk_submit_sqe_async;
use libublk::{sys, BufDesc, UblkError, UblkUringData};

use crate::engine::{Engine, EngineError, Fetch, Step};
use crate::media::Media;

use super::errno::{read_errno, refused_op_errno};

/// How long a request waits before stepping again when another request holds its bytes.
const WAIT_STEP: Duration = Duration::from_millis(1);

/// Serves queue `qid` until the device stops. Runs on the queue's thread (libublk spawns it).
pub(crate) fn run_queue(qid: u16, dev: &UblkDev, engine: Arc<Engine>) {
    let queue = match UblkQueue::new(qid, dev) {
        Ok(q) => Rc::new(q),
        Err(e) => {
            tracing::error!(qid, error = %e, "cannot set up ublk queue");
            return;
        }
    };
    let exe = Rc::new(smol::LocalExecutor::new());
    let mut tasks = Vec::new();
    for tag in queue.tags() {
        let q = queue.clone();
        let engine = engine.clone();
        tasks.push(exe.spawn(async move {
            match io_task(&q, tag, &engine).await {
                Ok(()) | Err(UblkError::QueueIsDown) => {}
                Err(e) => tracing::error!(qid, tag, error = %e, "ublk io task failed"),
            }
        }));
    }
    let run = exe.clone();
    smol::block_on(exe.run(async move {
        let run_ops = || while run.try_tick() {};
        let done = || tasks.iter().all(|t| t.is_finished());
        if let Err(e) = libublk::wait_and_handle_io_events(&queue, Some(20), run_ops, done).await {
            tracing::error!(qid, error = %e, "ublk queue event loop failed");
        }
    }));
    tracing::debug!(qid, "ublk queue stopped");
}

/// The per-tag loop: fetch a request, serve it, commit its result and fetch the next.
async fn io_task(q: &UblkQueue<'_>, tag: u16, engine: &Engine) -> Result<(), UblkError> {
    let mut buf = IoBuf::<u8>::new(q.dev.dev_info.max_io_buf_bytes as usize);
    let mut media_buf: Option<IoBuf<u8>> = None;
    q.submit_io_prep_cmd(tag, BufDesc::Slice(buf.as_slice()), 0, Some(&buf))
        .await?;
    loop {
        let iod = q.get_iod(tag);
        let op = iod.op_flags & 0xff;
        let offset = iod.start_sector << 9;
        let len = (iod.nr_sectors as usize) << 9;
        let res = match op {
            sys::UBLK_IO_OP_READ => {
                serve_read(engine, offset, len, buf.as_mut_slice(), &mut media_buf).await
            }
            // Read-only: nothing is ever cached dirty, so there is nothing to flush.
            sys::UBLK_IO_OP_FLUSH => 0,
            other => refused_op_errno(other),
        };
        q.submit_io_commit_cmd(tag, BufDesc::Slice(buf.as_slice()), res)
            .await?;
    }
}

/// Serves one read into `io[..len]`: the byte count or `-errno`.
async fn serve_read(
    engine: &Engine,
    offset: u64,
    len: usize,
    io: &mut [u8],
    media_buf: &mut Option<IoBuf<u8>>,
) -> i32 {
    let Some(buf) = io.get_mut(..len) else {
        return -libc::EINVAL;
    };
    match read_through(engine, offset, buf, media_buf).await {
        Ok(()) => i32::try_from(len).unwrap_or(-libc::EINVAL),
        Err(e) => {
            tracing::warn!(
                offset,
                len,
                error = &e as &dyn std::error::Error,
                "read failed"
            );
            read_errno(&e)
        }
    }
}

/// Drives one request through the engine until it is done or failed.
async fn read_through(
    engine: &Engine,
    offset: u64,
    buf: &mut [u8],
    media_buf: &mut Option<IoBuf<u8>>,
) -> Result<(), EngineError> {
    let mut req = engine.begin(offset, buf.len());
    loop {
        match engine.step(&mut req, buf)? {
            Step::Done => return Ok(()),
            Step::Fetch(fetch) => {
                let io_len = fetch.io_len();
                let mb = media_buffer(media_buf, io_len);
                let got = read_media(engine.media().as_ref(), &fetch, mb).await;
                let data = got.map(|n| &mb.as_slice()[..n.min(fetch.len)]);
                engine.complete(fetch, data)?;
            }
            Step::Wait => sleep(WAIT_STEP).await,
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

/// Reads what `fetch` asks from the media on this queue's io_uring: latency and injected
/// errors first (test mode), then `Read`s until the whole sector-rounded length is read or the
/// media ends. Returns the bytes read.
async fn read_media(media: &dyn Media, fetch: &Fetch, buf: &mut IoBuf<u8>) -> io::Result<usize> {
    let latency = media.latency();
    if !latency.is_zero() {
        sleep(latency).await;
    }
    let want = fetch.io_len();
    if let Some(err) = media.injected(fetch.offset, want as u64) {
        return Err(err);
    }
    let sector = media.sector_size() as usize;
    let mut done = 0usize;
    let mut interrupted = 0;
    while done < want {
        let dst = &mut buf.as_mut_slice()[done..want];
        let sqe = opcode::Read::new(
            types::Fd(media.raw_fd()),
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
