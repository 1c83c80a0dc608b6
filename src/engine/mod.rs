//! The read path: hits from the image, misses from the media, in-flight claims, bad-sector
//! narrowing, counters and rate-limited saves. Knows nothing of ublk.
//!
//! One state machine serves every caller: `begin` makes a [`ReadRequest`], `step` advances it and
//! says what to do next ([`Step`]): nothing (`Done`), read a [`Fetch`] from the media and hand the
//! bytes to `complete`, or `Wait` for another request's fetch of the same bytes. The synchronous
//! [`Engine::read`] is a loop over it with `pread` and a condvar; the ublk adapter drives the same
//! machine with reads on its own io_uring.
//!
//! Rules (files: `step.rs` plans, `complete.rs` lands fetches, `persist.rs` saves):
//! - `+` bytes are copied out of the image without touching the media.
//! - `?` bytes are fetched in chunks of `read_size` aligned to multiples of it, all the chunks a
//!   request needs in one media read (clipped to the media end, to the `?` run, to other
//!   requests' claims and to 4 MiB); the bytes are written to the image and only then marked `+`.
//! - A chunk that fails with a medium error becomes `*`; `*` and `/` bytes are fetched one sector
//!   at a time, and only inside a request, so a failure is narrowed to the sectors the request
//!   touches; a sector that fails alone becomes `-`. Parts of a failed chunk outside the request
//!   stay `*` for later.
//! - A `-` sector is read again only by a later request, `bad_retries` times per request that
//!   asks for it; a sector that became bad inside a request is not read again by that request.
//!   A request touching a bad sector still caches its other sectors, then fails with `BadSector`,
//!   or with `on_bad_sector: Zero` gets zeros for the bad bytes and succeeds (read in `step.rs`).
//! - Media errors that are not medium errors (no disc, short read) mark nothing and fail the
//!   request.
//! - Cache-disk faults never cost the reader its bytes (`health.rs`): when the image cannot be
//!   written (ENOSPC, EIO) or was failed, the fetched bytes mark nothing, are kept a while
//!   (`uncached.rs`) and served from there to the fetching request and its waiters, and reads go
//!   on from the media without caching. A failed `fdatasync` un-marks (back to `?`) every range
//!   marked since the last successful one and fails the cache for good (`persist.rs`). A failed
//!   read of a `+` range from the image (EIO, a truncated image) fails that request and the
//!   cache; it never crashes the process nor returns other bytes.
//! - A media change (disc swapped or ejected, `Media::media_changed`) is asked of the drive only
//!   by the watcher thread (`watch.rs`), never on a thread that serves reads: asking sends the
//!   drive a command, which waits behind whatever the drive is busy with. A fetch is landed only
//!   after a watcher probe that *started after its read finished* said the disc is the same
//!   (`read_done` takes the ticket, `probe_ready` says when its verdict is in, `complete`
//!   waits for it if the driver did not): a swap before or during the read is always seen, so
//!   no byte of another disc is marked (nor an old sector marked bad from the EIO an eject
//!   gives). Once seen it is latched: no fetch is handed out any more, every later miss fails
//!   with `MediaChanged`, and `+` bytes keep being served.
//! - Requests that wait (`Step::Wait`, or a fetch whose probe verdict is not in) are woken when
//!   a claim is released or a probe finishes: the sync path on a condvar, async drivers through
//!   the wakers they registered (`add_waker`, `wake.rs`); nothing polls.
//!
//! It must never mark `+` before the bytes are in the image, and never save a map claiming bytes
//! that were not written before the last successful `fdatasync` (see `persist.rs`). Saving is
//! explicit: the owner calls `maybe_save` periodically and `save` on a clean stop; dropping an
//! engine does not save.

mod ahead;
mod claims;
mod complete;
mod counters;
mod directed;
mod error;
mod health;
mod hit;
mod persist;
mod request;
mod step;
mod uncached;
mod wake;
mod watch;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::image::{Image, ImageError};
use crate::map::{Mapfile, Status};
use crate::media::{AlignedBuf, Media};

pub use ahead::DEFAULT_READ_AHEAD;
pub use counters::Counters;
pub use directed::Exact;
pub use error::EngineError;
pub use health::CacheHealth;
pub use request::{Fetch, ReadRequest, Step};
pub use wake::{Wake, WakerGuard};

use claims::Claims;
use counters::AtomicCounters;
use health::Health;
use uncached::Uncached;
use wake::Wakers;
use watch::Watch;

/// Read policy and persistence settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Size of media reads for non-tried areas (default 64 KiB); a multiple of the sector size.
    pub read_size: usize,
    /// Extra reads of an already-bad sector per later request that touches it (default 0; never in
    /// the request that found it bad).
    pub bad_retries: u32,
    /// Minimum time between two `maybe_save` saves (default 30 s).
    pub save_interval: Duration,
    /// What a request gets for a bad sector (default: an error). The map is the same either way.
    pub on_bad_sector: OnBadSector,
    /// While the image's disk is full, how often a fetch tries to write again (default 30 s).
    pub full_retry: Duration,
    /// Bytes left free on the image's disk (default 1 MiB): the image counts as full before
    /// the disk is, so that the map that claims its bytes can still be saved.
    pub keep_free: u64,
    /// The most bytes read ahead of a sequential reader (`ahead.rs`; default
    /// [`DEFAULT_READ_AHEAD`]); 0 turns read-ahead off.
    pub read_ahead: u64,
}

/// What readers get for bytes of a bad sector (`add --on-bad-sector`).
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum OnBadSector {
    /// The request fails (EIO on the device), as a drive does.
    #[default]
    Eio,
    /// The bad bytes read as zeros and the request succeeds, so a program copying files from a
    /// damaged disc gets past a bad sector (OpenSuperClone's virtual disk offers the same).
    Zero,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            read_size: 64 * 1024,
            bad_retries: 0,
            save_interval: Duration::from_secs(30),
            on_bad_sector: OnBadSector::Eio,
            full_retry: Duration::from_secs(30),
            keep_free: 1 << 20,
            read_ahead: DEFAULT_READ_AHEAD,
        }
    }
}

/// The read-through cache over one media. `Send + Sync`; share it with `Arc`.
#[derive(Debug)]
pub struct Engine {
    inner: Arc<Inner>,
    /// The read-ahead thread (stopped and joined on drop), if read-ahead is on.
    ahead: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Engine {
    fn drop(&mut self) {
        if let Some(thread) = self.ahead.take() {
            lock(&self.inner.state).ahead.stop = true;
            self.inner.ahead_cv.notify_all();
            // Waits for a read-ahead read on the drive, as the ublk queues wait for theirs.
            if thread.join().is_err() {
                tracing::error!("the read-ahead thread panicked");
            }
        }
    }
}

/// Everything behind the engine; fetches keep an `Arc` to it so a dropped fetch can release its claim.
pub(crate) struct Inner {
    media: Arc<dyn Media>,
    image: Image,
    mapfile_path: PathBuf,
    cfg: EngineConfig,
    size: u64,
    /// The media's size: at most `size` (a drive may report the disc a few sectors smaller
    /// than its cache, `cache::size`); bytes past it are never read from the media.
    media_end: u64,
    sector: u64,
    state: Mutex<State>,
    /// Signalled whenever a claim is released.
    released: Condvar,
    /// Wakes the read-ahead thread (`ahead.rs`).
    ahead_cv: Condvar,
    counters: AtomicCounters,
    saver: Mutex<SaveState>,
    /// Latched once the media reported a change: no fetch is issued or landed after that.
    media_changed: AtomicBool,
    /// Every byte of the map is `+` (kept by `set_status`): whole-request hits then skip the
    /// state lock (`hit.rs`), so a finished disc is served like a plain file, by any number
    /// of queues at once.
    complete: AtomicBool,
    /// Called on every claim release and every finished media-change probe (async drivers).
    wakers: Arc<Wakers>,
    /// Asks the media whether its disc changed, off the threads that serve reads.
    watch: Watch,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("media", &self.media.describe())
            .field("image", &self.image.path())
            .field("mapfile", &self.mapfile_path)
            .finish_non_exhaustive()
    }
}

/// What the state mutex guards.
#[derive(Debug)]
struct State {
    mapfile: Mapfile,
    claims: Claims,
    /// Bumped on every claim release: a waiter sleeps until it changes (no lost wake-ups).
    generation: u64,
    /// Bumped on every map change: the saver compares it with what it last saved.
    map_version: u64,
    /// Ranges marked `+` since the last snapshot a save took: not yet covered by a sync.
    unsynced: Vec<(u64, u64)>,
    /// Whether fetched bytes may be cached.
    health: Health,
    /// Fetched bytes that could not be cached, served to their requests from memory.
    uncached: Uncached,
    /// The sequential stream followed by read-ahead.
    ahead: ahead::Stream,
}

#[derive(Debug)]
struct SaveState {
    /// `map_version` of the last successful save.
    saved_version: u64,
    /// When the last save was attempted (successful or not).
    last_attempt: Instant,
}

/// Locks ignoring poison: the state is only changed by short, non-panicking sections.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Engine {
    /// Joins media, image and mapfile; checks they describe the same media (sector size; image
    /// and map of one size, the media's or, for a drive that reports the disc a few sectors
    /// smaller, larger: the bytes past the media's end are served if cached, else fail with
    /// `PastMediaEnd`). On a mismatch nothing is written anywhere.
    pub fn new(
        media: Arc<dyn Media>,
        image: Image,
        mapfile: Mapfile,
        mapfile_path: PathBuf,
        cfg: EngineConfig,
    ) -> Result<Engine, EngineError> {
        let size = mapfile.map.size();
        let media_end = media.size();
        let sector_size = media.sector_size();
        let sector = u64::from(sector_size);
        if media_end > size {
            return Err(EngineError::SizeMismatch {
                what: "mapfile",
                path: mapfile_path,
                found: size,
                expected: media_end,
            });
        }
        if let Some(recorded) = mapfile.meta.size.filter(|&s| s != size) {
            return Err(EngineError::SizeMismatch {
                what: "mapfile",
                path: mapfile_path,
                found: recorded,
                expected: size,
            });
        }
        if image.size() != size {
            return Err(EngineError::SizeMismatch {
                what: "image",
                path: image.path().to_owned(),
                found: image.size(),
                expected: size,
            });
        }
        if let Some(recorded) = mapfile.meta.sector_size.filter(|&s| s != sector_size) {
            return Err(EngineError::SectorSizeMismatch {
                path: mapfile_path,
                found: recorded,
                expected: sector_size,
            });
        }
        if sector == 0 || cfg.read_size == 0 || cfg.read_size as u64 % sector != 0 {
            return Err(EngineError::Config(format!(
                "read size {} is not a positive multiple of the sector size {sector}",
                cfg.read_size
            )));
        }
        let now = Instant::now();
        let read_ahead = cfg.read_ahead;
        let complete = AtomicBool::new(mapfile.map.all(0, size, Status::Finished));
        let wakers = Arc::new(Wakers::default());
        let watch = Watch::start(&media, &wakers).map_err(|e| {
            EngineError::Config(format!("cannot start the media-change watcher thread: {e}"))
        })?;
        let inner = Inner {
            media,
            image,
            mapfile_path,
            cfg,
            size,
            media_end,
            sector,
            state: Mutex::new(State {
                mapfile,
                claims: Claims::default(),
                generation: 0,
                map_version: 0,
                unsynced: Vec::new(),
                health: Health::default(),
                uncached: Uncached::default(),
                ahead: ahead::Stream::new(read_ahead),
            }),
            released: Condvar::new(),
            ahead_cv: Condvar::new(),
            counters: AtomicCounters::default(),
            saver: Mutex::new(SaveState {
                saved_version: 0,
                last_attempt: now,
            }),
            media_changed: AtomicBool::new(false),
            complete,
            wakers,
            watch,
        };
        let inner = Arc::new(inner);
        let ahead = if inner.cfg.read_ahead > 0 {
            let thread_inner = Arc::clone(&inner);
            let spawned = watch::spawn_quiet("blkcache-ahead", move || ahead::run(&thread_inner))
                .map_err(|e| {
                EngineError::Config(format!("cannot start the read-ahead thread: {e}"))
            })?;
            Some(spawned)
        } else {
            None
        };
        Ok(Engine { inner, ahead })
    }

    /// Reads `buf.len()` bytes at `offset` through the cache: the whole buffer, or an error.
    ///
    /// Blocks: media reads are done on this thread, and it sleeps while another request fetches
    /// the same bytes.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), EngineError> {
        let mut req = self.begin(offset, buf.len());
        loop {
            match self.step(&mut req, buf)? {
                Step::Done => return Ok(()),
                Step::Fetch(mut fetch) => {
                    let mut data = AlignedBuf::new(fetch.io_len());
                    let result = self.inner.media.read_at(fetch.offset, &mut data);
                    self.read_done(&mut fetch);
                    let result = result.map(|n| &data[..n]);
                    // Blocks until the watcher's probe after the read answered.
                    self.complete(fetch, result)?;
                }
                Step::Wait => self.wait(&req),
            }
        }
    }

    /// Blocks until a claim was released since `req` got `Step::Wait`.
    pub fn wait(&self, req: &ReadRequest) {
        let mut state = lock(&self.inner.state);
        while state.generation == req.wait_generation {
            state = self
                .inner
                .released
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Whether a claim was released since `req` got `Step::Wait` (then step it again). Async
    /// drivers check it after arming their [`Wake`], before sleeping, so no wake-up is lost.
    pub fn wait_over(&self, req: &ReadRequest) -> bool {
        lock(&self.inner.state).generation != req.wait_generation
    }

    /// Registers `waker`, called on every claim release and every finished media-change probe,
    /// until the guard is dropped.
    pub fn add_waker(&self, waker: Arc<dyn Wake>) -> WakerGuard {
        self.inner.wakers.add(waker)
    }

    /// Tells the engine the media read of `fetch` finished (call it as soon as the read
    /// returned, before [`probe_ready`](Engine::probe_ready) and `complete`): asks the watcher
    /// for a media-change probe that starts after now. `complete` lands the fetch only once that
    /// probe said the disc is the same; it asks (and waits) itself if this was not called.
    pub fn read_done(&self, fetch: &mut Fetch) {
        if fetch.probe.is_none() {
            fetch.probe = Some(self.inner.watch.ticket());
        }
    }

    /// Whether `complete(fetch, ..)` can run without waiting for the media-change probe that
    /// [`read_done`](Engine::read_done) asked for. Async drivers that get `false` wait for a
    /// wake-up (see [`add_waker`](Engine::add_waker)) and ask again.
    pub fn probe_ready(&self, fetch: &Fetch) -> bool {
        fetch
            .probe
            .map_or(true, |t| self.inner.watch.verdict(t).is_some())
    }

    /// The counters so far.
    pub fn counters(&self) -> Counters {
        self.inner.counters.snapshot()
    }

    /// Media size in bytes.
    pub fn size(&self) -> u64 {
        self.inner.size
    }

    /// Media sector size.
    pub fn sector_size(&self) -> u32 {
        self.inner.sector as u32
    }

    /// What a reader of a bad sector gets.
    pub fn on_bad_sector(&self) -> OnBadSector {
        self.inner.cfg.on_bad_sector
    }

    /// The media read from.
    pub fn media(&self) -> &Arc<dyn Media> {
        &self.inner.media
    }

    /// The image.
    pub fn image(&self) -> &Image {
        &self.inner.image
    }

    /// Where the mapfile is saved.
    pub fn mapfile_path(&self) -> &Path {
        &self.inner.mapfile_path
    }

    /// A copy of the in-memory mapfile (O(extents), under the state lock).
    pub fn mapfile_snapshot(&self) -> Mapfile {
        lock(&self.inner.state).mapfile.clone()
    }

    /// Status of the byte at `pos` (`None` past the end).
    pub fn status_at(&self, pos: u64) -> Option<Status> {
        lock(&self.inner.state).mapfile.map.status_at(pos)
    }

    /// Whether a media change was seen (latched): from then on only cached bytes are served.
    pub fn media_changed(&self) -> bool {
        self.inner.media_changed.load(Ordering::Acquire)
    }

    /// Whether fetched bytes are being cached, and if not why (see [`CacheHealth`]).
    pub fn health(&self) -> CacheHealth {
        lock(&self.inner.state).health.now.clone()
    }

    /// Asks the watcher for a probe that starts now and waits for its verdict: whether the
    /// medium changed (latched). Blocks for a drive round trip: for a housekeeping thread that
    /// must notice a swap while nothing reads (the daemon's saver), never one that serves reads.
    pub fn probe_media_change(&self) -> bool {
        if self.media_changed() {
            return true;
        }
        let ticket = self.inner.watch.ticket();
        self.inner.watch.wait(ticket) && self.inner.latch_change()
    }

    /// Number of fetches in flight (for tests and status).
    pub fn claims_in_flight(&self) -> usize {
        lock(&self.inner.state).claims.len()
    }
}

impl Inner {
    /// Whether a media change was seen (latched). Never asks the drive: used before a fetch is
    /// handed out (no point reading a disc known to be gone).
    fn media_changed(&self) -> bool {
        self.media_changed.load(Ordering::Acquire)
    }

    /// Whether the medium changed before the read of `fetch` finished: the verdict of the
    /// watcher's probe for the fetch's ticket (see `watch.rs`), waited for if the driver did not.
    /// Latches a change and says once, loudly, what to do.
    fn changed_before_landing(&self, fetch: &Fetch) -> bool {
        if self.media_changed() {
            return true;
        }
        let ticket = fetch.probe.unwrap_or_else(|| self.watch.ticket());
        self.watch.wait(ticket) && self.latch_change()
    }

    /// Latches a change the watcher saw, saying once, loudly, what it means. Returns true.
    fn latch_change(&self) -> bool {
        if !self.media_changed.swap(true, Ordering::AcqRel) {
            tracing::error!(
                media = %self.media.describe(),
                mapfile = %self.mapfile_path.display(),
                "the disc was changed or removed while blkcache serves it: cached sectors are still \
                 served, every other read now fails (ENOMEDIUM) and the map is no longer updated from \
                 this drive. The disc now in the drive is served from the cache of its own identity \
                 once blkcache opens the drive again: under blkcache@.service (`add \
                 --end-on-media-change`) this daemon saves its map and ends, and the service starts \
                 again by itself; otherwise run `blkcache del` on this device (or end `blkcache \
                 serve`) and `blkcache add` the drive again"
            );
        }
        true
    }

    /// Sets `[pos, pos + len)` to `status` in the map: the one place the map changes, so that
    /// `complete` always says whether all of it is `+`.
    fn set_status(&self, state: &mut State, pos: u64, len: u64, status: Status) {
        state.mapfile.map.set(pos, len, status);
        let complete = state.mapfile.map.all(0, self.size, Status::Finished);
        self.complete.store(complete, Ordering::Release);
    }

    /// Releases the claim starting at `lo`, first marking `[lo, hi)` as `status` if given, and
    /// wakes waiters. Marking and releasing happen under one lock: no request ever sees the
    /// range unclaimed with its old status after the fetch landed.
    fn release(&self, lo: u64, mark: Option<(u64, Status)>) {
        {
            let mut state = lock(&self.state);
            if let Some((hi, status)) = mark {
                self.set_status(&mut state, lo, hi - lo, status);
                state.mapfile.current_pos = lo;
                state.map_version += 1;
            }
            state.claims.remove(lo);
            state.generation += 1;
            self.wake_ahead(&mut state);
        }
        self.released.notify_all();
        self.wakers.wake_all();
    }

    /// Releases the claim `[lo, lo + data.len())` whose media bytes `data` were read, after the
    /// image write `written` (`None`: not tried, the cache is full or failed). Marks it `+` only
    /// if the write succeeded and the cache has not failed meanwhile (decided under the lock that
    /// a failed sync takes to un-mark, so a range is either un-marked by it or never marked);
    /// otherwise keeps the bytes for the requests that want them.
    fn land(&self, lo: u64, data: &[u8], written: Option<Result<(), ImageError>>) {
        let hi = lo + data.len() as u64;
        {
            let mut state = lock(&self.state);
            let cached = match written {
                Some(Ok(())) => {
                    if state.health.written() {
                        // Bytes kept while full are fetched again, now to be cached.
                        state.uncached = Uncached::default();
                    }
                    state.health.now.is_ok()
                }
                Some(Err(err @ ImageError::NoSpace { .. })) => {
                    state.health.full(health::describe(&err));
                    false
                }
                Some(Err(err)) => {
                    state.health.failed(health::describe(&err));
                    false
                }
                None => false,
            };
            if cached {
                self.set_status(&mut state, lo, hi - lo, Status::Finished);
                state.mapfile.current_pos = lo;
                state.map_version += 1;
                state.unsynced.push((lo, hi));
            } else {
                state.uncached.insert(lo, data);
            }
            state.claims.remove(lo);
            state.generation += 1;
            self.wake_ahead(&mut state);
        }
        self.released.notify_all();
        self.wakers.wake_all();
    }
}
