//! Sequential read-ahead: when requests follow each other through the media, the untried bytes
//! after them are read in the background, so the reader's next requests are hits (or wait on a
//! read already on the drive) instead of one drive round trip each, plus the media-change probe.
//!
//! Detection is a few comparisons under the state lock every request already takes (`observe`,
//! from `step` and `serve_hit`): a request that starts where the stream's furthest request ended,
//! or up to one request's length before it (the kernel may hand over two halves of one read in
//! either order), continues the stream; anything else ends it. After [`TRIGGER`] requests in a
//! row, the read-ahead thread keeps up to `window` bytes ahead of the reader, in reads of
//! `window / PIECES` (at most [`MAX_FETCH`]); the window starts at four requests (at least
//! 128 KiB) and doubles with each read, up to `EngineConfig::read_ahead`, like the kernel's own
//! read-ahead. So nothing is read further than 1.25 x `read_ahead` beyond the reader. Several
//! pieces per window keep the drive busy: one is read while the one before lands (on a thread of
//! its own: the media-change probe, the image write) and the reader consumes the one before that.
//! Whoever makes the sleeping thread's work wanted (a request noted, a request's fetch landed)
//! claims its next piece at once, under the lock it holds, so the reader does not race it.
//!
//! Rules: read-ahead reads only `?` bytes, through claims like every fetch (a request that needs
//! bytes a read-ahead is fetching waits on its claim; nothing is read twice), and lands them
//! through `complete` (written, then marked; the media-change probe after the read first). It
//! stops at the first byte that is neither `?` nor `+` (never into known-bad areas), at the end
//! of the media, when the reader goes elsewhere, when the cache is not healthy or the media
//! changed. It starts no read while a request's own fetch is in flight (that miss has the drive
//! first); a read already on the drive is not interrupted. A failed read-ahead marks its bytes
//! `*` (never `-`: no program asked for them; a request that does reads them sector by sector).
//! It never counts as a hit, miss or error of a request (its own counters: `ahead_reads`,
//! `ahead_bytes`).
//!
//! One stream per engine: two programs reading sequentially at once end each other's streams
//! (no read-ahead then; each still gets its misses read whole).

use std::sync::{mpsc, Arc};

use super::counters::AtomicCounters;
use super::request::FetchKind;
use super::step::MAX_FETCH;
use super::{lock, Engine, Fetch, Inner, State};
use crate::map::Status;
use crate::media::AlignedBuf;

/// Requests in a row (after the first) before reading ahead: a random reader almost never lands
/// right after its previous request twice in a row.
pub(super) const TRIGGER: u32 = 2;

/// Reads per window.
const PIECES: u64 = 4;

/// The smallest window.
const MIN_WINDOW: u64 = 128 << 10;

/// The default `EngineConfig::read_ahead`: the most bytes kept read ahead of a sequential reader.
pub const DEFAULT_READ_AHEAD: u64 = 4 << 20;

/// The sequential stream being followed, and the read-ahead thread's state. Under the state lock.
#[derive(Debug, Default)]
pub(super) struct Stream {
    /// The largest window (0: read-ahead is off).
    max: u64,
    /// Where the stream's next request is expected: the end of the furthest one so far.
    next: u64,
    /// Requests in a row that continued the stream.
    run: u32,
    /// Reading ahead for this stream (false: no stream, or it met the end, a bad area, an error).
    active: bool,
    /// Every byte of `[next, front)` is cached, claimed or skipped: the next read-ahead starts here.
    front: u64,
    /// Bytes kept ahead of `next`: grows to `max`.
    window: u64,
    /// The thread sleeps: whoever makes it `wanted` wakes it.
    pub(super) idle: bool,
    /// The engine is being dropped: the thread ends.
    pub(super) stop: bool,
    /// A piece claimed for the sleeping thread by whoever woke it (see `Inner::wake_ahead`).
    handoff: Option<Fetch>,
}

impl Stream {
    pub(super) fn new(max: u64) -> Stream {
        Stream {
            max,
            ..Stream::default()
        }
    }

    /// Notes a request of `len` bytes at `offset`; returns whether the sleeping thread now has work
    /// (the caller then calls `Inner::wake_ahead`).
    #[inline]
    pub(super) fn observe(&mut self, offset: u64, len: u64) -> bool {
        if self.max == 0 {
            return false;
        }
        let end = offset.saturating_add(len);
        if end == self.next {
            // The stream's last bytes again (another reader of the same block): no progress.
            return false;
        }
        if offset <= self.next && self.next <= end.saturating_add(len) {
            self.run = self.run.saturating_add(1);
            self.next = self.next.max(end);
        } else {
            self.run = 0;
            self.next = end;
            self.active = false;
            return false;
        }
        if self.run < TRIGGER {
            return false;
        }
        if !self.active {
            self.active = true;
            self.front = self.next;
            self.window = len
                .saturating_mul(4)
                .next_power_of_two()
                .max(MIN_WINDOW)
                .min(self.max);
        }
        self.front = self.front.max(self.next);
        self.idle && self.wanted()
    }

    /// Whether there is something to read ahead.
    pub(super) fn wanted(&self) -> bool {
        self.active && self.front < self.next.saturating_add(self.window)
    }
}

impl Inner {
    /// Claims the next read-ahead, or returns `None` with nothing wanted any more (the stream
    /// met its window, the end of the media or a byte that is not `?`/`+`).
    fn next_ahead(&self, state: &mut State) -> Option<Fetch> {
        let State {
            mapfile,
            claims,
            ahead: a,
            health,
            ..
        } = state;
        let sector = self.sector;
        // Uncached bytes stay `?`: reading ahead into them could read a sector twice.
        if a.wanted() && (self.media_changed() || !health.now.is_ok()) {
            a.active = false;
        }
        while a.wanted() {
            let pos = a.front.div_ceil(sector).saturating_mul(sector);
            if pos >= self.size {
                a.active = false;
                return None;
            }
            if let Some(end) = claims.end_of(pos) {
                a.front = end;
                continue;
            }
            let run = mapfile.map.extent_at(pos)?;
            match run.status {
                Status::Finished => {
                    a.front = run.end();
                    continue;
                }
                Status::NonTried => {}
                _ => {
                    a.active = false;
                    return None;
                }
            }
            let free_hi = claims.free_around(pos).1;
            let piece = (a.window / PIECES).max(sector).min(MAX_FETCH);
            let stop = run.end().min(free_hi);
            let mut hi = pos.saturating_add(piece).min(stop).min(self.size);
            if hi < self.size {
                hi -= hi % sector;
            }
            if hi <= pos {
                // Less than a sector of `?` here: never read a sector another fetch holds.
                a.front = stop;
                continue;
            }
            claims.insert(pos, hi, false);
            a.front = hi;
            a.window = a.window.saturating_mul(2).min(a.max);
            let io_end = hi.div_ceil(sector).saturating_mul(sector).min(self.size);
            return Some(Fetch {
                offset: pos,
                len: (io_end - pos) as usize,
                lo: pos,
                hi,
                kind: FetchKind::Ahead,
                sector_size: sector as u32,
                owner: None,
                probe: None,
            });
        }
        None
    }

    /// Wakes the read-ahead thread if it sleeps and has work it may start now, claiming its
    /// next piece here, under the lock the caller holds: a request landing its miss, or the
    /// reader's next request, would otherwise often take the lock before the woken thread and
    /// miss on the very bytes the read-ahead was about to claim.
    pub(super) fn wake_ahead(&self, state: &mut State) {
        if state.ahead.idle
            && state.ahead.handoff.is_none()
            && state.ahead.wanted()
            && state.claims.foreground() == 0
        {
            state.ahead.handoff = self.next_ahead(state);
            self.ahead_cv.notify_one();
        }
    }
}

/// A read-ahead that was read, on its way to land.
struct Read {
    fetch: Fetch,
    buf: AlignedBuf,
    /// Bytes read, or the read's error.
    got: std::io::Result<usize>,
}

impl Read {
    /// Whether every byte of the fetch was read.
    fn complete(&self) -> bool {
        matches!(self.got, Ok(n) if n >= self.fetch.len)
    }
}

/// The read-ahead thread: sleeps until a stream wants bytes and no request's fetch is in flight,
/// reads one piece, and so on, until the engine is dropped. Pieces land on a thread of their own
/// (`blkcache-land`: the media-change probe after the read, the image write, the marking), so
/// the drive reads the next piece meanwhile; at most one read piece waits for it.
pub(super) fn run(inner: &Arc<Inner>) {
    let engine = Engine {
        inner: Arc::clone(inner),
        ahead: None,
    };
    let (to_land, landing) = mpsc::sync_channel::<Read>(1);
    let (give_back, spares) = mpsc::channel::<AlignedBuf>();
    let lander_inner = Arc::clone(inner);
    // Inherits this thread's mask: every signal blocked.
    let lander = std::thread::Builder::new()
        .name("blkcache-land".into())
        .spawn(move || {
            let engine = Engine {
                inner: lander_inner,
                ahead: None,
            };
            for read in landing {
                // The buffer goes back for another read (or is freed once the reader is gone).
                let _ = give_back.send(land(&engine, read));
            }
        });
    let lander = match lander {
        Ok(thread) => Some((to_land, thread)),
        Err(e) => {
            tracing::warn!(error = %e, "no landing thread for read-ahead: it lands its reads itself");
            None
        }
    };
    loop {
        let next = {
            let mut state = lock(&inner.state);
            loop {
                // A piece claimed for this thread is read even when stopping: it holds a claim.
                if let Some(mut fetch) = state.ahead.handoff.take() {
                    fetch.owner = Some(Arc::clone(inner));
                    break Some(fetch);
                }
                if state.ahead.stop {
                    break None;
                }
                if state.claims.foreground() == 0 {
                    if let Some(mut fetch) = inner.next_ahead(&mut state) {
                        fetch.owner = Some(Arc::clone(inner));
                        break Some(fetch);
                    }
                }
                state.ahead.idle = true;
                state = inner
                    .ahead_cv
                    .wait(state)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                state.ahead.idle = false;
            }
        };
        let Some(mut fetch) = next else {
            break;
        };
        let mut buf = spares.try_recv().unwrap_or_else(|_| AlignedBuf::new(0));
        if buf.len() < fetch.io_len() {
            buf = AlignedBuf::new(fetch.io_len());
        }
        let got = inner
            .media
            .read_at(fetch.offset, &mut buf[..fetch.io_len()]);
        engine.read_done(&mut fetch);
        let read = Read { fetch, buf, got };
        AtomicCounters::bump(&inner.counters.ahead_reads, 1);
        if read.complete() {
            AtomicCounters::bump(&inner.counters.ahead_bytes, read.fetch.len as u64);
        } else {
            // Stop before another piece is read past a failure (it lands as `*`).
            lock(&inner.state).ahead.active = false;
        }
        match &lander {
            Some((to_land, _)) => {
                if let Err(mpsc::SendError(read)) = to_land.send(read) {
                    land(&engine, read);
                }
            }
            None => {
                land(&engine, read);
            }
        }
    }
    if let Some((to_land, thread)) = lander {
        drop(to_land);
        if thread.join().is_err() {
            tracing::error!("the read-ahead landing thread panicked");
        }
    }
}

/// Lands a read-ahead (waiting for its probe verdict if it is not in); returns its buffer.
fn land(engine: &Engine, read: Read) -> AlignedBuf {
    let inner = &engine.inner;
    let ok = read.complete();
    let Read { fetch, buf, got } = read;
    let (offset, len) = (fetch.offset, fetch.len);
    let landed = engine.complete(fetch, got.map(|n| &buf[..n]));
    if !ok || landed.is_err() {
        tracing::debug!(offset, len, "read-ahead failed; the stream stops here");
        lock(&inner.state).ahead.active = false;
    }
    buf
}
