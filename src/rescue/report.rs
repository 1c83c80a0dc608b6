//! What a fill reports: [`Live`] figures while it runs (progress bars, `status`, the control
//! socket) and a [`Summary`] at its end (`fill`'s last lines and `--json`). Both travel over the
//! control socket, so a fill run by a daemon prints exactly what a standalone fill prints.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Outcome, Progress, Wear};
use crate::map::stats::phase_name;
use crate::map::{Stats, Status};

/// A fill's figures at its end (`--json`: byte counts are exact).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// `finished`, `interrupted` or `stopped: REASON` (a limit).
    pub outcome: String,
    /// The cache directory.
    pub cache: PathBuf,
    /// Bytes per status in the map at the end.
    pub size: u64,
    pub rescued: u64,
    pub bad_sector: u64,
    pub bad_areas: u64,
    pub non_tried: u64,
    pub non_trimmed: u64,
    pub non_scraped: u64,
    /// Reads sent to the media by this fill, bytes they returned, reads that failed.
    pub media_reads: u64,
    pub media_bytes: u64,
    pub read_errors: u64,
    /// How long the fill ran.
    pub seconds: f64,
}

impl Summary {
    /// The summary of a fill that ended with `outcome`, its map at `stats`.
    pub fn new(
        stats: &Stats,
        outcome: &Outcome,
        cache: &Path,
        wear: Wear,
        elapsed: Duration,
    ) -> Summary {
        let b = |s| stats.get(s).bytes;
        Summary {
            outcome: match outcome {
                Outcome::Finished => "finished".into(),
                Outcome::Interrupted => "interrupted".into(),
                Outcome::Limit(l) => format!("stopped: {l}"),
            },
            cache: cache.to_owned(),
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

    /// `fill`'s exit status for this outcome: 0 finished, 1 stopped by a limit, 130
    /// interrupted (as after SIGINT).
    pub fn exit_status(&self) -> u8 {
        match self.outcome.as_str() {
            "finished" => 0,
            "interrupted" => 130,
            _ => 1,
        }
    }
}

/// A running fill's figures, as of its last read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Live {
    /// ddrescue's words for the phase ("copying", "trimming", "scraping", "retrying").
    pub phase: String,
    /// Pass of the phase.
    pub pass: u32,
    /// Where the last read was.
    pub pos: u64,
    /// Bytes per status in the map.
    pub size: u64,
    pub rescued: u64,
    pub bad_sector: u64,
    pub bad_areas: u64,
    pub non_tried: u64,
    pub non_trimmed: u64,
    pub non_scraped: u64,
    /// Reads sent to the media by this fill, and how many failed.
    pub reads: u64,
    pub read_errors: u64,
    /// Seconds since the fill started.
    pub elapsed: f64,
    /// Bytes rescued per second: over the whole fill, and over the last second or so.
    pub average_rate: u64,
    pub current_rate: u64,
    /// Seconds left at the current rate (the average one when the current is 0) for what is not
    /// yet tried, trimmed or scraped; `None` when nothing was rescued lately. An estimate: the
    /// trimming and scraping phases read sector by sector and go slower.
    pub eta: Option<f64>,
}

impl Live {
    /// The figures of `p`.
    pub fn new(p: &Progress) -> Live {
        let s = &p.stats;
        let b = |st| s.get(st).bytes;
        let left = b(Status::NonTried) + b(Status::NonTrimmed) + b(Status::NonScraped);
        let rate = if p.current_rate > 0 {
            p.current_rate
        } else {
            p.average_rate
        };
        Live {
            phase: phase_name(p.phase).to_string(),
            pass: p.pass,
            pos: p.pos,
            size: s.total_bytes(),
            rescued: b(Status::Finished),
            bad_sector: b(Status::BadSector),
            bad_areas: s.get(Status::BadSector).areas,
            non_tried: b(Status::NonTried),
            non_trimmed: b(Status::NonTrimmed),
            non_scraped: b(Status::NonScraped),
            reads: p.reads,
            read_errors: p.read_errors,
            elapsed: p.elapsed.as_secs_f64(),
            average_rate: p.average_rate,
            current_rate: p.current_rate,
            eta: match (left, rate) {
                (0, _) => Some(0.0),
                (_, 0) => None,
                (l, r) => Some(l as f64 / r as f64),
            },
        }
    }
}

/// `90 s`, `12 min`, `3 h 05 min`: a duration for people.
pub fn format_duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match s {
        0..=99 => format!("{s} s"),
        100..=3599 => format!("{} min", (s + 30) / 60),
        _ => format!("{} h {:02} min", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::map::{FileMap, Phase};

    fn progress(map: &FileMap, current_rate: u64, average_rate: u64) -> Progress {
        Progress {
            phase: Phase::NonTried,
            pass: 1,
            pos: 0,
            stats: map.stats(),
            reads: 3,
            read_errors: 1,
            elapsed: Duration::from_secs(2),
            average_rate,
            current_rate,
        }
    }

    #[test]
    fn eta_is_what_is_left_to_read_at_the_current_rate_else_the_average() {
        let mut m = FileMap::new(10_000);
        m.set(0, 4000, Status::Finished);
        m.set(4000, 1000, Status::BadSector);
        m.set(5000, 1000, Status::NonTrimmed);
        // Left: 4000 non-tried + 1000 non-trimmed; bad sectors are not left to read.
        let l = Live::new(&progress(&m, 1000, 10));
        assert_eq!(l.eta, Some(5.0));
        assert_eq!((l.rescued, l.bad_sector, l.non_tried), (4000, 1000, 4000));
        assert_eq!(l.phase, "copying");
        assert_eq!(Live::new(&progress(&m, 0, 500)).eta, Some(10.0));
        assert_eq!(Live::new(&progress(&m, 0, 0)).eta, None);
        m.set(5000, 5000, Status::Finished);
        assert_eq!(Live::new(&progress(&m, 0, 0)).eta, Some(0.0));
    }

    #[test]
    fn durations_read_as_seconds_minutes_or_hours() {
        assert_eq!(format_duration(0.4), "0 s");
        assert_eq!(format_duration(99.0), "99 s");
        assert_eq!(format_duration(100.0), "2 min");
        assert_eq!(format_duration(3599.0), "60 min");
        assert_eq!(format_duration(3600.0), "1 h 00 min");
        assert_eq!(format_duration(5999.0), "1 h 39 min");
        assert_eq!(format_duration(3.0 * 3600.0 + 5.0 * 60.0), "3 h 05 min");
    }
}
