//! Per-status figures of a map, and the report `blkcache status` prints (the figures
//! `ddrescuelog -t` prints for the same mapfile). Computation only: no printing, no I/O.

use std::fmt::Write as _;

use serde::Serialize;

use super::filemap::Status;
use super::format::{Mapfile, Phase};

/// Bytes and number of areas (extents) in one status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Count {
    /// Total bytes.
    pub bytes: u64,
    /// Number of extents.
    pub areas: u64,
}

/// Bytes and areas for each status, indexed by [`Status`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    per: [Count; 5],
}

impl Stats {
    /// The figures for one status.
    pub fn get(&self, status: Status) -> Count {
        self.per[status.index()]
    }

    /// Total bytes over every status (the map's size).
    pub fn total_bytes(&self) -> u64 {
        self.per.iter().map(|c| c.bytes).sum()
    }

    /// Total areas over every status (the map's extent count).
    pub fn total_areas(&self) -> u64 {
        self.per.iter().map(|c| c.areas).sum()
    }

    pub(crate) fn add(&mut self, status: Status, len: u64) {
        let c = &mut self.per[status.index()];
        c.bytes += len;
        c.areas += 1;
    }

    /// One extent became two of the same status.
    pub(crate) fn split(&mut self, status: Status) {
        self.per[status.index()].areas += 1;
    }

    /// An extent grew by `len` bytes.
    pub(crate) fn grow(&mut self, status: Status, len: u64) {
        self.per[status.index()].bytes += len;
    }

    pub(crate) fn sub(&mut self, status: Status, len: u64) {
        let c = &mut self.per[status.index()];
        c.bytes -= len;
        c.areas -= 1;
    }
}

/// What `blkcache status` reports: `ddrescuelog -t`'s figures plus the status line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The mapfile extent (domain size) in bytes.
    pub size: u64,
    /// Number of areas in the whole map.
    #[serde(skip)]
    pub areas: u64,
    /// Position field of the status line.
    pub current_pos: u64,
    /// Phase character of the status line.
    pub current_status: String,
    /// The phase itself, for the text report.
    #[serde(skip)]
    pub phase: Phase,
    /// Pass field of the status line; `None` for pre-1.22 files without one.
    pub current_pass: Option<u32>,
    /// `?` figures.
    pub non_tried: Count,
    /// `+` figures.
    pub rescued: Count,
    /// `*` figures.
    pub non_trimmed: Count,
    /// `/` figures.
    pub non_scraped: Count,
    /// `-` figures.
    pub bad_sector: Count,
}

impl Report {
    /// The report for a loaded mapfile.
    pub fn new(m: &Mapfile) -> Report {
        let s = m.map.stats();
        Report {
            size: m.map.size(),
            areas: s.total_areas(),
            current_pos: m.current_pos,
            current_status: m.current_status.as_char().to_string(),
            phase: m.current_status,
            current_pass: m.current_pass,
            non_tried: s.get(Status::NonTried),
            rescued: s.get(Status::Finished),
            non_trimmed: s.get(Status::NonTrimmed),
            non_scraped: s.get(Status::NonScraped),
            bad_sector: s.get(Status::BadSector),
        }
    }

    /// The rows in the order `ddrescuelog -t` prints them, with its labels.
    pub fn rows(&self) -> [(&'static str, Count); 5] {
        [
            ("non-tried", self.non_tried),
            ("rescued", self.rescued),
            ("non-trimmed", self.non_trimmed),
            ("non-scraped", self.non_scraped),
            ("bad-sector", self.bad_sector),
        ]
    }

    /// `part` as a percentage of the domain, as ddrescue computes it (0 for an empty domain).
    pub fn percent(&self, part: u64) -> f64 {
        if self.size == 0 {
            0.0
        } else {
            100.0 * part as f64 / self.size as f64
        }
    }
}

/// The words ddrescue uses for a phase in `ddrescuelog -t` ("current status: copying").
pub fn phase_name(p: Phase) -> &'static str {
    match p {
        Phase::NonTried => "copying",
        Phase::NonTrimmed => "trimming",
        Phase::NonScraped => "scraping",
        Phase::BadSector => "retrying",
        Phase::Filtered => "filling",
        Phase::Generating => "generating",
        Phase::Finished => "finished",
    }
}

/// ddrescue's `format_num` with its defaults: SI prefixes, dividing by 1000 while the number
/// exceeds 999999 ("65536 ", "12129 M"; the caller appends the unit).
pub fn format_num(num: u64) -> String {
    const PREFIX: [&str; 8] = ["k", "M", "G", "T", "P", "E", "Z", "Y"];
    let mut n = num;
    let mut p = "";
    for prefix in PREFIX {
        if n <= 999_999 {
            break;
        }
        n /= 1000;
        p = prefix;
    }
    format!("{n} {p}")
}

/// ddrescue's `format_percentage(num, den)` with its defaults (integer part at least 3 wide, up to
/// 2 decimals, only those needed, last one rounded): "  0%", " 50%", " 33.33%", " 16.67%".
pub fn format_percentage(num: u64, den: u64) -> String {
    // ddrescue works in long long; blkcache's numbers are at most i64::MAX, so i128 never overflows.
    let num = num as i128 * 100;
    let den = den as i128;
    if den == 0 {
        return if num > 0 { "+INF" } else { "NAN" }.to_string();
    }
    let mut buf: Vec<u8> = format!("{:>3}", num / den).into_bytes();
    let mut rest = num % den;
    let mut prec = 2;
    if rest > 0 {
        buf.push(b'.');
        while prec > 0 && rest > 0 {
            rest *= 10;
            buf.push(b'0' + (rest / den) as u8);
            rest %= den;
            prec -= 1;
        }
    }
    if rest * 2 >= den && rest > 0 {
        round_up(&mut buf);
    }
    let mut s = String::from_utf8_lossy(&buf).into_owned();
    s.push('%');
    s
}

/// Adds one to the last digit of a right-aligned decimal, carrying as ddrescue does.
fn round_up(buf: &mut Vec<u8>) {
    let mut j = buf.len();
    while j > 0 {
        j -= 1;
        match buf[j] {
            b'.' => continue,
            b'0'..=b'8' => {
                buf[j] += 1;
                return;
            }
            b'9' => {
                buf[j] = b'0';
                if j > 0 && buf[j - 1] == b'.' {
                    continue;
                }
                if j > 0 && buf[j - 1] == b' ' {
                    buf[j - 1] = b'1';
                    return;
                }
                if j == 0 || !buf[j - 1].is_ascii_digit() {
                    buf.insert(j, b'1');
                    return;
                }
            }
            _ => return,
        }
    }
}

impl Report {
    /// The text `ddrescuelog -t MAPFILE` prints for the same file, line for line, followed by
    /// one line ddrescuelog does not print: the pass.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "   current pos: {:>9}B,  current status: {}",
            format_num(self.current_pos),
            phase_name(self.phase)
        );
        let _ = writeln!(
            s,
            "mapfile extent: {:>9}B,  in {:>6} area(s)",
            format_num(self.size),
            self.areas
        );
        let _ = writeln!(s);
        for (label, c) in self.rows() {
            let _ = writeln!(
                s,
                "{label:>14}: {:>9}B,  in {:>6} area(s)  ({})",
                format_num(c.bytes),
                c.areas,
                format_percentage(c.bytes, self.size)
            );
        }
        match self.current_pass {
            Some(p) => {
                let _ = writeln!(s, "  current pass: {p:>9}");
            }
            None => {
                let _ = writeln!(s, "  current pass: {:>9}", "none");
            }
        }
        s
    }
}
