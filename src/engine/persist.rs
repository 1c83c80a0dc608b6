//! Saving the mapfile: forced (`save`, on a clean stop) or rate-limited (`maybe_save`).
//!
//! Order, so that a saved map never claims bytes that are not durable in the image:
//! 1. under the state lock, snapshot the map and take the ranges marked `+` since the previous
//!    snapshot (`unsynced`): every `+` in the snapshot was written with `pwrite` (which
//!    returned) before it was marked, and all but those were covered by an earlier good sync;
//! 2. if there are such ranges, `fdatasync` the image: they are now on disk;
//! 3. save the snapshot atomically (`crate::map::save`: temp file, fsync, rename, fsync dir).
//!
//! Syncing before taking the snapshot would be wrong: bytes marked in between would be claimed
//! but not synced.
//!
//! A failed `fdatasync` is never retried: Linux reports a writeback error once per open file and
//! the next `fdatasync` returns 0, while the pages it failed to write may be gone. Every range
//! marked since the last successful sync (the snapshot's and any marked since) goes back to `?`
//! in memory, so it is fetched from the media again, never served from the image; the snapshot
//! is dropped; the cache is failed for good (`health.rs`), so nothing is marked `+` again. The
//! un-marked map, which needs no sync, is saved at once (its `-` and `*` marks are worth
//! keeping), and the save still reports the sync's failure.
//!
//! A failed map save (no space for the map, its directory gone) loses nothing: the synced ranges
//! are durable, the in-memory map is kept, and the save is retried at the next `maybe_save`
//! after the interval. Saves are serialised, so an older snapshot never overwrites a newer one.
//! Nothing saves on drop: the owner calls `save` when it stops.

use std::sync::{PoisonError, TryLockError};
use std::time::Instant;

use super::{lock, Engine, EngineError, ImageError, SaveState};
use crate::map::Status;

impl Engine {
    /// Makes the image durable, then saves the map (forced; used on a clean stop).
    pub fn save(&self) -> Result<(), EngineError> {
        let mut saver = lock(&self.inner.saver);
        self.save_locked(&mut saver)
    }

    /// Saves if the map changed since the last save and the save interval has passed since the
    /// last attempt. Never blocks on another save in progress; a failure is logged with
    /// `tracing::error!` and retried later (a failed sync only by saving the un-marked map).
    /// Returns whether it saved.
    pub fn maybe_save(&self) -> bool {
        let mut saver = match self.inner.saver.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(poisoned)) => PoisonError::into_inner(poisoned),
            Err(TryLockError::WouldBlock) => return false,
        };
        if saver.last_attempt.elapsed() < self.inner.cfg.save_interval || !self.dirty_for(&saver) {
            return false;
        }
        match self.save_locked(&mut saver) {
            Ok(()) => true,
            // Said loudly, once, by the health change.
            Err(EngineError::Image(ImageError::Sync { .. })) => false,
            Err(err) => {
                tracing::error!(
                    mapfile = %self.inner.mapfile_path.display(),
                    error = &err as &dyn std::error::Error,
                    "SAVING THE MAPFILE FAILED; the map is kept in memory and the save will be retried"
                );
                false
            }
        }
    }

    /// Whether the map changed since the last successful save.
    pub fn is_dirty(&self) -> bool {
        let saver = lock(&self.inner.saver);
        self.dirty_for(&saver)
    }

    fn dirty_for(&self, saver: &SaveState) -> bool {
        lock(&self.inner.state).map_version != saver.saved_version
    }

    fn save_locked(&self, saver: &mut SaveState) -> Result<(), EngineError> {
        saver.last_attempt = Instant::now();
        let (snapshot, version, unsynced) = {
            let mut state = lock(&self.inner.state);
            let unsynced = std::mem::take(&mut state.unsynced);
            (state.mapfile.clone(), state.map_version, unsynced)
        };
        if !unsynced.is_empty() {
            if let Err(err) = self.inner.image.sync() {
                self.unmark_after_failed_sync(unsynced, &err);
                let (unmarked, version) = {
                    let state = lock(&self.inner.state);
                    (state.mapfile.clone(), state.map_version)
                };
                match self.save_map(&unmarked) {
                    Ok(()) => saver.saved_version = version,
                    Err(save) => {
                        tracing::error!(error = %save, "saving the un-marked map failed too; retried later")
                    }
                }
                return Err(err.into());
            }
        }
        self.save_map(&snapshot)?;
        saver.saved_version = version;
        Ok(())
    }

    fn save_map(&self, map: &crate::map::Mapfile) -> Result<(), EngineError> {
        crate::map::save(&self.inner.mapfile_path, map).map_err(|source| EngineError::Save {
            path: self.inner.mapfile_path.clone(),
            source,
        })
    }

    /// Puts every range marked since the last good sync back to `?` and fails the cache, under
    /// one lock: a fetch landing after this sees the failure and marks nothing.
    fn unmark_after_failed_sync(&self, taken: Vec<(u64, u64)>, err: &ImageError) {
        let mut state = lock(&self.inner.state);
        let later = std::mem::take(&mut state.unsynced);
        let mut lost = 0;
        for (lo, hi) in taken.into_iter().chain(later) {
            self.inner
                .set_status(&mut state, lo, hi - lo, Status::NonTried);
            lost += hi - lo;
        }
        state.map_version += 1;
        state.health.failed(format!(
            "{}; {lost} bytes cached since the last good sync are not cached after all",
            super::health::describe(err)
        ));
    }
}
