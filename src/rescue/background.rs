//! `add --fill`: a fill on a served engine, in its own thread, giving way to the device's
//! readers ([`super::Pacer`]), stopped and joined when the device stops.
//!
//! The thread must be started from a thread whose stop signals are blocked (the daemon's, once
//! the device is live): a signal delivered to it would kill the daemon unsaved.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use super::{fill, FillOptions, Pacer, Source};
use crate::engine::Engine;
use crate::map::Status;

/// How long the device must be idle before the fill reads on.
pub const QUIET: Duration = Duration::from_millis(50);

/// A background fill (or none).
#[derive(Debug, Default)]
pub struct BackgroundFill {
    stop: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl BackgroundFill {
    /// Starts filling `engine`'s cache from its media.
    pub fn start(&self, engine: Arc<Engine>) {
        let stop = self.stop.clone();
        let spawned = std::thread::Builder::new()
            .name("blkcache-fill".into())
            .spawn(move || run(&engine, &stop));
        match spawned {
            Ok(t) => *self.thread.lock().unwrap_or_else(PoisonError::into_inner) = Some(t),
            Err(e) => tracing::error!(error = %e, "cannot start the fill"),
        }
    }

    /// Stops the fill after its read in progress and waits for it; returns whether one ran (the
    /// caller then saves the map once more).
    pub fn stop(&self) -> bool {
        self.stop.store(true, Ordering::SeqCst);
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        thread.is_some_and(|t| t.join().is_ok())
    }
}

fn run(engine: &Arc<Engine>, stop: &AtomicBool) {
    let mut source = Source::new(engine.media().clone());
    let mut pacer = Pacer::new(QUIET);
    tracing::info!("fill started");
    let result = fill(
        engine,
        &mut source,
        &FillOptions::default(),
        stop,
        &mut |_| pacer.pace(engine),
    );
    match result {
        Ok(outcome) => {
            let stats = engine.with_map(|m| m.map.stats());
            tracing::info!(
                ?outcome,
                rescued = stats.get(Status::Finished).bytes,
                bad = stats.get(Status::BadSector).bytes,
                reads = source.wear().reads,
                read_errors = source.wear().errors,
                "fill ended"
            );
        }
        Err(e) => tracing::error!(error = %e, "fill stopped"),
    }
    if let Err(e) = engine.save() {
        tracing::error!(error = %e, "map save after the fill failed");
    }
}
