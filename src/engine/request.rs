//! The values of the sans-IO read API: a request in progress, the next thing its driver must do,
//! and a media read to perform (`Fetch`, which holds an in-flight claim until completed or dropped).

use std::sync::Arc;

use super::Inner;

/// A read of `len` bytes at `offset` in progress; made by `Engine::begin`, advanced by `step`.
///
/// Plain data (no heap): beginning a request costs nothing.
#[derive(Debug, Clone)]
pub struct ReadRequest {
    pub(super) offset: u64,
    pub(super) len: usize,
    /// Next byte to serve; `offset + len` when everything was served or skipped as bad.
    pub(super) pos: u64,
    /// First byte of the request found unreadable.
    pub(super) first_bad: Option<u64>,
    /// Whether any byte of this request needed the media.
    pub(super) used_media: bool,
    /// The `-` sector being retried and how many retries it had in this request (a sector that
    /// became bad in this request starts with all of them used).
    pub(super) retry_sector: Option<u64>,
    pub(super) retries: u32,
    /// The engine's claim generation when `step` said `Wait`.
    pub(super) wait_generation: u64,
    /// Whether the read-ahead's stream detection has seen this request.
    pub(super) observed: bool,
}

impl ReadRequest {
    /// Request offset in bytes.
    pub fn offset(&self) -> u64 {
        self.offset
    }
    /// Request length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Whether the request is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// What the driver of a request must do next.
#[derive(Debug)]
#[must_use = "a Fetch must be read from the media and passed to Engine::complete"]
pub enum Step {
    /// The whole buffer is filled.
    Done,
    /// Read `fetch.offset .. + fetch.len` from the media (after `Media::injected`), pass the
    /// bytes to `Engine::complete`, then call `step` again.
    Fetch(Fetch),
    /// Another request is fetching these bytes: call `step` again once it completed (the sync
    /// driver blocks on a condvar; an async one may retry on its next turn).
    Wait,
}

/// What a fetch does when it fails with a medium error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FetchKind {
    /// A chunk of non-tried bytes: on failure it becomes non-trimmed (`*`).
    Chunk,
    /// One sector (or less): on failure it becomes bad (`-`).
    Sector,
    /// Read-ahead (no request asked for it): on failure it becomes non-trimmed (`*`), whatever
    /// its length, and it counts as no request's miss or error.
    Ahead,
}

/// One media read for a request. Holds the in-flight claim on `[lo, hi)`: pass it to
/// `Engine::complete`; dropping it without completing releases the claim, marking nothing.
#[derive(Debug)]
pub struct Fetch {
    /// Sector-aligned media offset to read at.
    pub offset: u64,
    /// Bytes to read: a sector multiple, except that it is clipped at the end of the media.
    pub len: usize,
    /// Bytes this fetch fills in the image (the claim): `offset <= lo < hi <= offset + len`.
    pub(super) lo: u64,
    pub(super) hi: u64,
    pub(super) kind: FetchKind,
    pub(super) sector_size: u32,
    /// `None` once completed (the claim is then released by `complete`).
    pub(super) owner: Option<Arc<Inner>>,
    /// The media-change watcher's ticket, taken when the read finished (`Engine::read_done`).
    pub(super) probe: Option<u64>,
}

impl Fetch {
    /// `len` rounded up to whole sectors: what an O_DIRECT reader submits (the read comes back
    /// short at the end of the media).
    pub fn io_len(&self) -> usize {
        let sector = self.sector_size as usize;
        self.len.div_ceil(sector) * sector
    }
}

impl Drop for Fetch {
    fn drop(&mut self) {
        if let Some(inner) = self.owner.take() {
            tracing::debug!(
                offset = self.lo,
                "fetch dropped without completion; releasing its claim"
            );
            inner.release(self.lo, None);
        }
    }
}
