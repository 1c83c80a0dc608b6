//! Whether fetched bytes can still be cached: the health of the image's disk, as the engine saw
//! it. Kept under the engine's state lock so that a change and the marks it forbids are ordered.
//!
//! - `Ok`: fetched bytes are written to the image and marked `+`.
//! - `Full`: a write failed with ENOSPC, or would have left less than `keep_free` bytes on the
//!   disk (room for the map that claims the image's bytes). Reading goes on from the media without caching (each
//!   request gets the bytes read for it); every `full_retry` one fetch tries to write again, and
//!   the first write that succeeds ("space is back") makes it `Ok` again. Retrying the write
//!   itself is the only test that means "there is room for this write" on every filesystem
//!   (free-space figures lie on compressed, quota'd and copy-on-write filesystems).
//! - `Failed`: the image's disk lost data (a failed `fdatasync`, an I/O error writing or reading
//!   the image, a truncated image). Permanent for this engine: nothing is ever written to the
//!   image again, and reading goes on from the media without caching. A disk that failed to make
//!   bytes durable once cannot be trusted to report the next failure (Linux reports a writeback
//!   error once per open file, then `fdatasync` returns 0 again), and each extra write to a
//!   dying disk risks what is already on it. The map on disk stays true; once the disk is
//!   fixed, `blkcache del` and `add` resume caching from it.
//!
//! Must never turn `Failed` back into anything else.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// The cache's health, as `Engine::health` reports it and `blkcache list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
#[non_exhaustive]
pub enum CacheHealth {
    /// Fetched bytes are cached.
    Ok,
    /// The image's disk is full: reads go on from the media, uncached, until a retried write
    /// succeeds.
    Full {
        /// The write error that said so.
        error: String,
    },
    /// The image's disk lost or refused data: reads go on from the media, uncached, until the
    /// device is deleted and added again.
    Failed {
        /// What failed.
        error: String,
    },
}

impl CacheHealth {
    /// `ok`, `full` or `failed`.
    pub fn as_str(&self) -> &'static str {
        match self {
            CacheHealth::Ok => "ok",
            CacheHealth::Full { .. } => "full",
            CacheHealth::Failed { .. } => "failed",
        }
    }

    /// Whether fetched bytes are cached.
    pub fn is_ok(&self) -> bool {
        matches!(self, CacheHealth::Ok)
    }
}

/// `err` and its causes, one line (errors here name their own part only; the causes follow).
pub(super) fn describe(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// The engine's side of the health: the state and when a full disk was last tried.
#[derive(Debug)]
pub(super) struct Health {
    pub(super) now: CacheHealth,
    /// When a write was last tried while `Full`.
    last_try: Instant,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            now: CacheHealth::Ok,
            last_try: Instant::now(),
        }
    }
}

impl Health {
    /// Whether a fetch may write into the image now. While full, one caller per `retry` gets
    /// `true` (the retry of a write).
    pub(super) fn may_write(&mut self, retry: Duration) -> bool {
        match self.now {
            CacheHealth::Ok => true,
            CacheHealth::Full { .. } if self.last_try.elapsed() >= retry => {
                self.last_try = Instant::now();
                true
            }
            _ => false,
        }
    }

    /// A write into the image succeeded: a full disk has space again. Returns whether it was
    /// full.
    pub(super) fn written(&mut self) -> bool {
        if !matches!(self.now, CacheHealth::Full { .. }) {
            return false;
        }
        tracing::warn!("the image's disk has space again: fetched bytes are cached again");
        self.now = CacheHealth::Ok;
        true
    }

    /// A write failed with ENOSPC: stop caching until a retry succeeds. Says so once.
    pub(super) fn full(&mut self, error: String) {
        self.last_try = Instant::now();
        if self.now.is_ok() {
            tracing::error!(
                %error,
                "THE IMAGE'S DISK IS FULL: reads go on from the media without caching; writing is \
                 retried now and then, and caching resumes when there is space again"
            );
            self.now = CacheHealth::Full { error };
        }
    }

    /// The image's disk lost or refused data: stop caching for good. Says so once.
    pub(super) fn failed(&mut self, error: String) {
        if !matches!(self.now, CacheHealth::Failed { .. }) {
            tracing::error!(
                %error,
                "THE IMAGE'S DISK FAILED: nothing more is cached; reads go on from the media \
                 without caching, and the map on disk claims only bytes synced before the \
                 failure. Check the disk, then `blkcache del` and `blkcache add` again"
            );
            self.now = CacheHealth::Failed { error };
        }
    }
}
