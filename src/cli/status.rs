//! `blkcache status MAPFILE`: the figures `ddrescuelog -t` prints, as text or JSON.
//! The figures are computed by `blkcache::map::Report`; this file only parses arguments and prints.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use blkcache::map::{load, Report};

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
/// A malformed mapfile is reported on stderr as "blkcache: error: FILE:LINE: what" with exit
/// status 1. blkcache is stricter than ddrescue: it also rejects trailing junk, over-long lines
/// and maps whose first block does not start at 0.
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct StatusArgs {
    /// A GNU ddrescue mapfile (or a blkcache cache's mapfile).
    pub mapfile: PathBuf,
    /// Print one JSON object with exact byte and area counts instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let mapfile = load(&args.mapfile)?;
    let report = Report::new(&mapfile);
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer(&mut out, &report)?;
        writeln!(out)?;
    } else {
        out.write_all(report.to_text().as_bytes())?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
