//! Engine counters: plain atomics bumped on the read path, read as a snapshot.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A snapshot of the engine's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct Counters {
    /// Requests served entirely from the image.
    pub hits: u64,
    /// Requests that needed the media (successful or not).
    pub misses: u64,
    /// Requests that failed (bad sectors, media or image errors).
    pub errors: u64,
    /// Media reads completed (successful or not).
    pub media_reads: u64,
    /// Bytes read from the media by successful reads.
    pub media_bytes: u64,
    /// Media reads that failed.
    pub media_errors: u64,
    /// Read-ahead media reads (also in `media_reads`), successful or not.
    pub ahead_reads: u64,
    /// Bytes read ahead by successful read-ahead reads (also in `media_bytes`).
    pub ahead_bytes: u64,
}

#[derive(Debug, Default)]
pub(super) struct AtomicCounters {
    pub(super) hits: AtomicU64,
    pub(super) misses: AtomicU64,
    pub(super) errors: AtomicU64,
    pub(super) media_reads: AtomicU64,
    pub(super) media_bytes: AtomicU64,
    pub(super) media_errors: AtomicU64,
    pub(super) ahead_reads: AtomicU64,
    pub(super) ahead_bytes: AtomicU64,
}

impl AtomicCounters {
    pub(super) fn bump(counter: &AtomicU64, by: u64) {
        counter.fetch_add(by, Relaxed);
    }

    pub(super) fn snapshot(&self) -> Counters {
        Counters {
            hits: self.hits.load(Relaxed),
            misses: self.misses.load(Relaxed),
            errors: self.errors.load(Relaxed),
            media_reads: self.media_reads.load(Relaxed),
            media_bytes: self.media_bytes.load(Relaxed),
            media_errors: self.media_errors.load(Relaxed),
            ahead_reads: self.ahead_reads.load(Relaxed),
            ahead_bytes: self.ahead_bytes.load(Relaxed),
        }
    }
}
