//! Reads chosen by the caller rather than by a request: a rescue (`blkcache fill`, GNU ddrescue's
//! strategy in `crate::rescue`) decides exactly which bytes to read next and in which order, and
//! lands them through the same `complete` as every other fetch (bytes written, then marked; a
//! failure marks `*` or `-`), the same claims (never two writers on one byte) and the same saves.
//!
//! Also the few map changes a rescue makes without a read (a trimmed block's middle becomes `/`)
//! and the status line (position, phase, pass) ddrescue keeps so either tool can continue the
//! other's map. None of them may ever mark a byte `+`: only `complete` does, after the write.

use std::sync::Arc;

use super::request::FetchKind;
use super::{lock, Engine, EngineError, Fetch};
use crate::map::{Mapfile, Phase, Status};

/// What [`Engine::claim_exact`] got.
#[derive(Debug)]
#[must_use = "a Fetch must be read from the media and passed to Engine::complete"]
pub enum Exact {
    /// The range is claimed: read it and pass the bytes to `Engine::complete`.
    Fetch(Fetch),
    /// Another request is fetching part of it: plan again once it completed.
    Busy,
    /// The range is not (or no longer) one unfinished run: plan again from the map.
    Changed,
}

impl Engine {
    /// Runs `f` on the map under the state lock (keep it short: hits wait for it).
    pub fn with_map<R>(&self, f: impl FnOnce(&Mapfile) -> R) -> R {
        f(&lock(&self.inner.state).mapfile)
    }

    /// Claims exactly `[pos, pos + len)` for one media read, if it lies in one run of a single
    /// unfinished status and no byte of it is claimed. A failed read of it marks it `*` when it
    /// is non-tried and longer than a sector, else `-` (GNU ddrescue's rule: a failed read of
    /// more than one sector leaves it for trimming). Refused once the media changed. A range
    /// past the end of the media in this drive (`cache::size`) is clipped there, or `Changed`
    /// if it starts past it.
    pub fn claim_exact(&self, pos: u64, len: u64) -> Result<Exact, EngineError> {
        let inner = &self.inner;
        let end = pos
            .checked_add(len)
            .filter(|&e| len > 0 && e <= inner.size)
            .ok_or(EngineError::OutOfRange {
                offset: pos,
                len: len as usize,
                size: inner.size,
            })?;
        if pos >= inner.media_end {
            return Ok(Exact::Changed);
        }
        let end = end.min(inner.media_end);
        let len = end - pos;
        let fetch = {
            let mut state = lock(&inner.state);
            let Some(run) = state.mapfile.map.extent_at(pos) else {
                return Ok(Exact::Changed);
            };
            if run.status == Status::Finished || run.end() < end {
                return Ok(Exact::Changed);
            }
            if state.claims.covers(pos) || state.claims.free_around(pos).1 < end {
                return Ok(Exact::Busy);
            }
            state.claims.insert(pos, end, false);
            let sector = inner.sector;
            let kind = if run.status == Status::NonTried && len > sector {
                FetchKind::Chunk
            } else {
                FetchKind::Sector
            };
            let offset = pos - pos % sector;
            let io_end = end
                .div_ceil(sector)
                .saturating_mul(sector)
                .min(inner.media_end);
            Fetch {
                offset,
                len: (io_end - offset) as usize,
                lo: pos,
                hi: end,
                kind,
                sector_size: sector as u32,
                owner: Some(Arc::clone(&self.inner)),
                probe: None,
            }
        };
        if inner.media_changed() {
            // Dropping the fetch releases the claim, marking nothing.
            return Err(EngineError::MediaChanged {
                offset: fetch.offset,
            });
        }
        Ok(Exact::Fetch(fetch))
    }

    /// Changes `[pos, pos + len)` from `from` to `to` without reading it, if all of it is `from`
    /// and none of it claimed; returns whether it did. Never marks `+` (only a landed read
    /// does), never touches `+` bytes.
    pub fn remark(&self, pos: u64, len: u64, from: Status, to: Status) -> bool {
        if from == Status::Finished || to == Status::Finished || len == 0 {
            return false;
        }
        let mut state = lock(&self.inner.state);
        let uniform = state
            .mapfile
            .map
            .extent_at(pos)
            .is_some_and(|r| r.status == from && r.end() >= pos.saturating_add(len));
        let free = !state.claims.covers(pos) && state.claims.free_around(pos).1 >= pos + len;
        if !uniform || !free {
            return false;
        }
        self.inner.set_status(&mut state, pos, len, to);
        state.map_version += 1;
        true
    }

    /// Sets the status line (position, phase, pass) the way GNU ddrescue keeps it, so either
    /// tool continues the other's map where it stopped. Saved with the next save.
    pub fn set_progress(&self, pos: u64, phase: Phase, pass: u32) {
        let mut state = lock(&self.inner.state);
        let m = &mut state.mapfile;
        if (m.current_pos, m.current_status, m.current_pass) != (pos, phase, Some(pass)) {
            m.current_pos = pos;
            m.current_status = phase;
            m.current_pass = Some(pass);
            state.map_version += 1;
        }
    }
}
