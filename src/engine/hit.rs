//! The whole-request hit: when every byte of a request is cached, the driver copies it straight
//! from the image's mapping (the ublk adapter with `USER_COPY`: one `pwrite` into the request,
//! one copy by the kernel, as the loop driver does) instead of stepping it through a buffer.
//!
//! Must never hand out a range that is not all `+` (claims never cover `+` bytes, and `+` bytes
//! are never written again, so the range stays valid without holding the lock).

use std::sync::atomic::Ordering;

use super::counters::AtomicCounters;
use super::{lock, Engine};
use crate::image::Mapped;
use crate::map::Status;

impl Engine {
    /// If every byte of `[offset, offset + len)` is cached, calls `copy` with the image's
    /// mapping of it and counts a hit (or an error, if `copy` failed); returns `copy`'s result.
    /// `None`, counting nothing, when any byte is not cached (or the range is invalid): drive
    /// the request with `begin`/`step`, which also reports range errors.
    pub fn serve_hit<E>(
        &self,
        offset: u64,
        len: usize,
        copy: impl FnOnce(Mapped<'_>) -> Result<(), E>,
    ) -> Option<Result<(), E>> {
        let inner = &self.inner;
        if len == 0 || offset.checked_add(len as u64)? > inner.size {
            return None;
        }
        // A finished disc needs no lock: its map never changes back (but for a failed sync,
        // which clears `complete` first under the lock), and there is nothing to read ahead.
        let cached = inner.complete.load(Ordering::Acquire) || {
            let mut state = lock(&inner.state);
            if state.ahead.observe(offset, len as u64) {
                inner.wake_ahead(&mut state);
            }
            state.mapfile.map.all(offset, len as u64, Status::Finished)
        };
        if !cached {
            return None;
        }
        let mapped = inner.image.mapped(offset, len).ok()?;
        let result = copy(mapped);
        let counter = match result {
            Ok(()) => &inner.counters.hits,
            Err(_) => &inner.counters.errors,
        };
        AtomicCounters::bump(counter, 1);
        Some(result)
    }
}
