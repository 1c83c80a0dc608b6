//! Landing a fetch: the media bytes go into the image, and only then is the range marked `+`;
//! a medium error marks the range `*` (a chunk) or `-` (a sector); any other media error marks
//! nothing. When the image cannot take the bytes (full, failed: see `health.rs`) they mark
//! nothing either, but the request still gets them: `land` keeps them for `step`. Every outcome
//! releases the fetch's claim and wakes the requests waiting on it.
//!
//! Before any of that, the watcher's verdict for the fetch (a media-change probe that started
//! after the read finished; see `watch.rs`) must say the medium is the same: else the bytes (or
//! the error: an eject gives EIO, which looks like a bad sector) may come from another disc, or
//! none. Then nothing is written nor marked, and the request fails with `MediaChanged`.

use std::io;
use std::sync::Arc;

use super::counters::AtomicCounters;
use super::request::FetchKind;
use super::{lock, Engine, EngineError, Fetch, Inner};
use crate::image::ImageError;
use crate::map::Status;
use crate::media::is_medium_error;

impl Engine {
    /// Hands in the result of reading `fetch` from the media (`data` = the bytes read from
    /// `fetch.offset`, at least up to the fetch's end). `Err` means the request that made the
    /// fetch must fail with it (a media error that is not a bad sector); a bad sector is not an
    /// error here (the next `step` handles it), nor is an image that cannot be written (the next
    /// `step` serves the bytes read, uncached).
    pub fn complete(&self, mut fetch: Fetch, data: io::Result<&[u8]>) -> Result<(), EngineError> {
        let Some(inner) = fetch.owner.take() else {
            return Ok(());
        };
        debug_assert!(Arc::ptr_eq(&inner, &self.inner), "fetch of another engine");
        let counters = &inner.counters;
        AtomicCounters::bump(&counters.media_reads, 1);
        // After the read, before anything lands: a swap between `step`'s check and the read
        // is seen here (the kernel keeps the change flagged until someone asks).
        // A read-ahead is no request's miss or error.
        let request = fetch.kind != FetchKind::Ahead;
        if inner.changed_before_landing(&fetch) {
            if data.is_err() {
                AtomicCounters::bump(&counters.media_errors, 1);
            }
            inner.release(fetch.lo, None);
            if request {
                AtomicCounters::bump(&counters.errors, 1);
                AtomicCounters::bump(&counters.misses, 1);
            }
            return Err(EngineError::MediaChanged {
                offset: fetch.offset,
            });
        }
        let need = (fetch.hi - fetch.offset) as usize;
        let failure = match data {
            Ok(bytes) if bytes.len() >= need => {
                AtomicCounters::bump(&counters.media_bytes, bytes.len() as u64);
                let from = (fetch.lo - fetch.offset) as usize;
                let data = &bytes[from..need];
                let may_write = lock(&inner.state).health.may_write(inner.cfg.full_retry);
                // Written (pwrite returned): only then may `land` mark the range `+`.
                let written = may_write.then(|| inner.write_image(fetch.lo, data));
                inner.land(fetch.lo, data, written);
                return Ok(());
            }
            Ok(bytes) => {
                AtomicCounters::bump(&counters.media_errors, 1);
                EngineError::Media {
                    offset: fetch.offset,
                    source: io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("short read: {} of {need} bytes", bytes.len()),
                    ),
                }
            }
            Err(err) if is_medium_error(&err) => {
                AtomicCounters::bump(&counters.media_errors, 1);
                let status = match fetch.kind {
                    FetchKind::Chunk | FetchKind::Ahead => Status::NonTrimmed,
                    FetchKind::Sector => Status::BadSector,
                };
                tracing::debug!(
                    offset = fetch.lo,
                    len = fetch.hi - fetch.lo,
                    error = %err,
                    "media read failed; marking {}",
                    status.as_char()
                );
                inner.release(fetch.lo, Some((fetch.hi, status)));
                return Ok(());
            }
            Err(source) => {
                AtomicCounters::bump(&counters.media_errors, 1);
                EngineError::Media {
                    offset: fetch.offset,
                    source,
                }
            }
        };
        inner.release(fetch.lo, None);
        if request {
            AtomicCounters::bump(&counters.errors, 1);
            AtomicCounters::bump(&counters.misses, 1);
        }
        Err(failure)
    }
}

impl Inner {
    /// Writes fetched bytes into the image unless that would leave less than `keep_free` bytes
    /// on its disk (then `NoSpace`, as from the disk itself).
    fn write_image(&self, pos: u64, data: &[u8]) -> Result<(), ImageError> {
        let keep = self.cfg.keep_free;
        if keep > 0 && self.image.free_bytes()? < keep.saturating_add(data.len() as u64) {
            return Err(ImageError::NoSpace {
                path: self.image.path().to_owned(),
                offset: pos,
                len: data.len(),
            });
        }
        self.image.write_at(pos, data)
    }
}
