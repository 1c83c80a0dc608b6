//! `blkcache status MAPFILE`: the figures `ddrescuelog -t` prints, as text or JSON.
//! The figures are computed by `blkcache::map::Report`; this file only parses arguments and prints.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use blkcache::map::{load, Report};

/// Show how much of a mapfile is rescued, non-tried, non-trimmed, non-scraped and bad.
///
/// The text output is the one `ddrescuelog -t MAPFILE` prints for the same file (sizes rounded
/// with SI prefixes, percentages of the mapfile extent), followed by the current pass. With
/// `--json`, one object with exact byte and area counts:
/// {"size", "current_pos", "current_status", "current_pass", "non_tried", "rescued",
/// "non_trimmed", "non_scraped", "bad_sector"}, each status being {"bytes", "areas"}.
///
/// A malformed mapfile is reported as FILE:LINE: what, with a non-zero exit status.
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
