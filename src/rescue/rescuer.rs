//! The state a rescue keeps between reads (ddrescue's `Rescuebook`): sizes derived from the
//! options, read and error counts, rates for slow-read detection and the timeout, the limits,
//! and the one way a pass reads a block (`read_block`, ddrescue's `copy_and_update`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::chunk::Block;
use super::source::Source;
use super::{FillOptions, Limit, RescueError, MIN_SKIP};
use crate::engine::{Engine, Exact};
use crate::map::{Phase, Stats, Status};
use crate::media::AlignedBuf;

/// Why a phase stopped early.
#[derive(Debug)]
pub(super) enum Stop {
    /// `stop` was set.
    Interrupted,
    /// A limit was reached.
    Limit(Limit),
    /// A read could not be landed, or the source not reopened.
    Error(RescueError),
}

impl From<RescueError> for Stop {
    fn from(e: RescueError) -> Stop {
        Stop::Error(e)
    }
}

/// What one read did.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct ReadResult {
    /// Bytes rescued by it.
    pub copied: u64,
    /// Bytes it failed on.
    pub failed: u64,
}

/// What `observe` is shown after each read.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// Phase and pass being run.
    pub phase: Phase,
    /// Pass number (copying 1-5, retrying 1..).
    pub pass: u32,
    /// The block just read.
    pub pos: u64,
    /// Bytes and areas per status.
    pub stats: Stats,
    /// Reads sent to the media so far (this run, the identity read included).
    pub reads: u64,
    /// Failed reads so far (this run).
    pub read_errors: u64,
    /// Time since the fill started.
    pub elapsed: Duration,
    /// Average rate of rescued bytes (bytes/s) this run.
    pub average_rate: u64,
    /// Rate over the last second or so (bytes/s).
    pub current_rate: u64,
}

/// A rescue in progress.
pub(super) struct Rescuer<'a> {
    pub engine: &'a Engine,
    source: &'a mut Source,
    pub opts: &'a FillOptions,
    stop: &'a AtomicBool,
    observe: &'a mut dyn FnMut(&Progress),
    /// Sector size (ddrescue's hardbs).
    pub sector: u64,
    /// Copy read size (ddrescue's softbs).
    pub cluster: u64,
    /// Initial and largest skip (0: no skipping).
    pub skip: u64,
    pub max_skip: u64,
    /// The minimum read rate while it applies (passes 1 and 2).
    pub min_read_rate: Option<u64>,
    read_errors: u64,
    pub slow_reads: u64,
    rates: Rates,
    timed_out: bool,
    phase: Phase,
    pass: u32,
}

impl<'a> Rescuer<'a> {
    pub fn new(
        engine: &'a Engine,
        source: &'a mut Source,
        opts: &'a FillOptions,
        stop: &'a AtomicBool,
        observe: &'a mut dyn FnMut(&Progress),
    ) -> Result<Rescuer<'a>, RescueError> {
        let sector = u64::from(engine.sector_size());
        let size = engine.size();
        if opts.cluster_sectors == Some(0) {
            return Err(RescueError::Option("cluster size 0".into()));
        }
        let round_up = |x: u64, to: u64| x.div_ceil(to).saturating_mul(to);
        // ddrescue's defaults: the initial skip grows with the size (64 KiB up to 6.5 GB), the
        // largest skip is 1% of the size, never below the initial one.
        let skip = match opts.skip_size {
            Some(s) if s > 0 && s < MIN_SKIP => {
                return Err(RescueError::Option(format!(
                    "initial skip size {s} is below the minimum {MIN_SKIP}"
                )))
            }
            Some(s) => s,
            None => round_up((size / 100_000).max(MIN_SKIP), MIN_SKIP),
        };
        let max_skip = match opts.max_skip_size {
            Some(m) if m < skip => {
                return Err(RescueError::Option(format!(
                    "initial skip size {skip} is larger than the largest skip size {m}"
                )))
            }
            Some(m) => m,
            None if skip > 0 => skip.max(size / 100),
            None => 0,
        };
        let (phase, pass) = engine.with_map(|m| (m.current_status, m.current_pass.unwrap_or(1)));
        Ok(Rescuer {
            engine,
            source,
            opts,
            stop,
            observe,
            sector,
            cluster: super::cluster_bytes(opts, sector),
            skip: round_up(skip, sector),
            max_skip: round_up(max_skip, sector),
            min_read_rate: opts.min_read_rate,
            read_errors: 0,
            slow_reads: 0,
            rates: Rates::new(engine.with_map(|m| m.map.stats().get(Status::Finished).bytes)),
            timed_out: false,
            phase,
            pass,
        })
    }

    /// Which phases have work at the start (ddrescue runs no phase that had none).
    pub fn pending(&self) -> (bool, bool, bool) {
        let s = self.stats();
        let q = s.get(Status::NonTried).bytes > 0;
        let t = q || s.get(Status::NonTrimmed).bytes > 0;
        let c = t || s.get(Status::NonScraped).bytes > 0;
        (q, t, c)
    }

    pub fn stats(&self) -> Stats {
        self.engine.with_map(|m| m.map.stats())
    }

    /// The status line as saved: (position, phase, pass).
    pub fn status_line(&self) -> (u64, Phase, u32) {
        self.engine
            .with_map(|m| (m.current_pos, m.current_status, m.current_pass.unwrap_or(1)))
    }

    /// ddrescue's `copy_and_update`: records the position (`forward`: the block's start, else
    /// its end), checks the limits and `stop`, reads the block and lands it through the engine.
    pub fn read_block(
        &mut self,
        b: Block,
        phase: Phase,
        pass: u32,
        forward: bool,
    ) -> Result<ReadResult, Stop> {
        let mark_pos = if forward { b.pos } else { b.end() };
        self.phase = phase;
        self.pass = pass;
        self.engine.set_progress(mark_pos, phase, pass);
        self.check_limits()?;
        if self.stop.load(Ordering::Relaxed) {
            return Err(Stop::Interrupted);
        }
        let mut fetch = loop {
            match self
                .engine
                .claim_exact(b.pos, b.len)
                .map_err(RescueError::from)?
            {
                Exact::Fetch(f) => break f,
                // Another reader of a served device got there first: plan again.
                Exact::Changed => return Ok(ReadResult::default()),
                Exact::Busy => self.engine_busy_wait(),
            }
        };
        let mut buf = AlignedBuf::new(fetch.io_len());
        let read = self.source.read(fetch.offset, &mut buf);
        // The media-change watcher's ticket: `complete` lands nothing read after a disc swap.
        self.engine.read_done(&mut fetch);
        let failed = read.is_err();
        let result = read.map(|n| &buf[..n]);
        self.engine
            .complete(fetch, result)
            .map_err(RescueError::from)?;
        // `complete` moved the position to the block's start; ddrescue's is kept.
        self.engine.set_progress(mark_pos, phase, pass);
        let outcome = if failed {
            self.read_errors += 1;
            ReadResult {
                copied: 0,
                failed: b.len,
            }
        } else {
            ReadResult {
                copied: b.len,
                failed: 0,
            }
        };
        self.engine.maybe_save();
        if failed
            && self
                .opts
                .max_read_errors
                .is_some_and(|m| self.read_errors > m)
        {
            return Err(Stop::Limit(Limit::ReadErrors));
        }
        Ok(outcome)
    }

    /// Waits a little for another reader's fetch (only when a served device is read meanwhile).
    fn engine_busy_wait(&self) {
        std::thread::sleep(Duration::from_millis(1));
    }

    /// ddrescue's `errors_or_timeout`.
    fn check_limits(&self) -> Result<(), Stop> {
        if let Some(max) = self.opts.max_bad_areas {
            if self.stats().get(Status::BadSector).areas > max {
                return Err(Stop::Limit(Limit::BadAreas));
            }
        }
        if self.timed_out {
            return Err(Stop::Limit(Limit::Timeout));
        }
        Ok(())
    }

    /// ddrescue's `update_rates`: once a second, the rates, the timeout and whether reading is
    /// slow. Returns whether the last second was slow.
    pub fn update_rates(&mut self) -> bool {
        let finished = self.stats().get(Status::Finished).bytes;
        let tick = self.rates.tick(finished);
        if let Some(timeout) = self.opts.timeout {
            if tick.is_some() && self.rates.since_success() > timeout.as_secs() && self.rates.t1 > 0
            {
                self.timed_out = true;
            }
        }
        self.report();
        let Some(c_rate) = tick else {
            return false;
        };
        self.rates.prev_slow = self.rates.current_slow;
        self.rates.current_slow = self.rates.t1 > self.opts.delay_slow.as_secs()
            && match self.min_read_rate {
                Some(0) => c_rate < self.rates.a_rate / 10,
                Some(min) => c_rate < min,
                None => false,
            };
        if self.rates.current_slow {
            self.slow_reads += 1;
        }
        self.rates.current_slow
    }

    /// Whether the read before the last slow one was slow too (the slow skip then doubles).
    pub fn prev_slow(&self) -> bool {
        self.rates.prev_slow
    }

    /// Resets slow detection on a block change.
    pub fn reset_slow(&mut self) {
        self.rates.current_slow = false;
    }

    /// The current rate (bytes/s), for the slow skip.
    pub fn current_rate(&self) -> u64 {
        self.rates.c_rate
    }

    /// `--reopen-on-error`.
    pub fn reopen(&mut self) -> Result<(), Stop> {
        if self.opts.reopen_on_error {
            self.source.reopen().map_err(RescueError::Reopen)?;
        }
        Ok(())
    }

    /// Shows the progress to the observer.
    pub fn report(&mut self) {
        let wear = self.source.wear();
        let p = Progress {
            phase: self.phase,
            pass: self.pass,
            pos: self.status_line().0,
            stats: self.stats(),
            reads: wear.reads,
            read_errors: wear.errors,
            elapsed: self.rates.start.elapsed(),
            average_rate: self.rates.a_rate,
            current_rate: self.rates.c_rate,
        };
        (self.observe)(&p);
    }
}

/// ddrescue's once-a-second rate bookkeeping, in whole seconds since the start.
struct Rates {
    start: Instant,
    /// Second of the last tick.
    t1: u64,
    /// Second of the last tick that saw progress.
    ts: u64,
    first_size: u64,
    last_size: u64,
    a_rate: u64,
    c_rate: u64,
    current_slow: bool,
    prev_slow: bool,
}

impl Rates {
    fn new(finished: u64) -> Rates {
        Rates {
            start: Instant::now(),
            t1: 0,
            ts: 0,
            first_size: finished,
            last_size: finished,
            a_rate: 0,
            c_rate: 0,
            current_slow: false,
            prev_slow: false,
        }
    }

    /// A new second began: updates the rates and returns the current rate.
    fn tick(&mut self, finished: u64) -> Option<u64> {
        let t2 = self.start.elapsed().as_secs();
        if t2 <= self.t1 {
            return None;
        }
        self.a_rate = (finished - self.first_size) / t2;
        self.c_rate = finished.saturating_sub(self.last_size) / (t2 - self.t1);
        if finished != self.last_size {
            self.last_size = finished;
            self.ts = t2;
        }
        self.t1 = t2;
        Some(self.c_rate)
    }

    fn since_success(&self) -> u64 {
        self.t1 - self.ts
    }
}
