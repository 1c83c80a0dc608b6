//! The keeper thread of a daemon serving a kernel block device, the same for both frontends (ublk,
//! the kernel's nbd driver): offers the engine a (rate-limited) map save every second, publishes
//! the cache health for `blkcache list` when it changes, and, once the device is live, updates
//! the service manager's STATUS and (`end_on_media_change`) ends the device when the disc was
//! swapped or ejected. Only the engine's watcher asks the drive; the keeper waits for its verdict.
//!
//! Must never end a device the daemon is already stopping, and never leave a health file behind.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::engine::{CacheHealth, Engine};

use super::{health, notify};

/// How often the keeper offers the engine a (rate-limited) map save.
const SAVE_TICK: Duration = Duration::from_secs(1);

/// How many save ticks between two STATUS updates to the service manager.
const STATUS_TICKS: u32 = 5;

/// What the keeper watches besides saving, and how it ends the device.
pub struct Watch {
    /// The block device path, set by the frontend once the device is live.
    pub device: Arc<OnceLock<String>>,
    /// End the device (map saved) once the disc was swapped or ejected.
    pub end_on_media_change: bool,
    /// Set by the frontend when it stops the device for another reason (a signal, `del`); set
    /// by the keeper when it ends the device for a media change.
    pub stopping: Arc<AtomicBool>,
    /// Stops the device: its I/O ends and the frontend's serving returns. Called once, from the
    /// keeper thread, after the map was saved.
    pub end_device: Box<dyn FnOnce() + Send>,
}

/// A running keeper thread.
pub struct Keeper {
    stop: mpsc::Sender<()>,
    handle: JoinHandle<()>,
    media_ended: Arc<AtomicBool>,
    health_file: PathBuf,
}

impl Keeper {
    /// Starts the keeper of `engine`, publishing its health in `health_file` (an earlier
    /// daemon's file there is removed first).
    pub fn spawn(
        engine: Arc<Engine>,
        health_file: PathBuf,
        watch: Watch,
    ) -> std::io::Result<Keeper> {
        let (stop, rx) = mpsc::channel::<()>();
        let media_ended = Arc::new(AtomicBool::new(false));
        let ended = media_ended.clone();
        let file = health_file.clone();
        health::unpublish(&health_file);
        let handle = std::thread::Builder::new()
            .name("blkcache-keeper".into())
            .spawn(move || keep(&engine, &file, watch, &rx, &ended))?;
        Ok(Keeper {
            stop,
            handle,
            media_ended,
            health_file,
        })
    }

    /// Stops the thread and removes the health file; returns whether the keeper ended the device
    /// for a media change.
    pub fn stop(self) -> bool {
        drop(self.stop);
        let _ = self.handle.join();
        health::unpublish(&self.health_file);
        self.media_ended.load(Ordering::SeqCst)
    }
}

fn keep(
    engine: &Engine,
    health_file: &std::path::Path,
    watch: Watch,
    rx: &mpsc::Receiver<()>,
    media_ended: &AtomicBool,
) {
    let mut published = CacheHealth::Ok;
    let mut ticks = 0u32;
    let mut last_status = String::new();
    let mut end_device = Some(watch.end_device);
    while let Err(RecvTimeoutError::Timeout) = rx.recv_timeout(SAVE_TICK) {
        engine.maybe_save();
        let health = engine.health();
        if health != published {
            health::publish(health_file, &health);
            published = health;
        }
        let Some(device) = watch.device.get() else {
            continue;
        };
        if watch.end_on_media_change
            && !watch.stopping.load(Ordering::SeqCst)
            && engine.probe_media_change()
        {
            tracing::warn!(
                media = %engine.media().describe(),
                "the disc was changed or removed: saving its map and ending, so that the disc now in the drive can be served from its own cache"
            );
            notify::stopping("the disc was changed or removed: saving its map and ending");
            media_ended.store(true, Ordering::SeqCst);
            watch.stopping.store(true, Ordering::SeqCst);
            if let Err(e) = engine.save() {
                tracing::error!(error = %e, "map save after the media change failed");
            }
            if let Some(end) = end_device.take() {
                end();
            }
            return;
        }
        ticks += 1;
        if ticks % STATUS_TICKS == 0 && notify::enabled() {
            let line = notify::status_line(engine, device);
            if line != last_status {
                notify::status(&line);
                last_status = line;
            }
        }
    }
}
