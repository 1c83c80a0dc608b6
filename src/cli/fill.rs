//! `blkcache fill SOURCE`: read the whole source into its cache with GNU ddrescue's strategy,
//! without ublk or a daemon (the work is in `blkcache::rescue`). Also adopts a directory holding
//! only a ddrescue `image` and `mapfile`.
//!
//! The identity read (first 64 KiB) is made once and handed to the fill, which reuses it. Ctrl-C
//! (or SIGTERM) saves the map at once, stops after the read in progress and saves again; a
//! second one exits right after saving. A `kill -9` loses at most what was read since the last
//! save (`--mapfile-interval`); the next fill continues from the saved map.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::signal::{SigSet, Signal};
use serde::Serialize;

use blkcache::cache::{self, Found, FoundBy, SourceInfo};
use blkcache::engine::{Engine, EngineConfig};
use blkcache::map::stats::format_num;
use blkcache::map::{Stats, Status};
use blkcache::rescue::{self, adopt, FillOptions, Outcome, Progress, Source};

use blkcache::serve::{self, parse_bytes, ServeConfig};

/// Read a whole source into its cache, as GNU ddrescue would (no device, no daemon)
///
/// Copies the non-tried areas in large reads (skipping ahead after an error), trims the edges of
/// the failed blocks, scrapes what is left sector by sector, then makes --retries passes over
/// the bad sectors. The cache's mapfile keeps ddrescue's position, phase and pass, so GNU
/// ddrescue can continue a fill (ddrescue SOURCE CACHE/image CACHE/mapfile) and fill can
/// continue ddrescue: --cache DIR adopts a directory holding only a ddrescue image and mapfile.
/// Ends when nothing is left to try (exit 0, even with bad sectors); a limit (--max-read-errors,
/// --max-bad-areas, --timeout) ends it with exit status 1, Ctrl-C with 130, the map saved.
#[derive(Debug, clap::Args)]
pub struct FillArgs {
    /// The source: an optical drive, a disk or a file.
    pub source: PathBuf,
    /// Cache directory (default: the media's own, as `add` uses).
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
    /// Sector size in bytes (default: the device's logical sector size; 512 for files).
    #[arg(long, value_name = "BYTES")]
    pub sector_size: Option<u32>,
    /// Test mode: read SOURCE as if damaged where MAPFILE is not `+` (GNU ddrescue's -H).
    #[arg(long, value_name = "MAPFILE")]
    pub test_mode: Option<PathBuf>,
    /// Latency added to every read of the source, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub test_latency: u64,
    /// Print the summary as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Run every pass in the other direction (ddrescue's -R).
    #[arg(short = 'R', long)]
    pub reverse: bool,
    /// Retry passes over bad sectors; -1 until none is left (ddrescue's -r).
    #[arg(short = 'r', long, value_name = "N", default_value_t = 0, allow_negative_numbers = true,
          value_parser = clap::value_parser!(i64).range(-1..))]
    pub retries: i64,
    /// Sectors per copy read (ddrescue's -c; default 64 KiB worth).
    #[arg(short = 'c', long, value_name = "SECTORS", value_parser = clap::value_parser!(u32).range(1..))]
    pub cluster_size: Option<u32>,
    /// Initial and largest skip after a read error, INITIAL[,MAX] in bytes (ddrescue's -K;
    /// default size/100000 but at least 64 KiB, and size/100; 0 disables skipping).
    #[arg(short = 'K', long, value_name = "INITIAL[,MAX]")]
    pub skip_size: Option<String>,
    /// Skip areas read slower than this many bytes/s in the first two passes (ddrescue's -a;
    /// 0: a tenth of the average rate).
    #[arg(short = 'a', long, value_name = "BYTES", value_parser = parse_bytes_or_zero)]
    pub min_read_rate: Option<u64>,
    /// Seconds before slow reads are checked (ddrescue's --delay-slow).
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    pub delay_slow: u64,
    /// Stop when more than N bad areas are found (ddrescue's -e, --max-bad-areas).
    #[arg(short = 'e', long, visible_alias = "max-errors", value_name = "N")]
    pub max_bad_areas: Option<u64>,
    /// Stop after more than N failed reads (ddrescue's -X).
    #[arg(short = 'X', long, value_name = "N")]
    pub max_read_errors: Option<u64>,
    /// Stop when nothing was read for this long: 90, 90s, 5m, 2h (ddrescue's -T).
    #[arg(short = 'T', long, value_name = "INTERVAL", value_parser = parse_interval)]
    pub timeout: Option<Duration>,
    /// Reopen the source after every read error in the copying phase (ddrescue's -O).
    #[arg(short = 'O', long)]
    pub reopen_on_error: bool,
    /// Skip the trimming phase (ddrescue's -N).
    #[arg(short = 'N', long)]
    pub no_trim: bool,
    /// Skip the scraping phase (ddrescue's -n).
    #[arg(short = 'n', long)]
    pub no_scrape: bool,
    /// Seconds between map saves (the image is synced before each).
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    pub mapfile_interval: u64,
}

fn parse_bytes_or_zero(s: &str) -> Result<u64, String> {
    if s.trim() == "0" {
        return Ok(0);
    }
    parse_bytes(s)
}

/// `90`, `90s`, `1.5m`, `2h`, `1d` (ddrescue's interval syntax without fractions like 1/2).
fn parse_interval(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, mult) = match t.chars().last() {
        Some('s') => (&t[..t.len() - 1], 1.0),
        Some('m') => (&t[..t.len() - 1], 60.0),
        Some('h') => (&t[..t.len() - 1], 3600.0),
        Some('d') => (&t[..t.len() - 1], 86400.0),
        _ => (t, 1.0),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not an interval (e.g. 90, 90s, 5m, 2h)"))?;
    if !(n.is_finite() && n >= 0.0) {
        return Err(format!("'{s}' is not an interval (e.g. 90, 90s, 5m, 2h)"));
    }
    Ok(Duration::from_secs_f64(n * mult))
}

fn skip_sizes(arg: Option<&str>) -> anyhow::Result<(Option<u64>, Option<u64>)> {
    let Some(arg) = arg else {
        return Ok((None, None));
    };
    let (initial, max) = match arg.split_once(',') {
        Some((i, m)) => (i, Some(m)),
        None => (arg, None),
    };
    let parse = |s: &str| -> anyhow::Result<u64> {
        if s.trim() == "0" {
            return Ok(0);
        }
        parse_bytes(s).map_err(anyhow::Error::msg)
    };
    let initial = if initial.is_empty() {
        None
    } else {
        Some(parse(initial)?)
    };
    Ok((initial, max.map(parse).transpose()?))
}

/// What `fill` prints (`--json`: byte counts are exact).
#[derive(Debug, Serialize)]
struct Summary {
    outcome: String,
    cache: PathBuf,
    size: u64,
    rescued: u64,
    bad_sector: u64,
    bad_areas: u64,
    non_tried: u64,
    non_trimmed: u64,
    non_scraped: u64,
    media_reads: u64,
    media_bytes: u64,
    read_errors: u64,
    seconds: f64,
}

impl Summary {
    fn text(&self) -> String {
        let pct = |b: u64| {
            if self.size == 0 {
                0.0
            } else {
                100.0 * b as f64 / self.size as f64
            }
        };
        format!(
            "fill {}: {}B rescued of {}B ({:.2}%), {}B bad in {} area(s), {}B not yet tried\n  \
             non-trimmed {}B, non-scraped {}B; {} reads ({}B), {} failed; {:.1} s\n  cache {}\n",
            self.outcome,
            format_num(self.rescued),
            format_num(self.size),
            pct(self.rescued),
            format_num(self.bad_sector),
            self.bad_areas,
            format_num(self.non_tried),
            format_num(self.non_trimmed),
            format_num(self.non_scraped),
            self.media_reads,
            format_num(self.media_bytes),
            self.read_errors,
            self.seconds,
            self.cache.display(),
        )
    }
}

pub fn run(args: FillArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let (skip_size, max_skip_size) = skip_sizes(args.skip_size.as_deref())?;
    let opts = FillOptions {
        cluster_sectors: args.cluster_size,
        skip_size,
        max_skip_size,
        reverse: args.reverse,
        no_trim: args.no_trim,
        no_scrape: args.no_scrape,
        retries: args.retries,
        min_read_rate: args.min_read_rate,
        delay_slow: Duration::from_secs(args.delay_slow),
        max_bad_areas: args.max_bad_areas,
        max_read_errors: args.max_read_errors,
        timeout: args.timeout,
        reopen_on_error: args.reopen_on_error,
    };
    // Signals are blocked before any thread starts; one thread waits for them.
    let signals = stop_signals();
    signals
        .thread_block()
        .context("cannot set up signal handling")?;

    let source_path = std::fs::canonicalize(&args.source)
        .with_context(|| format!("cannot find source {}", args.source.display()))?;
    let test_mode = args
        .test_mode
        .as_deref()
        .map(std::path::absolute)
        .transpose()
        .context("bad test-mode path")?;
    let media_cfg = ServeConfig {
        sector_size: args.sector_size,
        test_mode: test_mode.clone(),
        test_latency_ms: args.test_latency,
        ..ServeConfig::default()
    };
    let media = serve::open_media(&media_cfg, &source_path)?;
    let mut source = Source::new(media.clone());
    if args.reopen_on_error {
        let path = source_path.clone();
        let cfg = media_cfg.clone();
        source = source.with_reopen(Box::new(move || serve::open_media(&cfg, &path)));
    }

    let found = identify(&args, &opts, &source_path, &mut source)?;
    let mut cache = found.cache;
    if found.by == FoundBy::New {
        tracing::info!(cache = %cache.dir().display(), source = %source_path.display(), "new cache");
    } else if let Some(how) =
        cache::found_message(cache.dir(), &found.by, cache.meta().size, media.size())
    {
        eprintln!("blkcache: {how}");
    }
    let note = serve::Note {
        drive: serve::drive_record(&media_cfg, &source_path, media.as_ref()),
        head_identity: found.head_identity,
    };
    let ecfg = EngineConfig {
        save_interval: Duration::from_secs(args.mapfile_interval),
        ..EngineConfig::default()
    };
    let engine = Arc::new(serve::open_engine(
        &mut cache,
        media,
        Some((found.size, &note)),
        ecfg,
    )?);

    let stop = Arc::new(AtomicBool::new(false));
    spawn_signal_thread(signals, engine.clone(), stop.clone())?;
    let mut shown = Shown::new();
    let result = rescue::fill(&engine, &mut source, &opts, &stop, &mut |p| shown.show(p));
    shown.clear();
    // Saved whatever happened: what was read is kept.
    let saved = engine.save();
    let outcome = result?;
    saved.context("cannot save the map")?;

    let stats = engine.with_map(|m| m.map.stats());
    let wear = source.wear();
    let summary = summary(&stats, &outcome, cache.dir(), wear, started.elapsed());
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string(&summary)?)?;
    } else {
        out.write_all(summary.text().as_bytes())?;
    }
    out.flush()?;
    Ok(match outcome {
        Outcome::Finished => ExitCode::SUCCESS,
        Outcome::Limit(_) => ExitCode::from(1),
        Outcome::Interrupted => ExitCode::from(130),
    })
}

fn summary(
    stats: &Stats,
    outcome: &Outcome,
    dir: &Path,
    wear: rescue::Wear,
    elapsed: Duration,
) -> Summary {
    let b = |s| stats.get(s).bytes;
    Summary {
        outcome: match outcome {
            Outcome::Finished => "finished".into(),
            Outcome::Interrupted => "interrupted".into(),
            Outcome::Limit(l) => format!("stopped: {l}"),
        },
        cache: dir.to_owned(),
        size: stats.total_bytes(),
        rescued: b(Status::Finished),
        bad_sector: b(Status::BadSector),
        bad_areas: stats.get(Status::BadSector).areas,
        non_tried: b(Status::NonTried),
        non_trimmed: b(Status::NonTrimmed),
        non_scraped: b(Status::NonScraped),
        media_reads: wear.reads,
        media_bytes: wear.bytes,
        read_errors: wear.errors,
        seconds: elapsed.as_secs_f64(),
    }
}

/// Reads the source's start (the fill then reuses that read) and finds its cache by it
/// (`cache::locate`), adopting a GNU ddrescue directory named with `--cache` first.
fn identify(
    args: &FillArgs,
    opts: &FillOptions,
    source_path: &Path,
    source: &mut Source,
) -> anyhow::Result<Found> {
    let media = source.media().clone();
    let (size, sector_size) = (media.size(), media.sector_size());
    let dir = args
        .cache
        .as_deref()
        .map(std::path::absolute)
        .transpose()
        .context("bad cache path")?;
    let piece = rescue::cluster_bytes(opts, u64::from(sector_size));
    let head = source.read_head(piece).media_head(size, sector_size);
    let path = source_path.display().to_string();
    if let Some(dir) = dir.as_deref().filter(|d| adopt::is_ddrescue_dir(d)) {
        adopt::adopt(dir, &SourceInfo::of_head(&path, &head)).with_context(|| {
            format!("cannot adopt the GNU ddrescue rescue in {}", dir.display())
        })?;
        tracing::info!(cache = %dir.display(), "adopted a GNU ddrescue image and mapfile");
    }
    Ok(cache::locate(dir.as_deref(), &path, &head)?)
}

fn stop_signals() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set
}

/// First signal: save now and stop after the read in progress. Second: save and exit.
fn spawn_signal_thread(
    signals: SigSet,
    engine: Arc<Engine>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("blkcache-signals".into())
        .spawn(move || loop {
            let Ok(sig) = signals.wait() else { return };
            if let Err(e) = engine.save() {
                tracing::error!(error = %e, "map save on {sig} failed");
            }
            if stop.swap(true, Ordering::SeqCst) {
                eprintln!("blkcache: {sig} again: map saved, exiting now");
                std::process::exit(130);
            }
            eprintln!("blkcache: {sig}: map saved; stopping after the read in progress");
        })
        .context("cannot start the signal thread")?;
    Ok(())
}

/// The progress line on stderr: redrawn in place on a terminal (at most 5 times a second), a
/// plain line every 10 s otherwise (journald, pipes).
struct Shown {
    tty: bool,
    last: Option<Instant>,
    drawn: bool,
}

impl Shown {
    fn new() -> Shown {
        Shown {
            tty: std::io::stderr().is_terminal(),
            last: None,
            drawn: false,
        }
    }

    fn show(&mut self, p: &Progress) {
        let every = if self.tty {
            Duration::from_millis(200)
        } else {
            Duration::from_secs(10)
        };
        if self.last.is_some_and(|t| t.elapsed() < every) {
            return;
        }
        self.last = Some(Instant::now());
        let s = &p.stats;
        let size = s.total_bytes().max(1);
        let rescued = s.get(Status::Finished).bytes;
        let line = format!(
            "{} pass {} at {}B: {:.2}% rescued, {}B bad, {}B non-tried, {} reads, {} failed, {}B/s",
            blkcache::map::stats::phase_name(p.phase),
            p.pass,
            format_num(p.pos),
            100.0 * rescued as f64 / size as f64,
            format_num(s.get(Status::BadSector).bytes),
            format_num(s.get(Status::NonTried).bytes),
            p.reads,
            p.read_errors,
            format_num(p.current_rate),
        );
        // One terminal line: redrawn in place, never wrapped.
        let line: String = if self.tty {
            line.chars().take(79).collect()
        } else {
            line
        };
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[K{line}");
            self.drawn = true;
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
    }

    fn clear(&mut self) {
        if self.drawn {
            let _ = write!(std::io::stderr(), "\r\x1b[K");
        }
    }
}
