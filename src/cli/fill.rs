//! `blkcache fill SOURCE`: read the whole source into its cache with GNU ddrescue's strategy,
//! without ublk or a daemon (the work is in `blkcache::rescue`). Also adopts a directory holding
//! only a ddrescue `image` and `mapfile`. When a daemon serves the cache (`fill DEVICE`, `fill
//! CACHE`, or a SOURCE whose cache is served), the daemon fills it through its control socket
//! and this process follows (`in_daemon`).
//!
//! The identity read (first 64 KiB) is made once and handed to the fill, which reuses it. Ctrl-C
//! (or SIGTERM) saves the map at once, stops after the read in progress and saves again; a
//! second one exits right after saving. A `kill -9` loses at most what was read since the last
//! save (`--mapfile-interval`); the next fill continues from the saved map.

use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::sys::signal::{SigSet, Signal};

use blkcache::cache::{self, Found, FoundBy, SourceInfo};
use blkcache::control::{self, ControlError, Reply, Request};
use blkcache::engine::{Engine, EngineConfig};
use blkcache::map::stats::format_num;
use blkcache::rescue::{self, adopt, FillOptions, Live, Source, Summary};

use blkcache::serve::{self, parse_bytes, ServeConfig};

use super::progress::{FillProgress, Notes};
use super::target;

/// How long `fill` waits for a daemon's answer to a request.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(30);

/// Read a whole source into its cache, as GNU ddrescue would (alone, or in the daemon serving it)
///
/// Copies the non-tried areas in large reads (skipping ahead after an error), trims the edges of
/// the failed blocks, scrapes what is left sector by sector, then makes --retries passes over
/// the bad sectors. The cache's mapfile keeps ddrescue's position, phase and pass, so GNU
/// ddrescue can continue a fill (ddrescue SOURCE CACHE/image CACHE/mapfile) and fill can
/// continue ddrescue: --cache DIR adopts a directory holding only a ddrescue image and mapfile.
/// Ends when nothing is left to try (exit 0, even with bad sectors); a limit (--max-read-errors,
/// --max-bad-areas, --timeout) ends it with exit status 1, Ctrl-C with 130, the map saved.
///
/// Given a blkcache device (/dev/ublkbN, /dev/nbdN) or a cache directory that a daemon serves,
/// the daemon fills it while it goes on serving, and this command follows; Ctrl-C then stops
/// that fill (the map saved, the device still served), --detach leaves it running, --stop
/// stops it.
#[derive(Debug, clap::Args)]
pub struct FillArgs {
    /// The source: an optical drive, a disk or a file; or a blkcache device, its cache directory
    /// or a drive a daemon serves (the daemon then fills it).
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
    /// With a daemon: start its fill and leave it running (`status --watch` follows it).
    #[arg(long, conflicts_with = "stop")]
    pub detach: bool,
    /// With a daemon: stop the fill it runs (the map is saved, the device stays served).
    #[arg(long)]
    pub stop: bool,
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

/// The summary's text (`--json` prints the struct).
fn summary_text(s: &Summary) -> String {
    let pct = |b: u64| {
        if s.size == 0 {
            0.0
        } else {
            100.0 * b as f64 / s.size as f64
        }
    };
    format!(
        "fill {}: {}B rescued of {}B ({:.2}%)\n  \
         {}B bad in {} area(s); not tried {}B, non-trimmed {}B, non-scraped {}B\n  \
         {} reads ({}B), {} failed; {:.1} s\n  cache {}\n",
        s.outcome,
        format_num(s.rescued),
        format_num(s.size),
        pct(s.rescued),
        format_num(s.bad_sector),
        s.bad_areas,
        format_num(s.non_tried),
        format_num(s.non_trimmed),
        format_num(s.non_scraped),
        s.media_reads,
        format_num(s.media_bytes),
        s.read_errors,
        s.seconds,
        s.cache.display(),
    )
}

/// Prints the summary as text or JSON.
fn print_summary(summary: &Summary, json: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string(summary)?)?;
    } else {
        out.write_all(summary_text(summary).as_bytes())?;
    }
    out.flush()?;
    Ok(())
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

    if let Some(cache) = served_cache(&args.source) {
        return in_daemon(&args, &cache, opts, signals);
    }
    if args.stop || args.detach {
        bail!(
            "--stop and --detach are for a fill in a daemon: name a blkcache device or its cache \
             directory (`blkcache list` shows them)"
        );
    }
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
    if control::connect(found.cache.dir())?.is_some() {
        // A daemon serves this cache: it is the one writer, so it fills.
        return in_daemon(&args, found.cache.dir(), opts, signals);
    }
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
    let mut shown = FillProgress::new();
    spawn_signal_thread(signals, engine.clone(), stop.clone(), shown.notes())?;
    let result = rescue::fill(&engine, &mut source, &opts, &stop, &mut |p| {
        shown.show(&Live::new(p))
    });
    shown.finish();
    // Saved whatever happened: what was read is kept.
    let saved = engine.save();
    let outcome = result?;
    saved.context("cannot save the map")?;

    let stats = engine.with_map(|m| m.map.stats());
    let summary = Summary::new(
        &stats,
        &outcome,
        cache.dir(),
        source.wear(),
        started.elapsed(),
    );
    print_summary(&summary, args.json)?;
    Ok(ExitCode::from(summary.exit_status()))
}

/// The cache `arg` names when it is a blkcache device, a cache directory or a cache's mapfile
/// (then a daemon serving it fills it), or a drive a live daemon serves, rather than a source.
fn served_cache(arg: &Path) -> Option<PathBuf> {
    let meta = std::fs::metadata(arg).ok()?;
    if !meta.file_type().is_block_device() {
        return target::resolve(arg).ok()?.cache;
    }
    match target::device_cache(arg, meta.rdev())? {
        (cache, true) => Some(cache),
        // The drive of a device whose daemon is gone is read here, as any drive.
        (cache, false) => control::connect(&cache)
            .ok()
            .flatten()
            .is_some()
            .then_some(cache),
    }
}

/// `fill` through the daemon serving `cache`: starts its fill (or, with --stop, stops it) and,
/// unless --detach, follows it to its end. Ctrl-C stops the fill (the daemon saves the map and
/// goes on serving); a second one leaves at once (the daemon stops the fill all the same).
fn in_daemon(
    args: &FillArgs,
    cache: &Path,
    options: FillOptions,
    signals: SigSet,
) -> anyhow::Result<ExitCode> {
    let named = args.source.display();
    let Some(mut client) = control::connect(cache)? else {
        bail!(
            "no daemon serves {}: `blkcache fill SOURCE --cache {}` fills it without one",
            cache.display(),
            cache.display()
        );
    };
    if args.test_mode.is_some() || args.sector_size.is_some() || args.test_latency != 0 {
        bail!(
            "a daemon serves {}: it fills from its own media, so --test-mode, --test-latency and \
             --sector-size belong to the `add` or `serve` that started it",
            cache.display()
        );
    }
    if args.stop {
        client.send(&Request::Stop)?;
        client.reply(Some(CONTROL_TIMEOUT))?;
        eprintln!("blkcache: the fill stops after its read in progress; the daemon saves the map");
        return Ok(ExitCode::SUCCESS);
    }
    client.send(&Request::Fill {
        options,
        detach: args.detach,
        origin: format!("blkcache fill (pid {})", std::process::id()),
    })?;
    match client.reply(Some(CONTROL_TIMEOUT)) {
        Ok(Reply::Started { .. }) => {}
        Err(ControlError::Refused(why)) => bail!(
            "{why}; `blkcache status {named} --watch` follows it, `blkcache fill {named} --stop` \
             stops it"
        ),
        Err(e) => return Err(e.into()),
        Ok(other) => bail!("unexpected reply from the daemon: {other:?}"),
    }
    if args.detach {
        eprintln!(
            "blkcache: the daemon fills {}\n  follow it: blkcache status {named} --watch\n  \
             stop it:   blkcache fill {named} --stop",
            cache.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let stopper = client.stopper()?;
    let mut shown = FillProgress::new();
    let notes = shown.notes();
    std::thread::Builder::new()
        .name("blkcache-signals".into())
        .spawn(move || {
            let mut asked = false;
            while let Ok(sig) = signals.wait() {
                if asked {
                    notes.say(&format!(
                        "blkcache: {sig} again: leaving; the daemon stops the fill and saves the map"
                    ));
                    std::process::exit(130);
                }
                asked = true;
                notes.say(&format!(
                    "blkcache: {sig}: stopping after the read in progress; the device stays served"
                ));
                if let Err(e) = stopper.stop() {
                    notes.say(&format!("blkcache: {e}"));
                }
            }
        })
        .context("cannot start the signal thread")?;
    let summary = loop {
        match client.reply(None) {
            Ok(Reply::Progress(live)) => shown.show(&live),
            Ok(Reply::Done(summary)) => break summary,
            Ok(_) => {}
            Err(e) => {
                shown.finish();
                return Err(e.into());
            }
        }
    };
    shown.finish();
    print_summary(&summary, args.json)?;
    Ok(ExitCode::from(summary.exit_status()))
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
    notes: Notes,
) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("blkcache-signals".into())
        .spawn(move || loop {
            let Ok(sig) = signals.wait() else { return };
            if let Err(e) = engine.save() {
                tracing::error!(error = %e, "map save on {sig} failed");
            }
            if stop.swap(true, Ordering::SeqCst) {
                notes.say(&format!("blkcache: {sig} again: map saved, exiting now"));
                std::process::exit(130);
            }
            notes.say(&format!(
                "blkcache: {sig}: map saved; stopping after the read in progress"
            ));
        })
        .context("cannot start the signal thread")?;
    Ok(())
}
