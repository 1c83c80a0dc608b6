//! Rescue: reading a whole media into its cache with GNU ddrescue's strategy (`blkcache fill`).
//!
//! The phases and their order are ddrescue's (rescuebook.cc, ddrescue 1.27), so that a fill wears
//! a disc no more than ddrescue does and either tool continues the other's map:
//! 1. copying (`copy.rs`): non-tried areas in large reads, up to five passes: forwards skipping
//!    ahead after an error (the skip doubling up to a limit), backwards, then the areas skipped
//!    for slowness, then a sweep;
//! 2. trimming (`trim.rs`): the edges of each failed block, sector by sector, until a bad
//!    sector; the middle becomes non-scraped;
//! 3. scraping (`scrape.rs`): what is left, sector by sector;
//! 4. retrying (`retry.rs`): `--retries N` passes over the bad sectors, alternating direction.
//!
//! The status line (position, phase, pass) is kept as ddrescue keeps it. Every read goes through
//! the engine (`Engine::claim_exact` + `complete`): bytes are written to the image before they
//! are marked, and saves make the image durable before the map claims it; this module never
//! writes the image or the map itself. `chunk.rs` picks blocks as ddrescue does; `source.rs`
//! holds the media and counts the wear; `rescuer.rs` the state a rescue keeps between reads
//! (rates, limits, counters).

pub mod adopt;
pub mod background;
mod chunk;
mod copy;
pub mod export;
pub mod merge;
mod report;
mod rescuer;
mod retry;
mod scrape;
mod source;
mod trim;

use std::sync::atomic::AtomicBool;
use std::time::Duration;

pub use chunk::{find_chunk, rfind_chunk, Block, Found};
pub use report::{format_duration, Live, Summary};
pub use rescuer::Progress;
pub use source::{Head, Reopen, Source, Wear};

use crate::engine::{Engine, EngineError};
use crate::map::Phase;
use crate::media::MediaError;
use rescuer::Rescuer;

/// ddrescue's smallest and default initial skip size.
pub const MIN_SKIP: u64 = 64 * 1024;

/// How to rescue: GNU ddrescue's options of the same names and meanings. Serde: the control
/// socket carries them to a daemon (missing fields take their defaults).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct FillOptions {
    /// Sectors per copy read (`-c`); default 64 KiB worth.
    pub cluster_sectors: Option<u32>,
    /// Initial skip after a read error (`-K`); default size / 100000, at least 64 KiB; 0
    /// disables skipping.
    pub skip_size: Option<u64>,
    /// Largest skip (`-K ,MAX`); default size / 100, at least the initial skip.
    pub max_skip_size: Option<u64>,
    /// Run every pass in the other direction (`-R`).
    pub reverse: bool,
    /// Skip the trimming phase (`-N`).
    pub no_trim: bool,
    /// Skip the scraping phase (`-n`).
    pub no_scrape: bool,
    /// Retry passes over bad sectors (`-r`); -1 until none is left.
    pub retries: i64,
    /// Reads slower than this (bytes/s) count as slow in copy passes 1 and 2 and are skipped
    /// like errors (`-a`); 0 means a tenth of the average rate.
    pub min_read_rate: Option<u64>,
    /// Time before slow reads are checked (`--delay-slow`, 30 s).
    pub delay_slow: Duration,
    /// Stop when there are more bad areas than this (`-e`).
    pub max_bad_areas: Option<u64>,
    /// Stop after more failed reads than this (`-X`).
    pub max_read_errors: Option<u64>,
    /// Stop when nothing was read successfully for this long (`-T`).
    pub timeout: Option<Duration>,
    /// Reopen the source after every read error in the copying phase (`-O`).
    pub reopen_on_error: bool,
}

impl Default for FillOptions {
    fn default() -> Self {
        FillOptions {
            cluster_sectors: None,
            skip_size: None,
            max_skip_size: None,
            reverse: false,
            no_trim: false,
            no_scrape: false,
            retries: 0,
            min_read_rate: None,
            delay_slow: Duration::from_secs(30),
            max_bad_areas: None,
            max_read_errors: None,
            timeout: None,
            reopen_on_error: false,
        }
    }
}

/// Makes a fill give way to the readers of a served device: `pace` (call it from `fill`'s
/// `observe`) returns only once no request was served for `quiet`.
#[derive(Debug)]
pub struct Pacer {
    quiet: Duration,
    seen: u64,
}

impl Pacer {
    /// A pacer that waits for `quiet` without requests.
    pub fn new(quiet: Duration) -> Pacer {
        Pacer { quiet, seen: 0 }
    }

    /// Waits while `engine` serves requests (its hits and misses move).
    pub fn pace(&mut self, engine: &Engine) {
        loop {
            let c = engine.counters();
            let served = c.hits + c.misses;
            if served == self.seen {
                return;
            }
            self.seen = served;
            std::thread::sleep(self.quiet);
        }
    }
}

/// Bytes per copy read (ddrescue's cluster): `cluster_sectors` sectors, by default 64 KiB worth.
pub fn cluster_bytes(opts: &FillOptions, sector: u64) -> u64 {
    let sectors = match opts.cluster_sectors {
        Some(c) => u64::from(c),
        None => (65536 / sector.max(1)).max(1),
    };
    sectors.saturating_mul(sector)
}

/// How a fill ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every phase ran to its end: nothing is left to try (bad sectors may remain).
    Finished,
    /// Stopped on request (Ctrl-C); the map says where to continue.
    Interrupted,
    /// Stopped by a limit.
    Limit(Limit),
}

/// The limit that stopped a fill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// More bad areas than `max_bad_areas`.
    BadAreas,
    /// More failed reads than `max_read_errors`.
    ReadErrors,
    /// Nothing read for longer than `timeout`.
    Timeout,
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Limit::BadAreas => "too many bad areas",
            Limit::ReadErrors => "too many read errors",
            Limit::Timeout => "timeout expired",
        })
    }
}

/// Why a fill could not go on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RescueError {
    /// A read could not be landed (not a bad sector: no disc, a short read, a full image disk).
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// `--reopen-on-error` could not open the source again.
    #[error("cannot reopen the source")]
    Reopen(#[source] MediaError),
    /// An option out of range.
    #[error("invalid fill option: {0}")]
    Option(String),
}

/// Rescues what `engine`'s map says is left, reading from `source`, until every phase is done,
/// a limit is reached or `stop` is set (checked before each read). `observe` is called after
/// every read. The caller saves the map at the end (`Engine::save`); the engine's rate-limited
/// saves run after each read.
pub fn fill(
    engine: &Engine,
    source: &mut Source,
    opts: &FillOptions,
    stop: &AtomicBool,
    observe: &mut dyn FnMut(&Progress),
) -> Result<Outcome, RescueError> {
    let mut r = Rescuer::new(engine, source, opts, stop, observe)?;
    let mut step = Ok(());
    // One round is ddrescue's run. Readers of a served device may change the map under a
    // round (a trimmed block read in part): then the work they left is picked up again.
    for _round in 0..3 {
        let before = r.stats();
        let (pending_copy, pending_trim, pending_scrape) = r.pending();
        if pending_copy {
            step = copy::copy_non_tried(&mut r);
        }
        if step.is_ok() && pending_trim && !opts.no_trim {
            step = trim::trim_errors(&mut r);
        }
        if step.is_ok() && pending_scrape && !opts.no_scrape {
            step = scrape::scrape_errors(&mut r);
        }
        if step.is_ok() && opts.retries != 0 {
            step = retry::copy_errors(&mut r);
        }
        let after = r.stats();
        let left = |s: &crate::map::Stats, st| s.get(st).bytes;
        let work_left = left(&after, crate::map::Status::NonTried) > 0
            || (left(&after, crate::map::Status::NonTrimmed) > 0 && !opts.no_trim)
            || (left(&after, crate::map::Status::NonScraped) > 0 && !opts.no_scrape);
        if step.is_err() || !work_left || after == before {
            break;
        }
    }
    match step {
        Ok(()) => {
            let (pos, pass) = r.engine.with_map(|m| (m.current_pos, m.current_pass));
            r.engine
                .set_progress(pos, Phase::Finished, pass.unwrap_or(1));
            r.report();
            Ok(Outcome::Finished)
        }
        Err(rescuer::Stop::Interrupted) => Ok(Outcome::Interrupted),
        Err(rescuer::Stop::Limit(l)) => Ok(Outcome::Limit(l)),
        Err(rescuer::Stop::Error(e)) => Err(e),
    }
}
