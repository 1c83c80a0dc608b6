//! `blkcache status MAPFILE|CACHE`: the figures `ddrescuelog -t` prints, as text or JSON, and
//! the map drawn like ddrescueview. The figures are computed by `blkcache::map::Report`, the
//! picture by `blkcache::map::picture`; this file only parses arguments and prints.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;

use blkcache::control::{self, LiveStatus};
use blkcache::engine::OnBadSector;
use blkcache::map::stats::format_num;
use blkcache::map::{load, parse, picture, Report};
use blkcache::rescue::format_duration;

use super::target;

/// Show how much of a mapfile is rescued, non-tried, non-trimmed, non-scraped and bad
///
/// Takes a blkcache device (/dev/ublkbN, /dev/nbdN) or the drive one serves, a cache directory
/// or a mapfile. When a daemon serves the cache, the figures are live: the map as the daemon
/// holds it now, its counters, and a running fill's phase, rate and estimated time left
/// (--watch adds the read rate; --json adds "live" and "daemon"). Otherwise it shows the saved
/// map and says so.
///
/// Reads any GNU ddrescue mapfile (blkcache's own included) and prints what `ddrescuelog -t`
/// prints for it, line for line (sizes above 999999 bytes rounded with SI prefixes, percentages
/// of the mapfile extent), then the pass of the status line ("none" in files older than
/// ddrescue 1.22):
///
///      current pos:    17408 B,  current status: finished
///   mapfile extent:    65536 B,  in      3 area(s)
///
///        non-tried:        0 B,  in      0 area(s)  (  0%)
///          rescued:    64512 B,  in      2 area(s)  ( 98.44%)
///      non-trimmed:        0 B,  in      0 area(s)  (  0%)
///      non-scraped:        0 B,  in      0 area(s)  (  0%)
///       bad-sector:     1024 B,  in      1 area(s)  (  1.56%)
///     current pass:         1
///
/// With --json, one object with exact counts; current_status is the status-line character
/// (? * / - F G +) and current_pass is null when the file has none:
///
///   {"size":65536,"current_pos":17408,"current_status":"+","current_pass":1,
///    "non_tried":{"bytes":0,"areas":0},"rescued":{"bytes":64512,"areas":2},
///    "non_trimmed":{"bytes":0,"areas":0},"non_scraped":{"bytes":0,"areas":0},
///    "bad_sector":{"bytes":1024,"areas":1}}
///
/// On a terminal (or with --picture) the map is drawn first, like ddrescueview: one cell per
/// 1/1024 of the media in the colour of the worst status inside it (without colour, or with
/// --plain, the mapfile's characters + ? * / -). --watch redraws it every few seconds while a
/// fill runs; --svg FILE writes the same picture as SVG.
///
/// A malformed mapfile is reported on stderr as "blkcache: error: FILE:LINE: what" with exit
/// status 1. blkcache is stricter than ddrescue: it also rejects trailing junk, over-long lines
/// and maps whose first block does not start at 0.
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct StatusArgs {
    /// A blkcache device (or the drive it serves), a cache directory, or a GNU ddrescue mapfile.
    pub mapfile: PathBuf,
    /// Print one JSON object with exact byte and area counts instead of text.
    #[arg(long)]
    pub json: bool,
    /// Draw the map even when stdout is not a terminal.
    #[arg(long)]
    pub picture: bool,
    /// Draw the map with plain characters, no colours.
    #[arg(long)]
    pub plain: bool,
    /// Redraw every SECONDS (default 2) until interrupted.
    #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "2")]
    pub watch: Option<u64>,
    /// Also write the picture as SVG to FILE.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
}

/// `--json`: the report's fields in their order, then whether they are live and the daemon's.
#[derive(serde::Serialize)]
struct Json<'a> {
    #[serde(flatten)]
    report: &'a Report,
    /// For a cache: whether a daemon answered (else the saved map).
    #[serde(skip_serializing_if = "Option::is_none")]
    live: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    daemon: Option<serde_json::Value>,
    /// For a cache: the drives that read its disc.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    drives: &'a [blkcache::cache::DriveRecord],
}

/// How long `status` waits for a daemon's answer before showing the saved map.
const ASK_TIMEOUT: Duration = Duration::from_secs(10);

/// The daemon's live state, if one serves `cache` and answers (a daemon that does not answer
/// is said on stderr; the saved map is shown then).
fn ask_daemon(cache: &Path) -> Option<LiveStatus> {
    let asked =
        control::connect(cache).and_then(|c| c.map(|mut c| c.status(ASK_TIMEOUT)).transpose());
    match asked {
        Ok(live) => live,
        Err(e) => {
            eprintln!(
                "blkcache: the daemon serving {} did not answer: {e}",
                cache.display()
            );
            None
        }
    }
}

/// The bytes/s the daemon read from the media since the last look (`--watch`).
struct Rate(Option<(Instant, u64)>);

impl Rate {
    fn update(&mut self, live: Option<&LiveStatus>) -> Option<u64> {
        let Some(live) = live else {
            self.0 = None;
            return None;
        };
        let now = (Instant::now(), live.counters.media_bytes);
        let rate = self.0.and_then(|(t, b)| {
            let secs = now.0.duration_since(t).as_secs_f64();
            (secs > 0.0).then(|| (now.1.saturating_sub(b) as f64 / secs) as u64)
        });
        self.0 = Some(now);
        rate
    }
}

/// The lines under the figures: where they come from, and a daemon's fill.
fn live_text(live: Option<&LiveStatus>, read_rate: Option<u64>, cache: bool) -> String {
    let Some(l) = live else {
        return if cache {
            "\nsaved map: no daemon serves this cache\n".into()
        } else {
            String::new()
        };
    };
    let c = &l.counters;
    let mut t = format!(
        "\nlive from the daemon (pid {}) serving {}:\n  {} hits, {} misses, {} media reads ({}B), {} failed",
        l.pid,
        l.serving.as_deref().unwrap_or("(starting)"),
        c.hits,
        c.misses,
        c.media_reads,
        format_num(c.media_bytes),
        c.media_errors,
    );
    if let Some(r) = read_rate {
        t.push_str(&format!(", reading {}B/s", format_num(r)));
    }
    t.push('\n');
    if l.on_bad_sector == OnBadSector::Zero {
        t.push_str("  bad sectors read as zeros (--on-bad-sector zero; the map still says -)\n");
    }
    match &l.fill {
        Some(f) if f.running => {
            t.push_str(&format!("  fill running, started by {}\n", f.origin));
            if let Some(p) = &f.live {
                t.push_str(&format!(
                    "    {} pass {}, {}B/s, ETA {}",
                    p.phase,
                    p.pass,
                    format_num(p.current_rate),
                    p.eta.map_or_else(|| "?".into(), format_duration)
                ));
            }
            t.push('\n');
        }
        Some(f) => {
            if let Some(s) = &f.summary {
                t.push_str(&format!(
                    "  last fill {} ({} reads, {} failed, {:.1} s)\n",
                    s.outcome, s.media_reads, s.read_errors, s.seconds
                ));
            }
        }
        None => {}
    }
    t
}

pub fn run(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let target = target::resolve(&args.mapfile)?;
    let tty = std::io::stdout().is_terminal();
    let colour = tty
        && !args.plain
        && std::env::var_os("NO_COLOR").is_none()
        && std::env::var("TERM").map_or(true, |t| t != "dumb");
    let mut rate = Rate(None);
    // A cache: the drives that read its disc, printed after the figures.
    let drives = target
        .cache
        .as_deref()
        .and_then(|c| blkcache::cache::Cache::open(c).ok())
        .map(|c| c.meta().drives.clone())
        .unwrap_or_default();
    loop {
        let live = target.cache.as_deref().and_then(ask_daemon);
        let read_rate = rate.update(live.as_ref());
        let mapfile = match &live {
            Some(l) => parse(&l.mapfile, &target.mapfile)?,
            None => load(&target.mapfile)?,
        };
        if let Some(svg) = &args.svg {
            let title = format!(
                "{} ({} bytes)",
                target.mapfile.display(),
                mapfile.map.size()
            );
            std::fs::write(svg, picture::to_svg(&mapfile.map, &title))
                .with_context(|| format!("cannot write {}", svg.display()))?;
        }
        let report = Report::new(&mapfile);
        let mut out = std::io::stdout().lock();
        if args.json {
            let v = Json {
                report: &report,
                live: target.cache.as_ref().map(|_| live.is_some()),
                daemon: live.as_ref().map(|l| {
                    serde_json::json!({
                        "pid": l.pid,
                        "serving": l.serving,
                        "counters": l.counters,
                        "health": l.health,
                        "read_rate": read_rate,
                        "fill": l.fill,
                    })
                }),
                drives: &drives,
            };
            serde_json::to_writer(&mut out, &v)?;
            writeln!(out)?;
        } else {
            if args.watch.is_some() && tty {
                // Home and clear: redraw in place.
                out.write_all(b"\x1b[H\x1b[2J")?;
            }
            if tty || args.picture || args.watch.is_some() {
                out.write_all(picture::to_text(&mapfile.map, colour).as_bytes())?;
                writeln!(out)?;
            }
            out.write_all(report.to_text().as_bytes())?;
            for d in &drives {
                writeln!(out, "         read by: {}", d.describe())?;
            }
            out.write_all(live_text(live.as_ref(), read_rate, target.cache.is_some()).as_bytes())?;
        }
        out.flush()?;
        drop(out);
        match args.watch {
            Some(secs) => std::thread::sleep(Duration::from_secs(secs.max(1))),
            None => return Ok(ExitCode::SUCCESS),
        }
    }
}
