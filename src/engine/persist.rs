//! Saving the mapfile: forced (`save`, on a clean stop) or rate-limited (`maybe_save`).
//!
//! Order, so that a saved map never claims bytes that are not durable in the image:
//! 1. snapshot the map under the state lock: every `+` in it was written with `pwrite` (which
//!    returned) before it was marked;
//! 2. `fdatasync` the image: those bytes are now on disk;
//! 3. save the snapshot atomically (`crate::map::save`: temp file, fsync, rename, fsync dir).
//!
//! Syncing before taking the snapshot would be wrong: bytes marked in between would be claimed
//! but not synced. A failed save keeps the in-memory map, is logged loudly and retried at the
//! next `maybe_save` after the interval. Saves are serialised, so an older snapshot never
//! overwrites a newer one. Nothing saves on drop: the owner calls `save` when it stops.

use std::sync::{PoisonError, TryLockError};
use std::time::Instant;

use super::{lock, Engine, EngineError, SaveState};

impl Engine {
    /// Makes the image durable, then saves the map (forced; used on a clean stop).
    pub fn save(&self) -> Result<(), EngineError> {
        let mut saver = lock(&self.inner.saver);
        self.save_locked(&mut saver)
    }

    /// Saves if the map changed since the last save and the save interval has passed since the
    /// last attempt. Never blocks on another save in progress; a failure is logged with
    /// `tracing::error!` and retried later. Returns whether it saved.
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
        let (snapshot, version) = {
            let state = lock(&self.inner.state);
            (state.mapfile.clone(), state.map_version)
        };
        self.inner.image.sync()?;
        crate::map::save(&self.inner.mapfile_path, &snapshot).map_err(|source| {
            EngineError::Save {
                path: self.inner.mapfile_path.clone(),
                source,
            }
        })?;
        saver.saved_version = version;
        Ok(())
    }
}
