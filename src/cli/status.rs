//! `blkcache status MAPFILE|CACHE`: the figures `ddrescuelog -t` prints, as text or JSON, and
//! the map drawn like ddrescueview. The figures are computed by `blkcache::map::Report`, the
//! picture by `blkcache::map::picture`; this file only parses arguments and prints.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use blkcache::map::{load, picture, Report};

/// Show how much of a mapfile is rescued, non-tried, non-trimmed, non-scraped and bad
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
    /// A GNU ddrescue mapfile, or a blkcache cache directory.
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

/// `--json`: the report's fields in their order, then the drives of a cache directory.
#[derive(serde::Serialize)]
struct WithDrives<'a> {
    #[serde(flatten)]
    report: &'a Report,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    drives: &'a [blkcache::cache::DriveRecord],
}

pub fn run(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let path = if args.mapfile.is_dir() {
        args.mapfile.join(blkcache::cache::MAPFILE_FILE)
    } else {
        args.mapfile.clone()
    };
    let tty = std::io::stdout().is_terminal();
    let colour = tty
        && !args.plain
        && std::env::var_os("NO_COLOR").is_none()
        && std::env::var("TERM").map_or(true, |t| t != "dumb");
    // A blkcache cache directory: the drives that read its disc, printed after the figures.
    let drives = blkcache::cache::Cache::open(&args.mapfile)
        .map(|c| c.meta().drives.clone())
        .unwrap_or_default();
    loop {
        let mapfile = load(&path)?;
        if let Some(svg) = &args.svg {
            let title = format!("{} ({} bytes)", path.display(), mapfile.map.size());
            std::fs::write(svg, picture::to_svg(&mapfile.map, &title))
                .with_context(|| format!("cannot write {}", svg.display()))?;
        }
        let report = Report::new(&mapfile);
        let mut out = std::io::stdout().lock();
        if args.json {
            let shown = WithDrives {
                report: &report,
                drives: &drives,
            };
            serde_json::to_writer(&mut out, &shown)?;
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
        }
        out.flush()?;
        drop(out);
        match args.watch {
            Some(secs) => std::thread::sleep(Duration::from_secs(secs.max(1))),
            None => return Ok(ExitCode::SUCCESS),
        }
    }
}
