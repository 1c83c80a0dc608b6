//! Planning a request: `begin` and `step`. Serves `+` bytes from the image (the hit path: one
//! O(log n) map lookup per run, one copy, no allocation), other bytes from the recent uncached
//! fetches if they hold them, and decides the next media read.
//!
//! Must never claim a byte that is `+` or already claimed, never copy a byte out of the image
//! that is not `+`, and never hand out a fetch once the media changed. A failed image read fails
//! the request (and the cache): never a crash, never other bytes.

use std::sync::Arc;

use super::counters::AtomicCounters;
use super::request::FetchKind;
use super::{lock, Engine, EngineError, Fetch, OnBadSector, ReadRequest, State, Step};
use crate::map::{Run, Status};

/// The most one miss reads from the media beyond its first chunk (a ublk request is at most
/// `max_sectors_kb`, 512 KiB by default, so this bounds only other callers' large reads).
pub(super) const MAX_FETCH: u64 = 4 << 20;

fn align_down(x: u64, to: u64) -> u64 {
    x - x % to
}

impl Engine {
    /// Starts a read of `len` bytes at `offset`. Costs nothing; the range is checked by `step`.
    pub fn begin(&self, offset: u64, len: usize) -> ReadRequest {
        ReadRequest {
            offset,
            len,
            pos: offset,
            first_bad: None,
            used_media: false,
            retry_sector: None,
            retries: 0,
            wait_generation: 0,
            observed: false,
        }
    }

    /// Advances `req`, filling `buf` (the whole request's buffer, `req.len()` bytes) from the
    /// image as far as it can; returns what the driver must do next. `Err` ends the request.
    pub fn step(&self, req: &mut ReadRequest, buf: &mut [u8]) -> Result<Step, EngineError> {
        let result = self.advance(req, buf);
        if result.is_err() {
            AtomicCounters::bump(&self.inner.counters.errors, 1);
            if req.used_media {
                AtomicCounters::bump(&self.inner.counters.misses, 1);
            }
        }
        result
    }

    fn advance(&self, req: &mut ReadRequest, buf: &mut [u8]) -> Result<Step, EngineError> {
        let inner = &self.inner;
        if buf.len() != req.len {
            return Err(EngineError::BufferSize {
                expected: req.len,
                got: buf.len(),
            });
        }
        let out_of_range = || EngineError::OutOfRange {
            offset: req.offset,
            len: req.len,
            size: inner.size,
        };
        let end = req
            .offset
            .checked_add(req.len as u64)
            .filter(|&end| end <= inner.size)
            .ok_or_else(out_of_range)?;
        let sector = inner.sector;
        while req.pos < end {
            let mut state = lock(&inner.state);
            if !req.observed {
                req.observed = true;
                if state.ahead.observe(req.offset, req.len as u64) {
                    inner.wake_ahead(&mut state);
                }
            }
            if state.claims.covers(req.pos) {
                req.wait_generation = state.generation;
                return Ok(Step::Wait);
            }
            let run = state
                .mapfile
                .map
                .extent_at(req.pos)
                .ok_or_else(out_of_range)?;
            if run.status != Status::Finished {
                if let Some((start, data)) = state.uncached.find(req.pos) {
                    drop(state);
                    let stop = (start + data.len() as u64).min(end);
                    let from = (req.pos - req.offset) as usize;
                    let to = (stop - req.offset) as usize;
                    let skip = (req.pos - start) as usize;
                    buf[from..to].copy_from_slice(&data[skip..skip + (to - from)]);
                    req.pos = stop;
                    continue;
                }
            }
            if run.status != Status::Finished
                && req.pos >= inner.media_end
                && !(run.status == Status::BadSector && inner.cfg.bad_retries == 0)
            {
                // Past the end of the media in this drive: only cached bytes are there.
                return Err(EngineError::PastMediaEnd {
                    offset: req.pos,
                    media_end: inner.media_end,
                });
            }
            match run.status {
                Status::Finished => {
                    // `+` is never claimed nor written again: copying after unlocking is safe.
                    drop(state);
                    let stop = run.end().min(end);
                    let from = (req.pos - req.offset) as usize;
                    let to = (stop - req.offset) as usize;
                    if let Err(err) = inner.image.read_at(req.pos, &mut buf[from..to]) {
                        lock(&inner.state)
                            .health
                            .failed(super::health::describe(&err));
                        return Err(err.into());
                    }
                    req.pos = stop;
                }
                Status::NonTried => {
                    // All of the request's untried bytes in one media read, in whole chunks: a
                    // drive streams a long read at its speed, while each read costs a round trip.
                    let chunk = inner.cfg.read_size as u64;
                    let start = align_down(req.pos, chunk);
                    let stop = end
                        .div_ceil(chunk)
                        .saturating_mul(chunk)
                        .min(start.saturating_add(MAX_FETCH))
                        .max(start + chunk);
                    let fetch = self.claim(&mut state, req, run, start, stop);
                    drop(state);
                    return self.checked(fetch);
                }
                Status::NonTrimmed | Status::NonScraped => {
                    let start = align_down(req.pos, sector);
                    let fetch = self.claim(&mut state, req, run, start, start + sector);
                    drop(state);
                    return self.checked(fetch);
                }
                Status::BadSector => {
                    let start = align_down(req.pos, sector);
                    if req.retry_sector != Some(start) {
                        req.retry_sector = Some(start);
                        req.retries = 0;
                    }
                    if req.retries < inner.cfg.bad_retries {
                        req.retries += 1;
                        let fetch = self.claim(&mut state, req, run, start, start + sector);
                        drop(state);
                        return self.checked(fetch);
                    }
                    // With retries, go on sector by sector (each gets its retries); without,
                    // skip the whole bad run (nothing can claim `-` bytes then).
                    let stop = if inner.cfg.bad_retries > 0 {
                        (start + sector).min(run.end())
                    } else {
                        run.end()
                    }
                    .min(end);
                    match inner.cfg.on_bad_sector {
                        OnBadSector::Eio => {
                            req.first_bad.get_or_insert(req.pos);
                        }
                        OnBadSector::Zero => {
                            let from = (req.pos - req.offset) as usize;
                            buf[from..(stop - req.offset) as usize].fill(0);
                        }
                    }
                    req.pos = stop;
                }
            }
        }
        if let Some(offset) = req.first_bad {
            return Err(EngineError::BadSector { offset });
        }
        let counter = if req.used_media {
            &inner.counters.misses
        } else {
            &inner.counters.hits
        };
        AtomicCounters::bump(counter, 1);
        Ok(Step::Done)
    }

    /// Hands out `fetch` unless a media change was already seen (the latch only: the drive is
    /// asked by the watcher, after the read; see `watch.rs`); if it was, dropping the fetch
    /// releases its claim marking nothing.
    fn checked(&self, fetch: Fetch) -> Result<Step, EngineError> {
        if self.inner.media_changed() {
            return Err(EngineError::MediaChanged {
                offset: fetch.offset,
            });
        }
        Ok(Step::Fetch(fetch))
    }

    /// Claims the largest range around `req.pos` inside the window `[win_lo, win_hi)`, the run
    /// holding `req.pos` (one status) and the unclaimed gap around it, and makes its fetch.
    fn claim(
        &self,
        state: &mut State,
        req: &mut ReadRequest,
        run: Run,
        win_lo: u64,
        win_hi: u64,
    ) -> Fetch {
        let inner = &self.inner;
        let sector = inner.sector;
        let (free_lo, free_hi) = state.claims.free_around(req.pos);
        let lo = win_lo.max(run.pos).max(free_lo);
        let hi = win_hi.min(run.end()).min(free_hi).min(inner.media_end);
        debug_assert!(lo <= req.pos && req.pos < hi);
        state.claims.insert(lo, hi, true);
        // A fetch within one sector is already as narrow as it gets: its failure marks `-`.
        let kind = if run.status == Status::NonTried
            && align_down(lo, sector) != align_down(hi - 1, sector)
        {
            FetchKind::Chunk
        } else {
            FetchKind::Sector
        };
        let offset = align_down(lo, sector);
        let io_end = hi
            .div_ceil(sector)
            .saturating_mul(sector)
            .min(inner.media_end);
        req.used_media = true;
        if kind == FetchKind::Sector && run.status != Status::BadSector {
            // Should this read fail, the sector becomes bad inside this request: it has had its
            // read here; `bad_retries` are for later requests that ask for a known bad sector.
            req.retry_sector = Some(offset);
            req.retries = inner.cfg.bad_retries;
        }
        Fetch {
            offset,
            len: (io_end - offset) as usize,
            lo,
            hi,
            kind,
            sector_size: sector as u32,
            owner: Some(Arc::clone(&self.inner)),
            probe: None,
        }
    }
}
