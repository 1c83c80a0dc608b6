//! A fill on a served engine, in its own thread, giving way to the device's readers
//! ([`super::Pacer`]): `add --fill`, or one asked for over the control socket. One at a time
//! per engine (one writer per cache); stopped and joined when the device stops ([`close`]).
//!
//! Start fills from a thread whose stop signals are blocked (the daemon's, once the device is
//! live, or the control socket's): a signal delivered to the fill thread would kill the daemon
//! unsaved.
//!
//! [`close`]: BackgroundFill::close

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{fill, FillOptions, Live, Outcome, Pacer, Source, Summary};
use crate::engine::Engine;
use crate::media::{Media, MediaError};

/// How long the device must be idle before the fill reads on.
pub const QUIET: Duration = Duration::from_millis(50);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Opens the daemon's source again, for `--reopen-on-error` (one [`super::Reopen`] per fill).
pub type OpenSource = Arc<dyn Fn() -> Result<Arc<dyn Media>, MediaError> + Send + Sync>;

/// The fills of one served engine: at most one runs.
pub struct BackgroundFill {
    engine: Arc<Engine>,
    cache: PathBuf,
    reopen: Option<OpenSource>,
    state: Mutex<State>,
    next_id: AtomicU64,
}

impl std::fmt::Debug for BackgroundFill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackgroundFill")
            .field("cache", &self.cache)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct State {
    /// The running fill, or the last one.
    current: Option<(Arc<Run>, Option<JoinHandle<()>>)>,
    /// The device stopped: no more fills.
    closed: bool,
}

/// One fill, as those who follow it see it.
#[derive(Debug)]
pub struct Run {
    /// Tells this fill from the ones before it.
    pub id: u64,
    /// Who asked for it (`add --fill`, `blkcache fill (pid N)`), for `status`.
    pub origin: String,
    /// Its options.
    pub options: FillOptions,
    stop: AtomicBool,
    live: Mutex<Option<Live>>,
    summary: Mutex<Option<Summary>>,
}

impl Run {
    /// The figures as of its last read (`None` before the first).
    pub fn live(&self) -> Option<Live> {
        lock(&self.live).clone()
    }

    /// Its summary once it ended, the map saved.
    pub fn summary(&self) -> Option<Summary> {
        lock(&self.summary).clone()
    }

    /// Asks it to stop after the read in progress (it then saves the map and ends).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Why a fill was not started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// One runs already.
    #[error("a fill is already running on this cache (started by {})", .0.origin)]
    Busy(Arc<Run>),
    /// The device is stopping.
    #[error("the device is stopping")]
    Closed,
    /// `reopen_on_error` without a way to reopen the source.
    #[error("this daemon cannot reopen its source (--reopen-on-error)")]
    NoReopen,
    /// No thread.
    #[error("cannot start the fill thread")]
    Thread(#[source] std::io::Error),
}

impl BackgroundFill {
    /// No fill yet, for `engine` serving the cache in `cache`.
    pub fn new(engine: Arc<Engine>, cache: PathBuf) -> BackgroundFill {
        BackgroundFill {
            engine,
            cache,
            reopen: None,
            state: Mutex::new(State::default()),
            next_id: AtomicU64::new(1),
        }
    }

    /// Lets fills asked for with `reopen_on_error` open the source again (without it they
    /// cannot: the option is then refused).
    pub fn with_reopen(mut self, open: OpenSource) -> BackgroundFill {
        self.reopen = Some(open);
        self
    }

    /// Starts a fill of the engine's cache from its media, unless one runs.
    pub fn start(&self, options: FillOptions, origin: String) -> Result<Arc<Run>, StartError> {
        let mut state = lock(&self.state);
        if state.closed {
            return Err(StartError::Closed);
        }
        if options.reopen_on_error && self.reopen.is_none() {
            return Err(StartError::NoReopen);
        }
        if let Some((run, thread)) = state.current.take() {
            if run.summary().is_none() {
                let busy = run.clone();
                state.current = Some((run, thread));
                return Err(StartError::Busy(busy));
            }
            // It ended: its thread is done or about to be.
            if let Some(t) = thread {
                let _ = t.join();
            }
        }
        let run = Arc::new(Run {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            origin,
            options,
            stop: AtomicBool::new(false),
            live: Mutex::new(None),
            summary: Mutex::new(None),
        });
        let (engine, cache, r) = (self.engine.clone(), self.cache.clone(), run.clone());
        let reopen = self.reopen.clone();
        let thread = std::thread::Builder::new()
            .name("blkcache-fill".into())
            .spawn(move || run_fill(&engine, cache, reopen, &r))
            .map_err(StartError::Thread)?;
        state.current = Some((run.clone(), Some(thread)));
        Ok(run)
    }

    /// The running fill, or the last one.
    pub fn current(&self) -> Option<Arc<Run>> {
        lock(&self.state).current.as_ref().map(|(r, _)| r.clone())
    }

    /// Refuses new fills, stops the running one after its read in progress and waits for it;
    /// returns whether one ran (it saved the map as it ended).
    pub fn close(&self) -> bool {
        let thread = {
            let mut state = lock(&self.state);
            state.closed = true;
            state.current.as_mut().and_then(|(run, thread)| {
                run.stop();
                thread.take()
            })
        };
        thread.is_some_and(|t| t.join().is_ok())
    }
}

fn run_fill(engine: &Arc<Engine>, cache: PathBuf, reopen: Option<OpenSource>, run: &Run) {
    let started = Instant::now();
    let mut source = Source::new(engine.media().clone());
    if let Some(open) = reopen {
        source = source.with_reopen(Box::new(move || open()));
    }
    let mut pacer = Pacer::new(QUIET);
    tracing::info!(origin = %run.origin, "fill started");
    let result = fill(engine, &mut source, &run.options, &run.stop, &mut |p| {
        *lock(&run.live) = Some(Live::new(p));
        pacer.pace(engine);
    });
    // Saved whatever happened, before the summary says it ended.
    if let Err(e) = engine.save() {
        tracing::error!(error = %e, "map save after the fill failed");
    }
    let stats = engine.with_map(|m| m.map.stats());
    let wear = source.wear();
    let outcome = result.as_ref().copied().unwrap_or(Outcome::Interrupted);
    let mut summary = Summary::new(&stats, &outcome, &cache, wear, started.elapsed());
    match &result {
        Ok(outcome) => tracing::info!(
            ?outcome,
            rescued = summary.rescued,
            bad = summary.bad_sector,
            reads = wear.reads,
            read_errors = wear.errors,
            "fill ended"
        ),
        Err(e) => {
            tracing::error!(error = %e, "fill stopped");
            summary.outcome = format!("failed: {e}");
        }
    }
    *lock(&run.summary) = Some(summary);
}
